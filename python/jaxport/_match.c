/* jaxport._core.match: the matcher, and plans read back from their JSON. */
#include "_core.h"

#include <stdlib.h>
#include <string.h>

#include <numpy/arrayobject.h>

#include "exec/exec.h"
#include "match/mapping.h"

/* Target leaves from a sequence of (path, shape, dtype name[, layer class]) tuples. The
 * specs borrow the path strings of `seq`, which the caller keeps alive. */
static jp_leaf_spec *read_leaves(PyObject *seq, size_t *n) {
    PyObject *fast = PySequence_Fast(seq, "leaves must be a sequence of (path, shape, dtype)");
    if (!fast) return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    jp_leaf_spec *specs = calloc((size_t)len + 1, sizeof *specs);
    if (!specs) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i), *shape;
        const char *path, *dt, *kind = NULL;
        if (!PyArg_ParseTuple(item, "sOs|z;a leaf is (path, shape, dtype[, layer class])", &path, &shape, &dt, &kind))
            goto fail;
        jp_leaf_spec *sp = &specs[i];
        sp->path = path;
        sp->kind = kind;
        sp->dtype = jp_dtype_from_name(dt);
        if (sp->dtype == JP_DTYPE_INVALID) {
            PyErr_Format(PyExc_ValueError, "leaf %s: unknown dtype %s", path, dt);
            goto fail;
        }
        Py_ssize_t nd = PySequence_Size(shape);
        if (nd < 0 || nd > JP_MAX_DIMS) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "leaf %s: more than %d dimensions", path, JP_MAX_DIMS);
            goto fail;
        }
        sp->ndim = (int32_t)nd;
        for (Py_ssize_t d = 0; d < nd; d++) {
            PyObject *v = PySequence_GetItem(shape, d);
            sp->shape[d] = v ? PyLong_AsLongLong(v) : -1;
            Py_XDECREF(v);
            if (PyErr_Occurred()) goto fail;
        }
    }
    *n = (size_t)len;
    Py_DECREF(fast); /* the tuples live as long as seq does */
    return specs;
fail:
    free(specs);
    Py_DECREF(fast);
    return NULL;
}

/* A tuple of str as a NULL-free C array borrowing the strings. */
static const char **read_strings(PyObject *seq, size_t *n, const char *what) {
    *n = 0;
    if (!seq || seq == Py_None) return calloc(1, sizeof(char *));
    PyObject *fast = PySequence_Fast(seq, what);
    if (!fast) return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    const char **out = calloc((size_t)len + 1, sizeof *out);
    for (Py_ssize_t i = 0; out && i < len; i++) {
        out[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(fast, i));
        if (!out[i]) {
            free(out);
            out = NULL;
        }
    }
    Py_DECREF(fast);
    if (!out && !PyErr_Occurred()) PyErr_NoMemory();
    *n = (size_t)len;
    return out;
}

/* What match and convert share: the index, the leaves and the options. */
typedef struct call {
    jp_index *ix;
    jp_leaf_spec *specs;
    size_t n;
    const char **hints, **rules;
    jp_match_opts o;
    const char *mapping;
    Py_ssize_t mapping_len;
} call;

static void call_free(call *c) {
    free(c->specs);
    free(c->hints);
    free(c->rules);
}

