/* The data-only pickle machine.
 *
 * A pickle is a program for a stack machine: one opcode byte, then its
 * argument, until STOP.
 *
 *   +----+-----------+----+-----------+-- ... --+----+
 *   | op | argument  | op | argument  |         | .  |   '.' is STOP
 *   +----+-----------+----+-----------+-- ... --+----+
 *
 * Arguments are one of: nothing; a fixed-width little-endian integer (1, 2,
 * 4 or 8 bytes; BINFLOAT is an 8-byte big-endian double); a length followed
 * by that many bytes (the length's width depends on the opcode); or, in
 * protocol 0, a text line ending in '\n'. PROTO and FRAME (protocol 4+) are
 * framing only. MARK pushes a position that TUPLE, LIST, DICT, APPENDS,
 * SETITEMS, ADDITEMS, FROZENSET, OBJ and INST pop back to.
 *
 * This machine builds inert values (pickle.h) and never calls, imports or
 * looks anything up. The stack and marks are heap arrays and the memo a
 * hash map, bounded by named limits; every value lives in the caller's
 * arena. Lists and dicts are shared by pointer, so mutation through the
 * memo is visible, and a pickle can make a value contain itself: readers of
 * the tree must bound their depth.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pickle.h"

/* ---------------------------------------------------------------- names */

/* Python 2 wrote some globals under names Python 3 moved. pickle.loads maps
 * them back (fix_imports, on by default, for protocols below 3; the tables
 * are Lib/_compat_pickle.py's NAME_MAPPING and IMPORT_MAPPING): first a
 * (module, name) pair, else the module alone. Both tables are sorted by
 * strcmp, for bsearch. */
typedef struct py2_name {
    const char *module, *name, *to_module, *to_name;
} py2_name;

static const py2_name py2_names[] = {
    {"UserDict", "IterableUserDict", "collections", "UserDict"},
    {"UserDict", "UserDict", "collections", "UserDict"},
    {"UserList", "UserList", "collections", "UserList"},
    {"UserString", "UserString", "collections", "UserString"},
    {"__builtin__", "basestring", "builtins", "str"},
    {"__builtin__", "intern", "sys", "intern"},
    {"__builtin__", "long", "builtins", "int"},
    {"__builtin__", "reduce", "functools", "reduce"},
    {"__builtin__", "unichr", "builtins", "chr"},
    {"__builtin__", "unicode", "builtins", "str"},
    {"__builtin__", "xrange", "builtins", "range"},
    {"_multiprocessing", "Connection", "multiprocessing.connection", "Connection"},
    {"_socket", "fromfd", "socket", "fromfd"},
    {"exceptions", "StandardError", "builtins", "Exception"},
    {"itertools", "ifilter", "builtins", "filter"},
    {"itertools", "ifilterfalse", "itertools", "filterfalse"},
    {"itertools", "imap", "builtins", "map"},
    {"itertools", "izip", "builtins", "zip"},
    {"itertools", "izip_longest", "itertools", "zip_longest"},
    {"multiprocessing", "AuthenticationError", "multiprocessing.context", "AuthenticationError"},
    {"multiprocessing", "BufferTooShort", "multiprocessing.context", "BufferTooShort"},
    {"multiprocessing", "ProcessError", "multiprocessing.context", "ProcessError"},
    {"multiprocessing", "TimeoutError", "multiprocessing.context", "TimeoutError"},
    {"multiprocessing.forking", "Popen", "multiprocessing.popen_fork", "Popen"},
    {"multiprocessing.process", "Process", "multiprocessing.context", "Process"},
    {"socket", "_socketobject", "socket", "SocketType"},
    {"urllib", "ContentTooShortError", "urllib.error", "ContentTooShortError"},
    {"urllib", "getproxies", "urllib.request", "getproxies"},
    {"urllib", "pathname2url", "urllib.request", "pathname2url"},
    {"urllib", "quote", "urllib.parse", "quote"},
    {"urllib", "quote_plus", "urllib.parse", "quote_plus"},
    {"urllib", "unquote", "urllib.parse", "unquote"},
    {"urllib", "unquote_plus", "urllib.parse", "unquote_plus"},
    {"urllib", "url2pathname", "urllib.request", "url2pathname"},
    {"urllib", "urlcleanup", "urllib.request", "urlcleanup"},
    {"urllib", "urlencode", "urllib.parse", "urlencode"},
    {"urllib", "urlopen", "urllib.request", "urlopen"},
    {"urllib", "urlretrieve", "urllib.request", "urlretrieve"},
    {"urllib2", "HTTPError", "urllib.error", "HTTPError"},
    {"urllib2", "URLError", "urllib.error", "URLError"},
    {"whichdb", "whichdb", "dbm", "whichdb"},
};

/* exceptions.X is builtins.X for these (Python 2's exception classes). */
static const char *const py2_exceptions[] = {
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "BufferError",
    "BytesWarning", "DeprecationWarning", "EOFError", "EnvironmentError", "Exception",
    "FloatingPointError", "FutureWarning", "GeneratorExit", "IOError", "ImportError",
    "ImportWarning", "IndentationError", "IndexError", "KeyError", "KeyboardInterrupt",
    "LookupError", "MemoryError", "NameError", "NotImplementedError", "OSError", "OverflowError",
    "PendingDeprecationWarning", "ReferenceError", "RuntimeError", "RuntimeWarning",
    "StopIteration", "SyntaxError", "SyntaxWarning", "SystemError", "SystemExit", "TabError",
    "TypeError", "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError",
    "UnicodeTranslateError", "UnicodeWarning", "UserWarning", "ValueError", "Warning",
    "ZeroDivisionError", NULL};

static const char *const py2_modules[][2] = {
    {"BaseHTTPServer", "http.server"}, {"CGIHTTPServer", "http.server"},
    {"ConfigParser", "configparser"}, {"Cookie", "http.cookies"}, {"Dialog", "tkinter.dialog"},
    {"DocXMLRPCServer", "xmlrpc.server"}, {"FileDialog", "tkinter.filedialog"},
    {"HTMLParser", "html.parser"}, {"Queue", "queue"}, {"ScrolledText", "tkinter.scrolledtext"},
    {"SimpleDialog", "tkinter.simpledialog"}, {"SimpleHTTPServer", "http.server"},
    {"SimpleXMLRPCServer", "xmlrpc.server"}, {"SocketServer", "socketserver"}, {"StringIO", "io"},
    {"Tix", "tkinter.tix"}, {"Tkconstants", "tkinter.constants"}, {"Tkdnd", "tkinter.dnd"},
    {"Tkinter", "tkinter"}, {"UserDict", "collections"}, {"UserList", "collections"},
    {"UserString", "collections"}, {"__builtin__", "builtins"}, {"_abcoll", "collections.abc"},
    {"_elementtree", "xml.etree.ElementTree"}, {"_winreg", "winreg"}, {"anydbm", "dbm"},
    {"cPickle", "pickle"}, {"cStringIO", "io"}, {"commands", "subprocess"},
    {"cookielib", "http.cookiejar"}, {"copy_reg", "copyreg"}, {"dbhash", "dbm.bsd"},
    {"dbm", "dbm.ndbm"}, {"dumbdbm", "dbm.dumb"}, {"dummy_thread", "_dummy_thread"},
    {"gdbm", "dbm.gnu"}, {"htmlentitydefs", "html.entities"}, {"httplib", "http.client"},
    {"markupbase", "_markupbase"}, {"repr", "reprlib"}, {"robotparser", "urllib.robotparser"},
    {"test.test_support", "test.support"}, {"thread", "_thread"},
    {"tkColorChooser", "tkinter.colorchooser"}, {"tkCommonDialog", "tkinter.commondialog"},
    {"tkFileDialog", "tkinter.filedialog"}, {"tkFont", "tkinter.font"},
    {"tkMessageBox", "tkinter.messagebox"}, {"tkSimpleDialog", "tkinter.simpledialog"},
    {"ttk", "tkinter.ttk"}, {"urllib2", "urllib.request"}, {"urlparse", "urllib.parse"},
    {"whichdb", "dbm"}, {"xmlrpclib", "xmlrpc.client"},
};

