/* jaxport._core.pickle_tree: the pickle machine's value tree as plain Python
 * objects, for tests that compare it with what pickle.loads builds. Records
 * stay records: ("global", module, name), ("call" | "object", callable,
 * args, kwargs, state, items, entries) and ("persid", id). */
#include "_core.h"
#include "formats/pickle.h"

#define MAX_DEPTH 200

static PyObject *convert(const jp_pv *v, int depth);

static PyObject *seq(const jp_pv_list *l, int depth) {
    PyObject *out = PyList_New((Py_ssize_t)l->len);
    for (size_t i = 0; out && i < l->len; i++) {
        PyObject *x = convert(l->items[i], depth + 1);
        if (!x) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, x);
    }
    return out;
}

static PyObject *dict(const jp_pv_dict *d, int depth) {
    PyObject *out = PyDict_New();
    for (size_t i = 0; out && i < d->len; i++) {
        PyObject *k = convert(d->keys[i], depth + 1);
        PyObject *x = k ? convert(d->vals[i], depth + 1) : NULL;
        if (!x || PyDict_SetItem(out, k, x) < 0) Py_CLEAR(out);
        Py_XDECREF(k);
        Py_XDECREF(x);
    }
    return out;
}

static PyObject *opt(const jp_pv *v, int depth) {
    if (v) return convert(v, depth + 1);
    Py_RETURN_NONE;
}

static PyObject *convert(const jp_pv *v, int depth) {
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError, "the pickle's values nest too deeply (or contain themselves)");
        return NULL;
    }
    PyObject *l;
    switch (v->kind) {
    case JP_PV_NONE: Py_RETURN_NONE;
    case JP_PV_BOOL: return PyBool_FromLong(v->u.b);
    case JP_PV_INT: return PyLong_FromLongLong(v->u.i);
    case JP_PV_BIGINT: {
        PyObject *args = Py_BuildValue("(y#s)", v->u.str.s, (Py_ssize_t)v->u.str.len, "little");
        PyObject *kw = Py_BuildValue("{sO}", "signed", Py_True);
        PyObject *from = PyObject_GetAttrString((PyObject *)&PyLong_Type, "from_bytes");
        PyObject *r = args && kw && from ? PyObject_Call(from, args, kw) : NULL;
        Py_XDECREF(args);
        Py_XDECREF(kw);
        Py_XDECREF(from);
        return r;
    }
    case JP_PV_FLOAT: return PyFloat_FromDouble(v->u.f);
    case JP_PV_STR: return PyUnicode_DecodeUTF8(v->u.str.s, (Py_ssize_t)v->u.str.len, "surrogatepass");
    case JP_PV_BYTES: return PyBytes_FromStringAndSize(v->u.str.s, (Py_ssize_t)v->u.str.len);
    case JP_PV_TUPLE:
        l = seq(&v->u.seq, depth);
        if (!l) return NULL;
        {
            PyObject *t = PyList_AsTuple(l);
            Py_DECREF(l);
            return t;
        }
    case JP_PV_LIST: return seq(&v->u.seq, depth);
    case JP_PV_SET:
        l = seq(&v->u.seq, depth);
        if (!l) return NULL;
        {
            PyObject *s = PyFrozenSet_New(l);
            Py_DECREF(l);
            return s;
        }
    case JP_PV_DICT: return dict(&v->u.dict, depth);
    case JP_PV_GLOBAL: return Py_BuildValue("(sss)", "global", v->u.global.module, v->u.global.name);
    case JP_PV_CALL:
    case JP_PV_OBJECT:
        return Py_BuildValue("(sNNNNNN)", v->kind == JP_PV_CALL ? "call" : "object",
                             opt(v->u.obj.callable, depth), opt(v->u.obj.args, depth),
                             opt(v->u.obj.kwargs, depth), opt(v->u.obj.state, depth),
                             seq(&v->u.obj.items, depth), dict(&v->u.obj.entries, depth));
    case JP_PV_PERSID: return Py_BuildValue("(sN)", "persid", opt(v->u.persid, depth));
    }
    PyErr_SetString(PyExc_SystemError, "unknown pickle value kind");
    return NULL;
}

static void on_report(void *ctx, jp_pickle_verdict verdict, const char *module, const char *name,
                      uint64_t offset) {
    static const char *const names[] = {"allowed", "class", "called", "denied"};
    PyObject *item = Py_BuildValue("(sssK)", names[verdict], module, name, (unsigned long long)offset);
    if (item) PyList_Append((PyObject *)ctx, item);
    Py_XDECREF(item);
}

static PyObject *pickle_tree(PyObject *mod, PyObject *arg) {
    (void)mod;
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *findings = PyList_New(0);
    jp_arena a;
    jp_arena_init(&a);
    jp_pv *v = NULL;
    jp_err err;
    jp_pickle_opts o = {"pickle", 0, on_report, findings};
    PyObject *result = NULL;
    if (!findings) goto done;
    if (jp_pickle_load(&a, buf.buf, (size_t)buf.len, &o, &v, NULL, &err)) {
        jp_py_raise(&err);
        goto done;
    }
    PyObject *tree = convert(v, 0);
    if (tree) result = Py_BuildValue("(NO)", tree, findings);
done:
    Py_XDECREF(findings);
    jp_arena_free(&a);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef pickle_functions[] = {
    {"pickle_tree", pickle_tree, METH_O,
     "pickle_tree(data) -> (tree, findings): the pickle machine's values as Python objects"},
    {NULL, NULL, 0, NULL},
};

int jp_py_init_pickle(PyObject *m) { return PyModule_AddFunctions(m, pickle_functions); }
