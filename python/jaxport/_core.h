/* Shared by the files of the jaxport._core extension. */
#ifndef JP_PY_CORE_H
#define JP_PY_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "jaxport.h"

/* Raise the exception class of err->code with its message; returns NULL. */
PyObject *jp_py_raise(const jp_err *err);

/* The jp_index of a jaxport._core.Index, or NULL with TypeError set. */
jp_index *jp_py_index(PyObject *o);

/* For files that include numpy's headers: an array made usable as a
 * source tensor (aligned, native byte order, strides in whole items; copied
 * only when it is not), new reference; and the tensor describing it, named
 * name (borrowed). -1 / NULL with an exception. */
struct tagPyArrayObject;
struct tagPyArrayObject *jp_py_usable_array(PyObject *obj);
int jp_py_describe(jp_tensor *t, struct tagPyArrayObject *a, const char *name);
/* names and arrays, two sequences of one length, as source tensors over
 * the arrays: *ts (n + 1 entries, for PyMem_Free) and *keep, a list holding
 * what the tensors point into (usable arrays, the names' strings), to be
 * kept alive as long as they are. -1 with an exception, nothing to free. */
int jp_py_tensors(PyObject *names, PyObject *arrays, jp_tensor **ts, PyObject **keep, Py_ssize_t *n);

/* One per file: add its functions and types to the module; -1 on error. */
int jp_py_init_index(PyObject *m);
int jp_py_init_kernels(PyObject *m);
int jp_py_init_pickle(PyObject *m);
int jp_py_init_match(PyObject *m);
int jp_py_init_save(PyObject *m);

#endif