static bool name_in(const char *name, const char *const *list) {
    for (; *list; list++)
        if (strcmp(name, *list) == 0) return true;
    return false;
}

static int cmp_py2_name(const void *key, const void *entry) {
    const py2_name *k = key, *e = entry;
    int c = strcmp(k->module, e->module);
    return c ? c : strcmp(k->name, e->name);
}

static int cmp_py2_module(const void *key, const void *entry) {
    return strcmp(key, *(const char *const *)entry);
}

/* The Python 3 names of a global, as pickle.loads would look it up. The
 * results are the arguments or static strings. */
static void py3_names(const char **module, const char **name) {
    py2_name key = {*module, *name, NULL, NULL};
    const py2_name *e = bsearch(&key, py2_names, sizeof py2_names / sizeof py2_names[0],
                                sizeof py2_names[0], cmp_py2_name);
    if (e) {
        *module = e->to_module;
        *name = e->to_name;
        return;
    }
    if (strcmp(*module, "exceptions") == 0 && name_in(*name, py2_exceptions)) {
        *module = "builtins";
        return;
    }
    const char *const *m = bsearch(*module, py2_modules, sizeof py2_modules / sizeof py2_modules[0],
                                   sizeof py2_modules[0], cmp_py2_module);
    if (m) *module = m[1];
}

/* ---------------------------------------------------------------- verdicts */

static bool module_is(const char *module, const char *m) {
    if (module[0] != m[0]) return false; /* most calls end here */
    size_t n = strlen(m);
    return strncmp(module, m, n) == 0 && (module[n] == '\0' || module[n] == '.');
}

/* `name` is `prefix` followed by one or more of the characters in `tail`. */
static bool name_is(const char *name, const char *prefix, const char *tail) {
    size_t n = strlen(prefix);
    return strncmp(name, prefix, n) == 0 && name[n] && strspn(name + n, tail) == strlen(name + n);
}

