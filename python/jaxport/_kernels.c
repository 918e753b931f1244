/* jaxport._core: the layout and dtype kernels, for tests and benchmarks. */
#include "_core.h"

#include "kernels/kernels.h"

/* ------------------------------------------------------------ Pool */

typedef struct {
    PyObject_HEAD
    jp_pool *pool;
} PoolObject;

static void pool_dealloc(PoolObject *self) {
    jp_pool_destroy(self->pool);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int pool_init(PoolObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"threads", NULL};
    int threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|i", kwlist, &threads)) return -1;
    if (self->pool) return 0; /* __init__ called twice: keep the first pool */
    jp_err err;
    jp_err_clear(&err);
    if (jp_pool_create(&self->pool, threads, &err)) {
        jp_py_raise(&err);
        return -1;
    }
    return 0;
}

static PyObject *pool_threads(PoolObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(jp_pool_threads(self->pool));
}

static PyGetSetDef pool_getset[] = {
    {"threads", (getter)pool_threads, NULL, "Threads that run tasks, the caller's included.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PoolType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "jaxport._core.Pool",
    .tp_basicsize = sizeof(PoolObject),
    .tp_dealloc = (destructor)pool_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Pool(threads=0): worker threads for the kernels (0 = one per core).",
    .tp_init = (initproc)pool_init,
    .tp_new = PyType_GenericNew,
    .tp_getset = pool_getset,
};

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
                             "offset", "out", "threads", "pool", NULL};
    Py_buffer src, out = {0};
    const char *src_name, *dst_name = NULL;
    PyObject *shape_o, *strides_o = Py_None, *perm_o = Py_None, *out_o = Py_None, *pool_o = Py_None;
    long long offset = 0;
    int threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*sO|OOzLOiO", kwlist, &src, &src_name, &shape_o,
                                     &strides_o, &perm_o, &dst_name, &offset, &out_o, &threads,
                                     &pool_o))
        return NULL;
    if (pool_o != Py_None && !PyObject_TypeCheck(pool_o, &PoolType)) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_TypeError, "pool must be a jaxport._core.Pool");
        return NULL;
    }
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
    int64_t first, last;
    if (numel && (offset < 0 || __builtin_add_overflow(offset, lo, &first) || first < 0 ||
                  __builtin_add_overflow(offset, hi, &last) ||
                  (uint64_t)last >= (uint64_t)src.len / ssz)) {
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
    /* A given pool is kept alive by the reference the arguments hold; one
     * made for this call goes with it. */
    jp_pool *given = pool_o != Py_None ? ((PoolObject *)pool_o)->pool : NULL, *made = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = given || threads == 1 ? JP_OK : jp_pool_create(&made, threads, &err);
    if (rc == JP_OK)
        rc = jp_permute_cast_strided(dst, ddt, NULL, numel ? base : src.buf, sdt, (int)ndim, shape,
                                     strides, perm_o == Py_None ? NULL : perm,
                                     given ? given : made, &err);
    jp_pool_destroy(made);
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
     "             out=None, threads=1, pool=None)\n"
     "Copy the strided view of buffer src (strides and offset in elements) into a dense\n"
     "row-major result with axes permuted and elements cast; returns bytes, or None\n"
     "after writing into the writable buffer out. threads: 1 = this thread only,\n"
     "0 = one per core (a pool is started for the call); pool: a Pool to use instead."},
    {NULL, NULL, 0, NULL},
};

int jp_py_init_kernels(PyObject *m) {
    if (PyType_Ready(&PoolType) < 0 || PyModule_AddObjectRef(m, "Pool", (PyObject *)&PoolType) < 0)
        return -1;
    return PyModule_AddFunctions(m, kernel_methods);
}
