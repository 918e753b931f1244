/* jaxport._core: the index of an open file. */
#include "_core.h"

/* ------------------------------------------------------------ Index */

typedef struct {
    PyObject_HEAD
    jp_index *ix;
} IndexObject;

static void index_dealloc(IndexObject *self) {
    jp_index_close(self->ix);
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
    return Py_BuildValue("{s:s,s:s,s:N,s:N,s:K,s:I,s:O,s:O}", "name", t->name, "dtype",
                         jp_dtype_numpy_name(t->dtype), "shape", shape, "strides", strides,
                         "nbytes", (unsigned long long)t->nbytes, "storage", t->storage, "shared",
                         (t->flags & JP_TENSOR_SHARED) ? Py_True : Py_False, "contiguous",
                         (t->flags & JP_TENSOR_CONTIGUOUS) ? Py_True : Py_False);
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

static PyMethodDef index_methods[] = {
    {"tensors", (PyCFunction)index_tensors, METH_NOARGS, "Every tensor as a dict of its fields."},
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
    if (rc) return jp_py_raise(&err);
    IndexObject *self = PyObject_New(IndexObject, &IndexType);
    if (!self) {
        jp_index_close(ix);
        return NULL;
    }
    self->ix = ix;
    return (PyObject *)self;
}

static PyMethodDef index_functions[] = {
    {"open", (PyCFunction)(void (*)(void))index_open, METH_VARARGS | METH_KEYWORDS,
     "open(path, allow_unsafe=False) -> Index"},
    {NULL, NULL, 0, NULL},
};

int jp_py_init_index(PyObject *m) {
    if (PyType_Ready(&IndexType) < 0) return -1;
    if (PyModule_AddType(m, &IndexType) < 0) return -1;
    return PyModule_AddFunctions(m, index_functions);
}