static int call_parse(call *c, PyObject *index, PyObject *leaves, const char *lib, PyObject *hints,
                      PyObject *rules, int ordered, PyObject *flatten, const char *dtype) {
    memset(c, 0, sizeof *c);
    if (!(c->ix = jp_py_index(index))) return -1;
    if (!jp_lib_from_name(lib, &c->o.lib)) {
        PyErr_Format(PyExc_ValueError, "unknown library %s (flax, nnx, haiku, equinox)", lib);
        return -1;
    }
    c->o.ordered = ordered;
    if (dtype && !jp_dtype_is_castable_float(c->o.dtype = jp_dtype_from_name(dtype))) {
        PyErr_Format(PyExc_ValueError, "dtype %s: floats are cast to float16, bfloat16, float32 or float64 only",
                     dtype);
        return -1;
    }
    if (flatten && flatten != Py_None &&
        !PyArg_ParseTuple(flatten, "LLL;flatten is (C, H, W)", &c->o.flatten.c, &c->o.flatten.h, &c->o.flatten.w))
        return -1;
    size_t nh = 0, nr = 0;
    if (!(c->specs = read_leaves(leaves, &c->n))) return -1;
    if (!(c->hints = read_strings(hints, &nh, "hints must be strings 'src=dst'"))) return -1;
    if (!(c->rules = read_strings(rules, &nr, "rules must be strings: pattern, replacement, ..."))) return -1;
    if (nr % 2) {
        PyErr_SetString(PyExc_ValueError, "rules must come in pairs: pattern, replacement");
        return -1;
    }
    c->o.hints = c->hints, c->o.nhints = nh, c->o.rules = c->rules, c->o.nrules = nr / 2;
    return 0;
}

/* The plan for a call: matched, or read from its mapping. */
static jp_code call_plan(call *c, jp_plan **plan, jp_err *err) {
    return c->mapping ? jp_plan_from_json(plan, c->mapping, (size_t)c->mapping_len, c->ix, c->specs, c->n, err)
                      : jp_match(plan, c->ix, c->specs, c->n, &c->o, err);
}

#define CALL_KWLIST "index", "leaves", "lib", "hints", "rules", "ordered", "flatten", "dtype", "mapping"
#define CALL_FORMAT "OO|$sOOpOzz#"

static PyObject *py_match(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {CALL_KWLIST, NULL};
    PyObject *index, *leaves, *hints = NULL, *rules = NULL, *flatten = NULL;
    const char *lib = "flax", *dtype = NULL;
    call c;
    const char *mapping = NULL;
    Py_ssize_t mapping_len = 0;
    int ordered = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, CALL_FORMAT, kwlist, &index, &leaves, &lib, &hints, &rules,
                                     &ordered, &flatten, &dtype, &mapping, &mapping_len))
        return NULL;
    PyObject *result = NULL;
    if (call_parse(&c, index, leaves, lib, hints, rules, ordered, flatten, dtype) == 0) {
        c.mapping = mapping, c.mapping_len = mapping_len;
        jp_plan *plan = NULL;
        char *json = NULL;
        jp_err err;
        jp_code rc;
        Py_BEGIN_ALLOW_THREADS
        rc = call_plan(&c, &plan, &err);
        if (!rc) rc = jp_plan_to_json(plan, c.ix, c.specs, c.n, c.o.lib, &json, &err);
        Py_END_ALLOW_THREADS
        jp_plan_free(plan);
        if (rc) jp_py_raise(&err);
        else result = PyUnicode_FromString(json);
        free(json);
    }
    call_free(&c);
    return result;
}

/* An empty C-ordered array of descr (stolen) whose data start on a 64-byte
 * boundary: XLA's CPU client keeps such memory as the jax array's own
 * (jax.device_put(may_alias=True)) and copies anything else, and numpy
 * starts its large arrays 16 bytes into a line. The memory is a byte
 * array's, kept as the array's base. */
static PyObject *aligned_empty(int nd, const npy_intp *dims, PyArray_Descr *descr) {
    enum { ALIGN = 64 };
    npy_intp numel = PyArray_OverflowMultiplyList((npy_intp *)dims, nd), bytes;
    if (numel < 0 || __builtin_mul_overflow(numel, (npy_intp)PyDataType_ELSIZE(descr), &bytes) ||
        __builtin_add_overflow(bytes, (npy_intp)ALIGN, &bytes)) {
        Py_DECREF(descr);
        PyErr_SetString(PyExc_ValueError, "array is too big");
        return NULL;
    }
    PyObject *raw = PyArray_SimpleNew(1, &bytes, NPY_UINT8);
    if (!raw) {
        Py_DECREF(descr);
        return NULL;
    }
    char *data = PyArray_DATA((PyArrayObject *)raw);
    data += (ALIGN - (uintptr_t)data % ALIGN) % ALIGN;
    PyObject *a = PyArray_NewFromDescr(&PyArray_Type, descr, nd, (npy_intp *)dims, NULL, data,
                                       NPY_ARRAY_CARRAY, NULL);
    if (!a || PyArray_SetBaseObject((PyArrayObject *)a, raw) < 0) { /* steals raw */
        Py_XDECREF(a);
        if (!a) Py_DECREF(raw);
        return NULL;
    }
    return a;
}

