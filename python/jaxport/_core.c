/* jaxport._core: the CPython face of the C engine.
 *
 * Every jp_code becomes an exception class (jaxport.errors), all deriving
 * from JaxportError and carrying the C message, code, offset and member. */
#include "_core.h"

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
PyObject *jp_py_raise(const jp_err *err) {
    jp_code code = err->code > JP_OK && err->code < JP_CODE_COUNT ? err->code : JP_CORRUPT;
    PyObject *cls = error_classes[code];
    /* Messages quote names from the file, which need not be valid UTF-8. */
    const char *text = err->msg[0] ? err->msg : jp_code_message(code);
    PyObject *exc = PyObject_CallFunction(
        cls, "N", PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "backslashreplace"));
    if (!exc) return NULL;
    PyObject_SetAttrString(exc, "code", PyUnicode_FromString(jp_code_name(code)));
    if (err->offset != JP_NO_OFFSET)
        PyObject_SetAttrString(exc, "offset", PyLong_FromUnsignedLongLong(err->offset));
    else
        PyObject_SetAttrString(exc, "offset", Py_None);
    PyObject_SetAttrString(exc, "member", PyUnicode_DecodeUTF8(err->member, (Py_ssize_t)strlen(err->member),
                                                               "backslashreplace"));
    PyErr_SetObject(cls, exc);
    Py_DECREF(exc);
    return NULL;
}

static PyMethodDef core_methods[] = {
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
    /* Each area of the extension adds its functions and types. */
    if (jp_py_init_index(m) < 0) goto fail;
    if (jp_py_init_kernels(m) < 0) goto fail;
    if (jp_py_init_pickle(m) < 0) goto fail;
    if (jp_py_init_match(m) < 0) goto fail;
    if (jp_py_init_save(m) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
