/* jaxport._core: the CPython face of the C engine.
 *
 * Every jp_code becomes an exception class (jaxport.errors), all deriving
 * from JaxportError and carrying the C message, code, offset and member. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "jaxport.h"

static PyObject *error_base;
static PyObject *error_classes[JP_CODE_COUNT];

/* "NOT_FOUND" -> "NotFoundError" */
static void class_name(jp_code code, char *out, size_t cap) {
    const char *s = jp_code_name(code);
    size_t n = 0;
    int upper = 1;
    for (; *s && n + 6 < cap; s++) {
        if (*s == '_') {
            upper = 1;
            continue;
        }
        out[n++] = upper ? *s : (char)(*s - 'A' + 'a');
        upper = 0;
    }
    memcpy(out + n, "Error", 6);
}

/* Raise the exception for a filled jp_err and return NULL. */
static PyObject *raise_err(const jp_err *err) {
    jp_code code = err->code > JP_OK && err->code < JP_CODE_COUNT ? err->code : JP_CORRUPT;
    PyObject *cls = error_classes[code];
    PyObject *exc = PyObject_CallFunction(cls, "s", err->msg[0] ? err->msg : jp_code_message(code));
    if (!exc) return NULL;
    PyObject_SetAttrString(exc, "code", PyUnicode_FromString(jp_code_name(code)));
    if (err->offset != JP_NO_OFFSET)
        PyObject_SetAttrString(exc, "offset", PyLong_FromUnsignedLongLong(err->offset));
    else
        PyObject_SetAttrString(exc, "offset", Py_None);
    PyObject_SetAttrString(exc, "member", PyUnicode_FromString(err->member));
    PyErr_SetObject(cls, exc);
    Py_DECREF(exc);
    return NULL;
}

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

static PyObject *core_open(PyObject *mod, PyObject *args, PyObject *kw) {
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
    if (rc) return raise_err(&err);
    IndexObject *self = PyObject_New(IndexObject, &IndexType);
    if (!self) {
        jp_index_close(ix);
        return NULL;
    }
    self->ix = ix;
    return (PyObject *)self;
}

static PyMethodDef core_methods[] = {
    {"open", (PyCFunction)(void (*)(void))core_open, METH_VARARGS | METH_KEYWORDS,
     "open(path, allow_unsafe=False) -> Index"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "jaxport._core", "The jaxport C engine.", -1, core_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void);
PyMODINIT_FUNC PyInit__core(void) {
    PyObject *m = PyModule_Create(&core_module);
    if (!m) return NULL;
    if (PyType_Ready(&IndexType) < 0) goto fail;
    error_base = PyErr_NewExceptionWithDoc("jaxport.errors.JaxportError",
                                           "Base of every error the jaxport engine reports.",
                                           NULL, NULL);
    if (!error_base || PyModule_AddObjectRef(m, "JaxportError", error_base) < 0) goto fail;
    for (int c = JP_OK + 1; c < JP_CODE_COUNT; c++) {
        char name[64], qual[96];
        class_name((jp_code)c, name, sizeof name);
        snprintf(qual, sizeof qual, "jaxport.errors.%s", name);
        error_classes[c] = PyErr_NewExceptionWithDoc(qual, jp_code_message((jp_code)c), error_base, NULL);
        if (!error_classes[c] || PyModule_AddObjectRef(m, name, error_classes[c]) < 0) goto fail;
    }
    if (PyModule_AddStringConstant(m, "version", JP_VERSION_STRING) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