/* Allocate one numpy array per sink tensor, dtypes from the table. */
static PyObject *new_arrays(const jp_sink_tensor *st, size_t n, PyObject *dtypes, void **bufs) {
    PyObject *out = PyDict_New();
    for (size_t i = 0; out && i < n; i++) {
        PyObject *descr = PyDict_GetItemString(dtypes, jp_dtype_numpy_name(st[i].dtype));
        if (!descr) {
            PyErr_Format(PyExc_TypeError, "%s: numpy has no dtype %s (install ml_dtypes)", st[i].name,
                         jp_dtype_numpy_name(st[i].dtype));
            Py_CLEAR(out);
            break;
        }
        npy_intp dims[JP_MAX_DIMS];
        for (int d = 0; d < st[i].ndim; d++) dims[d] = (npy_intp)st[i].shape[d];
        Py_INCREF(descr); /* aligned_empty steals it */
        PyObject *a = aligned_empty(st[i].ndim, dims, (PyArray_Descr *)descr);
        if (!a || PyDict_SetItemString(out, st[i].name, a) < 0) {
            Py_XDECREF(a);
            Py_CLEAR(out);
            break;
        }
        bufs[i] = PyArray_DATA((PyArrayObject *)a);
        Py_DECREF(a);
    }
    return out;
}

/* The executor's progress callback runs on the converting thread, which has
 * released the GIL: take it for the call into Python. An exception in the
 * callback is printed and otherwise ignored (it must not stop the writer
 * halfway with no way to report it). */
static void progress_to_python(void *ctx, uint64_t done, uint64_t total, const char *name) {
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *r = PyObject_CallFunction((PyObject *)ctx, "KKs", (unsigned long long)done,
                                        (unsigned long long)total, name ? name : "");
    if (!r) PyErr_WriteUnraisable((PyObject *)ctx);
    Py_XDECREF(r);
    PyGILState_Release(g);
}

static PyObject *py_convert(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {CALL_KWLIST, "dtypes", "strict", "threads", "allow_unused", "progress", NULL};
    PyObject *index, *leaves, *hints = NULL, *rules = NULL, *flatten = NULL, *dtypes = NULL;
    const char *lib = "flax", *dtype = NULL;
    const char *mapping = NULL;
    Py_ssize_t mapping_len = 0;
    int ordered = 0, strict = 1, threads = 0, allow_unused = 0;
    PyObject *progress = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, CALL_FORMAT "O!pipO", kwlist, &index, &leaves, &lib, &hints, &rules,
                                     &ordered, &flatten, &dtype, &mapping, &mapping_len, &PyDict_Type, &dtypes,
                                     &strict, &threads, &allow_unused, &progress))
        return NULL;
    if (progress != Py_None && !PyCallable_Check(progress)) {
        PyErr_SetString(PyExc_TypeError, "progress must be a function (done, total, name) or None");
        return NULL;
    }
    call c;
    PyObject *arrays = NULL, *result = NULL;
    jp_plan *plan = NULL;
    jp_sink_tensor *st = NULL;
    void **bufs = NULL;
    char *json = NULL;
    jp_pool *pool = NULL;
    jp_err err;
    jp_code rc = JP_OK;
    size_t n = 0;
    if (call_parse(&c, index, leaves, lib, hints, rules, ordered, flatten, dtype) < 0) goto done;
    c.mapping = mapping, c.mapping_len = mapping_len;
    Py_BEGIN_ALLOW_THREADS
    rc = call_plan(&c, &plan, &err);
    if (!rc) rc = jp_plan_to_json(plan, c.ix, c.specs, c.n, c.o.lib, &json, &err);
    if (!rc && strict) rc = jp_plan_check(plan, c.ix, allow_unused, &err);
    if (!rc) rc = jp_exec_sink_tensors(plan, true, &st, &n, &err);
    Py_END_ALLOW_THREADS
    if (rc) {
        jp_py_raise(&err);
        goto done;
    }
    bufs = calloc(n + 1, sizeof *bufs);
    if (!bufs) {
        PyErr_NoMemory();
        goto done;
    }
    if (!(arrays = new_arrays(st, n, dtypes, bufs))) goto done;
    if (threads != 1 && jp_pool_create(&pool, threads, &err)) {
        jp_py_raise(&err);
        goto done;
    }
    jp_sink *sink = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = jp_sink_open_memory(&sink, st, n, bufs, &err);
    jp_exec_opts eo = {.pool = pool, .skip_missing = true};
    if (progress != Py_None) {
        eo.progress = progress_to_python;
        eo.progress_ctx = progress;
    }
    if (!rc) rc = jp_exec_run(plan, c.ix, sink, &eo, &err);
    Py_END_ALLOW_THREADS
    if (rc) jp_py_raise(&err);
    else result = Py_BuildValue("(sO)", json, arrays);
