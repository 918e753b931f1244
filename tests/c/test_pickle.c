/* Tests for the data-only pickle machine: values per opcode family, verdicts
 * on globals, and a table of malformed and hostile inputs (code and offset). */
#include "check.h"
#include "formats/pickle.h"

typedef struct reports {
    int n;
    jp_pickle_verdict verdict[8];
    char global[8][64];
    uint64_t offset[8];
} reports;

static void on_report(void *ctx, jp_pickle_verdict v, const char *module, const char *name,
                      uint64_t offset) {
    reports *r = ctx;
    if (r->n >= 8) return;
    r->verdict[r->n] = v;
    snprintf(r->global[r->n], sizeof r->global[0], "%s.%s", module, name);
    r->offset[r->n] = offset;
    r->n++;
}

static bool is_global_named(const jp_pv *v, const char *module, const char *name) {
    return v && v->kind == JP_PV_GLOBAL && strcmp(v->u.global.module, module) == 0 &&
           strcmp(v->u.global.name, name) == 0;
}

static jp_code load(jp_arena *a, const char *bytes, size_t len, jp_pv **out, reports *r,
                    jp_err *err) {
    jp_pickle_opts o = {"data.pkl", 0, on_report, r};
    memset(r, 0, sizeof *r);
    return jp_pickle_load(a, (const uint8_t *)bytes, len, &o, out, NULL, err);
}

#define LOAD(lit, out, r, err) load(&a, lit, sizeof(lit) - 1, out, r, err)

