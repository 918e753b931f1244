/* jaxport._core.save: named numpy arrays into any file jaxport writes.
 *
 * The arrays are described as source tensors (their own memory, their own
 * strides) and run through the executor with an identity plan, so a
 * non-contiguous array is read through its strides, floats are cast in C
 * when a dtype is given, memory stays bounded by the executor's tiles, and
 * the file appears whole or not at all. The GIL is released while bytes are
 * written; the arrays are kept alive by the call's references. */
#include "_core.h"

#include <numpy/arrayobject.h>

#include "exec/exec.h"

/* Tensors at least this big get a pool of threads for casts and permutes. */
#define POOL_BYTES (64u << 20)

/* The jaxport dtype of a numpy array, by its numpy name ("bfloat16" from
 * ml_dtypes included); JP_DTYPE_INVALID with a TypeError otherwise. */
static jp_dtype array_dtype(PyArrayObject *a, const char *name) {
    PyObject *n = PyObject_GetAttrString((PyObject *)PyArray_DESCR(a), "name");
    const char *s = n ? PyUnicode_AsUTF8(n) : NULL;
    jp_dtype dt = s ? jp_dtype_from_name(s) : JP_DTYPE_INVALID;
    if (dt != JP_DTYPE_INVALID && jp_dtype_size(dt) != (size_t)PyArray_ITEMSIZE(a))
        dt = JP_DTYPE_INVALID;
    if (dt == JP_DTYPE_INVALID && s)
        PyErr_Format(PyExc_TypeError, "%s: numpy dtype %s has no counterpart jaxport can write",
                     name, s);
    Py_XDECREF(n);
    return dt;
}

/* t describes array a (aligned, native byte order); -1 with an exception. */
int jp_py_describe(jp_tensor *t, PyArrayObject *a, const char *name) {
    memset(t, 0, sizeof *t);
    t->name = name;
    t->file_offset = JP_NO_OFFSET;
    if ((t->dtype = array_dtype(a, name)) == JP_DTYPE_INVALID) return -1;
    int nd = PyArray_NDIM(a);
    if (nd > JP_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "%s: %d dimensions (at most %d)", name, nd, JP_MAX_DIMS);
        return -1;
    }
    npy_intp isz = PyArray_ITEMSIZE(a);
    t->ndim = nd;
    t->numel = 1;
    for (int d = 0; d < nd; d++) {
        t->shape[d] = PyArray_DIM(a, d);
        t->numel *= (uint64_t)t->shape[d];
        /* numpy strides are bytes; callers made them whole items. */
        t->strides[d] = PyArray_STRIDE(a, d) / isz;
    }
    t->nbytes = t->numel * (uint64_t)isz;
    t->data = t->numel ? PyArray_DATA(a) : NULL;
    t->flags = PyArray_IS_C_CONTIGUOUS(a) ? JP_TENSOR_CONTIGUOUS : 0;
    return 0;
}

/* The array as numpy gives it, copied only when its bytes are swapped or
 * misaligned or its strides are not whole items. New reference. */
PyArrayObject *jp_py_usable_array(PyObject *obj) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_OF(obj, NPY_ARRAY_ALIGNED | NPY_ARRAY_NOTSWAPPED);
    if (!a) return NULL;
    npy_intp isz = PyArray_ITEMSIZE(a);
    bool whole = isz > 0;
    for (int d = 0; whole && d < PyArray_NDIM(a); d++) whole = PyArray_STRIDE(a, d) % isz == 0;
    if (whole) return a;
    PyArrayObject *c = (PyArrayObject *)PyArray_NewCopy(a, NPY_CORDER);
    Py_DECREF(a);
    return c;
}

int jp_py_tensors(PyObject *names_o, PyObject *arrays_o, jp_tensor **ts_out, PyObject **keep_out,
                  Py_ssize_t *n_out) {
    PyObject *names = PySequence_Fast(names_o, "names must be a sequence");
    PyObject *arrays = names ? PySequence_Fast(arrays_o, "arrays must be a sequence") : NULL;
    PyObject *keep = NULL;
    jp_tensor *ts = NULL;
    if (!arrays) goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(names);
    if (PySequence_Fast_GET_SIZE(arrays) != n) {
        PyErr_Format(PyExc_ValueError, "%zd names but %zd arrays", n, PySequence_Fast_GET_SIZE(arrays));
        goto fail;
    }
    /* The arrays, then the names, whose strings the tensors' names are. */
    keep = PyList_New(n + 1);
    ts = PyMem_Calloc((size_t)n + 1, sizeof *ts);
    if (!keep || !ts) {
        PyErr_NoMemory();
        goto fail;
    }
    PyList_SET_ITEM(keep, n, Py_NewRef(names));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name_o = PySequence_Fast_GET_ITEM(names, i);
        const char *name = PyUnicode_Check(name_o) ? PyUnicode_AsUTF8(name_o) : NULL;
        if (!name) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "name %zd is not a str", i);
            goto fail;
        }
        PyArrayObject *a = jp_py_usable_array(PySequence_Fast_GET_ITEM(arrays, i));
        if (!a) goto fail;
        PyList_SET_ITEM(keep, i, (PyObject *)a);
        if (jp_py_describe(&ts[i], a, name) < 0) goto fail;
    }
    Py_DECREF(arrays);
    Py_DECREF(names);
    *ts_out = ts;
    *keep_out = keep;
    *n_out = n;
    return 0;
