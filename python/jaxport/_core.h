/* Shared by the files of the jaxport._core extension. */
#ifndef JP_PY_CORE_H
#define JP_PY_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "jaxport.h"

/* Raise the exception class of err->code with its message; returns NULL. */
PyObject *jp_py_raise(const jp_err *err);

/* One per file: add its functions and types to the module; -1 on error. */
int jp_py_init_index(PyObject *m);
int jp_py_init_kernels(PyObject *m);
int jp_py_init_pickle(PyObject *m);
int jp_py_init_save(PyObject *m);

#endif