static void test_values(void) {
    jp_arena a;
    jp_arena_init(&a);
    jp_pv *v;
    reports r;
    jp_err err;
    /* protocol 2: {'w': (1, -2, 300, 2**40, True, None, 1.5)} with a memo */
    CHECK_EQ_U64(LOAD("\x80\x02}q\x00X\x01\x00\x00\x00wq\x01(K\x01J\xfe\xff\xff\xffM,\x01"
                      "\x8a\x06\x00\x00\x00\x00\x00\x01\x88NG?\xf8\x00\x00\x00\x00\x00\x00tq\x02s.",
                      &v, &r, &err),
                 JP_OK);
    CHECK(v && v->kind == JP_PV_DICT && v->u.dict.len == 1);
    jp_pv *t = v->u.dict.vals[0];
    CHECK_STR(v->u.dict.keys[0]->u.str.s, "w");
    CHECK(t->kind == JP_PV_TUPLE && t->u.seq.len == 7);
    CHECK_EQ_U64(t->u.seq.items[0]->u.i, 1);
    CHECK(t->u.seq.items[1]->u.i == -2);
    CHECK_EQ_U64(t->u.seq.items[2]->u.i, 300);
    CHECK_EQ_U64(t->u.seq.items[3]->u.i, 1ull << 40);
    CHECK(t->u.seq.items[4]->kind == JP_PV_BOOL && t->u.seq.items[4]->u.b);
    CHECK(t->u.seq.items[5]->kind == JP_PV_NONE);
    CHECK(t->u.seq.items[6]->u.f == 1.5);
    /* protocol 0 text forms: INT bool, LONG, FLOAT, STRING escapes, UNICODE escape */
    CHECK_EQ_U64(LOAD("(I01\nL-12L\nF2.5\nS'a\\n\\x41'\nVcaf\\u00e9\nl.", &v, &r, &err), JP_OK);
    CHECK(v && v->kind == JP_PV_LIST && v->u.seq.len == 5);
    CHECK(v->u.seq.items[0]->kind == JP_PV_BOOL && v->u.seq.items[0]->u.b);
    CHECK(v->u.seq.items[1]->u.i == -12);
    CHECK(v->u.seq.items[2]->u.f == 2.5);
    CHECK_STR(v->u.seq.items[3]->u.str.s, "a\nA");
    CHECK_STR(v->u.seq.items[4]->u.str.s, "caf\xc3\xa9");
    /* UNICODE is raw-unicode-escape: only a backslash after an even number
     * of backslashes starts \u or \U; the others stay as written. */
    CHECK_EQ_U64(LOAD("(V\\\\u0041\nV\\\\\\u0041\nV\\x41\\\nV\\U0001F600\nl.", &v, &r, &err),
                 JP_OK);
    CHECK(v && v->kind == JP_PV_LIST && v->u.seq.len == 4);
    CHECK_STR(v->u.seq.items[0]->u.str.s, "\\\\u0041");
    CHECK_STR(v->u.seq.items[1]->u.str.s, "\\\\A");
    CHECK_STR(v->u.seq.items[2]->u.str.s, "\\x41\\");
    CHECK_STR(v->u.seq.items[3]->u.str.s, "\xf0\x9f\x98\x80");
    /* BINUNICODE is UTF-8 read with "surrogatepass", as pickle.loads reads
     * it: an encoded lone surrogate is kept; so is the largest code point. */
    CHECK_EQ_U64(LOAD("X\x03\x00\x00\x00\xed\xa0\x80.", &v, &r, &err), JP_OK);
    CHECK(v->kind == JP_PV_STR && v->u.str.len == 3);
    CHECK_EQ_U64(LOAD("\x80\x04\x8c\x04\xf4\x8f\xbf\xbf.", &v, &r, &err), JP_OK);
    CHECK(v->kind == JP_PV_STR && v->u.str.len == 4);
    /* Text INT/LONG beyond int64 become BIGINT, little-endian two's
     * complement at its shortest, the bytes LONG1 would carry. */
    CHECK_EQ_U64(LOAD("(I9223372036854775808\nL-9223372036854775809L\nL18446744073709551615L\n"
                      "L-1267650600228229401496703205376\nI-9223372036854775808\nI000\nl.",
                      &v, &r, &err),
                 JP_OK);
    CHECK(v && v->kind == JP_PV_LIST && v->u.seq.len == 6);
    CHECK(v->u.seq.items[0]->kind == JP_PV_BIGINT && v->u.seq.items[0]->u.str.len == 9 &&
          memcmp(v->u.seq.items[0]->u.str.s, "\0\0\0\0\0\0\0\x80\0", 9) == 0);
    CHECK(v->u.seq.items[1]->kind == JP_PV_BIGINT && v->u.seq.items[1]->u.str.len == 9 &&
          memcmp(v->u.seq.items[1]->u.str.s, "\xff\xff\xff\xff\xff\xff\xff\x7f\xff", 9) == 0);
    CHECK(v->u.seq.items[2]->kind == JP_PV_BIGINT && v->u.seq.items[2]->u.str.len == 9 &&
          memcmp(v->u.seq.items[2]->u.str.s, "\xff\xff\xff\xff\xff\xff\xff\xff\0", 9) == 0);
    /* -2**100 */
    CHECK(v->u.seq.items[3]->kind == JP_PV_BIGINT && v->u.seq.items[3]->u.str.len == 13 &&
          memcmp(v->u.seq.items[3]->u.str.s, "\0\0\0\0\0\0\0\0\0\0\0\0\xf0", 13) == 0);
    CHECK(v->u.seq.items[4]->kind == JP_PV_INT && v->u.seq.items[4]->u.i == INT64_MIN);
    CHECK(v->u.seq.items[5]->kind == JP_PV_INT && v->u.seq.items[5]->u.i == 0);
    /* LONG1 beyond 64 bits stays bytes (the legacy torch magic number) */
    CHECK_EQ_U64(LOAD("\x80\x02\x8a\x0al\xfc\x9c" "F\xf9 j\xa8P\x19.", &v, &r, &err), JP_OK);
    CHECK(v->kind == JP_PV_BIGINT && v->u.str.len == 10);
    /* mutation through the memo is visible: a list appended after being memoised */
    CHECK_EQ_U64(LOAD("\x80\x02]q\x00h\x00K\x07" "a.", &v, &r, &err), JP_OK);
    CHECK(v->kind == JP_PV_LIST && v->u.seq.len == 1 && v->u.seq.items[0]->u.i == 7);
    /* OrderedDict via REDUCE, SETITEMS on the record: allowed, no report */
    CHECK_EQ_U64(LOAD("\x80\x02" "ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00" "aK\x01u.", &v, &r,
                      &err),
                 JP_OK);
    CHECK(v->kind == JP_PV_CALL && v->u.obj.entries.len == 1 && r.n == 0);
    /* protocol 4: FRAME, STACK_GLOBAL, MEMOIZE, NEWOBJ of an unknown class + BUILD */
    CHECK_EQ_U64(LOAD("\x80\x04\x95\x14\x00\x00\x00\x00\x00\x00\x00\x8c\x04main\x94\x8c\x03Net\x94"
                      "\x93\x94)\x81}b.",
                      &v, &r, &err),
                 JP_OK);
    CHECK(v->kind == JP_PV_OBJECT && v->u.obj.state && v->u.obj.state->kind == JP_PV_DICT);
    CHECK(r.n == 1 && r.verdict[0] == JP_GLOBAL_CLASS);
    CHECK_STR(r.global[0], "main.Net");
    /* EMPTY_SET + ADDITEMS, FROZENSET, TUPLE3, BINBYTES */
    CHECK_EQ_U64(LOAD("\x80\x04\x8f(K\x01K\x02\x90(K\x03\x91" "C\x02hi\x87.", &v, &r, &err),
                 JP_OK);
    CHECK(v->kind == JP_PV_TUPLE && v->u.seq.len == 3);
    CHECK(v->u.seq.items[0]->kind == JP_PV_SET && v->u.seq.items[0]->u.seq.len == 2);
    CHECK(v->u.seq.items[1]->kind == JP_PV_SET && v->u.seq.items[1]->u.seq.len == 1);
    CHECK(v->u.seq.items[2]->kind == JP_PV_BYTES && v->u.seq.items[2]->u.str.len == 2);
    /* POP with nothing above the last MARK pops the MARK, as CPython does:
     * 1 stays on the stack, and a TUPLE after it finds no MARK. */
    CHECK_EQ_U64(LOAD("K\x01(0.", &v, &r, &err), JP_OK);
    CHECK(v->kind == JP_PV_INT && v->u.i == 1);
    CHECK_EQ_U64(LOAD("(K\x01(0.", &v, &r, &err), JP_OK);
    CHECK(v->kind == JP_PV_INT && v->u.i == 1);
    /* STOP may leave a MARK open, but takes its value from above it */
    CHECK_EQ_U64(LOAD("K\x01(K\x02.", &v, &r, &err), JP_OK);
    CHECK(v->kind == JP_PV_INT && v->u.i == 2);
    jp_arena_free(&a);
}

