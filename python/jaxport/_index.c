/* jaxport._core: the index of an open file, and its tensors as read-only
 * numpy arrays that view the file's mapping. */
#include "_core.h"

#include <numpy/arrayobject.h>

/* ------------------------------------------------------------ Index */

/* Names and values come from the file and need not be valid UTF-8; such
 * bytes are kept as surrogates, the way Python spells file names. */
static PyObject *text(const char *s) {
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "surrogateescape");
}

typedef struct {
    PyObject_HEAD
    jp_index *ix;
    PyObject *keep; /* what an index over memory borrows (the arrays), or NULL */
} IndexObject;

static void index_dealloc(IndexObject *self) {
    jp_index_close(self->ix);
    Py_XDECREF(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t index_len(IndexObject *self) { return (Py_ssize_t)jp_index_count(self->ix); }

static PyObject *index_format(IndexObject *self, void *closure) {
    (void)closure;
    return PyUnicode_FromString(jp_format_name(jp_index_format(self->ix)));
}

static PyObject *tensor_info(const jp_tensor *t) {
    PyObject *shape = PyTuple_New(t->ndim), *strides = PyTuple_New(t->ndim);
    if (!shape || !strides) {
        Py_XDECREF(shape);
        Py_XDECREF(strides);
        return NULL;
    }
    for (int d = 0; d < t->ndim; d++) {
        PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(t->shape[d]));
        PyTuple_SET_ITEM(strides, d, PyLong_FromLongLong(t->strides[d]));
    }
    return Py_BuildValue("{s:N,s:s,s:N,s:N,s:K,s:I,s:O,s:O,s:O}", "name", text(t->name), "dtype",
                         jp_dtype_numpy_name(t->dtype), "shape", shape, "strides", strides,
                         "nbytes", (unsigned long long)t->nbytes, "storage", t->storage, "shared",
                         (t->flags & JP_TENSOR_SHARED) ? Py_True : Py_False, "contiguous",
                         (t->flags & JP_TENSOR_CONTIGUOUS) ? Py_True : Py_False, "owned",
                         (t->flags & JP_TENSOR_OWNED) ? Py_True : Py_False);
}

static PyObject *index_tensors(IndexObject *self, PyObject *unused) {
    (void)unused;
    size_t n = jp_index_count(self->ix);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *d = tensor_info(jp_index_at(self->ix, i));
        if (!d) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    return list;
}

/* A read-only array over t's bytes whose base is the index, so the mapping
 * stays alive as long as any array does. */
static PyObject *tensor_array(IndexObject *self, const jp_tensor *t, PyObject *dtypes) {
    const char *np_name = jp_dtype_numpy_name(t->dtype);
    PyObject *d = PyDict_GetItemString(dtypes, np_name); /* borrowed */
    size_t isz = jp_dtype_size(t->dtype);
    if (!d || !PyArray_DescrCheck(d) || (size_t)PyDataType_ELSIZE((PyArray_Descr *)d) != isz) {
        jp_err err = {.code = JP_DTYPE, .offset = t->file_offset};
        snprintf(err.member, sizeof err.member, "%s", t->name);
        snprintf(err.msg, sizeof err.msg,
                 "%s: numpy has no %zu-byte type for dtype %s (ml_dtypes provides bfloat16, "
                 "float8 and complex32)",
                 t->name, isz, np_name);
        return jp_py_raise(&err);
    }
    npy_intp dims[JP_MAX_DIMS], strides[JP_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) {
        dims[i] = (npy_intp)t->shape[i];
        strides[i] = (npy_intp)(t->strides[i] * (int64_t)isz);
    }
    PyArray_Descr *descr = (PyArray_Descr *)d;
    Py_INCREF(descr); /* stolen by the constructor */
    if (t->numel == 0) {
        PyObject *a = PyArray_NewFromDescr(&PyArray_Type, descr, t->ndim, dims, NULL, NULL, 0, NULL);
        if (a) PyArray_CLEARFLAGS((PyArrayObject *)a, NPY_ARRAY_WRITEABLE);
        return a;
    }
    PyObject *a = PyArray_NewFromDescr(&PyArray_Type, descr, t->ndim, dims, strides,
                                       (void *)(uintptr_t)t->data, 0, NULL);
    if (!a) return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)a, (PyObject *)self) < 0) {
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

static PyObject *index_arrays(IndexObject *self, PyObject *dtypes) {
    if (!PyDict_Check(dtypes)) {
        PyErr_SetString(PyExc_TypeError, "arrays() takes a dict of numpy dtypes by name");
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    for (size_t i = 0; i < jp_index_count(self->ix); i++) {
        const jp_tensor *t = jp_index_at(self->ix, i);
        PyObject *a = tensor_array(self, t, dtypes), *k = a ? text(t->name) : NULL;
        int bad = !k || PyDict_SetItem(out, k, a) < 0;
        Py_XDECREF(a);
        Py_XDECREF(k);
        if (bad) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *index_meta(IndexObject *self, PyObject *unused) {
    (void)unused;
    PyObject *out = PyDict_New();
    for (size_t i = 0; out && i < jp_index_meta_count(self->ix); i++) {
        const jp_meta *m = jp_index_meta_at(self->ix, i);
        PyObject *k = text(m->key), *v = text(m->value);
        int bad = !k || !v || PyDict_SetItem(out, k, v) < 0;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (bad) Py_CLEAR(out);
    }
    return out;
}

static const char *finding_kind_name(jp_finding_kind k) {
    return k == JP_FIND_CALL ? "call" : k == JP_FIND_DENIED ? "denied" : "import";
}

static PyObject *index_findings(IndexObject *self, PyObject *unused) {
    (void)unused;
    size_t n = jp_index_finding_count(self->ix);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        const jp_finding *f = jp_index_finding_at(self->ix, i);
        PyObject *d = Py_BuildValue("{s:s,s:N,s:N,s:K}", "kind", finding_kind_name(f->kind),
                                    "global", text(f->global), "member", text(f->member),
                                    "offset", (unsigned long long)f->offset);
        if (!d) Py_CLEAR(list);
        else PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    return list;
}

static PyMethodDef index_methods[] = {
    {"tensors", (PyCFunction)index_tensors, METH_NOARGS, "Every tensor as a dict of its fields."},
    {"arrays", (PyCFunction)index_arrays, METH_O,
     "arrays(dtypes) -> {name: read-only numpy array viewing the file}; dtypes maps jaxport's "
     "numpy names ('bfloat16', ...) to numpy dtypes."},
    {"meta", (PyCFunction)index_meta, METH_NOARGS, "Values that are not tensors: {path: repr}."},
    {"findings", (PyCFunction)index_findings, METH_NOARGS,
     "What the file would import or call under its usual reader, and where."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef index_getset[] = {
    {"format", (getter)index_format, NULL, "The file's format name.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods index_as_sequence = {.sq_length = (lenfunc)index_len};

static PyTypeObject IndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "jaxport._core.Index",
    .tp_basicsize = sizeof(IndexObject),
    .tp_dealloc = (destructor)index_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An open file's index of tensors; data stay mapped while it lives.",
    .tp_methods = index_methods,
    .tp_getset = index_getset,
    .tp_as_sequence = &index_as_sequence,
};

/* A new Index owning ix (closed here if that fails) and holding keep. */
static PyObject *index_new(jp_index *ix, PyObject *keep) {
    IndexObject *self = PyObject_New(IndexObject, &IndexType);
    if (!self) {
        jp_index_close(ix);
        return NULL;
    }
    self->ix = ix;
    self->keep = Py_XNewRef(keep);
    return (PyObject *)self;
}

static PyObject *index_open(PyObject *mod, PyObject *args, PyObject *kw) {
    (void)mod;
    static char *kwlist[] = {"path", "allow_unsafe", NULL};
    PyObject *path_obj;
    int allow_unsafe = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|p", kwlist, PyUnicode_FSConverter, &path_obj,
                                     &allow_unsafe))
        return NULL;
    jp_open_opts opts = {allow_unsafe ? JP_OPEN_ALLOW_UNSAFE : 0};
    jp_err err;
    jp_index *ix = NULL;
    jp_code rc;
    Py_BEGIN_ALLOW_THREADS
    rc = jp_index_open(&ix, PyBytes_AS_STRING(path_obj), &opts, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    return rc ? jp_py_raise(&err) : index_new(ix, NULL);
}

/* from_arrays(names, arrays): an Index over arrays in memory (a PyTorch
 * state dict wrapped as numpy arrays), which it keeps alive. */
static PyObject *index_from_arrays(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *names_o, *arrays_o;
    if (!PyArg_ParseTuple(args, "OO", &names_o, &arrays_o)) return NULL;
    PyObject *keep, *result;
    jp_tensor *ts;
    Py_ssize_t n;
    if (jp_py_tensors(names_o, arrays_o, &ts, &keep, &n) < 0) return NULL;
    jp_index *ix = NULL;
    jp_err err;
    if (jp_index_open_tensors(&ix, ts, (size_t)n, "<state dict>", &err))
        result = jp_py_raise(&err);
    else
        result = index_new(ix, keep);
    PyMem_Free(ts);
    Py_DECREF(keep);
    return result;
}

static PyMethodDef index_functions[] = {
    {"from_arrays", index_from_arrays, METH_VARARGS,
     "from_arrays(names, arrays) -> Index over numpy arrays in memory (kept alive by the index)"},
    {"open", (PyCFunction)(void (*)(void))index_open, METH_VARARGS | METH_KEYWORDS,
     "open(path, allow_unsafe=False) -> Index"},
    {NULL, NULL, 0, NULL},
};

jp_index *jp_py_index(PyObject *o) {
    if (!PyObject_TypeCheck(o, &IndexType)) {
        PyErr_Format(PyExc_TypeError, "expected a jaxport Index, got %s", Py_TYPE(o)->tp_name);
        return NULL;
    }
    return ((IndexObject *)o)->ix;
}

int jp_py_init_index(PyObject *m) {
    import_array1(-1);
    if (PyType_Ready(&IndexType) < 0) return -1;
    if (PyModule_AddType(m, &IndexType) < 0) return -1;
    /* Every dtype's numpy/ml_dtypes name, for the Python side's dtype table. */
    PyObject *names = PyTuple_New(JP_DTYPE_COUNT - 1);
    if (!names) return -1;
    for (int d = 1; d < JP_DTYPE_COUNT; d++)
        PyTuple_SET_ITEM(names, d - 1, PyUnicode_FromString(jp_dtype_numpy_name((jp_dtype)d)));
    if (PyModule_AddObjectRef(m, "dtype_names", names) < 0) {
        Py_DECREF(names);
        return -1;
    }
    Py_DECREF(names);
    return PyModule_AddFunctions(m, index_functions);
}
