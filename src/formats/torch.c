/* PyTorch checkpoints, as torch.save writes them. Nothing in the file is
 * run: the pickle becomes a tree of inert values (pickle.h) and this layer
 * reads tensors, names and plain values out of that tree.
 *
 * Zip format (torch >= 1.6); <p> is the first member's folder, any name:
 *   <p>/data.pkl          the pickled object; tensors appear as
 *                         REDUCE(torch._utils._rebuild_tensor_v2,
 *                                (PERSID ('storage', torch.FloatStorage, key, location, numel),
 *                                 storage_offset, size, stride, requires_grad, hooks[, metadata]))
 *                         or _rebuild_tensor_v3(..., dtype) over a torch.storage.UntypedStorage
 *   <p>/byteorder         "little" or "big" (absent: little)
 *   <p>/data/<key>        one member per storage: numel * item size raw bytes, stored
 *   <p>/version, <p>/.format_version, <p>/.storage_alignment, <p>/.data/...   ignored
 *
 * Legacy format (torch.save(..., _use_new_zipfile_serialization=False)): one
 * pickle after another, then raw storages:
 *   pickle  magic number 0x1950a86a20f9469cfc6c (LONG1)
 *   pickle  protocol version 1001
 *   pickle  sys_info {'protocol_version', 'little_endian', 'type_sizes'}
 *   pickle  the object; PERSID ('storage', type, root_key, location, numel, view_metadata)
 *           with view_metadata None or (view_key, element offset, view numel)
 *   pickle  [root keys], the order of what follows
 *   per key: u64 LE numel, then numel * item size bytes, always little-endian
 *            (torch's writeFileRaw swaps on big-endian hosts; its reader ignores sys_info)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_impl.h"
#include "pickle.h"
#include "zip.h"

#define MAX_DEPTH 256           /* nesting of the object tree walked for names */
#define MAX_VISITS (1u << 24)   /* values visited: shared subtrees cannot blow up the walk */
#define META_REPR_MAX 160       /* bytes of a plain value's repr kept as meta */

/* ---------------------------------------------------------------- dtypes */

typedef struct named_dtype {
    const char *name;
    jp_dtype dt;
} named_dtype;

static const named_dtype torch_dtypes[] = {
    {"float64", JP_F64},          {"double", JP_F64},
    {"float32", JP_F32},          {"float", JP_F32},
    {"float16", JP_F16},          {"half", JP_F16},
    {"bfloat16", JP_BF16},        {"int64", JP_I64},
    {"long", JP_I64},             {"int32", JP_I32},
    {"int", JP_I32},              {"int16", JP_I16},
    {"short", JP_I16},            {"int8", JP_I8},
    {"uint8", JP_U8},             {"uint16", JP_U16},
    {"uint32", JP_U32},           {"uint64", JP_U64},
    {"bool", JP_BOOL},            {"complex32", JP_C32},
    {"chalf", JP_C32},            {"complex64", JP_C64},
    {"cfloat", JP_C64},           {"complex128", JP_C128},
    {"cdouble", JP_C128},         {"float8_e4m3fn", JP_F8_E4M3FN},
    {"float8_e5m2", JP_F8_E5M2},  {"float8_e4m3fnuz", JP_F8_E4M3FNUZ},
    {"float8_e5m2fnuz", JP_F8_E5M2FNUZ}, {"float8_e8m0fnu", JP_F8_E8M0FNU},
    {"float4_e2m1fn_x2", JP_F4_E2M1FN_X2},
};

static const named_dtype storage_types[] = {
    {"DoubleStorage", JP_F64},       {"FloatStorage", JP_F32},
    {"HalfStorage", JP_F16},         {"BFloat16Storage", JP_BF16},
    {"LongStorage", JP_I64},         {"IntStorage", JP_I32},
    {"ShortStorage", JP_I16},        {"CharStorage", JP_I8},
    {"ByteStorage", JP_U8},          {"BoolStorage", JP_BOOL},
    {"ComplexFloatStorage", JP_C64}, {"ComplexDoubleStorage", JP_C128},
    {"UntypedStorage", JP_U8},
};

static bool is_global(const jp_pv *v, const char *module, const char *name) {
    return v && v->kind == JP_PV_GLOBAL && strcmp(v->u.global.module, module) == 0 &&
           strcmp(v->u.global.name, name) == 0;
}

static jp_dtype dtype_named(const named_dtype *table, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, table[i].name) == 0) return table[i].dt;
    return JP_DTYPE_INVALID;
}

/* torch.float32 and friends, as pickled dtype objects. */
static jp_dtype dtype_of_global(const jp_pv *v) {
    if (!v || v->kind != JP_PV_GLOBAL || strcmp(v->u.global.module, "torch") != 0)
        return JP_DTYPE_INVALID;
    return dtype_named(torch_dtypes, sizeof torch_dtypes / sizeof torch_dtypes[0],
                       v->u.global.name);
}

/* torch.FloatStorage, torch.cuda.HalfStorage (saved from a GPU), torch.UntypedStorage. */
static jp_dtype dtype_of_storage_type(const jp_pv *v) {
    if (!v || v->kind != JP_PV_GLOBAL) return JP_DTYPE_INVALID;
    const char *m = v->u.global.module;
    if (strcmp(m, "torch") != 0 && strcmp(m, "torch.cuda") != 0 && strcmp(m, "torch.storage") != 0)
        return JP_DTYPE_INVALID;
    return dtype_named(storage_types, sizeof storage_types / sizeof storage_types[0],
                       v->u.global.name);
}

/* ---------------------------------------------------------------- hash table
 * Open addressing over pointers; `eq` compares an item with a probe. Used for
 * storages by key and for the set of values already visited. */

typedef struct htab {
    void **slots;
    size_t cap, len;
} htab;

typedef bool (*htab_eq)(const void *item, const void *probe);

static void **htab_slot(htab *h, uint64_t hash, htab_eq eq, const void *probe) {
    if (!h->slots) return NULL;
    size_t i = (size_t)hash & (h->cap - 1);
    while (h->slots[i] && !eq(h->slots[i], probe)) i = (i + 1) & (h->cap - 1);
    return &h->slots[i];
}

static bool htab_grow(htab *h, uint64_t (*hash)(const void *item)) {
    if (h->slots && 2 * (h->len + 1) <= h->cap) return true;
    size_t cap = h->cap ? 2 * h->cap : 64;
    void **s = calloc(cap, sizeof *s);
    if (!s) return false;
    for (size_t i = 0; i < h->cap; i++) {
        if (!h->slots[i]) continue;
        size_t j = (size_t)hash(h->slots[i]) & (cap - 1);
        while (s[j]) j = (j + 1) & (cap - 1);
        s[j] = h->slots[i];
    }
    free(h->slots);
    h->slots = s;
    h->cap = cap;
    return true;
}