static void test_verdicts(void) {
    jp_arena a;
    jp_arena_init(&a);
    jp_pv *v;
    reports r;
    jp_err err;
    /* REDUCE of posix.system: DENIED at the GLOBAL (offset 2) */
    CHECK_EQ_U64(LOAD("\x80\x02" "cposix\nsystem\nX\x02\x00\x00\x00id\x85R.", &v, &r, &err), JP_OK);
    CHECK(r.n == 1 && r.verdict[0] == JP_GLOBAL_DENIED && r.offset[0] == 2);
    CHECK_STR(r.global[0], "posix.system");
    /* REDUCE of an unknown function: CALLED at the REDUCE */
    CHECK_EQ_U64(LOAD("\x80\x02" "cmylib\nrun\n)R.", &v, &r, &err), JP_OK);
    CHECK(r.n == 1 && r.verdict[0] == JP_GLOBAL_CALLED && r.offset[0] == 14);
    /* INST calls the class */
    CHECK_EQ_U64(LOAD("(imylib\nThing\n.", &v, &r, &err), JP_OK);
    CHECK(r.n == 1 && r.verdict[0] == JP_GLOBAL_CALLED);
    CHECK(jp_pickle_judge("torch._utils", "_rebuild_tensor_v2") == JP_GLOBAL_ALLOWED);
    CHECK(jp_pickle_judge("torch", "FloatStorage") == JP_GLOBAL_ALLOWED);
    CHECK(jp_pickle_judge("torch", "bfloat16") == JP_GLOBAL_ALLOWED);
    CHECK(jp_pickle_judge("builtins", "eval") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("subprocess", "Popen") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("os.path", "join") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("torch.storage", "_load_from_bytes") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("osx", "thing") == JP_GLOBAL_CLASS); /* prefix match is per module part */

    /* Python 2 names are judged as Python 3's unpickler maps them
     * (_compat_pickle's NAME_MAPPING, then IMPORT_MAPPING). */
    CHECK(jp_pickle_judge("__builtin__", "eval") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("__builtin__", "intern") == JP_GLOBAL_DENIED);   /* sys.intern */
    CHECK(jp_pickle_judge("__builtin__", "unicode") == JP_GLOBAL_ALLOWED); /* builtins.str */
    CHECK(jp_pickle_judge("__builtin__", "xrange") == JP_GLOBAL_ALLOWED);  /* builtins.range */
    CHECK(jp_pickle_judge("copy_reg", "_reconstructor") == JP_GLOBAL_ALLOWED);
    CHECK(jp_pickle_judge("exceptions", "ValueError") == JP_GLOBAL_CLASS);
    CHECK(jp_pickle_judge("thread", "start_new_thread") == JP_GLOBAL_DENIED); /* _thread */
    CHECK(jp_pickle_judge("SocketServer", "TCPServer") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("urllib", "urlretrieve") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("cPickle", "loads") == JP_GLOBAL_DENIED);

    /* A dotted name is a getattr chain from the module (protocol 4): it is
     * judged along the whole chain, any part of which may be a module
     * another imported, and is never on the allow list. */
    CHECK(jp_pickle_judge("torch", "hub.load") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("torch", "hub.Storage") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("torch", "storage._load_from_bytes") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("numpy.dtypes", "os.system") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("collections", "builtins.eval") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("mylib", "np.core.os.system") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("mylib", "a.torch.storage._load_from_bytes") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("mylib", "a.b.torch.hub.x") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("torch", "nn.functional.a.b.c.d.e") == JP_GLOBAL_CLASS);
    CHECK(jp_pickle_judge("torch", "nn.functional.a.b.c.d.e.f.g") == JP_GLOBAL_DENIED); /* 9 links */
    CHECK(jp_pickle_judge("torch", "complex64.__class__") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("torch._utils", "_rebuild_tensor_v2.__globals__") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("__builtin__", "set.__init__") == JP_GLOBAL_DENIED);
    CHECK(jp_pickle_judge("torch", "_utils._rebuild_tensor_v2") == JP_GLOBAL_CLASS);
    CHECK(jp_pickle_judge("torch", "float32.x") == JP_GLOBAL_CLASS);
    CHECK(jp_pickle_judge("numpy.dtypes", "Float64DType.x") == JP_GLOBAL_CLASS);
    CHECK(jp_pickle_judge("collections", "OrderedDict.fromkeys") == JP_GLOBAL_CLASS);
    CHECK(jp_pickle_judge("mylib", "Outer.Inner") == JP_GLOBAL_CLASS);
    CHECK(jp_pickle_judge("mylib", "Outer..Inner") == JP_GLOBAL_CLASS);
    /* Allowed prefixes match whole names, not the start of one. */
    CHECK(jp_pickle_judge("torch", "complex_evil") == JP_GLOBAL_CLASS);
    CHECK(jp_pickle_judge("torch", "complex64") == JP_GLOBAL_ALLOWED);
    CHECK(jp_pickle_judge("torch", "float8_e4m3fn") == JP_GLOBAL_ALLOWED);

    /* STACK_GLOBAL torch / hub.load, called: DENIED at the STACK_GLOBAL. */
    CHECK_EQ_U64(LOAD("\x80\x04\x8c\x05torch\x8c\x08hub.load\x93)R.", &v, &r, &err), JP_OK);
    CHECK(r.n == 1 && r.verdict[0] == JP_GLOBAL_DENIED && r.offset[0] == 19);
    CHECK_STR(r.global[0], "torch.hub.load");
    /* Below protocol 3 the names are mapped in the record too, as pickle.loads
     * would resolve them: copy_reg._reconstructor makes a plain instance. */
    CHECK_EQ_U64(LOAD("\x80\x02" "ccopy_reg\n_reconstructor\nq\x00" "c__main__\nThing\nq\x01"
                      "c__builtin__\nobject\nq\x02N\x87R.",
                      &v, &r, &err),
                 JP_OK);
    CHECK(v && v->kind == JP_PV_OBJECT && is_global_named(v->u.obj.callable, "__main__", "Thing"));
    CHECK(r.n == 1 && r.verdict[0] == JP_GLOBAL_CLASS);
    CHECK_STR(r.global[0], "__main__.Thing");
    CHECK_EQ_U64(LOAD("c__builtin__\nset\n.", &v, &r, &err), JP_OK);
    CHECK(is_global_named(v, "builtins", "set"));
    CHECK_EQ_U64(LOAD("c__builtin__\nintern\n.", &v, &r, &err), JP_OK);
    CHECK(is_global_named(v, "sys", "intern") && r.n == 1 && r.verdict[0] == JP_GLOBAL_DENIED);
    CHECK_STR(r.global[0], "sys.intern");
    /* From protocol 3, pickle.loads maps nothing; the record keeps the names
     * as written, and the verdict still sees through them. */
    CHECK_EQ_U64(LOAD("\x80\x03" "c__builtin__\neval\n.", &v, &r, &err), JP_OK);
    CHECK(is_global_named(v, "__builtin__", "eval") && r.n == 1 && r.verdict[0] == JP_GLOBAL_DENIED);
    jp_arena_free(&a);
}