/* The verdict for an attribute `name` (no '.') of `module`. */
static jp_pickle_verdict judge_plain(const char *module, const char *name) {
    /* Entry points that run code or touch the system, however they are used. */
    static const char *const denied_modules[] = {
        "os", "posix", "nt", "subprocess", "sys", "importlib", "runpy", "shutil", "socket",
        "pty", "webbrowser", "ctypes", "pickle", "_pickle", "cPickle", "marshal", "code",
        "codeop", "commands", "multiprocessing", "asyncio", "torch.hub", "signal", "pdb",
        "timeit", "tempfile", "glob", "requests", "urllib", "http", "_thread", "socketserver",
        "xmlrpc", NULL};
    static const char *const denied_builtins[] = {
        "eval", "exec", "execfile", "compile", "open", "__import__", "getattr", "setattr",
        "delattr", "globals", "locals", "vars", "input", "breakpoint", "apply", "memoryview",
        "type", "super", "classmethod", "staticmethod", "property", NULL};
    for (const char *const *m = denied_modules; *m; m++)
        if (module_is(module, *m)) return JP_GLOBAL_DENIED;
    if (strcmp(module, "builtins") == 0 && name_in(name, denied_builtins)) return JP_GLOBAL_DENIED;
    static const char *const denied_types[] = {"FunctionType", "CodeType", "LambdaType",
                                               "MethodType", NULL};
    static const char *const denied_operator[] = {"attrgetter", "methodcaller", "itemgetter",
                                                  NULL};
    if (strcmp(module, "types") == 0 && name_in(name, denied_types)) return JP_GLOBAL_DENIED;
    if ((strcmp(module, "operator") == 0 || strcmp(module, "_operator") == 0) &&
        name_in(name, denied_operator))
        return JP_GLOBAL_DENIED;
    if (strcmp(module, "functools") == 0 && strcmp(name, "partial") == 0) return JP_GLOBAL_DENIED;
    /* torch.storage._load_from_bytes runs torch.load on nested bytes. */
    if (strcmp(module, "torch.storage") == 0 && strcmp(name, "_load_from_bytes") == 0)
        return JP_GLOBAL_DENIED;

    /* What torch.load(weights_only=True) also accepts, and nothing more. */
    static const char *const torch_utils[] = {
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state", "_rebuild_qtensor", NULL};
    static const char *const plain_builtins[] = {
        "set", "frozenset", "slice", "complex", "bytearray", "tuple", "list", "dict", "int",
        "float", "bool", "str", "bytes", "range", NULL};
    static const char *const alnum = "abcdefghijklmnopqrstuvwxyz0123456789";
    if (strcmp(module, "torch._utils") == 0 && name_in(name, torch_utils)) return JP_GLOBAL_ALLOWED;
    if (strcmp(module, "torch._tensor") == 0 && strcmp(name, "_rebuild_from_type_v2") == 0)
        return JP_GLOBAL_ALLOWED;
    if (strcmp(module, "torch") == 0) {
        size_t n = strlen(name);
        /* Storage classes (FloatStorage ...), dtypes (float32, complex64,
         * float8_e4m3fn ...), Size, device, Tensor: torch's own names, no
         * dunder or private functions. */
        if ((n > 7 && strcmp(name + n - 7, "Storage") == 0 && name[0] >= 'A' && name[0] <= 'Z') ||
            strcmp(name, "Size") == 0 || strcmp(name, "device") == 0 ||
            strcmp(name, "Tensor") == 0 || jp_dtype_from_name(name) != JP_DTYPE_INVALID ||
            strcmp(name, "float") == 0 || strcmp(name, "double") == 0 ||
            strcmp(name, "half") == 0 || strcmp(name, "long") == 0 || strcmp(name, "int") == 0 ||
            strcmp(name, "short") == 0 || name_is(name, "complex", "0123456789") ||
            name_is(name, "float8_", alnum) || name_is(name, "float4_", alnum) ||
            strcmp(name, "cfloat") == 0 || strcmp(name, "cdouble") == 0 ||
            strcmp(name, "chalf") == 0)
            return JP_GLOBAL_ALLOWED;
    }
    if (strcmp(module, "torch.storage") == 0 &&
        (strcmp(name, "UntypedStorage") == 0 || strcmp(name, "TypedStorage") == 0))
        return JP_GLOBAL_ALLOWED;
    if (strcmp(module, "torch.nn.parameter") == 0 && strcmp(name, "Parameter") == 0)
        return JP_GLOBAL_ALLOWED;
    if (strcmp(module, "collections") == 0 && strcmp(name, "OrderedDict") == 0)
        return JP_GLOBAL_ALLOWED;
    if (strcmp(module, "builtins") == 0 && name_in(name, plain_builtins)) return JP_GLOBAL_ALLOWED;
    if (strcmp(module, "_codecs") == 0 && strcmp(name, "encode") == 0) return JP_GLOBAL_ALLOWED;
    if (strcmp(module, "copyreg") == 0 && strcmp(name, "_reconstructor") == 0)
        return JP_GLOBAL_ALLOWED;
    if ((strcmp(module, "numpy.core.multiarray") == 0 ||
         strcmp(module, "numpy._core.multiarray") == 0) &&
        (strcmp(name, "_reconstruct") == 0 || strcmp(name, "scalar") == 0))
        return JP_GLOBAL_ALLOWED;
    if (strcmp(module, "numpy") == 0 && (strcmp(name, "ndarray") == 0 || strcmp(name, "dtype") == 0))
        return JP_GLOBAL_ALLOWED;
    if (strcmp(module, "numpy.dtypes") == 0) return JP_GLOBAL_ALLOWED;
    return JP_GLOBAL_CLASS; /* refined to CALLED at a calling use */
}

/* A dotted name is a chain of getattr from the module (protocol 4 resolves
 * it so): module "torch", name "hub.load" is torch.hub.load. Any link may
 * be a module that another one imported (numpy.dtypes.os is os), so every
 * run of links is judged as a module path and an attribute: from the module
 * itself and from each link. A dunder link (__globals__, __class__ ...)
 * reaches anything. Nothing reached this way is on the allow list, which
 * names objects as torch writes them: at best it is an unknown class. */
static jp_pickle_verdict judge_chain(const char *module, const char *name) {
    const char *part[JP_PICKLE_MAX_NAME_PARTS];
    size_t len[JP_PICKLE_MAX_NAME_PARTS], k = 0;
    for (const char *p = name;; p++) {
        const char *dot = strchr(p, '.');
        if (k == JP_PICKLE_MAX_NAME_PARTS) return JP_GLOBAL_DENIED;
        part[k] = p;
        len[k] = dot ? (size_t)(dot - p) : strlen(p);
        if (len[k] >= 4 && p[0] == '_' && p[1] == '_' && p[len[k] - 1] == '_' && p[len[k] - 2] == '_')
            return JP_GLOBAL_DENIED;
        k++;
        if (!dot) break;
        p = dot;
    }
    /* Both are at most JP_PICKLE_MAX_NAME bytes (jp_pickle_judge). */
    char path[2 * JP_PICKLE_MAX_NAME + 2], attr[JP_PICKLE_MAX_NAME + 1];
    size_t nm = strlen(module);
    /* Start s = 0 is the module; s > 0 is link s - 1. Every denial above
     * names a module of at most two parts (torch.hub, torch.storage), and an
     * attribute of it: a run from any start denies within two steps, or not
     * at all. Raise DEPTH with any deeper entry. */
    enum { DEPTH = 2 };
    for (size_t s = 0; s < k; s++) {
        size_t np = s == 0 ? nm : len[s - 1];
        memcpy(path, s == 0 ? module : part[s - 1], np);
        path[np] = '\0';
        for (size_t j = s; j < k && j < s + DEPTH; j++) {
            memcpy(attr, part[j], len[j]);
            attr[len[j]] = '\0';
            if (judge_plain(path, attr) == JP_GLOBAL_DENIED) return JP_GLOBAL_DENIED;
            path[np++] = '.';
            memcpy(path + np, attr, len[j] + 1);
            np += len[j];
        }
    }
    return JP_GLOBAL_CLASS;
}

static jp_pickle_verdict judge_names(const char *module, const char *name) {
    return strchr(name, '.') ? judge_chain(module, name) : judge_plain(module, name);
}

static bool longer_than(const char *s, size_t max) {
    for (size_t n = 0; n <= max; n++)
        if (!s[n]) return false;
    return true;
}

/* Denied under the names as written or as Python 3 maps them; otherwise as
 * mapped, so copy_reg._reconstructor is copyreg._reconstructor. Names too
 * long to be real are denied unread. */
jp_pickle_verdict jp_pickle_judge(const char *module, const char *name) {
    if (longer_than(module, JP_PICKLE_MAX_NAME) || longer_than(name, JP_PICKLE_MAX_NAME))
        return JP_GLOBAL_DENIED;
    jp_pickle_verdict v = judge_names(module, name);
    const char *m3 = module, *n3 = name;
    py3_names(&m3, &n3);
    if (v == JP_GLOBAL_DENIED || (m3 == module && n3 == name)) return v;
    return judge_names(m3, n3);
}

/* ---------------------------------------------------------------- machine */

typedef struct vm {
    jp_arena *a;
    jp_cur c;
    const jp_pickle_opts *o;
    jp_err *err;
    jp_pv **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    jp_pv **dense;          /* memo keys below densecap */
    size_t densecap;
    struct memo_slot *memo; /* other keys: 1 << memobits slots, or NULL */
    unsigned memobits;
    size_t memohashed;      /* keys in the hash map */
    size_t memolen;         /* distinct keys, in both parts */
    size_t nvalues, budget;
    uint64_t op_off; /* file offset of the current opcode */
    int proto;       /* the last PROTO's argument; 0 before any */
    const char *op_name;
} vm;

static jp_code fail(vm *m, jp_code code, const char *fmt, const char *detail) {
    char body[JP_ERR_MSG_MAX];
    snprintf(body, sizeof body, fmt, detail ? detail : "");
    return jp_err_set(m->err, code, m->op_off, m->o->member, "%s: %s", m->op_name, body);
}

static jp_code truncated(vm *m) {
    return fail(m, JP_TRUNCATED, "the pickle ends inside this opcode's argument%s", NULL);
}

static jp_pv *new_value(vm *m, jp_pv_kind kind) {
    if (m->nvalues >= m->budget) return NULL;
    jp_pv *v = jp_arena_alloc(m->a, sizeof *v);
    if (!v) return NULL;
    m->nvalues++;
    v->kind = kind;
    v->offset = m->op_off;
    return v;
}

static jp_code no_memory(vm *m) {
    if (m->nvalues >= m->budget)
        return fail(m, JP_LIMIT, "more values and entries than this pickle's size allows%s", NULL);
    return fail(m, JP_NO_MEMORY, "out of memory%s", NULL);
}

static jp_code push(vm *m, jp_pv *v) {
    if (!v) return no_memory(m);
    if (m->sp == m->scap) {
        if (m->scap >= JP_PICKLE_MAX_STACK)
            return fail(m, JP_LIMIT, "the stack is deeper than the limit%s", NULL);
        size_t cap = m->scap ? m->scap * 2 : 64;
        jp_pv **s = realloc(m->stack, cap * sizeof *s);
        if (!s) return no_memory(m);
        m->stack = s;
        m->scap = cap;
    }
    m->stack[m->sp++] = v;
    return JP_OK;
}

static jp_pv *pop(vm *m) {
    size_t floor = m->nmarks ? m->marks[m->nmarks - 1] : 0;
    if (m->sp <= floor) return NULL;
    return m->stack[--m->sp];
}

static jp_pv *top(vm *m) {
    size_t floor = m->nmarks ? m->marks[m->nmarks - 1] : 0;
    return m->sp > floor ? m->stack[m->sp - 1] : NULL;
}

static jp_code underflow(vm *m) { return fail(m, JP_CORRUPT, "the stack is empty%s", NULL); }

/* Pop back to the last MARK: items are stack[*first .. sp). */
static jp_code pop_mark(vm *m, size_t *first) {
    if (!m->nmarks) return fail(m, JP_CORRUPT, "no MARK to pop back to%s", NULL);
    *first = m->marks[--m->nmarks];
    return JP_OK;
}

/* ---- containers */

static bool list_reserve(jp_arena *a, jp_pv ***items, size_t len, size_t *cap, size_t more) {
    if (more <= *cap - len) return true;
    size_t want = len + more, ncap = *cap ? *cap : 4;
    while (ncap < want) ncap *= 2;
    jp_pv **n = jp_arena_alloc_array(a, ncap, sizeof *n);
    if (!n) return false;
    if (len) memcpy(n, *items, len * sizeof *n);
    *items = n;
    *cap = ncap;
    return true;
}

static bool list_extend(jp_arena *a, jp_pv_list *l, jp_pv **src, size_t n) {
    if (n == 0) return true; /* an empty APPENDS on a list that has no storage yet */
    if (!list_reserve(a, &l->items, l->len, &l->cap, n)) return false;
    memcpy(l->items + l->len, src, n * sizeof *src);
    l->len += n;
    return true;
}

/* Keys are appended in order, never looked up: a pickle that sets a key
 * twice keeps both entries, and readers see the last. A lookup per insert
 * would make every state dict quadratic in its size. */
static bool dict_set(jp_arena *a, jp_pv_dict *d, jp_pv *k, jp_pv *v) {
    if (d->len == d->cap) {
        size_t cap = d->cap;
        size_t cap2 = cap;
        if (!list_reserve(a, &d->keys, d->len, &cap, 1) || !list_reserve(a, &d->vals, d->len, &cap2, 1))
            return false;
        d->cap = cap < cap2 ? cap : cap2;
    }
    d->keys[d->len] = k;
    d->vals[d->len] = v;
    d->len++;
    return true;
}

/* Container entries count against the same budget as values, so that DUP,
 * memo and BUILD tricks cannot make a small pickle build a huge tree. */
static jp_code charge(vm *m, size_t entries) {
    if (entries > m->budget - m->nvalues)
        return fail(m, JP_LIMIT, "more values and entries than this pickle's size allows%s", NULL);
    m->nvalues += entries;
    return JP_OK;
}

static jp_pv *make_seq(vm *m, jp_pv_kind kind, jp_pv **items, size_t n) {
    jp_pv *v = new_value(m, kind);
    if (!v || charge(m, n)) return NULL;
    if (n && !list_extend(m->a, &v->u.seq, items, n)) return NULL;
    return v;
}

/* ---- arguments */

static bool take(vm *m, size_t n, const uint8_t **p) {
    *p = jp_cur_take(&m->c, n);
    return *p != NULL || n == 0;
}

/* A protocol-0 text line without its '\n'. */
static jp_code line(vm *m, const uint8_t **p, size_t *n) {
    size_t left = jp_cur_left(&m->c);
    const uint8_t *s = m->c.base + m->c.pos;
    const uint8_t *nl = left ? memchr(s, '\n', left) : NULL;
    if (!nl) return truncated(m);
    *p = s;
    *n = (size_t)(nl - s);
    m->c.pos += *n + 1;
    return JP_OK;
}

static jp_code sized(vm *m, int width, const uint8_t **p, size_t *n) {
    uint64_t len = jp_cur_le(&m->c, width);
    if (m->c.failed) return truncated(m);
    if (len > jp_cur_left(&m->c)) {
        char d[96];
        snprintf(d, sizeof d, "%llu bytes are announced but %zu remain", (unsigned long long)len,
                 jp_cur_left(&m->c));
        return fail(m, JP_TRUNCATED, "%s", d);
    }
    *n = (size_t)len;
    *p = jp_cur_take(&m->c, *n);
    return JP_OK;
}

static jp_pv *make_str(vm *m, jp_pv_kind kind, const uint8_t *s, size_t n) {
    jp_pv *v = new_value(m, kind);
    if (!v) return NULL;
    v->u.str.s = jp_arena_strndup(m->a, (const char *)s, n);
    v->u.str.len = n;
    return v->u.str.s ? v : NULL;
}

/* How text must be encoded: BINUNICODE and friends are UTF-8 that pickle.loads
 * reads with "surrogatepass" (an encoded lone surrogate is kept); GLOBAL
 * names are strict UTF-8; INST and PERSID lines are ASCII. Names are C
 * strings in the tree, so they may hold no NUL either. */
typedef enum text_rule { TEXT_UTF8_SURROGATES, TEXT_NAME_UTF8, TEXT_NAME_ASCII, TEXT_ASCII } text_rule;

/* The index of the first byte that breaks the rule, or n when none does.
 * Well-formed UTF-8 has no overlong forms, nothing beyond U+10FFFF and no
 * sequence cut short. */
static size_t text_bad(const uint8_t *s, size_t n, text_rule rule) {
    bool names = rule == TEXT_NAME_UTF8 || rule == TEXT_NAME_ASCII;
    bool ascii = rule == TEXT_NAME_ASCII || rule == TEXT_ASCII;
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            if (b == 0 && names) return i;
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (ascii) return i;
        if (b >= 0xc2 && b <= 0xdf) len = 2, cp = b & 0x1fu;
        else if (b >= 0xe0 && b <= 0xef) len = 3, cp = b & 0x0fu;
        else if (b >= 0xf0 && b <= 0xf4) len = 4, cp = b & 0x07u;
        else return i;
        if (len > n - i) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff && rule != TEXT_UTF8_SURROGATES))
            return i;
        i += len;
    }
    return n;
}