fail:
    PyMem_Free(ts);
    Py_XDECREF(keep);
    Py_XDECREF(arrays);
    Py_XDECREF(names);
    return -1;
}

static bool ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

static PyObject *py_save(PyObject *mod, PyObject *args, PyObject *kw) {
    (void)mod;
    static char *kwlist[] = {"names", "arrays", "path", "metadata", "dtype", NULL};
    PyObject *names_o, *arrays_o, *path_o, *meta_o = Py_None;
    const char *dtype_name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO&|Oz", kwlist, &names_o, &arrays_o,
                                     PyUnicode_FSConverter, &path_o, &meta_o, &dtype_name))
        return NULL;
    PyObject *keep = NULL, *meta_items = NULL, *result = NULL;
    jp_tensor *ts = NULL;
    jp_meta *meta = NULL;
    jp_plan *plan = NULL;
    Py_ssize_t n = 0, nmeta = 0;
    const char *path = PyBytes_AS_STRING(path_o);
    jp_dtype dtype = JP_DTYPE_INVALID;
    if (dtype_name && !jp_dtype_is_castable_float(dtype = jp_dtype_from_name(dtype_name))) {
        PyErr_Format(PyExc_ValueError, "dtype %s: floats are cast to float16, bfloat16, float32 or "
                     "float64 only", dtype_name);
        goto done;
    }
    if (jp_py_tensors(names_o, arrays_o, &ts, &keep, &n) < 0) goto done;
    uint64_t biggest = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (ts[i].nbytes > biggest) biggest = ts[i].nbytes;
    /* metadata: {str: str}, stored where the format has a place for it. */
    if (meta_o != Py_None) {
        if (!PyDict_Check(meta_o)) {
            PyErr_SetString(PyExc_TypeError, "metadata must be a dict of str to str");
            goto done;
        }
        if (!ends_with(path, ".safetensors")) {
            PyErr_SetString(PyExc_ValueError, "metadata is stored in .safetensors files only");
            goto done;
        }
        meta_items = PyDict_Items(meta_o);
        nmeta = meta_items ? PyList_GET_SIZE(meta_items) : 0;
        meta = PyMem_Calloc((size_t)nmeta + 1, sizeof *meta);
        if (!meta_items || !meta) {
            if (!PyErr_Occurred()) PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < nmeta; i++) {
            PyObject *kv = PyList_GET_ITEM(meta_items, i);
            PyObject *k = PyTuple_GET_ITEM(kv, 0), *v = PyTuple_GET_ITEM(kv, 1);
            if (!PyUnicode_Check(k) || !PyUnicode_Check(v)) {
                PyErr_SetString(PyExc_TypeError, "metadata must be a dict of str to str");
                goto done;
            }
            if (!(meta[i].key = PyUnicode_AsUTF8(k)) || !(meta[i].value = PyUnicode_AsUTF8(v))) goto done;
        }
    }
    jp_err err;
    jp_err_clear(&err);
    jp_code rc = jp_plan_identity_tensors(&plan, ts, (size_t)n, JP_DTYPE_INVALID, &err);
    if (!rc && dtype) rc = jp_plan_cast_floats(plan, dtype, &err);
    if (rc) {
        jp_py_raise(&err);
        goto done;
    }
    jp_sink_opts sink_opts = {.meta = meta, .nmeta = (size_t)nmeta};
    Py_BEGIN_ALLOW_THREADS
    jp_pool *pool = NULL;
    jp_sink_tensor *sts = NULL;
    size_t m = 0;
    jp_sink *sink = NULL;
    if (biggest >= POOL_BYTES && jp_pool_create(&pool, 0, NULL)) pool = NULL;
    rc = jp_exec_sink_tensors(plan, false, &sts, &m, &err);
    if (!rc) rc = jp_sink_open(&sink, path, JP_FORMAT_UNKNOWN, sts, m, &sink_opts, &err);
    free(sts);
    if (!rc) {
        jp_exec_opts opts = {.pool = pool};
        rc = jp_exec_run_tensors(plan, ts, (size_t)n, sink, &opts, &err);
    }
    jp_pool_destroy(pool);
    Py_END_ALLOW_THREADS
    if (rc) {
        jp_py_raise(&err);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    jp_plan_free(plan);
    PyMem_Free(ts);
    PyMem_Free(meta);
    Py_XDECREF(meta_items);
    Py_XDECREF(keep);
    Py_DECREF(path_o);
    return result;
}

static PyMethodDef save_functions[] = {
    {"save", (PyCFunction)(void (*)(void))py_save, METH_VARARGS | METH_KEYWORDS,
     "save(names, arrays, path, metadata=None, dtype=None): write the named numpy arrays to "
     "path in the format its extension names; float arrays are cast to dtype when given."},
    {NULL, NULL, 0, NULL},
};

int jp_py_init_save(PyObject *m) {
    import_array1(-1);
    return PyModule_AddFunctions(m, save_functions);
}