static uint64_t hash_ptr(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    return x ^ (x >> 33);
}

static bool ptr_eq(const void *item, const void *probe) { return item == probe; }

/* ---------------------------------------------------------------- context */

typedef struct storage {
    const char *key;
    jp_dtype dtype;          /* the storage's own dtype: U8 for untyped storages */
    uint64_t numel;          /* in elements of dtype, as the persistent id says */
    const uint8_t *data;     /* NULL until its bytes are found */
    uint64_t len;            /* numel * item size */
    uint64_t file_offset;    /* JP_NO_OFFSET when the bytes are a copy */
    bool owned;
    uint32_t index;          /* jp_tensor.storage */
    /* legacy views: a window on another storage */
    const char *root_key;
    uint64_t view_offset;    /* elements */
    const char *member;      /* zip member, for messages */
} storage;

typedef struct tctx {
    jp_index *ix;
    jp_err *err;
    const char *pkl_member;  /* where the pickle sits, for messages ("" for legacy) */
    uint64_t pkl_origin;     /* file offset of the pickle's first byte, 0 if it has none */
    /* zip */
    const jp_zip *zip;
    const char *prefix;
    bool big_endian;
    /* storages by key */
    htab storages;
    bool legacy;
    /* findings: the first one that makes the file unsafe */
    const char *unsafe_global;
    const char *unsafe_member;
    uint64_t unsafe_offset;
    jp_pickle_verdict unsafe_verdict;
    bool oom;
    /* the walk */
    jp_name path;
    uint64_t visits;
} tctx;

static bool storage_eq(const void *item, const void *probe) {
    return strcmp(((const storage *)item)->key, (const char *)probe) == 0;
}
static uint64_t storage_hash(const void *item) {
    return jp_hash_str(((const storage *)item)->key);
}

static storage *storage_find(tctx *c, const char *key) {
    void **slot = htab_slot(&c->storages, jp_hash_str(key), storage_eq, key);
    return slot ? *slot : NULL;
}

static storage *storage_add(tctx *c, const char *key) {
    storage *s = jp_arena_alloc(&c->ix->arena, sizeof *s);
    if (!s || !htab_grow(&c->storages, storage_hash)) return NULL;
    s->key = jp_arena_strdup(&c->ix->arena, key);
    if (!s->key) return NULL;
    s->file_offset = JP_NO_OFFSET;
    *htab_slot(&c->storages, jp_hash_str(key), storage_eq, key) = s;
    c->storages.len++;
    return s;
}