static jp_code check_text(vm *m, const uint8_t *s, size_t n, text_rule rule) {
    size_t bad = text_bad(s, n, rule);
    if (bad == n) return JP_OK;
    static const char *const what[] = {"UTF-8", "a name in UTF-8 without NUL or surrogates",
                                       "an ASCII name without NUL", "ASCII"};
    char d[128];
    snprintf(d, sizeof d, "byte 0x%02x at position %zu of the text breaks it: expected %s", s[bad],
             bad, what[rule]);
    return fail(m, JP_CORRUPT, "%s", d);
}

/* A global's module or name: no longer than the limit, checked first so
 * that a long memoized string used again and again costs nothing. */
static jp_code check_name(vm *m, const uint8_t *s, size_t n, text_rule rule) {
    if (n > JP_PICKLE_MAX_NAME)
        return fail(m, JP_LIMIT, "a global's module or name longer than the limit%s", NULL);
    return check_text(m, s, n, rule);
}

/* Little-endian two's complement of n bytes: INT when it fits int64. */
static jp_pv *make_long(vm *m, const uint8_t *p, size_t n) {
    if (n <= 8) {
        uint64_t u = n ? jp_load_le(p, (int)n) : 0;
        if (n && n < 8 && (p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
        jp_pv *v = new_value(m, JP_PV_INT);
        if (v) v->u.i = (int64_t)u;
        return v;
    }
    return make_str(m, JP_PV_BIGINT, p, n);
}

/* A decimal magnitude of more than 19 digits as the shortest little-endian
 * two's complement of +-it, the bytes LONG1 would carry. Nine digits at a
 * time go into 32-bit limbs; each step adds at most one limb, so the limbs
 * never outnumber the steps. */
static jp_code text_bigint(vm *m, const uint8_t *d, size_t nd, bool neg) {
    enum { LIMBS = JP_PICKLE_MAX_INT_DIGITS / 9 + 2 };
    uint32_t limb[LIMBS];
    uint8_t out[4 * LIMBS + 1];
    size_t nl = 0;
    for (size_t i = 0; i < nd;) {
        size_t take = i == 0 && nd % 9 ? nd % 9 : 9;
        uint64_t chunk = 0, mul = 1;
        for (size_t k = 0; k < take; k++, i++) {
            chunk = chunk * 10 + (uint64_t)(d[i] - '0');
            mul *= 10;
        }
        uint64_t carry = chunk;
        for (size_t k = 0; k < nl; k++) {
            uint64_t t = (uint64_t)limb[k] * mul + carry;
            limb[k] = (uint32_t)t;
            carry = t >> 32;
        }
        if (carry) limb[nl++] = (uint32_t)carry;
    }
    size_t n = 0;
    for (size_t k = 0; k < nl; k++)
        for (int b = 0; b < 32; b += 8) out[n++] = (uint8_t)(limb[k] >> b);
    while (n && out[n - 1] == 0) n--;
    if (neg) {
        /* Two's complement: invert, add one. */
        unsigned carry = 1;
        for (size_t k = 0; k < n; k++) {
            unsigned t = (unsigned)(uint8_t)~out[k] + carry;
            out[k] = (uint8_t)t;
            carry = t >> 8;
        }
        if (!(out[n - 1] & 0x80)) out[n++] = 0xff;
    } else if (out[n - 1] & 0x80) {
        out[n++] = 0;
    }
    return push(m, make_str(m, JP_PV_BIGINT, out, n));
}

/* Decimal text (protocol 0 INT/LONG); "00"/"01" are the bools of INT.
 * pickle.loads reads these with base 0 (INT first with strtol), so a leading
 * zero means octal to one and an error to the other: refused here, as Python
 * never writes one. Beyond int64 the value is a BIGINT, up to Python's limit
 * on digits in an int conversion. */
static jp_code text_int(vm *m, bool is_long) {
    const uint8_t *p = NULL;
    size_t n = 0;
    jp_code rc = line(m, &p, &n);
    if (rc) return rc;
    if (is_long && n && p[n - 1] == 'L') n--;
    if (!is_long && n == 2 && p[0] == '0' && (p[1] == '0' || p[1] == '1')) {
        jp_pv *v = new_value(m, JP_PV_BOOL);
        if (v) v->u.b = p[1] == '1';
        return push(m, v);
    }
    size_t i = 0;
    bool neg = false;
    if (i < n && (p[i] == '-' || p[i] == '+')) neg = p[i++] == '-';
    if (i == n) return fail(m, JP_CORRUPT, "an integer with no digits%s", NULL);
    const uint8_t *d = p + i;
    size_t nd = n - i, lead = 0;
    for (size_t k = 0; k < nd; k++)
        if (d[k] < '0' || d[k] > '9') return fail(m, JP_CORRUPT, "a non-digit in an integer%s", NULL);
    while (lead < nd && d[lead] == '0') lead++;
    if (lead && lead < nd)
        return fail(m, JP_CORRUPT, "an integer with a leading zero (octal to pickle.loads)%s", NULL);
    if (nd > JP_PICKLE_MAX_INT_DIGITS)
        return fail(m, JP_LIMIT, "an integer of more digits than Python converts%s", NULL);
    d += lead;
    nd -= lead;
    uint64_t u = 0;
    if (nd <= 19) { /* below 10**19 < 2**64 */
        for (size_t k = 0; k < nd; k++) u = u * 10 + (uint64_t)(d[k] - '0');
        if (u <= (uint64_t)INT64_MAX + (neg ? 1 : 0)) {
            jp_pv *v = new_value(m, JP_PV_INT);
            if (v) v->u.i = neg ? (int64_t)(0 - u) : (int64_t)u;
            return push(m, v);
        }
    }
    return text_bigint(m, d, nd, neg);
}

static jp_code text_float(vm *m) {
    const uint8_t *p = NULL;
    size_t n = 0;
    jp_code rc = line(m, &p, &n);
    if (rc) return rc;
    char buf[64];
    if (n == 0 || n >= sizeof buf) return fail(m, JP_CORRUPT, "a malformed float%s", NULL);
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end;
    double d = strtod(buf, &end);
    if (*end) return fail(m, JP_CORRUPT, "a malformed float%s", NULL);
    jp_pv *v = new_value(m, JP_PV_FLOAT);
    if (v) v->u.f = d;
    return push(m, v);
}

static int hexval(uint8_t ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static size_t put_utf8(uint8_t *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xc0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xe0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (uint8_t)(0xf0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* Protocol-0 STRING: a quoted Python 2 str repr with backslash escapes. The
 * decoded text is never longer than the quoted one. */
static jp_code text_string(vm *m) {
    const uint8_t *p = NULL;
    size_t n = 0;
    jp_code rc = line(m, &p, &n);
    if (rc) return rc;
    if (n < 2 || (p[0] != '\'' && p[0] != '"') || p[n - 1] != p[0])
        return fail(m, JP_CORRUPT, "the STRING argument is not quoted%s", NULL);
    uint8_t *out = jp_arena_alloc(m->a, n);
    if (!out) return no_memory(m);
    size_t o = 0;
    for (size_t i = 1; i + 1 < n; i++) {
        if (p[i] != '\\' || i + 2 >= n) {
            out[o++] = p[i];
            continue;
        }
        uint8_t e = p[++i];
        switch (e) {
        case 'n': out[o++] = '\n'; break;
        case 't': out[o++] = '\t'; break;
        case 'r': out[o++] = '\r'; break;
        case '\\': case '\'': case '"': out[o++] = e; break;
        case 'x':
            if (i + 2 < n - 1 && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
                out[o++] = (uint8_t)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
                i += 2;
                break;
            }
            return fail(m, JP_CORRUPT, "a malformed \\x escape%s", NULL);
        default:
            if (e >= '0' && e <= '7') {
                unsigned v = (unsigned)(e - '0');
                for (int k = 0; k < 2 && i + 1 < n - 1 && p[i + 1] >= '0' && p[i + 1] <= '7'; k++)
                    v = v * 8 + (unsigned)(p[++i] - '0');
                out[o++] = (uint8_t)v;
            } else {
                out[o++] = '\\';
                out[o++] = e;
            }
        }
    }
    return push(m, make_str(m, JP_PV_BYTES, out, o));
}

/* Protocol-0 UNICODE: raw-unicode-escape, as CPython decodes it. Bytes are
 * Latin-1 code points. A run of backslashes stays as written, except that
 * when the run is odd and a 'u' or 'U' follows, its last backslash starts an
 * escape of exactly 4 or 8 hex digits (fewer, or a non-hex digit, is an
 * error, as is a code point beyond U+10FFFF). So "\\u0041" is six
 * characters and "\\\u0041" is "\\A". Each input byte yields at most 2
 * UTF-8 bytes, and each escape of 6 or 10 bytes at most 4. */
static jp_code text_unicode(vm *m) {
    const uint8_t *p = NULL;
    size_t n = 0;
    jp_code rc = line(m, &p, &n);
    if (rc) return rc;
    uint64_t cap;
    if (jp_mul_overflow(n, 2, &cap) || cap >= SIZE_MAX) return no_memory(m);
    uint8_t *out = jp_arena_alloc(m->a, (size_t)cap + 1);
    if (!out) return no_memory(m);
    size_t o = 0, i = 0;
    while (i < n) {
        if (p[i] != '\\') {
            o += put_utf8(out + o, p[i++]);
            continue;
        }
        size_t run = 0;
        while (i < n && p[i] == '\\') {
            out[o++] = '\\';
            run++;
            i++;
        }
        if (run % 2 == 0 || i == n || (p[i] != 'u' && p[i] != 'U')) continue;
        size_t digits = p[i] == 'u' ? 4 : 8;
        i++;
        o--; /* the odd backslash belongs to the escape */
        uint32_t cp = 0;
        for (size_t k = 0; k < digits; k++, i++) {
            int h = i < n ? hexval(p[i]) : -1;
            if (h < 0) return fail(m, JP_CORRUPT, "a truncated \\u or \\U escape%s", NULL);
            cp = cp * 16 + (uint32_t)h;
        }
        if (cp > 0x10ffff) return fail(m, JP_CORRUPT, "a \\U escape beyond U+10FFFF%s", NULL);
        o += put_utf8(out + o, cp);
    }
    return push(m, make_str(m, JP_PV_STR, out, o));
}

/* A GLOBAL record, judged once; DENIED is reported where it is made. */
static jp_pv *global_value(vm *m, const char *module, const char *name) {
    jp_pv *v = new_value(m, JP_PV_GLOBAL);
    if (!v) return NULL;
    if (m->proto < 3) py3_names(&module, &name);
    v->u.global.module = module;
    v->u.global.name = name;
    v->u.global.verdict = jp_pickle_judge(module, name);
    if (v->u.global.verdict == JP_GLOBAL_DENIED && m->o->report)
        m->o->report(m->o->report_ctx, JP_GLOBAL_DENIED, module, name, m->op_off);
    return v;
}

/* "module\nname\n" of GLOBAL and INST. */
static jp_pv *make_global(vm *m, const uint8_t *mod, size_t mn, const uint8_t *name, size_t nn) {
    const char *ms = jp_arena_strndup(m->a, (const char *)mod, mn);
    const char *ns = jp_arena_strndup(m->a, (const char *)name, nn);
    return ms && ns ? global_value(m, ms, ns) : NULL;
}

/* Judge a global at a use site: calling it, or only instantiating it. */
static void judge_use(vm *m, const jp_pv *g, bool calls) {
    if (!g || g->kind != JP_PV_GLOBAL || !m->o->report) return;
    jp_pickle_verdict v = g->u.global.verdict;
    if (v == JP_GLOBAL_ALLOWED || v == JP_GLOBAL_DENIED) return; /* DENIED reported at GLOBAL */
    m->o->report(m->o->report_ctx, calls ? JP_GLOBAL_CALLED : JP_GLOBAL_CLASS, g->u.global.module,
                 g->u.global.name, m->op_off);
}

static jp_pv *make_obj(vm *m, jp_pv_kind kind, jp_pv *callable, jp_pv *args, jp_pv *kwargs) {
    jp_pv *v = new_value(m, kind);
    if (!v) return NULL;
    v->u.obj.callable = callable;
    v->u.obj.args = args;
    v->u.obj.kwargs = kwargs;
    return v;
}

static bool is_global(const jp_pv *g, const char *module, const char *name) {
    return g && g->kind == JP_PV_GLOBAL && strcmp(g->u.global.module, module) == 0 &&
           strcmp(g->u.global.name, name) == 0;
}

/* ---- memo
 *
 * Memo keys are what the pickle says, up to JP_PICKLE_MAX_MEMO, but the
 * memo's size must follow the number of PUTs, not the keys' values: one PUT
 * under a key near the limit must not allocate a table that large. As in
 * Lua's tables, keys live in two parts. Keys below `densecap` are indexed
 * directly in an array; picklers number their PUTs 0, 1, 2 ..., so these are
 * almost all of them, and cost what a plain array costs. The array grows to
 * a power of two of slots only while the memo holds at least half that
 * many keys (or to 64 slots); keys it does not cover go to a hash map, and
 * move into the array when it grows over them, so a key is never in both
 * parts. Either part costs at most a few pointers per key.
 *
 * The hash map is open addressing with linear probing, at most half full,
 * and the home slot of a key is the top bits of key * 2**32/phi (Fibonacci
 * hashing, which spreads runs and strides of keys evenly). A hostile pickle
 * can still pick keys that share home slots and make each PUT scan a long
 * run, so no key may lie more than JP_PICKLE_MEMO_MAX_PROBE slots past its
 * home (random keys stay under 40 in a table of 4M): a PUT that would is
 * refused, and a lookup stops there. */

typedef struct memo_slot {
    uint32_t key;
    jp_pv *val; /* NULL: empty */
} memo_slot;

/* The slot that holds key, or the empty slot where it belongs; NULL when
 * neither lies within the probe limit. */
static memo_slot *memo_slot_for(memo_slot *t, unsigned bits, uint32_t key) {
    size_t mask = ((size_t)1 << bits) - 1;
    size_t i = (size_t)((uint32_t)(key * 0x9e3779b1u) >> (32 - bits));
    for (unsigned probe = 0; probe < JP_PICKLE_MEMO_MAX_PROBE; probe++, i = (i + 1) & mask)
        if (!t[i].val || t[i].key == key) return &t[i];
    return NULL;
}

static jp_code memo_collide(vm *m) {
    return fail(m, JP_LIMIT, "memo keys that collide past the probe limit (a hostile pickle)%s", NULL);
}

/* Rebuild the hash map with 1 << bits slots (bits >= 6), moving the keys
 * the array now covers into it. */
static jp_code memo_rehash(vm *m, unsigned bits) {
    memo_slot *t = calloc((size_t)1 << bits, sizeof *t);
    if (!t) return no_memory(m);
    for (size_t i = 0; m->memo && i < ((size_t)1 << m->memobits); i++) {
        memo_slot e = m->memo[i];
        if (!e.val) continue;
        if (e.key < m->densecap) {
            m->dense[e.key] = e.val;
            m->memohashed--;
            continue;
        }
        memo_slot *s = memo_slot_for(t, bits, e.key);
        if (!s) {
            free(t);
            return memo_collide(m);
        }
        *s = e;
    }
    free(m->memo);
    m->memo = t;
    m->memobits = bits;
    return JP_OK;
}

static jp_code memo_put(vm *m, uint64_t idx) {
    jp_pv *v = top(m);
    if (!v) return underflow(m);
    if (idx >= JP_PICKLE_MAX_MEMO) return fail(m, JP_LIMIT, "a memo index beyond the limit%s", NULL);
    jp_code rc;
    if (idx >= m->densecap) {
        size_t cap = m->densecap ? m->densecap : 64;
        while (cap <= idx) cap *= 2;
        if (cap <= 64 || cap / 2 <= m->memolen + 1) {
            jp_pv **d = realloc(m->dense, cap * sizeof *d);
            if (!d) return no_memory(m);
            memset(d + m->densecap, 0, (cap - m->densecap) * sizeof *d);
            m->dense = d;
            m->densecap = cap;
            if (m->memo && (rc = memo_rehash(m, m->memobits))) return rc;
        }
    }
    if (idx < m->densecap) {
        if (!m->dense[idx]) m->memolen++;
        m->dense[idx] = v;
        return JP_OK;
    }
    if ((!m->memo || m->memohashed + 1 > ((size_t)1 << m->memobits) / 2) &&
        (rc = memo_rehash(m, m->memo ? m->memobits + 1 : 6)))
        return rc;
    memo_slot *s = memo_slot_for(m->memo, m->memobits, (uint32_t)idx);
    if (!s) return memo_collide(m);
    if (!s->val) {
        m->memolen++;
        m->memohashed++;
    }
    s->key = (uint32_t)idx;
    s->val = v;
    return JP_OK;
}

static jp_code memo_get(vm *m, uint64_t idx) {
    jp_pv *v = NULL;
    if (idx < m->densecap) {
        v = m->dense[idx];
    } else if (m->memo && idx < JP_PICKLE_MAX_MEMO) {
        memo_slot *s = memo_slot_for(m->memo, m->memobits, (uint32_t)idx);
        v = s ? s->val : NULL;
    }
    if (!v) {
        char d[48];
        snprintf(d, sizeof d, "memo entry %llu was never set", (unsigned long long)idx);
        return fail(m, JP_CORRUPT, "%s", d);
    }
    return push(m, v);
}

static jp_code text_index(vm *m, uint64_t *idx) {
    const uint8_t *p = NULL;
    size_t n = 0;
    jp_code rc = line(m, &p, &n);
    if (rc) return rc;
    uint64_t u = 0;
    if (n == 0) return fail(m, JP_CORRUPT, "a memo index with no digits%s", NULL);
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || jp_mul_overflow(u, 10, &u) ||
            jp_add_overflow(u, (uint64_t)(p[i] - '0'), &u))
            return fail(m, JP_CORRUPT, "a malformed memo index%s", NULL);
    }
    *idx = u;
    return JP_OK;
}

/* ---------------------------------------------------------------- opcodes */

static const char *op_name(uint8_t op) {
    switch (op) {
#define N(c, s) case c: return s;
        N('(', "MARK") N('.', "STOP") N('0', "POP") N('1', "POP_MARK") N('2', "DUP")
        N('F', "FLOAT") N('I', "INT") N('J', "BININT") N('K', "BININT1") N('L', "LONG")
        N('M', "BININT2") N('N', "NONE") N('P', "PERSID") N('Q', "BINPERSID") N('R', "REDUCE")
        N('S', "STRING") N('T', "BINSTRING") N('U', "SHORT_BINSTRING") N('V', "UNICODE")
        N('X', "BINUNICODE") N('a', "APPEND") N('b', "BUILD") N('c', "GLOBAL") N('d', "DICT")
        N('}', "EMPTY_DICT") N('e', "APPENDS") N('g', "GET") N('h', "BINGET") N('i', "INST")
        N('j', "LONG_BINGET") N('l', "LIST") N(']', "EMPTY_LIST") N('o', "OBJ") N('p', "PUT")
        N('q', "BINPUT") N('r', "LONG_BINPUT") N('s', "SETITEM") N('t', "TUPLE")
        N(')', "EMPTY_TUPLE") N('u', "SETITEMS") N('G', "BINFLOAT") N(0x80, "PROTO")
        N(0x81, "NEWOBJ") N(0x82, "EXT1") N(0x83, "EXT2") N(0x84, "EXT4") N(0x85, "TUPLE1")
        N(0x86, "TUPLE2") N(0x87, "TUPLE3") N(0x88, "NEWTRUE") N(0x89, "NEWFALSE")
        N(0x8a, "LONG1") N(0x8b, "LONG4") N('B', "BINBYTES") N('C', "SHORT_BINBYTES")
        N(0x8c, "SHORT_BINUNICODE") N(0x8d, "BINUNICODE8") N(0x8e, "BINBYTES8")
        N(0x8f, "EMPTY_SET") N(0x90, "ADDITEMS") N(0x91, "FROZENSET") N(0x92, "NEWOBJ_EX")
        N(0x93, "STACK_GLOBAL") N(0x94, "MEMOIZE") N(0x95, "FRAME") N(0x96, "BYTEARRAY8")
        N(0x97, "NEXT_BUFFER") N(0x98, "READONLY_BUFFER")
#undef N
    default: return NULL;
    }
}

/* Apply APPEND(S)/SETITEM(S)/ADDITEMS items to the value under the mark. */
static jp_code add_items(vm *m, jp_pv *target, size_t first, bool pairs) {
    size_t n = m->sp - first;
    jp_pv **items = m->stack + first;
    if (pairs && n % 2) return fail(m, JP_CORRUPT, "an odd number of items for key/value pairs%s", NULL);
    jp_code rc = charge(m, pairs ? n / 2 : n);
    if (rc) return rc;
    bool ok = true;
    if (pairs) {
        jp_pv_dict *d = target->kind == JP_PV_DICT ? &target->u.dict
                        : (target->kind == JP_PV_CALL || target->kind == JP_PV_OBJECT) ? &target->u.obj.entries
                                                                                      : NULL;
        if (!d) return fail(m, JP_CORRUPT, "setting items on a value that is not a dict or object%s", NULL);
        for (size_t i = 0; ok && i < n; i += 2) ok = dict_set(m->a, d, items[i], items[i + 1]);
    } else {
        jp_pv_list *l = (target->kind == JP_PV_LIST || target->kind == JP_PV_SET) ? &target->u.seq
                        : (target->kind == JP_PV_CALL || target->kind == JP_PV_OBJECT) ? &target->u.obj.items
                                                                                      : NULL;
        if (!l) return fail(m, JP_CORRUPT, "appending to a value that is not a list, set or object%s", NULL);
        ok = list_extend(m->a, l, items, n);
    }
    if (!ok) return no_memory(m);
    m->sp = first;
    return JP_OK;
}

static jp_code step(vm *m, uint8_t op, bool *stop) {
    const uint8_t *p = NULL, *q = NULL;
    size_t n = 0, nq = 0;
    jp_pv *v, *a, *b, *c;
    size_t first = 0;
    uint64_t idx = 0;
    jp_code rc;
    switch (op) {
    case 0x80: /* PROTO */
        if (!take(m, 1, &p)) return truncated(m);
        if (p[0] > 5) return fail(m, JP_UNSUPPORTED, "protocol above 5%s", NULL);
        m->proto = p[0];
        return JP_OK;
    case 0x95: /* FRAME: frames are transparent; check the length fits */
        idx = jp_cur_le(&m->c, 8);
        if (m->c.failed) return truncated(m);
        if (idx > jp_cur_left(&m->c)) return fail(m, JP_TRUNCATED, "the frame runs past the end%s", NULL);
        return JP_OK;
    case '.':
        *stop = true;
        return JP_OK;
    case '(':
        if (m->nmarks == m->mcap) {
            if (m->mcap >= JP_PICKLE_MAX_STACK)
                return fail(m, JP_LIMIT, "more nested MARKs than the limit%s", NULL);
            size_t cap = m->mcap ? m->mcap * 2 : 16;
            size_t *nm = realloc(m->marks, cap * sizeof *nm);
            if (!nm) return no_memory(m);
            m->marks = nm;
            m->mcap = cap;
        }
        m->marks[m->nmarks++] = m->sp;
        return JP_OK;
    case '0':
        /* With nothing pushed since the last MARK, POP discards the MARK
         * (CPython's load_pop). */
        if (pop(m)) return JP_OK;
        if (m->nmarks && m->marks[m->nmarks - 1] == m->sp) {
            m->nmarks--;
            return JP_OK;
        }
        return underflow(m);
    case '1':
        if ((rc = pop_mark(m, &first))) return rc;
        m->sp = first;
        return JP_OK;
    case '2': return (v = top(m)) ? push(m, v) : underflow(m);
    case 'N': return push(m, new_value(m, JP_PV_NONE));
    case 0x88: case 0x89:
        v = new_value(m, JP_PV_BOOL);
        if (v) v->u.b = op == 0x88;
        return push(m, v);
    case 'I': return text_int(m, false);
    case 'L': return text_int(m, true);
    case 'J': case 'K': case 'M': {
        int w = op == 'J' ? 4 : op == 'K' ? 1 : 2;
        uint64_t u = jp_cur_le(&m->c, w);
        if (m->c.failed) return truncated(m);
        v = new_value(m, JP_PV_INT);
        if (v) v->u.i = op == 'J' ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
        return push(m, v);
    }
    case 0x8a: case 0x8b:
        if ((rc = sized(m, op == 0x8a ? 1 : 4, &p, &n))) return rc;
        return push(m, make_long(m, p, n));
    case 'F': return text_float(m);
    case 'G': {
        uint64_t u = jp_cur_be(&m->c, 8);
        if (m->c.failed) return truncated(m);
        double d;
        memcpy(&d, &u, sizeof d); /* the bits of a host double, already byte-ordered */
        v = new_value(m, JP_PV_FLOAT);
        if (v) v->u.f = d;
        return push(m, v);
    }
    case 'S': return text_string(m);
    case 'V': return text_unicode(m);
    case 'T': case 'U': case 'B': case 'C': case 0x8e: case 0x96:
        rc = sized(m, op == 'U' || op == 'C' ? 1 : op == 0x8e || op == 0x96 ? 8 : 4, &p, &n);
        return rc ? rc : push(m, make_str(m, JP_PV_BYTES, p, n));
    case 'X': case 0x8c: case 0x8d:
        if ((rc = sized(m, op == 0x8c ? 1 : op == 'X' ? 4 : 8, &p, &n)) ||
            (rc = check_text(m, p, n, TEXT_UTF8_SURROGATES)))
            return rc;
        return push(m, make_str(m, JP_PV_STR, p, n));
    case 0x97: case 0x98:
        return fail(m, JP_UNSUPPORTED, "out-of-band buffers are never part of a file%s", NULL);
    case 0x82: case 0x83: case 0x84:
        return fail(m, JP_UNSAFE, "extension codes look up code in the copyreg registry%s", NULL);
    case ')': return push(m, new_value(m, JP_PV_TUPLE));
    case ']': return push(m, new_value(m, JP_PV_LIST));
    case '}': return push(m, new_value(m, JP_PV_DICT));
    case 0x8f: return push(m, new_value(m, JP_PV_SET));
    case 0x85: case 0x86: case 0x87: {
        size_t k = (size_t)(op - 0x84);
        size_t floor = m->nmarks ? m->marks[m->nmarks - 1] : 0;
        if (m->sp - floor < k) return underflow(m);
        m->sp -= k;
        return push(m, make_seq(m, JP_PV_TUPLE, m->stack + m->sp, k));
    }
    case 't': case 'l': case 0x91:
        if ((rc = pop_mark(m, &first))) return rc;
        v = make_seq(m, op == 't' ? JP_PV_TUPLE : op == 'l' ? JP_PV_LIST : JP_PV_SET,
                     m->stack + first, m->sp - first);
        m->sp = first;
        return push(m, v);
    case 'd':
        if ((rc = pop_mark(m, &first))) return rc;
        if ((m->sp - first) % 2) return fail(m, JP_CORRUPT, "an odd number of items for a dict%s", NULL);
        if (!(v = new_value(m, JP_PV_DICT))) return no_memory(m);
        if ((rc = charge(m, (m->sp - first) / 2))) return rc;
        for (size_t i = first; i < m->sp; i += 2)
            if (!dict_set(m->a, &v->u.dict, m->stack[i], m->stack[i + 1])) return no_memory(m);
        m->sp = first;
        return push(m, v);
    case 'a': case 's':
        first = m->sp - (op == 'a' ? 1 : 2);
        if (m->sp < (op == 'a' ? 2u : 3u) || (m->nmarks && first <= m->marks[m->nmarks - 1]))
            return underflow(m);
        return add_items(m, m->stack[first - 1], first, op == 's');
    case 'e': case 'u': case 0x90:
        if ((rc = pop_mark(m, &first))) return rc;
        if (first == 0 || (m->nmarks && first <= m->marks[m->nmarks - 1])) return underflow(m);
        return add_items(m, m->stack[first - 1], first, op == 'u');
    case 'c': case 'i': {
        text_rule rule = op == 'c' ? TEXT_NAME_UTF8 : TEXT_NAME_ASCII;
        if ((rc = line(m, &p, &n)) || (rc = line(m, &q, &nq)) || (rc = check_name(m, p, n, rule)) ||
            (rc = check_name(m, q, nq, rule)))
            return rc;
        if (!(v = make_global(m, p, n, q, nq))) return no_memory(m);
        if (op == 'c') return push(m, v);
        if ((rc = pop_mark(m, &first))) return rc;
        judge_use(m, v, true);
        a = make_seq(m, JP_PV_TUPLE, m->stack + first, m->sp - first);
        m->sp = first;
        return push(m, a ? make_obj(m, JP_PV_OBJECT, v, a, NULL) : NULL);
    }
    case 0x93:
        b = pop(m);
        a = pop(m);
        if (!a || !b) return underflow(m);
        if (a->kind != JP_PV_STR || b->kind != JP_PV_STR)
            return fail(m, JP_CORRUPT, "module and name must be strings%s", NULL);
        if ((rc = check_name(m, (const uint8_t *)a->u.str.s, a->u.str.len, TEXT_NAME_UTF8)) ||
            (rc = check_name(m, (const uint8_t *)b->u.str.s, b->u.str.len, TEXT_NAME_UTF8)))
            return rc;
        /* The strings already live in the arena: reuse them, so memoized
         * names used again and again cost nothing more. */
        return push(m, global_value(m, a->u.str.s, b->u.str.s));
    case 'R':
        b = pop(m);
        a = pop(m);
        if (!a || !b) return underflow(m);
        if (b->kind != JP_PV_TUPLE) return fail(m, JP_CORRUPT, "the arguments are not a tuple%s", NULL);
        /* copyreg._reconstructor(cls, base, state) is how protocols 0 and 1
         * make plain instances: an instance of cls, not a call of it. */
        if (is_global(a, "copyreg", "_reconstructor") && b->u.seq.len >= 1) {
            judge_use(m, b->u.seq.items[0], false);
            return push(m, make_obj(m, JP_PV_OBJECT, b->u.seq.items[0], b, NULL));
        }
        judge_use(m, a, true);
        return push(m, make_obj(m, JP_PV_CALL, a, b, NULL));
    case 0x81: case 0x92:
        c = op == 0x92 ? pop(m) : NULL;
        b = pop(m);
        a = pop(m);
        if (!a || !b || (op == 0x92 && !c)) return underflow(m);
        judge_use(m, a, false);
        return push(m, make_obj(m, JP_PV_OBJECT, a, b, c));
    case 'o':
        if ((rc = pop_mark(m, &first))) return rc;
        if (first == m->sp) return underflow(m);
        a = m->stack[first];
        judge_use(m, a, false);
        b = make_seq(m, JP_PV_TUPLE, m->stack + first + 1, m->sp - first - 1);
        m->sp = first;
        return push(m, b ? make_obj(m, JP_PV_OBJECT, a, b, NULL) : NULL);
    case 'b':
        b = pop(m);
        a = top(m);
        if (!a || !b) return underflow(m);
        if (a->kind == JP_PV_CALL || a->kind == JP_PV_OBJECT) {
            a->u.obj.state = b;
            return JP_OK;
        }
        if (a->kind == JP_PV_DICT && b->kind == JP_PV_DICT) {
            if (a == b) return JP_OK; /* a dict merged into itself is unchanged */
            size_t nb = b->u.dict.len;
            if ((rc = charge(m, nb))) return rc;
            for (size_t i = 0; i < nb; i++)
                if (!dict_set(m->a, &a->u.dict, b->u.dict.keys[i], b->u.dict.vals[i]))
                    return no_memory(m);
            return JP_OK;
        }
        return fail(m, JP_CORRUPT, "BUILD on a value that is not an object%s", NULL);
    case 'P':
        if ((rc = line(m, &p, &n)) || (rc = check_text(m, p, n, TEXT_ASCII))) return rc;
        if (!(a = make_str(m, JP_PV_STR, p, n))) return no_memory(m);
        v = new_value(m, JP_PV_PERSID);
        if (v) v->u.persid = a;
        return push(m, v);
    case 'Q':
        if (!(a = pop(m))) return underflow(m);
        v = new_value(m, JP_PV_PERSID);
        if (v) v->u.persid = a;
        return push(m, v);
    case 'p':
        if ((rc = text_index(m, &idx))) return rc;
        return memo_put(m, idx);
    case 'q': case 'r':
        idx = jp_cur_le(&m->c, op == 'q' ? 1 : 4);
        return m->c.failed ? truncated(m) : memo_put(m, idx);
    case 0x94: return memo_put(m, m->memolen);
    case 'g':
        if ((rc = text_index(m, &idx))) return rc;
        return memo_get(m, idx);
    case 'h': case 'j':
        idx = jp_cur_le(&m->c, op == 'h' ? 1 : 4);
        return m->c.failed ? truncated(m) : memo_get(m, idx);
    default: {
        char d[40];
        snprintf(d, sizeof d, "unknown opcode 0x%02x", op);
        return fail(m, JP_CORRUPT, "%s (not a pickle, or a corrupted one)", d);
    }
    }
}

jp_code jp_pickle_load(jp_arena *arena, const uint8_t *data, size_t len,
                       const jp_pickle_opts *opts, jp_pv **out, size_t *consumed, jp_err *err) {
    static const jp_pickle_opts none = {0};
    vm m = {0};
    m.a = arena;
    m.o = opts ? opts : &none;
    m.err = err;
    m.c = jp_cur_make(data, len, m.o->origin);
    /* Values and container entries: proportional to the input, so a pickle
     * cannot amplify its size without bound; capped by the named limit. */
    m.budget = len > (JP_PICKLE_MAX_VALUES - 65536) / 16 ? JP_PICKLE_MAX_VALUES : 65536 + 16 * len;
    *out = NULL;
    /* Never NULL, so `stack + first` is defined even before the first push. */
    m.scap = 64;
    m.stack = malloc(m.scap * sizeof *m.stack);
    if (!m.stack) return jp_err_set(err, JP_NO_MEMORY, m.o->origin, m.o->member, "out of memory");
    bool stop = false;
    jp_code rc = JP_OK;
    while (!rc && !stop) {
        m.op_off = jp_cur_fileoff(&m.c);
        if (jp_cur_left(&m.c) == 0) {
            m.op_name = "pickle";
            rc = fail(&m, JP_TRUNCATED, "the data ends before the STOP opcode%s", NULL);
            break;
        }
        uint8_t op = jp_cur_u8(&m.c);
        m.op_name = op_name(op);
        if (!m.op_name) m.op_name = "opcode";
        rc = step(&m, op, &stop);
    }
    if (!rc) {
        /* A MARK may still be open: STOP takes its value from above it. */
        jp_pv *v = pop(&m);
        if (!v) {
            m.op_name = "STOP";
            rc = underflow(&m);
        } else {
            *out = v;
            if (consumed) *consumed = m.c.pos;
        }
    }
    free(m.stack);
    free(m.marks);
    free(m.dense);
    free(m.memo);
    return rc;
}