static const struct bad {
    const char *what;
    const char *bytes;
    size_t len;
    jp_code code;
    uint64_t offset;
} bad[] = {
#define B(what, lit, code, off) {what, lit, sizeof(lit) - 1, code, off}
    B("empty", "", JP_TRUNCATED, 0),
    B("no STOP", "\x80\x02K\x01", JP_TRUNCATED, 4),
    B("unknown opcode", "\x80\x02\xff.", JP_CORRUPT, 2),
    B("protocol 6", "\x80\x06.", JP_UNSUPPORTED, 0),
    B("truncated BININT", "\x80\x02J\x01\x02", JP_TRUNCATED, 2),
    B("BINUNICODE past end", "\x80\x02X\xff\xff\xff\xff" "ab", JP_TRUNCATED, 2),
    B("BINBYTES8 huge", "\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f", JP_TRUNCATED, 2),
    B("FRAME past end", "\x80\x04\x95\x00\x00\x00\x00\x01\x00\x00\x00N.", JP_TRUNCATED, 2),
    B("STOP on empty stack", "\x80\x02.", JP_CORRUPT, 2),
    B("POP on empty", "0", JP_CORRUPT, 0),
    B("TUPLE without MARK", "K\x01t.", JP_CORRUPT, 2),
    B("GET of unset memo", "\x80\x02h\x05.", JP_CORRUPT, 2),
    B("PUT beyond limit", "K\x01r\xff\xff\xff\x7f.", JP_LIMIT, 2),
    B("PUT at the limit", "K\x01r\x00\x00\x40\x00.", JP_LIMIT, 2),
    B("GET beyond the limit", "K\x01r\xff\xff\x3f\x00j\x00\x00\x40\x00.", JP_CORRUPT, 7),
    B("GET of a key never set", "K\x01r\xff\xff\x3f\x00j\xfe\xff\x3f\x00.", JP_CORRUPT, 7),
    B("PUT on empty", "q\x00.", JP_CORRUPT, 0),
    B("odd DICT", "(K\x01" "d.", JP_CORRUPT, 3),
    B("SETITEM on a list", "]K\x01K\x02s.", JP_CORRUPT, 5),
    B("APPEND to an int", "K\x01K\x02" "a.", JP_CORRUPT, 4),
    B("REDUCE with a list", "cm\nf\n]R.", JP_CORRUPT, 6),
    B("BUILD on an int", "K\x01}b.", JP_CORRUPT, 3),
    B("STACK_GLOBAL of ints", "K\x01K\x02\x93.", JP_CORRUPT, 4),
    B("EXT1", "\x80\x02\x82\x01.", JP_UNSAFE, 2),
    B("NEXT_BUFFER", "\x80\x05\x97.", JP_UNSUPPORTED, 2),
    B("text INT with letters", "I12x\n.", JP_CORRUPT, 0),
    /* pickle.loads reads 010 as octal (INT) or refuses it (LONG) */
    B("text INT with a leading zero", "K\x01I010\n.", JP_CORRUPT, 2),
    B("text LONG with a leading zero", "L-0012L\n.", JP_CORRUPT, 0),
    B("text LONG with only a sign", "L-L\n.", JP_CORRUPT, 0),
    B("GLOBAL without newline", "cos\nsystem", JP_TRUNCATED, 0),
    B("unquoted STRING", "Sabc\n.", JP_CORRUPT, 0),
    B("bad \\u escape", "Vab\\uzzzz\n.", JP_CORRUPT, 0),
    B("truncated \\u escape", "K\x01Vab\\u004\n.", JP_CORRUPT, 2),
    B("truncated \\U escape", "K\x01Vab\\U0001F60\n.", JP_CORRUPT, 2),
    B("\\U escape beyond U+10FFFF", "K\x01V\\U00110000\n.", JP_CORRUPT, 2),
    B("POP_MARK without MARK", "1.", JP_CORRUPT, 0),
    /* Text that pickle.loads decodes as UTF-8 must be UTF-8. */
    B("SHORT_BINUNICODE overlong NUL", "\x80\x04K\x01\x8c\x02\xc0\x80.", JP_CORRUPT, 4),
    B("SHORT_BINUNICODE overlong 3 bytes", "\x8c\x03\xe0\x80\xaf.", JP_CORRUPT, 0),
    B("SHORT_BINUNICODE stray continuation", "\x8c\x02" "a\x80.", JP_CORRUPT, 0),
    B("BINUNICODE truncated sequence", "K\x01X\x01\x00\x00\x00\xc3.", JP_CORRUPT, 2),
    B("BINUNICODE truncated by its length", "X\x02\x00\x00\x00\xe2\x82\xac.", JP_CORRUPT, 0),
    B("BINUNICODE8 beyond U+10FFFF", "\x8d\x04\x00\x00\x00\x00\x00\x00\x00\xf4\x90\x80\x80.",
      JP_CORRUPT, 0),
    B("BINUNICODE 5-byte form", "X\x05\x00\x00\x00\xf8\x88\x80\x80\x80.", JP_CORRUPT, 0),
    /* Names are strict UTF-8 (GLOBAL), ASCII (INST and PERSID), and never
     * hold a surrogate or a NUL that would cut the C string short. */
    B("GLOBAL with a surrogate", "K\x01" "cbuiltins\nse\xed\xa0\x80t\n.", JP_CORRUPT, 2),
    B("GLOBAL with an overlong", "c\xc0\x80\nx\n.", JP_CORRUPT, 0),
    B("GLOBAL with a NUL", "cos\x00x\nsystem\n.", JP_CORRUPT, 0),
    B("INST not ASCII", "(ibuiltin\xc3\xa9s\nset\n.", JP_CORRUPT, 1),
    B("STACK_GLOBAL with a surrogate", "\x8c\x08" "builtins\x8c\x03\xed\xa0\x80\x93.", JP_CORRUPT,
      15),
    B("STACK_GLOBAL with a NUL", "\x8c\x02os\x8c\x07" "sys\x00tem\x93.", JP_CORRUPT, 13),
    B("PERSID not ASCII", "Pab\xc3\xa9\n.", JP_CORRUPT, 0),
    B("GLOBAL name past the limit", "K\x01" "cm\n"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n.",
      JP_LIMIT, 2),
    /* POP right after MARK discards the mark (CPython's load_pop), so the
     * STOP that follows finds nothing to return. */
    B("POP of a MARK, then STOP", "(0.", JP_CORRUPT, 2),
    B("STOP right after MARK", "K\x01(.", JP_CORRUPT, 3),
#undef B
};