static jp_code oom(tctx *c) {
    return jp_err_set(c->err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
}

/* A value's position in the file for messages: pickle offsets are file
 * offsets when the pickle is stored, member offsets when it was inflated. */
static jp_code fail(tctx *c, jp_code code, const jp_pv *at, const char *fmt, ...) JP_PRINTF(4, 5);
static jp_code fail(tctx *c, jp_code code, const jp_pv *at, const char *fmt, ...) {
    char msg[JP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return jp_err_set(c->err, code, at ? at->offset : JP_NO_OFFSET, c->pkl_member, "%s", msg);
}

/* ---------------------------------------------------------------- findings */

static void on_report(void *ctx, jp_pickle_verdict verdict, const char *module, const char *name,
                      uint64_t offset) {
    tctx *c = ctx;
    char *global = jp_arena_printf(&c->ix->arena, "%s.%s", module, name);
    jp_finding_kind kind = verdict == JP_GLOBAL_CALLED   ? JP_FIND_CALL
                           : verdict == JP_GLOBAL_DENIED ? JP_FIND_DENIED
                                                         : JP_FIND_IMPORT;
    uint64_t in_member = offset >= c->pkl_origin ? offset - c->pkl_origin : offset;
    if (!global || jp_index_add_finding(c->ix, kind, global, c->pkl_member, in_member)) {
        c->oom = true;
        return;
    }
    if (kind != JP_FIND_IMPORT && !c->unsafe_global) {
        c->unsafe_global = global;
        c->unsafe_member = c->pkl_member;
        c->unsafe_offset = offset;
        c->unsafe_verdict = verdict;
    }
}

static jp_code load_pickle(tctx *c, const uint8_t *p, size_t n, uint64_t origin, jp_pv **out,
                           size_t *consumed) {
    c->pkl_origin = origin;
    jp_pickle_opts o = {c->pkl_member, origin, on_report, c};
    jp_code rc = jp_pickle_load(&c->ix->arena, p, n, &o, out, consumed, c->err);
    if (!rc && c->oom) rc = oom(c);
    return rc;
}

/* Refuse a file that would run code under torch.load, unless asked not to. */
static jp_code check_unsafe(tctx *c) {
    if (!c->unsafe_global || (c->ix->flags & JP_OPEN_ALLOW_UNSAFE)) return JP_OK;
    return jp_err_set(c->err, JP_UNSAFE, c->unsafe_offset, c->unsafe_member,
                      "GLOBAL %s %s (this file would run code under torch.load)", c->unsafe_global,
                      c->unsafe_verdict == JP_GLOBAL_DENIED ? "is not allowed"
                                                            : "would be called");
}

/* ---------------------------------------------------------------- plain values */

static const jp_pv *seq_at(const jp_pv *seq, size_t i) {
    if (!seq || (seq->kind != JP_PV_TUPLE && seq->kind != JP_PV_LIST) || i >= seq->u.seq.len)
        return NULL;
    return seq->u.seq.items[i];
}

static size_t seq_len(const jp_pv *seq) {
    return seq && (seq->kind == JP_PV_TUPLE || seq->kind == JP_PV_LIST) ? seq->u.seq.len : 0;
}

static const jp_pv *arg_at(const jp_pv *call, size_t i) { return seq_at(call->u.obj.args, i); }

/* A value with nothing inside worth a name of its own, kept whole as one
 * meta entry: numbers, strings, globals, sequences of those, and calls such
 * as torch.device('cpu') whose arguments are plain. Dicts are never plain:
 * their keys make names. Every value looked at counts against the walk's
 * budget, so shared subtrees cannot make this quadratic. */
static bool is_plain(tctx *c, const jp_pv *v, int depth) {
    if (depth > 4 || ++c->visits > MAX_VISITS) return false;
    switch (v->kind) {
    case JP_PV_NONE: case JP_PV_BOOL: case JP_PV_INT: case JP_PV_BIGINT: case JP_PV_FLOAT:
    case JP_PV_STR: case JP_PV_BYTES: case JP_PV_GLOBAL:
        return true;
    case JP_PV_TUPLE: case JP_PV_LIST: case JP_PV_SET:
        for (size_t i = 0; i < v->u.seq.len; i++)
            if (!is_plain(c, v->u.seq.items[i], depth + 1)) return false;
        return true;
    case JP_PV_CALL: case JP_PV_OBJECT: {
        const jp_pv *fn = v->u.obj.callable;
        if (v->u.obj.state || v->u.obj.items.len || v->u.obj.entries.len || v->u.obj.kwargs ||
            !fn || fn->kind != JP_PV_GLOBAL || strcmp(fn->u.global.module, "torch._utils") == 0)
            return false;
        return !v->u.obj.args || is_plain(c, v->u.obj.args, depth + 1);
    }
    default:
        return false;
    }
}

typedef struct sbuf {
    char *p;
    size_t len, cap; /* cap includes the NUL */
    bool full;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->full) return;
    size_t room = b->cap - 1 - b->len;
    if (n > room) {
        n = room;
        b->full = true;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) JP_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Python's repr of a float: the shortest of %.15g..%.17g that reads back. */
static void repr_float(sbuf *b, double f) {
    if (isnan(f)) {
        sb_str(b, "nan");
        return;
    }
    if (isinf(f)) {
        sb_str(b, f < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, f);
        if (strtod(tmp, NULL) == f) break;
    }
    sb_str(b, tmp);
    if (!strpbrk(tmp, ".en")) sb_str(b, ".0");
}

/* A two's-complement little-endian integer in decimal (LONG1/LONG4 values). */
static void repr_bigint(sbuf *b, const uint8_t *le, size_t n) {
    enum { MAXB = 64 };
    if (n > MAXB) {
        sb_str(b, "<int too long to show>");
        return;
    }
    uint8_t mag[MAXB];
    bool neg = n && (le[n - 1] & 0x80);
    unsigned carry = 1;
    for (size_t i = 0; i < n; i++) {
        unsigned x = neg ? (unsigned)(uint8_t)~le[i] + carry : le[i];
        mag[i] = (uint8_t)x;
        carry = neg ? x >> 8 : 0;
    }
    char digits[MAXB * 3 + 2];
    size_t nd = 0;
    size_t top = n;
    while (top && !mag[top - 1]) top--;
    do {
        unsigned rem = 0;
        for (size_t i = top; i-- > 0;) {
            unsigned cur = (rem << 8) | mag[i];
            mag[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
        }
        digits[nd++] = (char)('0' + rem);
        while (top && !mag[top - 1]) top--;
    } while (top);
    if (neg) sb_str(b, "-");
    while (nd) sb_put(b, &digits[--nd], 1);
}

static void repr_text(sbuf *b, const char *s, size_t n, bool bytes) {
    sb_str(b, bytes ? "b'" : "'");
    for (size_t i = 0; i < n && !b->full; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *esc = ch == '\n' ? "\\n" : ch == '\r' ? "\\r" : ch == '\t' ? "\\t" : NULL;
        if (esc) {
            sb_str(b, esc);
        } else if (ch == '\'' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            sb_put(b, e, 2);
        } else if (ch < 0x20 || ch == 0x7f || (bytes && ch >= 0x80)) {
            sb_printf(b, "\\x%02x", ch);
        } else {
            sb_put(b, (const char *)&ch, 1);
        }
    }
    sb_str(b, "'");
}

static void repr(sbuf *b, const jp_pv *v, int depth);

static void repr_seq(sbuf *b, const jp_pv *const *items, size_t n, const char *open,
                     const char *close, bool tuple, int depth) {
    sb_str(b, open);
    for (size_t i = 0; i < n && !b->full; i++) {
        if (i) sb_str(b, ", ");
        repr(b, items[i], depth + 1);
    }
    if (tuple && n == 1) sb_str(b, ",");
    sb_str(b, close);
}

static void repr(sbuf *b, const jp_pv *v, int depth) {
    if (b->full) return;
    if (depth > 8) {
        sb_str(b, "...");
        return;
    }
    const jp_pv *const *items = (const jp_pv *const *)v->u.seq.items;
    switch (v->kind) {
    case JP_PV_NONE: sb_str(b, "None"); break;
    case JP_PV_BOOL: sb_str(b, v->u.b ? "True" : "False"); break;
    case JP_PV_INT: sb_printf(b, "%lld", (long long)v->u.i); break;
    case JP_PV_BIGINT: repr_bigint(b, (const uint8_t *)v->u.str.s, v->u.str.len); break;
    case JP_PV_FLOAT: repr_float(b, v->u.f); break;
    case JP_PV_STR: repr_text(b, v->u.str.s, v->u.str.len, false); break;
    case JP_PV_BYTES: repr_text(b, v->u.str.s, v->u.str.len, true); break;
    case JP_PV_TUPLE: repr_seq(b, items, v->u.seq.len, "(", ")", true, depth); break;
    case JP_PV_LIST: repr_seq(b, items, v->u.seq.len, "[", "]", false, depth); break;
    case JP_PV_SET: repr_seq(b, items, v->u.seq.len, "{", "}", false, depth); break;
    case JP_PV_DICT:
        sb_str(b, "{");
        for (size_t i = 0; i < v->u.dict.len && !b->full; i++) {
            if (i) sb_str(b, ", ");
            repr(b, v->u.dict.keys[i], depth + 1);
            sb_str(b, ": ");
            repr(b, v->u.dict.vals[i], depth + 1);
        }
        sb_str(b, "}");
        break;
    case JP_PV_GLOBAL:
        sb_str(b, v->u.global.module);
        sb_str(b, ".");
        sb_str(b, v->u.global.name);
        break;
    case JP_PV_CALL:
    case JP_PV_OBJECT: {
        if (v->u.obj.callable) repr(b, v->u.obj.callable, depth + 1);
        const jp_pv *a = v->u.obj.args;
        if (a && a->kind == JP_PV_TUPLE)
            repr_seq(b, (const jp_pv *const *)a->u.seq.items, a->u.seq.len, "(", ")", false,
                     depth);
        else
            sb_str(b, "(...)");
        break;
    }
    case JP_PV_PERSID: sb_str(b, "<storage>"); break;
    }
}

/* ---------------------------------------------------------------- names */

static jp_code path_push(tctx *c, const jp_pv *at, const char *part, size_t n, size_t *saved) {
    *saved = c->path.len;
    if (!jp_name_push(&c->path, '.', part, n))
        return fail(c, JP_LIMIT, at, "a name grows past %d bytes", JP_LIMIT_NAME);
    return JP_OK;
}

static void path_pop(tctx *c, size_t saved) {
    jp_name_truncate(&c->path, saved);
}

/* A dict key as a path part: strings as they are, ints in decimal, anything
 * else by its repr. */
static jp_code push_key(tctx *c, const jp_pv *key, size_t *saved) {
    if (key->kind == JP_PV_STR) return path_push(c, key, key->u.str.s, key->u.str.len, saved);
    char tmp[META_REPR_MAX + 1];
    sbuf b = {tmp, 0, sizeof tmp, false};
    tmp[0] = '\0';
    repr(&b, key, 0);
    return path_push(c, key, tmp, b.len, saved);
}

static jp_code push_index(tctx *c, const jp_pv *at, size_t i, size_t *saved) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%zu", i);
    return path_push(c, at, tmp, (size_t)n, saved);
}

static jp_code add_meta(tctx *c, const jp_pv *v) {
    char tmp[META_REPR_MAX + 4];
    sbuf b = {tmp, 0, META_REPR_MAX + 1, false};
    tmp[0] = '\0';
    repr(&b, v, 0);
    if (b.full) memcpy(tmp + b.len, "...", 4);
    return jp_index_add_meta(c->ix, c->path.s, tmp) ? oom(c) : JP_OK;
}

/* ---------------------------------------------------------------- storages */

/* The bytes of a storage first used by a tensor: its zip member, swapped
 * into a copy when the archive was written big-endian. */
static jp_code zip_storage_bytes(tctx *c, storage *s, const jp_pv *at) {
    char *name = jp_arena_printf(&c->ix->arena, "%s/data/%s", c->prefix, s->key);
    if (!name) return oom(c);
    const jp_zip_entry *e = jp_zip_find(c->zip, name);
    if (!e)
        return fail(c, JP_CORRUPT, at, "a tensor uses storage '%s', but the archive has no %s",
                    s->key, name);
    s->member = e->name;
    if (e->usize != s->len)
        return jp_err_set(c->err, JP_CORRUPT, e->header_offset, e->name,
                          "the storage holds %llu bytes; its persistent id says %llu elements of "
                          "%zu bytes",
                          (unsigned long long)e->usize, (unsigned long long)s->numel,
                          jp_dtype_size(s->dtype));
    jp_code rc = jp_zip_read(c->zip, e, &c->ix->arena, &s->data, &s->len, c->err);
    if (rc) return rc;
    s->owned = e->method != 0;
    s->file_offset = s->owned ? JP_NO_OFFSET : e->data_offset;
    size_t isz = jp_dtype_size(s->dtype);
    /* Complex numbers swap each half; torch does the same. */
    if (s->dtype == JP_C32 || s->dtype == JP_C64 || s->dtype == JP_C128) isz /= 2;
    if (!c->big_endian || isz == 1 || s->len == 0) return JP_OK;
    if (s->len > SIZE_MAX)
        return fail(c, JP_LIMIT, at, "storage '%s' is too large to byte-swap", s->key);
    uint8_t *copy = jp_arena_alloc(&c->ix->arena, (size_t)s->len);
    if (!copy) return oom(c);
    for (uint64_t i = 0; i < s->len; i += isz)
        for (size_t k = 0; k < isz; k++) copy[i + k] = s->data[i + isz - 1 - k];
    s->data = copy;
    s->owned = true;
    s->file_offset = JP_NO_OFFSET;
    return JP_OK;
}

static const char *text_of(const jp_pv *v) {
    return v && (v->kind == JP_PV_STR || v->kind == JP_PV_BYTES) ? v->u.str.s : NULL;
}

/* Parse a persistent id ('storage', type, key, location, numel[, view]) and
 * find or declare its storage. In a legacy file a view id yields the view's
 * own storage record, a window on its root. */
static jp_code declare_storage(tctx *c, const jp_pv *pid, storage **out) {
    const jp_pv *t = pid->u.persid;
    size_t want = c->legacy ? 6 : 5;
    if (!t || t->kind != JP_PV_TUPLE || t->u.seq.len != want)
        return fail(c, JP_CORRUPT, pid, "a persistent id is not a %zu-tuple", want);
    jp_pv *const *f = t->u.seq.items;
    const char *tag = text_of(f[0]), *key = text_of(f[2]);
    if (!tag || strcmp(tag, "storage") != 0)
        return fail(c, JP_CORRUPT, pid, "a persistent id of kind '%s', not 'storage'",
                    tag ? tag : "?");
    if (!key || f[4]->kind != JP_PV_INT || f[4]->u.i < 0)
        return fail(c, JP_CORRUPT, pid, "a storage id without a key or element count");
    jp_dtype dt = dtype_of_storage_type(f[1]);
    if (dt == JP_DTYPE_INVALID) {
        if (f[1]->kind == JP_PV_GLOBAL)
            return fail(c, JP_UNSUPPORTED, pid, "storage type %s.%s (quantized or unknown)",
                        f[1]->u.global.module, f[1]->u.global.name);
        return fail(c, JP_CORRUPT, pid, "a storage id whose type is not a global");
    }
    uint64_t numel = (uint64_t)f[4]->u.i, len;
    if (jp_mul_overflow(numel, jp_dtype_size(dt), &len))
        return fail(c, JP_LIMIT, pid, "storage '%s' of %llu elements overflows", key,
                    (unsigned long long)numel);
    storage *s = storage_find(c, key);
    if (!s) {
        s = storage_add(c, key);
        if (!s) return oom(c);
        s->dtype = dt;
        s->numel = numel;
        s->len = len;
        s->index = UINT32_MAX;
    } else if (s->dtype != dt || s->numel != numel) {
        return fail(c, JP_CORRUPT, pid, "storage '%s' is declared twice with different types or "
                    "sizes", key);
    }
    *out = s;
    if (!c->legacy || f[5]->kind == JP_PV_NONE) return JP_OK;
    /* A legacy view: (view_key, offset, numel) within this root storage. */
    const jp_pv *vm = f[5];
    const char *vkey = vm->kind == JP_PV_TUPLE && vm->u.seq.len == 3 ? text_of(vm->u.seq.items[0])
                                                                      : NULL;
    if (!vkey || vm->u.seq.items[1]->kind != JP_PV_INT || vm->u.seq.items[2]->kind != JP_PV_INT ||
        vm->u.seq.items[1]->u.i < 0 || vm->u.seq.items[2]->u.i < 0)
        return fail(c, JP_CORRUPT, pid, "a storage view that is not (key, offset, size)");
    if (s->root_key)
        return fail(c, JP_CORRUPT, pid, "storage view '%s' of '%s', itself a view", vkey, key);
    uint64_t voff = (uint64_t)vm->u.seq.items[1]->u.i, vnum = (uint64_t)vm->u.seq.items[2]->u.i;
    uint64_t vend;
    if (jp_add_overflow(voff, vnum, &vend) || vend > numel)
        return fail(c, JP_CORRUPT, pid, "storage view '%s' reaches past its root '%s'", vkey, key);
    storage *v = storage_find(c, vkey);
    if (!v) {
        v = storage_add(c, vkey);
        if (!v) return oom(c);
        v->dtype = dt;
        v->numel = vnum;
        v->len = vnum * jp_dtype_size(dt);
        v->root_key = s->key;
        v->view_offset = voff;
        v->index = UINT32_MAX;
    }
    *out = v;
    return JP_OK;
}

/* The storage's bytes and index, found on first use. */
static jp_code use_storage(tctx *c, storage *s, const jp_pv *at) {
    if (s->index != UINT32_MAX) return JP_OK;
    if (s->root_key) {
        storage *r = storage_find(c, s->root_key);
        jp_code rc = use_storage(c, r, at);
        if (rc) return rc;
        s->data = r->data ? r->data + s->view_offset * jp_dtype_size(s->dtype) : NULL;
        s->file_offset = r->file_offset + s->view_offset * jp_dtype_size(s->dtype);
        s->member = r->member;
        s->index = r->index;
        return JP_OK;
    }
    if (!c->legacy) {
        jp_code rc = zip_storage_bytes(c, s, at);
        if (rc) return rc;
    } else if (!s->data && s->len) {
        return fail(c, JP_CORRUPT, at, "storage '%s' is used but its key is not in the list of "
                    "stored keys", s->key);
    }
    s->index = c->ix->nstorages++;
    return JP_OK;
}

/* ---------------------------------------------------------------- tensors */

static bool is_rebuild(const jp_pv *v, const char *name) {
    return is_global(v, "torch._utils", name);
}

static bool is_tensor_call(const jp_pv *v) {
    if (v->kind != JP_PV_CALL || !v->u.obj.callable) return false;
    const jp_pv *g = v->u.obj.callable;
    if (g->kind != JP_PV_GLOBAL) return false;
    if (strcmp(g->u.global.module, "torch._utils") == 0)
        return strncmp(g->u.global.name, "_rebuild_", 9) == 0;
    return is_global(g, "torch._tensor", "_rebuild_from_type_v2") ||
           is_global(g, "torch.tensor", "_rebuild_from_type_v2");
}

static jp_code int_tuple(tctx *c, const jp_pv *v, int64_t *out, int32_t *n, const char *what) {
    if (!v || (v->kind != JP_PV_TUPLE && v->kind != JP_PV_LIST))
        return fail(c, JP_CORRUPT, v, "a tensor's %s is not a tuple", what);
    if (v->u.seq.len > JP_MAX_DIMS)
        return fail(c, JP_LIMIT, v, "a tensor with %zu dimensions; at most %d are read",
                    v->u.seq.len, JP_MAX_DIMS);
    for (size_t i = 0; i < v->u.seq.len; i++) {
        const jp_pv *x = v->u.seq.items[i];
        if (x->kind != JP_PV_INT || x->u.i < 0)
            return fail(c, JP_CORRUPT, x, "a tensor's %s holds something other than a size", what);
        out[i] = x->u.i;
    }
    *n = (int32_t)v->u.seq.len;
    return JP_OK;
}

/* _rebuild_tensor(storage, offset, size, stride), _v2(..., requires_grad,
 * hooks[, metadata]), _v3(..., requires_grad, hooks, dtype[, metadata]). */
static jp_code add_tensor(tctx *c, const jp_pv *fn, const jp_pv *args, const jp_pv *call) {
    const char *name = fn->u.global.name;
    bool v3 = strcmp(name, "_rebuild_tensor_v3") == 0;
    size_t nargs = seq_len(args);
    if (nargs < (v3 ? 7u : 4u))
        return fail(c, JP_CORRUPT, call, "%s with %zu arguments", name, nargs);
    const jp_pv *pid = seq_at(args, 0), *off = seq_at(args, 1);
    if (pid->kind != JP_PV_PERSID)
        return fail(c, JP_CORRUPT, pid, "%s of something other than a storage", name);
    if (off->kind != JP_PV_INT || off->u.i < 0)
        return fail(c, JP_CORRUPT, off, "a tensor's storage offset is not a count");
    storage *s;
    jp_code rc = declare_storage(c, pid, &s);
    if (rc) return rc;
    jp_tensor *t = jp_index_new_tensor(c->ix, c->path.s, c->path.len);
    if (!t) return c->ix->tensors.len >= JP_LIMIT_TENSORS
                       ? fail(c, JP_LIMIT, call, "more than %u tensors", JP_LIMIT_TENSORS)
                       : oom(c);
    t->dtype = s->dtype;
    if (v3) {
        t->dtype = dtype_of_global(seq_at(args, 6));
        if (t->dtype == JP_DTYPE_INVALID)
            return fail(c, JP_DTYPE, seq_at(args, 6), "tensor %s has a dtype jaxport does not read",
                        c->path.s);
    }
    int32_t nstride = 0;
    rc = int_tuple(c, seq_at(args, 2), t->shape, &t->ndim, "size");
    if (!rc) rc = int_tuple(c, seq_at(args, 3), t->strides, &nstride, "stride");
    if (rc) return rc;
    if (nstride != t->ndim)
        return fail(c, JP_CORRUPT, seq_at(args, 3), "tensor %s has %d sizes but %d strides",
                    c->path.s, (int)t->ndim, (int)nstride);
    rc = use_storage(c, s, pid);
    if (rc) return rc;
    t->storage = s->index;
    if (s->owned) t->flags |= JP_TENSOR_OWNED;
    uint64_t byte_off;
    if (jp_mul_overflow((uint64_t)off->u.i, jp_dtype_size(t->dtype), &byte_off))
        return fail(c, JP_LIMIT, off, "tensor %s's storage offset overflows", c->path.s);
    const char *member = s->member ? s->member : c->pkl_member;
    return jp_index_place(c->ix, t, s->data, s->len, s->file_offset, byte_off, member, c->err);
}

/* A tensor, possibly wrapped: _rebuild_parameter(data, ...),
 * _rebuild_parameter_with_state(data, ...), _rebuild_from_type_v2(func,
 * type, args, state). */
static jp_code rebuild(tctx *c, const jp_pv *fn, const jp_pv *args, const jp_pv *call,
                       int depth) {
    if (depth > 8) return fail(c, JP_LIMIT, call, "tensor rebuild calls nested too deep");
    const char *name = fn->u.global.name;
    if (is_rebuild(fn, "_rebuild_tensor") || is_rebuild(fn, "_rebuild_tensor_v2") ||
        is_rebuild(fn, "_rebuild_tensor_v3"))
        return add_tensor(c, fn, args, call);
    if (is_rebuild(fn, "_rebuild_parameter") || is_rebuild(fn, "_rebuild_parameter_with_state")) {
        const jp_pv *data = seq_at(args, 0);
        if (!data || !is_tensor_call(data))
            return fail(c, JP_CORRUPT, call, "%s of something other than a tensor", name);
        return rebuild(c, data->u.obj.callable, data->u.obj.args, data, depth + 1);
    }
    if (strcmp(name, "_rebuild_from_type_v2") == 0) {
        const jp_pv *func = seq_at(args, 0), *inner = seq_at(args, 2);
        if (!func || func->kind != JP_PV_GLOBAL || !inner || inner->kind != JP_PV_TUPLE)
            return fail(c, JP_CORRUPT, call, "_rebuild_from_type_v2 without a function and "
                        "arguments");
        if (strcmp(func->u.global.module, "torch._utils") != 0 ||
            strncmp(func->u.global.name, "_rebuild_", 9) != 0)
            return fail(c, JP_UNSUPPORTED, func, "_rebuild_from_type_v2 of %s.%s",
                        func->u.global.module, func->u.global.name);
        return rebuild(c, func, inner, call, depth + 1);
    }
    return fail(c, JP_UNSUPPORTED, call, "%s: tensors rebuilt by torch._utils.%s (quantized, "
                "sparse, nested or meta) are not read", c->path.s, name);
}

/* ---------------------------------------------------------------- the walk */

static jp_code walk(tctx *c, const jp_pv *v, int depth);

/* Keys and values of a dict, an OrderedDict or any object filled by SETITEMS. */
typedef struct entries {
    jp_pv *const *keys, *const *vals;
    size_t len;
} entries;

static bool entries_of(const jp_pv *v, entries *e) {
    if (v && v->kind == JP_PV_DICT) {
        *e = (entries){v->u.dict.keys, v->u.dict.vals, v->u.dict.len};
        return true;
    }
    if (v && (v->kind == JP_PV_CALL || v->kind == JP_PV_OBJECT) && v->u.obj.entries.len) {
        *e = (entries){v->u.obj.entries.keys, v->u.obj.entries.vals, v->u.obj.entries.len};
        return true;
    }
    if (v && (v->kind == JP_PV_CALL || v->kind == JP_PV_OBJECT) &&
        (is_global(v->u.obj.callable, "collections", "OrderedDict") ||
         is_global(v->u.obj.callable, "builtins", "dict"))) {
        *e = (entries){NULL, NULL, 0}; /* an empty one */
        return true;
    }
    return false;
}

static const jp_pv *lookup(const entries *e, const char *key) {
    for (size_t i = 0; i < e->len; i++)
        if (e->keys[i]->kind == JP_PV_STR && strcmp(e->keys[i]->u.str.s, key) == 0)
            return e->vals[i];
    return NULL;
}

/* Whether `name` is in a set: a SET value, or set([...]) as protocol 2 writes it. */
static bool set_has(const jp_pv *set, const char *name) {
    if (!set) return false;
    const jp_pv *seq = set->kind == JP_PV_CALL ? arg_at(set, 0) : set;
    if (!seq || (seq->kind != JP_PV_SET && seq->kind != JP_PV_LIST && seq->kind != JP_PV_TUPLE))
        return false;
    for (size_t i = 0; i < seq->u.seq.len; i++) {
        const char *s = text_of(seq->u.seq.items[i]);
        if (s && strcmp(s, name) == 0) return true;
    }
    return false;
}

/* `skip` drops None values (empty parameter slots) and names in `except`. */
static jp_code walk_entries(tctx *c, const entries *e, bool skip_none, const jp_pv *except,
                            int depth) {
    for (size_t i = 0; i < e->len; i++) {
        const jp_pv *val = e->vals[i];
        if (skip_none && val->kind == JP_PV_NONE) continue;
        if (except && e->keys[i]->kind == JP_PV_STR && set_has(except, e->keys[i]->u.str.s))
            continue;
        size_t saved;
        jp_code rc = push_key(c, e->keys[i], &saved);
        if (!rc) rc = walk(c, val, depth + 1);
        if (rc) return rc;
        path_pop(c, saved);
    }
    return JP_OK;
}

static jp_code walk_seq(tctx *c, const jp_pv *const *items, size_t n, int depth) {
    for (size_t i = 0; i < n; i++) {
        size_t saved;
        jp_code rc = push_index(c, items[i], i, &saved);
        if (!rc) rc = walk(c, items[i], depth + 1);
        if (rc) return rc;
        path_pop(c, saved);
    }
    return JP_OK;
}

/* An nn.Module pickled whole: its parameters, persistent buffers and
 * submodules, named as model.state_dict() names them. */
static jp_code walk_module(tctx *c, const entries *state, int depth) {
    entries e;
    const jp_pv *p = lookup(state, "_parameters"), *b = lookup(state, "_buffers");
    const jp_pv *m = lookup(state, "_modules");
    const jp_pv *transient = lookup(state, "_non_persistent_buffers_set");
    jp_code rc = JP_OK;
    if (p && entries_of(p, &e)) rc = walk_entries(c, &e, true, NULL, depth);
    if (!rc && b && entries_of(b, &e)) rc = walk_entries(c, &e, true, transient, depth);
    if (!rc && m && entries_of(m, &e)) rc = walk_entries(c, &e, true, NULL, depth);
    return rc;
}

/* A call or instance that is not a tensor: OrderedDicts give their entries;
 * modules their state as above; other objects their state, items and
 * entries, and their arguments when those hold more than plain values. */
static jp_code walk_object(tctx *c, const jp_pv *v, int depth) {
    entries e;
    const jp_pv *fn = v->u.obj.callable;
    if (is_global(fn, "collections", "OrderedDict") || is_global(fn, "builtins", "dict")) {
        /* An OrderedDict's state is its _metadata attribute (state_dict versions). */
        entries_of(v, &e);
        return walk_entries(c, &e, false, NULL, depth);
    }
    if (is_plain(c, v, 0)) return add_meta(c, v);
    const jp_pv *st = v->u.obj.state;
    if (st && entries_of(st, &e) && (lookup(&e, "_parameters") || lookup(&e, "_modules")))
        return walk_module(c, &e, depth);
    jp_code rc = JP_OK;
    if (v->u.obj.args && !is_plain(c, v->u.obj.args, 0)) rc = walk(c, v->u.obj.args, depth + 1);
    if (!rc && st) rc = walk(c, st, depth + 1);
    if (!rc && v->u.obj.items.len)
        rc = walk_seq(c, (const jp_pv *const *)v->u.obj.items.items, v->u.obj.items.len, depth);
    if (!rc && v->u.obj.entries.len) {
        e = (entries){v->u.obj.entries.keys, v->u.obj.entries.vals, v->u.obj.entries.len};
        rc = walk_entries(c, &e, false, NULL, depth);
    }
    return rc;
}

static jp_code walk(tctx *c, const jp_pv *v, int depth) {
    if (depth > MAX_DEPTH)
        return fail(c, JP_LIMIT, v, "values nested deeper than %d (or a cycle) at %s", MAX_DEPTH,
                    c->path.len ? c->path.s : "the top");
    if (++c->visits > MAX_VISITS)
        return fail(c, JP_LIMIT, v, "more than %u values to walk: shared subtrees repeat too "
                    "often", MAX_VISITS);
    switch (v->kind) {
    case JP_PV_DICT: {
        entries e = {v->u.dict.keys, v->u.dict.vals, v->u.dict.len};
        return walk_entries(c, &e, false, NULL, depth);
    }
    case JP_PV_TUPLE:
    case JP_PV_LIST:
    case JP_PV_SET:
        if (is_plain(c, v, 0)) return add_meta(c, v);
        return walk_seq(c, (const jp_pv *const *)v->u.seq.items, v->u.seq.len, depth);
    case JP_PV_CALL:
        if (is_tensor_call(v)) return rebuild(c, v->u.obj.callable, v->u.obj.args, v, 0);
        return walk_object(c, v, depth);
    case JP_PV_OBJECT:
        return walk_object(c, v, depth);
    case JP_PV_PERSID:
        return JP_OK; /* a bare storage: bytes without a tensor's shape */
    default:
        return add_meta(c, v);
    }
}

static jp_code walk_root(tctx *c, const jp_pv *root) {
    jp_name_truncate(&c->path, 0);
    return walk(c, root, 0);
}

/* Run a reader with a fresh context (on the heap: it holds a name buffer). */
static jp_code with_context(jp_index *ix, const uint8_t *data, size_t len, jp_err *err,
                            jp_code (*read)(tctx *, const uint8_t *, size_t)) {
    tctx *c = calloc(1, sizeof *c);
    if (!c) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    c->ix = ix;
    c->err = err;
    jp_code rc = read(c, data, len);
    free(c->storages.slots);
    free(c);
    return rc;
}

/* ---------------------------------------------------------------- zip */

/* The archive's <prefix>/byteorder member, when it has one: c->big_endian
 * for "big", nothing for "little", an error for anything else. Both
 * torch.save and torch.export write it. */
static jp_code read_byteorder(tctx *c, const jp_zip *z, const jp_zip_entry **out) {
    char *bo = jp_arena_printf(&c->ix->arena, "%s/byteorder", c->prefix);
    if (!bo) return oom(c);
    const jp_zip_entry *be = *out = jp_zip_find(z, bo);
    if (!be) return JP_OK;
    const uint8_t *b;
    uint64_t n;
    jp_code rc = jp_zip_read(z, be, &c->ix->arena, &b, &n, c->err);
    if (rc) return rc;
    if (n == 3 && memcmp(b, "big", 3) == 0) c->big_endian = true;
    else if (!(n == 6 && memcmp(b, "little", 6) == 0))
        return jp_err_set(c->err, JP_CORRUPT, be->data_offset, be->name,
                          "the byte order is neither 'little' nor 'big'");
    return JP_OK;
}

/* An archive without data.pkl: torch.export's, when it says so, or no torch file. */
static jp_code read_pt2(tctx *c, const jp_zip *z, const char *pkl) {
    char *af = jp_arena_printf(&c->ix->arena, "%s/archive_format", c->prefix);
    if (!af) return oom(c);
    const jp_zip_entry *e = jp_zip_find(z, af);
    if (!e)
        return jp_err_set(c->err, JP_FORMAT, JP_NO_OFFSET, NULL,
                          "a zip archive without %s or %s: not a torch.save or torch.export file",
                          pkl, af);
    const uint8_t *v;
    uint64_t n;
    jp_code rc = jp_zip_read(z, e, &c->ix->arena, &v, &n, c->err);
    if (rc) return rc;
    if (!(n == 3 && memcmp(v, "pt2", 3) == 0))
        return jp_err_set(c->err, JP_FORMAT, e->data_offset, e->name,
                          "the archive format is not 'pt2': not a torch.export file");
    const jp_zip_entry *be;
    if ((rc = read_byteorder(c, z, &be))) return rc;
    if (c->big_endian)
        return jp_err_set(c->err, JP_UNSUPPORTED, be->data_offset, be->name,
                          "the archive's byte order is not 'little'; jaxport reads "
                          "little-endian torch.export archives");
    c->ix->format = JP_FORMAT_TORCH_EXPORT;
    return jp_read_pt2(c->ix, z, c->prefix, c->err);
}

static jp_code read_zip(tctx *c, const uint8_t *data, size_t len) {
    jp_zip z;
    jp_code rc = jp_zip_open(&z, &c->ix->arena, data, len, c->err);
    if (rc) return rc;
    if (z.count == 0)
        return jp_err_set(c->err, JP_FORMAT, 0, NULL, "an empty zip archive, not a torch.save file");
    const char *first = z.entries[0].name, *slash = strchr(first, '/');
    if (!slash)
        return jp_err_set(c->err, JP_FORMAT, z.entries[0].header_offset, first,
                          "the first member is not in a folder; torch.save puts every member "
                          "under one");
    c->zip = &z;
    c->prefix = jp_arena_strndup(&c->ix->arena, first, (size_t)(slash - first));
    char *pkl = c->prefix ? jp_arena_printf(&c->ix->arena, "%s/data.pkl", c->prefix) : NULL;
    if (!pkl) return oom(c);
    const jp_zip_entry *pe = jp_zip_find(&z, pkl), *be;
    if (!pe) return read_pt2(c, &z, pkl);
    if ((rc = read_byteorder(c, &z, &be))) return rc;
    const uint8_t *p;
    uint64_t n;
    rc = jp_zip_read(&z, pe, &c->ix->arena, &p, &n, c->err);
    if (rc) return rc;
    c->pkl_member = pe->name;
    jp_pv *root;
    rc = load_pickle(c, p, (size_t)n, pe->method == 0 ? pe->data_offset : 0, &root, NULL);
    if (!rc) rc = check_unsafe(c);
    if (!rc) rc = walk_root(c, root);
    c->zip = NULL;
    return rc;
}

jp_code jp_read_torch_zip(jp_index *ix, const uint8_t *data, size_t len, jp_err *err) {
    return with_context(ix, data, len, err, read_zip);
}

/* ---------------------------------------------------------------- legacy */

#define LEGACY_PROTOCOL 1001

/* Declare every storage any persistent id in the tree names, so the raw
 * storages after the pickles can be laid out: their item sizes come from
 * there. Each value is visited once, so shared subtrees and cycles cost
 * nothing extra. */
static jp_code collect(tctx *c, htab *seen, const jp_pv *v, int depth) {
    if (depth > MAX_DEPTH)
        return fail(c, JP_LIMIT, v, "values nested deeper than %d", MAX_DEPTH);
    if (!htab_grow(seen, hash_ptr)) return oom(c);
    void **slot = htab_slot(seen, hash_ptr(v), ptr_eq, v);
    if (*slot) return JP_OK;
    *slot = (void *)(uintptr_t)v;
    seen->len++;
    jp_code rc = JP_OK;
    switch (v->kind) {
    case JP_PV_TUPLE: case JP_PV_LIST: case JP_PV_SET:
        for (size_t i = 0; i < v->u.seq.len && !rc; i++)
            rc = collect(c, seen, v->u.seq.items[i], depth + 1);
        break;
    case JP_PV_DICT:
        for (size_t i = 0; i < v->u.dict.len && !rc; i++)
            rc = collect(c, seen, v->u.dict.vals[i], depth + 1);
        break;
    case JP_PV_CALL: case JP_PV_OBJECT: {
        const jp_pv *parts[] = {v->u.obj.callable, v->u.obj.args, v->u.obj.kwargs, v->u.obj.state};
        for (size_t i = 0; i < 4 && !rc; i++)
            if (parts[i]) rc = collect(c, seen, parts[i], depth + 1);
        for (size_t i = 0; i < v->u.obj.items.len && !rc; i++)
            rc = collect(c, seen, v->u.obj.items.items[i], depth + 1);
        for (size_t i = 0; i < v->u.obj.entries.len && !rc; i++)
            rc = collect(c, seen, v->u.obj.entries.vals[i], depth + 1);
        break;
    }
    case JP_PV_PERSID: {
        const jp_pv *t = v->u.persid;
        const char *tag = t && t->kind == JP_PV_TUPLE && t->u.seq.len ? text_of(t->u.seq.items[0])
                                                                      : NULL;
        if (tag && strcmp(tag, "module") == 0) break; /* a module's class and source */
        storage *s;
        rc = declare_storage(c, v, &s);
        break;
    }
    default:
        break;
    }
    return rc;
}

static bool magic_ok(const jp_pv *v) {
    static const uint8_t magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    return v->kind == JP_PV_BIGINT && v->u.str.len == 10 && memcmp(v->u.str.s, magic, 10) == 0;
}

static jp_code read_legacy(tctx *c, const uint8_t *data, size_t len) {
    c->legacy = true;
    c->pkl_member = "";
    jp_pv *v[5];
    size_t pos = 0;
    for (int i = 0; i < 5; i++) {
        size_t used = 0;
        jp_code rc = load_pickle(c, data + pos, len - pos, pos, &v[i], &used);
        if (rc) return rc;
        if (i == 0 && !magic_ok(v[0]))
            return jp_err_set(c->err, JP_FORMAT, 0, NULL,
                              "the first pickle is not torch's magic number");
        if (i == 1 && (v[1]->kind != JP_PV_INT || v[1]->u.i != LEGACY_PROTOCOL))
            return jp_err_set(c->err, JP_UNSUPPORTED, pos, NULL,
                              "legacy protocol version is not %d", LEGACY_PROTOCOL);
        if (i == 2 && v[2]->kind != JP_PV_DICT)
            return jp_err_set(c->err, JP_CORRUPT, pos, NULL, "the system information is not a dict");
        pos += used;
    }
    jp_code rc = check_unsafe(c);
    if (rc) return rc;
    const jp_pv *keys = v[4];
    if (keys->kind != JP_PV_LIST && keys->kind != JP_PV_TUPLE)
        return fail(c, JP_CORRUPT, keys, "the list of storage keys is not a list");
    htab seen = {0};
    rc = collect(c, &seen, v[3], 0);
    free(seen.slots);
    if (rc) return rc;
    for (size_t i = 0; i < keys->u.seq.len; i++) {
        const char *key = text_of(keys->u.seq.items[i]);
        storage *s = key ? storage_find(c, key) : NULL;
        if (!s || s->root_key || s->data)
            return fail(c, JP_CORRUPT, keys->u.seq.items[i],
                        "stored key %zu names no storage of the object, or one twice", i);
        jp_cur cur = jp_cur_make(data, len, 0);
        jp_cur_seek(&cur, pos);
        uint64_t numel = jp_cur_le(&cur, 8);
        if (cur.failed)
            return jp_err_set(c->err, JP_TRUNCATED, pos, NULL,
                              "the file ends before storage '%s'", key);
        if (numel != s->numel)
            return jp_err_set(c->err, JP_CORRUPT, pos, NULL,
                              "storage '%s' holds %llu elements; its persistent id says %llu", key,
                              (unsigned long long)numel, (unsigned long long)s->numel);
        const uint8_t *bytes = jp_cur_take(&cur, (size_t)s->len);
        if (!bytes || s->len > SIZE_MAX)
            return jp_err_set(c->err, JP_TRUNCATED, pos + 8, NULL,
                              "storage '%s' needs %llu bytes; the file has %zu left", key,
                              (unsigned long long)s->len, len - pos - 8);
        s->data = bytes;
        s->file_offset = pos + 8;
        pos = cur.pos;
    }
    return walk_root(c, v[3]);
}

jp_code jp_read_torch_legacy(jp_index *ix, const uint8_t *data, size_t len, jp_err *err) {
    return with_context(ix, data, len, err, read_legacy);
}
