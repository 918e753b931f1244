/* jaxport._core.match: the matcher, and plans read back from their JSON. */
#include "_core.h"

#include <stdlib.h>
#include <string.h>

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

static PyObject *py_match(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"index", "leaves", "lib", "hints", "rules", "ordered", "flatten", "dtype", "mapping", NULL};
    PyObject *index, *leaves, *hints = NULL, *rules = NULL, *flatten = NULL;
    const char *lib = "flax", *dtype = NULL, *mapping = NULL;
    Py_ssize_t mapping_len = 0;
    int ordered = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|$sOOpOzz#", kwlist, &index, &leaves, &lib, &hints, &rules,
                                     &ordered, &flatten, &dtype, &mapping, &mapping_len))
        return NULL;
    jp_index *ix = jp_py_index(index);
    if (!ix) return NULL;
    jp_match_opts o = {0};
    if (!jp_lib_from_name(lib, &o.lib))
        return PyErr_Format(PyExc_ValueError, "unknown library %s (flax, nnx, haiku, equinox)", lib);
    o.ordered = ordered;
    if (dtype && (o.dtype = jp_dtype_from_name(dtype)) == JP_DTYPE_INVALID)
        return PyErr_Format(PyExc_ValueError, "unknown dtype %s", dtype);
    if (flatten && flatten != Py_None &&
        !PyArg_ParseTuple(flatten, "LLL;flatten is (C, H, W)", &o.flatten.c, &o.flatten.h, &o.flatten.w))
        return NULL;
    size_t n = 0, nh = 0, nr = 0;
    jp_leaf_spec *specs = read_leaves(leaves, &n);
    const char **h = specs ? read_strings(hints, &nh, "hints must be strings 'src=dst'") : NULL;
    const char **r = h ? read_strings(rules, &nr, "rules must be strings: pattern, replacement, ...") : NULL;
    PyObject *result = NULL;
    if (r && nr % 2) PyErr_SetString(PyExc_ValueError, "rules must come in pairs: pattern, replacement");
    if (r && !PyErr_Occurred()) {
        o.hints = h, o.nhints = nh, o.rules = r, o.nrules = nr / 2;
        jp_plan *plan = NULL;
        char *json = NULL;
        jp_err err;
        jp_code rc;
        Py_BEGIN_ALLOW_THREADS
        rc = mapping ? jp_plan_from_json(&plan, mapping, (size_t)mapping_len, ix, specs, n, &err)
                     : jp_match(&plan, ix, specs, n, &o, &err);
        if (!rc) rc = jp_plan_to_json(plan, ix, specs, n, o.lib, &json, &err);
        Py_END_ALLOW_THREADS
        jp_plan_free(plan);
        if (rc) jp_py_raise(&err);
        else result = PyUnicode_FromString(json);
        free(json);
    }
    free(specs);
    free(h);
    free(r);
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

static PyMethodDef methods[] = {
    {"plan_table", py_plan_table, METH_O, "plan_table(json) -> str: a plan as a table for people."},
    {"match", (PyCFunction)(void (*)(void))py_match, METH_VARARGS | METH_KEYWORDS,
     "match(index, leaves, *, lib='flax', hints=(), rules=(), ordered=False, flatten=None, dtype=None,\n"
     "      mapping=None) -> str\n\n"
     "Pair the index's tensors with target leaves [(path, shape, dtype)] and return the plan as JSON;\n"
     "with mapping (JSON text), check that plan against both sides instead."},
    {NULL, NULL, 0, NULL},
};

int jp_py_init_match(PyObject *m) { return PyModule_AddFunctions(m, methods); }