static void test_bad(void) {
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        jp_arena a;
        jp_arena_init(&a);
        jp_pv *v = NULL;
        reports r;
        jp_err err;
        jp_code rc = load(&a, bad[i].bytes, bad[i].len, &v, &r, &err);
        if (rc != bad[i].code || err.offset != bad[i].offset)
            fprintf(stderr, "bad case '%s': got %s @ %llu (%s)\n", bad[i].what, jp_code_name(rc),
                    (unsigned long long)err.offset, err.msg);
        CHECK_EQ_U64(rc, bad[i].code);
        CHECK_EQ_U64(err.offset, bad[i].offset);
        CHECK(v == NULL);
        CHECK(strncmp(err.msg, "data.pkl @ 0x", 13) == 0);
        jp_arena_free(&a);
    }
}

/* Deep nesting and a self-containing list stay bounded and do not crash. */
static void test_hostile_shapes(void) {
    static uint8_t buf[300000];
    size_t n = 0;
    for (; n < 200000; n++) buf[n] = '(';
    buf[n++] = '.';
    jp_arena a;
    jp_arena_init(&a);
    jp_pv *v;
    jp_err err;
    jp_pickle_opts o = {"data.pkl", 0, NULL, NULL};
    CHECK_EQ_U64(jp_pickle_load(&a, buf, n, &o, &v, NULL, &err), JP_LIMIT);
    n = 0;
    buf[n++] = ']';
    buf[n++] = 'q';
    buf[n++] = 0;
    for (int i = 0; i < 1000; i++) {
        buf[n++] = 'h';
        buf[n++] = 0;
        buf[n++] = 'a';
    }
    buf[n++] = '.';
    size_t used = 0;
    CHECK_EQ_U64(jp_pickle_load(&a, buf, n, &o, &v, &used, &err), JP_OK);
    CHECK(v->kind == JP_PV_LIST && v->u.seq.len == 1000 && v->u.seq.items[0] == v);
    CHECK_EQ_U64(used, n);
    /* Two dicts merged into each other by BUILD, again and again, would grow
     * like Fibonacci numbers; the size-proportional budget stops them. */
    n = 0;
    static const uint8_t head[] = {'}', 'q', 0, '(', 'K', 1, 'K', 2, 'K', 3, 'K', 4, 'u',
                                   '}', 'q', 1, 'h', 0, 'b'};
    memcpy(buf, head, sizeof head);
    n = sizeof head;
    for (int i = 0; i < 60; i++) {
        /* GET one dict, GET the other, BUILD (merge the second into the first), POP */
        const uint8_t step[] = {'h', (uint8_t)(i % 2), 'h', (uint8_t)(1 - i % 2), 'b', '0'};
        memcpy(buf + n, step, sizeof step);
        n += sizeof step;
    }
    buf[n++] = '.';
    CHECK_EQ_U64(jp_pickle_load(&a, buf, n, &o, &v, NULL, &err), JP_LIMIT);
    /* A global's module and name are at most JP_PICKLE_MAX_NAME bytes: a
     * memoized 1 MB name used by STACK_GLOBAL again and again would
     * otherwise be validated and judged in full each time. */
    static const size_t lens[] = {JP_PICKLE_MAX_NAME, JP_PICKLE_MAX_NAME + 1, 1000000};
    for (size_t li = 0; li < 3; li++) {
        static uint8_t big[1100000];
        size_t len = lens[li];
        n = 0;
        big[n++] = 0x8c;
        big[n++] = 1;
        big[n++] = 'm';
        big[n++] = 0x8d;
        jp_store_le(big + n, len, 8);
        n += 8;
        memset(big + n, 'a', len);
        n += len;
        size_t at = n;
        big[n++] = 0x93;
        big[n++] = '.';
        jp_code rc = jp_pickle_load(&a, big, n, &o, &v, NULL, &err);
        if (len == JP_PICKLE_MAX_NAME) {
            CHECK_EQ_U64(rc, JP_OK);
            CHECK(v->kind == JP_PV_GLOBAL && strlen(v->u.global.name) == len);
        } else {
            CHECK_EQ_U64(rc, JP_LIMIT);
            CHECK_EQ_U64(err.offset, at);
        }
    }
    CHECK(jp_pickle_judge("mylib", "Thing") == JP_GLOBAL_CLASS);
    {
        static char longname[JP_PICKLE_MAX_NAME + 2];
        memset(longname, 'a', sizeof longname - 1);
        CHECK(jp_pickle_judge("mylib", longname) == JP_GLOBAL_DENIED); /* too long to judge */
        longname[JP_PICKLE_MAX_NAME] = '\0';
        CHECK(jp_pickle_judge("mylib", longname) == JP_GLOBAL_CLASS);
    }
    /* A text integer of as many digits as Python converts, and one more. */
    for (size_t digits = JP_PICKLE_MAX_INT_DIGITS; digits <= JP_PICKLE_MAX_INT_DIGITS + 1; digits++) {
        n = 0;
        buf[n++] = 'L';
        buf[n++] = '-';
        memset(buf + n, '9', digits);
        n += digits;
        buf[n++] = '\n';
        buf[n++] = '.';
        jp_code rc = jp_pickle_load(&a, buf, n, &o, &v, NULL, &err);
        if (digits == JP_PICKLE_MAX_INT_DIGITS) {
            CHECK_EQ_U64(rc, JP_OK);
            /* -(10**4300 - 1) needs 1786 bytes; it is odd, so its lowest
             * two's-complement byte is odd too */
            CHECK(v->kind == JP_PV_BIGINT && v->u.str.len == 1786 && (v->u.str.s[0] & 1));
        } else {
            CHECK_EQ_U64(rc, JP_LIMIT);
            CHECK_EQ_U64(err.offset, 0);
        }
    }
    jp_arena_free(&a);
}