done:
    jp_pool_destroy(pool);
    Py_XDECREF(arrays);
    free(bufs);
    free(st);
    free(json);
    jp_plan_free(plan);
    call_free(&c);
    return result;
}

static PyObject *py_plan_table(PyObject *self, PyObject *arg) {
    (void)self;
    Py_ssize_t len;
    const char *json = PyUnicode_AsUTF8AndSize(arg, &len);
    if (!json) return NULL;
    char *out = NULL;
    jp_err err;
    if (jp_plan_json_table(json, (size_t)len, &out, &err)) return jp_py_raise(&err);
    PyObject *r = PyUnicode_FromString(out);
    free(out);
    return r;
}

static PyObject *py_library_of(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "library_of wants a list of leaf paths");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    const char **paths = malloc(((size_t)n + 1) * sizeof *paths);
    if (!paths) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(paths[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i)))) {
            free(paths);
            Py_DECREF(seq);
            return NULL;
        }
    jp_lib lib = jp_lib_of_paths(paths, (size_t)n);
    free(paths);
    Py_DECREF(seq);
    return PyUnicode_FromString(jp_lib_name(lib));
}

static PyMethodDef methods[] = {
    {"convert", (PyCFunction)(void (*)(void))py_convert, METH_VARARGS | METH_KEYWORDS,
     "convert(index, leaves, *, ..., dtypes, strict=True, threads=0, allow_unused=False, progress=None)\n"
     "    -> (plan json, {leaf: array})\n\n"
     "match's arguments, then the plan run by the executor into new numpy arrays (dtypes maps numpy\n"
     "names to dtypes). strict refuses a plan with missing or ambiguous leaves, or with source weights no\n"
     "leaf takes unless allow_unused; otherwise missing leaves are left out. progress(done, total, name)\n"
     "is called with leaf bytes written, a few times a second at most."},
    {"plan_table", py_plan_table, METH_O, "plan_table(json) -> str: a plan as a table for people."},
    {"library_of", py_library_of, METH_O,
     "library_of(paths) -> 'haiku' or 'flax': the library a plain dict's leaf paths are written for."},
    {"match", (PyCFunction)(void (*)(void))py_match, METH_VARARGS | METH_KEYWORDS,
     "match(index, leaves, *, lib='flax', hints=(), rules=(), ordered=False, flatten=None, dtype=None,\n"
     "      mapping=None) -> str\n\n"
     "Pair the index's tensors with target leaves [(path, shape, dtype)] and return the plan as JSON;\n"
     "with mapping (JSON text), check that plan against both sides instead."},
    {NULL, NULL, 0, NULL},
};

int jp_py_init_match(PyObject *m) {
    import_array1(-1);
    return PyModule_AddFunctions(m, methods);
}
