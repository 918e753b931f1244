/* jaxport._core: the layout and dtype kernels, for tests and benchmarks. */
#include "_core.h"

#include "kernels/kernels.h"

/* Reads a sequence of ints into out[0..n); -1 with an exception on error. */
static int int64_seq(PyObject *seq, int64_t *out, Py_ssize_t n, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (!fast) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        PyErr_Format(PyExc_ValueError, "%s has %zd entries, expected %zd", what,
                     PySequence_Fast_GET_SIZE(fast), n);
        Py_DECREF(fast);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, i));
        if (out[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

static jp_dtype dtype_arg(const char *name) {
    jp_dtype dt = jp_dtype_from_name(name);
    if (dt == JP_DTYPE_INVALID) PyErr_Format(PyExc_ValueError, "unknown dtype %s", name);
    return dt;
}

static PyObject *py_permute_cast(PyObject *mod, PyObject *args, PyObject *kw) {
    (void)mod;
    static char *kwlist[] = {"src", "src_dtype", "shape", "strides", "perm", "dst_dtype",
                             "offset", "out", "threads", NULL};
    Py_buffer src, out = {0};
    const char *src_name, *dst_name = NULL;
    PyObject *shape_o, *strides_o = Py_None, *perm_o = Py_None, *out_o = Py_None;
    long long offset = 0;
    int threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*sO|OOzLOi", kwlist, &src, &src_name, &shape_o,
                                     &strides_o, &perm_o, &dst_name, &offset, &out_o, &threads))
        return NULL;
    PyObject *result = NULL;
    int64_t shape[JP_MAX_DIMS], strides[JP_MAX_DIMS], perm64[JP_MAX_DIMS];
    int perm[JP_MAX_DIMS];
    jp_dtype sdt = dtype_arg(src_name), ddt = dst_name ? dtype_arg(dst_name) : sdt;
    Py_ssize_t ndim = PyObject_Length(shape_o);
    if (sdt == JP_DTYPE_INVALID || ddt == JP_DTYPE_INVALID || ndim < 0) goto done;
    if (ndim > JP_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "%zd dimensions (at most %d)", ndim, JP_MAX_DIMS);
        goto done;
    }
    if (int64_seq(shape_o, shape, ndim, "shape") < 0) goto done;
    if (strides_o != Py_None && int64_seq(strides_o, strides, ndim, "strides") < 0) goto done;
    if (perm_o != Py_None) {
        if (int64_seq(perm_o, perm64, ndim, "perm") < 0) goto done;
        for (Py_ssize_t d = 0; d < ndim; d++) perm[d] = perm64[d] < 0 || perm64[d] > JP_MAX_DIMS ? -1 : (int)perm64[d];
    }
    if (strides_o == Py_None)
        for (Py_ssize_t a = ndim - 1; a >= 0; a--) strides[a] = a == ndim - 1 ? 1 : strides[a + 1] * shape[a + 1];
    /* The view must lie inside the buffer before any byte is read. */
    jp_err err;
    jp_err_clear(&err);
    uint64_t numel;
    int64_t lo, hi;
    size_t ssz = jp_dtype_size(sdt), dsz = jp_dtype_size(ddt);
    if (jp_strided_extent((int)ndim, shape, strides, &numel, &lo, &hi, &err)) {
        jp_py_raise(&err);
        goto done;
    }
    if (numel && (offset + lo < 0 || (uint64_t)(offset + hi) >= (uint64_t)src.len / ssz)) {
        PyErr_SetString(PyExc_ValueError, "the view reaches outside the source buffer");
        goto done;
    }
    size_t nbytes = (size_t)numel * dsz;
    void *dst;
    if (out_o != Py_None) {
        if (PyObject_GetBuffer(out_o, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto done;
        if ((size_t)out.len < nbytes) {
            PyErr_Format(PyExc_ValueError, "out has %zd bytes, %zu needed", out.len, nbytes);
            goto done;
        }
        dst = out.buf;
    } else {
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)nbytes);
        if (!result) goto done;
        dst = PyBytes_AS_STRING(result);
    }
    jp_code rc;
    const unsigned char *base = (const unsigned char *)src.buf + offset * (int64_t)ssz;
    jp_pool *pool = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = threads == 1 ? JP_OK : jp_pool_create(&pool, threads, &err);
    if (rc == JP_OK)
        rc = jp_permute_cast_strided(dst, ddt, NULL, numel ? base : src.buf, sdt, (int)ndim, shape,
                                     strides, perm_o == Py_None ? NULL : perm, pool, &err);
    jp_pool_destroy(pool);
    Py_END_ALLOW_THREADS
    if (rc) {
        Py_CLEAR(result);
        jp_py_raise(&err);
        goto done;
    }
    if (!result) result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&src);
    if (out.obj) PyBuffer_Release(&out);
    return result;
}

static PyMethodDef kernel_methods[] = {
    {"permute_cast", (PyCFunction)(void (*)(void))py_permute_cast, METH_VARARGS | METH_KEYWORDS,
     "permute_cast(src, src_dtype, shape, strides=None, perm=None, dst_dtype=None, offset=0,\n"
     "             out=None, threads=1)\n"
     "Copy the strided view of buffer src (strides and offset in elements) into a dense\n"
     "row-major result with axes permuted and elements cast; returns bytes, or None\n"
     "after writing into the writable buffer out. threads: 1 = this thread only,\n"
     "0 = one per core (a pool is started for the call)."},
    {NULL, NULL, 0, NULL},
};

int jp_py_init_kernels(PyObject *m) { return PyModule_AddFunctions(m, kernel_methods); }