/* Opcode op with a 4-byte little-endian argument at buf + n; the new end. */
static size_t put_op4(uint8_t *buf, size_t n, uint8_t op, uint32_t arg) {
    buf[n] = op;
    jp_store_le(buf + n + 1, arg, 4);
    return n + 5;
}

/* The memo is a hash map keyed by the memo index: sparse and large keys
 * (up to the limit) are kept apart and found again, a key set twice keeps
 * its last value, MEMOIZE uses the count of entries as its key, and keys
 * chosen to collide are refused once one would sit more than the probe
 * limit from its home slot, instead of making every PUT scan a long run. */

static void test_memo(void) {
    jp_arena a;
    jp_arena_init(&a);
    jp_pv *v;
    reports r;
    jp_err err;
    jp_pickle_opts o = {"data.pkl", 0, NULL, NULL};
    /* 1 -> key 0x3fffff, 2 -> key 7, 3 -> key 0x3fffff again; MEMOIZE puts 4
     * under key 2 (two entries so far); then GET 0x3fffff, 7 and 2. */
    CHECK_EQ_U64(LOAD("(K\x01r\xff\xff\x3f\x00" "0K\x02r\x07\x00\x00\x00" "0K\x03r\xff\xff\x3f\x00" "0"
                      "K\x04\x94" "0j\xff\xff\x3f\x00h\x07h\x02t.",
                      &v, &r, &err),
                 JP_OK);
    CHECK(v && v->kind == JP_PV_TUPLE && v->u.seq.len == 3);
    CHECK(v->u.seq.items[0]->u.i == 3 && v->u.seq.items[1]->u.i == 2 && v->u.seq.items[2]->u.i == 4);
    /* Thousands of keys spread over the whole range, each read back. */
    static uint8_t buf[200000];
    size_t n = 0;
    buf[n++] = '(';
    for (uint32_t i = 0; i < 5000; i++) {
        uint32_t key = (i * 2654435761u) % JP_PICKLE_MAX_MEMO;
        n = put_op4(buf, n, 'J', i);
        n = put_op4(buf, n, 'r', key);
        buf[n++] = '0';
    }
    for (uint32_t i = 0; i < 5000; i++) {
        n = put_op4(buf, n, 'j', (i * 2654435761u) % JP_PICKLE_MAX_MEMO);
    }
    buf[n++] = 'l';
    buf[n++] = '.';
    CHECK_EQ_U64(jp_pickle_load(&a, buf, n, &o, &v, NULL, &err), JP_OK);
    CHECK(v->kind == JP_PV_LIST && v->u.seq.len == 5000);
    bool same = true;
    for (uint32_t i = 0; i < 5000 && v->kind == JP_PV_LIST; i++) same = same && v->u.seq.items[i]->u.i == i;
    CHECK(same);
    /* Keys put from the top down start in the hash map and move into the
     * array as it grows over them; MEMOIZE then counts each key once. */
    n = 0;
    buf[n++] = '(';
    for (uint32_t key = 1001; key-- > 0;) {
        n = put_op4(buf, n, 'J', key);
        n = put_op4(buf, n, 'r', key);
        buf[n++] = '0';
    }
    n = put_op4(buf, n, 'J', 1001);
    buf[n++] = 0x94;
    buf[n++] = '0';
    for (uint32_t key = 0; key <= 1001; key++) {
        n = put_op4(buf, n, 'j', key);
    }
    buf[n++] = 'l';
    buf[n++] = '.';
    CHECK_EQ_U64(jp_pickle_load(&a, buf, n, &o, &v, NULL, &err), JP_OK);
    CHECK(v->kind == JP_PV_LIST && v->u.seq.len == 1002);
    same = true;
    for (uint32_t i = 0; i < 1002 && v->kind == JP_PV_LIST; i++) same = same && v->u.seq.items[i]->u.i == i;
    CHECK(same);
    /* Keys whose Fibonacci hash (as in pickle.c's memo_slot_for) has the
     * same top 9 bits share a home slot in every table of up to 512 slots;
     * keys this sparse and high stay out of the memo's array part. */
    n = 0;
    buf[n++] = 'N';
    uint32_t found = 0;
    for (uint32_t key = JP_PICKLE_MAX_MEMO / 2; key < JP_PICKLE_MAX_MEMO && found < 200; key++) {
        if ((uint32_t)(key * 0x9e3779b1u) >> 23) continue;
        n = put_op4(buf, n, 'r', key);
        found++;
    }
    buf[n++] = '.';
    CHECK_EQ_U64(jp_pickle_load(&a, buf, n, &o, &v, NULL, &err), JP_LIMIT);
    CHECK(err.offset == 1 + 5 * JP_PICKLE_MEMO_MAX_PROBE);
    jp_arena_free(&a);
}

int main(void) {
    test_values();
    test_memo();
    test_verdicts();
    test_bad();
    test_hostile_shapes();
    return check_done("test_pickle");
}
