/* Flax msgpack: what flax.serialization.to_bytes writes and msgpack_restore reads.
 *
 *   file    := map                                 one value, no trailing bytes
 *   value   := map | array | ext | nil | bool | int | float | str | bin
 *   map     := 80+n | de n:u16 | df n:u32          then n x (key value)
 *   key     := str | int                           flax writes str keys
 *   array   := 90+n | dc n:u16 | dd n:u32          then n x value
 *   str     := a0+n | d9 n:u8 | da n:u16 | db n:u32, then n bytes of UTF-8
 *   bin     := c4 n:u8 | c5 n:u16 | c6 n:u32, then n bytes
 *   int     := 00..7f | e0..ff | cc..cf u8..u64 | d0..d3 i8..i64
 *   float   := ca f32 | cb f64;  nil := c0;  bool := c2 | c3
 *   ext     := d4 | d5 | d6 | d7 | d8 (1, 2, 4, 8, 16 bytes) type:i8 payload
 *            | c7 n:u8 | c8 n:u16 | c9 n:u32, then type:i8, payload[n]
 *
 *   ext 1 ndarray, ext 3 numpy scalar: payload is itself msgpack,
 *       [shape: [int, ...], dtype: str|bin ("float32", "bfloat16"), data: bin|str]
 *       data are the C-order bytes, little-endian, shape x item size of them.
 *   ext 2 Python complex: payload is msgpack [real: float, imag: float].
 *   An array over flax's MAX_CHUNK_SIZE is a map instead:
 *       {"__msgpack_chunked_array__": true,
 *        "shape":  {"0": d0, "1": d1, ...},
 *        "chunks": {"0": ext 1 of one dimension, "1": ..., ...}}
 *   Every number in the framing is big-endian.
 *
 * Tensors are named by their path of map keys (and list positions) joined
 * with '/', as Flax shows parameter paths: {"Dense_0": {"kernel": ...}} gives
 * "Dense_0/kernel". A key may itself hold '/'; two paths that then collide are
 * refused as a duplicate name. Unchunked arrays are views into the file, at
 * whatever alignment the framing leaves them; chunked ones are joined into a
 * buffer of the index (JP_TENSOR_OWNED). A numpy scalar (ext 3) is a 0-d
 * tensor like a 0-d array (ext 1); the writer writes ext 1. Leaves
 * that are not arrays become meta entries with a Python-like repr, and an
 * empty map or list shows as "{}" or "[]". */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_impl.h"
#include "msgpack.h"

#define MAX_DTYPE_NAME 32     /* bytes in an ndarray's dtype name */

static const char chunk_marker[] = JP_MSGPACK_CHUNK_MARKER;

typedef enum kind { K_NIL, K_BOOL, K_UINT, K_INT, K_FLOAT, K_STR, K_BIN, K_ARRAY, K_MAP, K_EXT } kind;

static const char *const kind_names[] = {"nil", "bool", "int", "int", "float",
                                         "str", "bin", "list", "map", "ext"};

/* One msgpack item's header; strings, bins and ext payloads are taken whole. */
typedef struct head {
    kind kind;
    uint64_t at;       /* file offset of its first byte */
    uint64_t n;        /* value of a bool or UINT; count of a list or map; bytes of str, bin, ext */
    int64_t i;         /* value of an INT (negative) */
    double f;          /* value of a FLOAT */
    int ext;           /* type of an EXT */
    const uint8_t *p;  /* bytes of a str, bin or ext */
    uint64_t p_at;     /* their file offset */
} head;

typedef struct parser {
    jp_index *ix;
    jp_err *err;
    jp_name path;
} parser;

/* A decoded ndarray payload. */
typedef struct ndarr {
    jp_dtype dtype;
    int32_t ndim;
    int64_t shape[JP_MAX_DIMS];
    const uint8_t *data;
    uint64_t nbytes;
    uint64_t data_at;
} ndarr;

static jp_code fail(parser *ps, jp_code code, uint64_t at, const char *fmt, ...) JP_PRINTF(4, 5);
static jp_code fail(parser *ps, jp_code code, uint64_t at, const char *fmt, ...) {
    char msg[JP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return jp_err_set(ps->err, code, at, ps->path.s, "%s", msg);
}

static int64_t sign_extend(uint64_t v, int bits) {
    uint64_t m = 1ull << (bits - 1);
    return (int64_t)((v ^ m) - m);
}

static double float_bits(uint64_t v, int bytes) {
    if (bytes == 4) {
        uint32_t u = (uint32_t)v;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

/* Read the header at the cursor. Lengths of str, bin and ext are checked
 * against the bytes that remain, counts of lists and maps against the least
 * bytes their items need, before anything is used. */
static jp_code read_head(parser *ps, jp_cur *c, head *h) {
    memset(h, 0, sizeof *h);
    h->at = jp_cur_fileoff(c);
    if (jp_cur_left(c) == 0)
        return fail(ps, JP_TRUNCATED, h->at, "the data end where a msgpack value should start");
    uint8_t b = jp_cur_u8(c);
    int lenbytes = 0;     /* str, bin, ext: size of the length field */
    int count_bytes = 0;  /* list, map: size of the count field */
    if (b <= 0x7f) {
        h->kind = K_UINT;
        h->n = b;
    } else if (b >= 0xe0) {
        h->kind = K_INT;
        h->i = sign_extend(b, 8);
    } else if (b <= 0x8f) {
        h->kind = K_MAP;
        h->n = b & 0x0fu;
    } else if (b <= 0x9f) {
        h->kind = K_ARRAY;
        h->n = b & 0x0fu;
    } else if (b <= 0xbf) {
        h->kind = K_STR;
        h->n = b & 0x1fu;
    } else if (b == 0xc0) {
        h->kind = K_NIL;
    } else if (b == 0xc2 || b == 0xc3) {
        h->kind = K_BOOL;
        h->n = b == 0xc3;
    } else if (b >= 0xc4 && b <= 0xc6) {
        h->kind = K_BIN;
        lenbytes = 1 << (b - 0xc4);
    } else if (b >= 0xc7 && b <= 0xc9) {
        h->kind = K_EXT;
        lenbytes = 1 << (b - 0xc7);
    } else if (b == 0xca || b == 0xcb) {
        h->kind = K_FLOAT;
        int n = b == 0xca ? 4 : 8;
        h->f = float_bits(jp_cur_be(c, n), n);
    } else if (b >= 0xcc && b <= 0xcf) {
        h->kind = K_UINT;
        h->n = jp_cur_be(c, 1 << (b - 0xcc));
    } else if (b >= 0xd0 && b <= 0xd3) {
        int n = 1 << (b - 0xd0);
        int64_t v = sign_extend(jp_cur_be(c, n), 8 * n);
        if (v >= 0) {
            h->kind = K_UINT;
            h->n = (uint64_t)v;
        } else {
            h->kind = K_INT;
            h->i = v;
        }
    } else if (b >= 0xd4 && b <= 0xd8) {
        h->kind = K_EXT;
        h->n = 1u << (b - 0xd4);
    } else if (b >= 0xd9 && b <= 0xdb) {
        h->kind = K_STR;
        lenbytes = 1 << (b - 0xd9);
    } else if (b == 0xdc || b == 0xdd) {
        h->kind = K_ARRAY;
        count_bytes = b == 0xdc ? 2 : 4;
    } else if (b == 0xde || b == 0xdf) {
        h->kind = K_MAP;
        count_bytes = b == 0xde ? 2 : 4;
    } else {
        return fail(ps, JP_CORRUPT, h->at, "byte c1 is not a msgpack value (it is never used)");
    }
    if (lenbytes) h->n = jp_cur_be(c, lenbytes);
    if (count_bytes) h->n = jp_cur_be(c, count_bytes);
    if (h->kind == K_EXT) h->ext = (int)sign_extend(jp_cur_u8(c), 8);
    if (c->failed)
        return fail(ps, JP_TRUNCATED, h->at, "the data end inside the header of a msgpack %s",
                    kind_names[h->kind]);
    if (h->kind == K_STR || h->kind == K_BIN || h->kind == K_EXT) {
        h->p_at = jp_cur_fileoff(c);
        if (h->n > jp_cur_left(c))
            return fail(ps, JP_TRUNCATED, h->at,
                        "a msgpack %s of %llu bytes, but only %zu bytes remain", kind_names[h->kind],
                        (unsigned long long)h->n, jp_cur_left(c));
        h->p = jp_cur_take(c, (size_t)h->n);
    } else if (h->kind == K_ARRAY || h->kind == K_MAP) {
        uint64_t least = h->kind == K_MAP ? 2 * h->n : h->n;
        if (least > jp_cur_left(c))
            return fail(ps, JP_TRUNCATED, h->at,
                        "a msgpack %s of %llu items, but only %zu bytes remain", kind_names[h->kind],
                        (unsigned long long)h->n, jp_cur_left(c));
    }
    return JP_OK;
}

/* Step over `count` values without looking inside them. */
static jp_code skip(parser *ps, jp_cur *c, uint64_t count) {
    while (count) {
        head h;
        jp_code rc = read_head(ps, c, &h);
        if (rc) return rc;
        count--;
        /* The counts were checked against the bytes left, so this cannot overflow. */
        if (h.kind == K_MAP) count += 2 * h.n;
        if (h.kind == K_ARRAY) count += h.n;
    }
    return JP_OK;
}

static bool str_is(const head *h, const char *s) {
    size_t n = strlen(s);
    return h->kind == K_STR && h->n == n && memcmp(h->p, s, n) == 0;
}

/* Well-formed UTF-8; NUL only where `nul_ok` (names are C strings, values
 * are quoted with NUL escaped). */
static bool valid_utf8(const uint8_t *s, size_t n, bool nul_ok) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t len;
        uint32_t cp;
        if (b == 0 && !nul_ok) return false;
        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf) len = 2, cp = b & 0x1fu;
        else if (b >= 0xe0 && b <= 0xef) len = 3, cp = b & 0x0fu;
        else if (b >= 0xf0 && b <= 0xf4) len = 4, cp = b & 0x07u;
        else return false;
        if (len > n - i) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        i += len;
    }
    return true;
}

/* ---------------------------------------------------------------- paths */

static jp_code push_component(parser *ps, const char *s, size_t n, uint64_t at) {
    if (!jp_name_push(&ps->path, '/', s, n))
        return fail(ps, JP_LIMIT, at, "a key path longer than %d bytes", JP_LIMIT_NAME);
    return JP_OK;
}

static void pop_to(parser *ps, size_t len) { jp_name_truncate(&ps->path, len); }

static jp_code push_index(parser *ps, uint64_t i, uint64_t at) {
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)i);
    return push_component(ps, buf, (size_t)n, at);
}

static jp_code push_key(parser *ps, const head *k) {
    if (k->kind == K_STR) {
        if (!valid_utf8(k->p, (size_t)k->n, false))
            return fail(ps, JP_CORRUPT, k->at, "a map key that is not valid UTF-8 text");
        return push_component(ps, (const char *)k->p, (size_t)k->n, k->at);
    }
    if (k->kind == K_UINT) return push_index(ps, k->n, k->at);
    if (k->kind == K_INT) {
        char buf[24];
        int n = snprintf(buf, sizeof buf, "%lld", (long long)k->i);
        return push_component(ps, buf, (size_t)n, k->at);
    }
    return fail(ps, JP_UNSUPPORTED, k->at, "a map key of type %s (expected a string)",
                kind_names[k->kind]);
}

/* ---------------------------------------------------------------- leaves */

/* Python's repr of a float: the shortest digits that read back the same. */
static void float_repr(double x, char *out, size_t cap) {
    if (isnan(x)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(x)) {
        snprintf(out, cap, x < 0 ? "-inf" : "inf");
        return;
    }
    char sci[40];
    int digits = 1;
    for (; digits < 17; digits++) {
        snprintf(sci, sizeof sci, "%.*e", digits - 1, x);
        if (strtod(sci, NULL) == x) break;
    }
    snprintf(sci, sizeof sci, "%.*e", digits - 1, x);
    int exp = atoi(strchr(sci, 'e') + 1);
    if (exp < -4 || exp >= 16) {
        snprintf(out, cap, "%s", sci);
        return;
    }
    int decimals = digits - 1 - exp > 0 ? digits - 1 - exp : 0;
    snprintf(out, cap, "%.*f%s", decimals, x, decimals ? "" : ".0");
}

/* A quoted Python literal of text or bytes. */
static char *quoted(jp_arena *a, const uint8_t *s, size_t n, bool bytes) {
    uint64_t cap;
    if (jp_mul_overflow(n, 4, &cap) || jp_add_overflow(cap, 4, &cap) || cap > SIZE_MAX) return NULL;
    char *out = jp_arena_alloc(a, (size_t)cap);
    if (!out) return NULL;
    size_t o = 0;
    if (bytes) out[o++] = 'b';
    out[o++] = '\'';
    for (size_t i = 0; i < n; i++) {
        uint8_t b = s[i];
        const char *esc = b == '\\' ? "\\\\" : b == '\'' ? "\\'" : b == '\n' ? "\\n"
                        : b == '\r' ? "\\r" : b == '\t' ? "\\t" : NULL;
        if (esc) {
            memcpy(out + o, esc, 2);
            o += 2;
        } else if (b < 0x20 || b == 0x7f || (bytes && b >= 0x80)) {
            o += (size_t)snprintf(out + o, 5, "\\x%02x", b);
        } else {
            out[o++] = (char)b;
        }
    }
    out[o++] = '\'';
    out[o] = '\0';
    return out;
}

static jp_code add_meta(parser *ps, const char *value, uint64_t at) {
    if (!value || jp_index_add_meta(ps->ix, ps->path.s, value))
        return fail(ps, JP_NO_MEMORY, at, "out of memory");
    return JP_OK;
}

static jp_code scalar_meta(parser *ps, const head *h) {
    char buf[64] = "";
    const char *v = buf;
    switch (h->kind) {
    case K_NIL: v = "None"; break;
    case K_BOOL: v = h->n ? "True" : "False"; break;
    case K_UINT: snprintf(buf, sizeof buf, "%llu", (unsigned long long)h->n); break;
    case K_INT: snprintf(buf, sizeof buf, "%lld", (long long)h->i); break;
    case K_FLOAT: float_repr(h->f, buf, sizeof buf); break;
    case K_STR:
        if (!valid_utf8(h->p, (size_t)h->n, true))
            return fail(ps, JP_CORRUPT, h->at, "a string that is not valid UTF-8 text");
        v = quoted(&ps->ix->arena, h->p, (size_t)h->n, false);
        break;
    case K_BIN: v = quoted(&ps->ix->arena, h->p, (size_t)h->n, true); break;
    default: assert(0 && "not a scalar"); break;
    }
    return add_meta(ps, v, h->at);
}

/* The number a complex part holds. */
static bool as_double(const head *h, double *out) {
    if (h->kind == K_FLOAT) *out = h->f;
    else if (h->kind == K_UINT) *out = (double)h->n;
    else if (h->kind == K_INT) *out = (double)h->i;
    else return false;
    return true;
}

/* ext 2: a Python complex, kept as meta "(re+imj)". */
static jp_code complex_meta(parser *ps, const head *ext) {
    jp_cur c = jp_cur_make(ext->p, (size_t)ext->n, ext->p_at);
    head h, re, im;
    jp_code rc = read_head(ps, &c, &h);
    if (!rc && (h.kind != K_ARRAY || h.n != 2))
        rc = fail(ps, JP_CORRUPT, h.at, "a complex number holds a msgpack %s (expected [real, imag])",
                  kind_names[h.kind]);
    if (!rc) rc = read_head(ps, &c, &re);
    if (!rc) rc = read_head(ps, &c, &im);
    if (rc) return rc;
    double r, i;
    if (!as_double(&re, &r) || !as_double(&im, &i))
        return fail(ps, JP_CORRUPT, re.at, "a complex number whose parts are not numbers");
    if (jp_cur_left(&c))
        return fail(ps, JP_CORRUPT, jp_cur_fileoff(&c), "%zu stray bytes after a complex number",
                    jp_cur_left(&c));
    char rs[40], is[40], buf[96];
    float_repr(r, rs, sizeof rs);
    float_repr(i, is, sizeof is);
    snprintf(buf, sizeof buf, "(%s%s%sj)", rs, is[0] == '-' || is[0] == 'n' ? "" : "+", is);
    return add_meta(ps, jp_arena_strdup(&ps->ix->arena, buf), ext->at);
}

static jp_dtype numpy_dtype(const uint8_t *s, size_t n) {
    for (int d = JP_DTYPE_INVALID + 1; d < JP_DTYPE_COUNT; d++) {
        const char *name = jp_dtype_numpy_name((jp_dtype)d);
        if (strlen(name) == n && memcmp(name, s, n) == 0) return (jp_dtype)d;
    }
    return JP_DTYPE_INVALID;
}

/* A map "0", "1", ... in order: the key of entry i. */
static jp_code expect_index_key(parser *ps, jp_cur *c, uint64_t i, const char *what) {
    head k;
    jp_code rc = read_head(ps, c, &k);
    if (rc) return rc;
    char want[24];
    snprintf(want, sizeof want, "%llu", (unsigned long long)i);
    if (!str_is(&k, want))
        return fail(ps, JP_UNSUPPORTED, k.at, "entry %llu of a chunked array's %s is not keyed \"%s\"",
                    (unsigned long long)i, what, want);
    return JP_OK;
}

/* A shape: a list of sizes in an array's payload or, in a chunked array, a
 * map {"0": d0, "1": d1, ...}. */
static jp_code read_shape(parser *ps, jp_cur *c, kind want, ndarr *a) {
    head h;
    jp_code rc = read_head(ps, c, &h);
    if (rc) return rc;
    if (h.kind != want)
        return fail(ps, JP_CORRUPT, h.at, "an array's shape is a msgpack %s (expected a %s)",
                    kind_names[h.kind], kind_names[want]);
    if (h.n > JP_MAX_DIMS)
        return fail(ps, JP_LIMIT, h.at, "an array of %llu dimensions; at most %d are supported",
                    (unsigned long long)h.n, JP_MAX_DIMS);
    a->ndim = (int32_t)h.n;
    for (int d = 0; d < a->ndim; d++) {
        if (want == K_MAP && (rc = expect_index_key(ps, c, (uint64_t)d, "shape"))) return rc;
        if ((rc = read_head(ps, c, &h))) return rc;
        if (h.kind != K_UINT || h.n > INT64_MAX)
            return fail(ps, JP_CORRUPT, h.at, "dimension %d of an array's shape is not a size", d);
        a->shape[d] = (int64_t)h.n;
    }
    return JP_OK;
}

/* ext 1 and 3: [shape, dtype name, data] in the payload. */
static jp_code read_ndarray(parser *ps, const head *ext, ndarr *a) {
    jp_cur c = jp_cur_make(ext->p, (size_t)ext->n, ext->p_at);
    head h;
    jp_code rc = read_head(ps, &c, &h);
    if (rc) return rc;
    if (h.kind != K_ARRAY || h.n != 3)
        return fail(ps, JP_CORRUPT, h.at,
                    "an array's payload is a msgpack %s (expected [shape, dtype, data])",
                    kind_names[h.kind]);
    if ((rc = read_shape(ps, &c, K_ARRAY, a))) return rc;
    if ((rc = read_head(ps, &c, &h))) return rc;
    if ((h.kind != K_STR && h.kind != K_BIN) || h.n > MAX_DTYPE_NAME)
        return fail(ps, JP_CORRUPT, h.at, "an array's dtype is not a short name");
    a->dtype = numpy_dtype(h.p, (size_t)h.n);
    if (!a->dtype)
        return fail(ps, JP_DTYPE, h.at, "an array of dtype '%.*s', which jaxport does not know",
                    (int)h.n, (const char *)h.p);
    if ((rc = read_head(ps, &c, &h))) return rc;
    if (h.kind != K_BIN && h.kind != K_STR)
        return fail(ps, JP_CORRUPT, h.at, "an array's data are a msgpack %s (expected bytes)",
                    kind_names[h.kind]);
    uint64_t want = jp_dtype_size(a->dtype);
    for (int d = 0; d < a->ndim; d++)
        if (jp_mul_overflow(want, (uint64_t)a->shape[d], &want))
            return fail(ps, JP_CORRUPT, h.at, "an array's shape overflows its byte size");
    if (h.n != want)
        return fail(ps, JP_CORRUPT, h.at, "an array holds %llu bytes; its shape and dtype need %llu",
                    (unsigned long long)h.n, (unsigned long long)want);
    if (jp_cur_left(&c))
        return fail(ps, JP_CORRUPT, jp_cur_fileoff(&c), "%zu stray bytes after an array's data",
                    jp_cur_left(&c));
    a->data = h.p;
    a->nbytes = h.n;
    a->data_at = h.p_at;
    return JP_OK;
}

static jp_code add_tensor(parser *ps, const ndarr *a, const uint8_t *data, uint64_t at,
                          uint32_t flags) {
    jp_index *ix = ps->ix;
    if (ix->tensors.len >= JP_LIMIT_TENSORS)
        return fail(ps, JP_LIMIT, at, "more than %u arrays", (unsigned)JP_LIMIT_TENSORS);
    jp_tensor *t = jp_index_new_tensor(ix, ps->path.s, ps->path.len);
    if (!t) return fail(ps, JP_NO_MEMORY, at, "out of memory");
    t->dtype = a->dtype;
    t->ndim = a->ndim;
    memcpy(t->shape, a->shape, sizeof t->shape);
    jp_tensor_default_strides(t);
    t->storage = ix->nstorages++;
    t->flags = flags;
    return jp_index_place(ix, t, data, a->nbytes, at, 0, ps->path.s, ps->err);
}

/* ---------------------------------------------------------------- chunks */

/* Read the chunks of a flat array: each must be ext 1 of one dimension and
 * the same dtype. Their data are copied once the total is known. */
static jp_code chunk_list(parser *ps, jp_cur *c, ndarr *a, jp_vec *parts) {
    head h;
    jp_code rc = read_head(ps, c, &h);
    if (rc) return rc;
    if (h.kind != K_MAP || h.n == 0)
        return fail(ps, JP_CORRUPT, h.at, "a chunked array's chunks are not a map of arrays");
    a->nbytes = 0;
    for (uint64_t i = 0; i < h.n; i++) {
        head e;
        ndarr part;
        if ((rc = expect_index_key(ps, c, i, "chunks")) || (rc = read_head(ps, c, &e))) return rc;
        if (e.kind != K_EXT || e.ext != JP_MSGPACK_EXT_NDARRAY)
            return fail(ps, JP_CORRUPT, e.at, "chunk %llu of an array is not an ndarray",
                        (unsigned long long)i);
        if ((rc = read_ndarray(ps, &e, &part))) return rc;
        if (part.ndim != 1 || (i > 0 && part.dtype != a->dtype))
            return fail(ps, JP_UNSUPPORTED, e.at,
                        "chunk %llu of an array is not flat or changes dtype", (unsigned long long)i);
        a->dtype = part.dtype;
        ndarr *slot = jp_vec_push(parts);
        if (!slot) return fail(ps, JP_NO_MEMORY, e.at, "out of memory");
        *slot = part;
        a->nbytes += part.nbytes; /* the parts lie in the file, so the sum fits */
    }
    return JP_OK;
}

static jp_code read_chunked(parser *ps, jp_cur *c, const head *map) {
    ndarr a = {0};
    bool seen_marker = false, seen_shape = false, seen_chunks = false;
    jp_vec parts;
    jp_vec_init(&parts, sizeof(ndarr));
    jp_code rc = JP_OK;
    for (uint64_t i = 0; i < map->n && !rc; i++) {
        head k, v;
        if ((rc = read_head(ps, c, &k))) break;
        if (str_is(&k, chunk_marker) && !seen_marker) {
            seen_marker = true;
            if (!(rc = read_head(ps, c, &v)) && !(v.kind == K_BOOL && v.n))
                rc = fail(ps, JP_CORRUPT, v.at, "the chunked-array marker is not true");
        } else if (str_is(&k, "shape") && !seen_shape) {
            seen_shape = true;
            rc = read_shape(ps, c, K_MAP, &a);
        } else if (str_is(&k, "chunks") && !seen_chunks) {
            seen_chunks = true;
            rc = chunk_list(ps, c, &a, &parts);
        } else {
            rc = fail(ps, JP_CORRUPT, k.at, "a chunked array has an unexpected or repeated key");
        }
    }
    if (!rc && (!seen_shape || !seen_chunks))
        rc = fail(ps, JP_CORRUPT, map->at, "a chunked array without its %s",
                  seen_shape ? "chunks" : "shape");
    uint64_t want = jp_dtype_size(a.dtype);
    for (int d = 0; !rc && d < a.ndim; d++)
        if (jp_mul_overflow(want, (uint64_t)a.shape[d], &want))
            rc = fail(ps, JP_CORRUPT, map->at, "a chunked array's shape overflows its byte size");
    if (!rc && want != a.nbytes)
        rc = fail(ps, JP_CORRUPT, map->at,
                  "a chunked array's chunks hold %llu bytes; its shape and dtype need %llu",
                  (unsigned long long)a.nbytes, (unsigned long long)want);
    uint8_t *buf = NULL;
    if (!rc && a.nbytes > SIZE_MAX) rc = fail(ps, JP_LIMIT, map->at, "a chunked array too large");
    if (!rc && a.nbytes && !(buf = jp_arena_alloc(&ps->ix->arena, (size_t)a.nbytes)))
        rc = fail(ps, JP_NO_MEMORY, map->at, "out of memory joining a chunked array");
    if (!rc) {
        size_t o = 0;
        for (size_t i = 0; i < parts.len; i++) {
            const ndarr *p = &JP_VEC_AT(&parts, ndarr, i);
            if (p->nbytes) memcpy(buf + o, p->data, (size_t)p->nbytes);
            o += (size_t)p->nbytes;
        }
        rc = add_tensor(ps, &a, buf, map->at, JP_TENSOR_OWNED);
    }
    jp_vec_free(&parts);
    return rc;
}

/* Whether the map whose n entries start at the cursor holds the chunk marker.
 * Damage found on the way is left for the parse proper, which then names the
 * path where it lies. */
static bool has_marker(parser *ps, jp_cur c, uint64_t n) {
    jp_err *keep = ps->err;
    bool found = false;
    ps->err = NULL;
    for (uint64_t i = 0; i < n && !found; i++) {
        head k;
        if (read_head(ps, &c, &k)) break;
        found = str_is(&k, chunk_marker);
        if (skip(ps, &c, 1)) break;
    }
    ps->err = keep;
    return found;
}

/* ---------------------------------------------------------------- values */

static jp_code read_value(parser *ps, jp_cur *c, int depth);

static jp_code read_children(parser *ps, jp_cur *c, const head *h, int depth) {
    if (depth >= JP_MSGPACK_MAX_DEPTH)
        return fail(ps, JP_LIMIT, h->at, "maps and lists nested deeper than %d", JP_MSGPACK_MAX_DEPTH);
    if (h->n == 0 && depth > 0)
        return add_meta(ps, jp_arena_strdup(&ps->ix->arena, h->kind == K_MAP ? "{}" : "[]"), h->at);
    size_t saved = ps->path.len;
    for (uint64_t i = 0; i < h->n; i++) {
        jp_code rc;
        if (h->kind == K_MAP) {
            head k;
            if ((rc = read_head(ps, c, &k)) || (rc = push_key(ps, &k))) return rc;
        } else if ((rc = push_index(ps, i, h->at))) {
            return rc;
        }
        if ((rc = read_value(ps, c, depth + 1))) return rc;
        pop_to(ps, saved);
    }
    return JP_OK;
}

static jp_code read_value(parser *ps, jp_cur *c, int depth) {
    head h;
    jp_code rc = read_head(ps, c, &h);
    if (rc) return rc;
    switch (h.kind) {
    case K_MAP:
        return has_marker(ps, *c, h.n) ? read_chunked(ps, c, &h) : read_children(ps, c, &h, depth);
    case K_ARRAY: return read_children(ps, c, &h, depth);
    case K_EXT:
        if (h.ext == JP_MSGPACK_EXT_NDARRAY || h.ext == JP_MSGPACK_EXT_SCALAR) {
            ndarr a;
            if ((rc = read_ndarray(ps, &h, &a))) return rc;
            return add_tensor(ps, &a, a.data, a.data_at, 0);
        }
        if (h.ext == JP_MSGPACK_EXT_COMPLEX) return complex_meta(ps, &h);
        return fail(ps, JP_UNSUPPORTED, h.at,
                    "a msgpack extension of type %d (flax writes 1 arrays, 2 complex, 3 scalars)",
                    h.ext);
    default: return scalar_meta(ps, &h);
    }
}

jp_code jp_read_msgpack(jp_index *ix, const uint8_t *data, size_t len, jp_err *err) {
    parser *ps = calloc(1, sizeof *ps);
    if (!ps) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    ps->ix = ix;
    ps->err = err;
    jp_cur c = jp_cur_make(data, len, 0);
    jp_code rc = read_value(ps, &c, 0);
    if (!rc && jp_cur_left(&c))
        rc = fail(ps, JP_CORRUPT, jp_cur_fileoff(&c),
                  "%zu bytes follow the msgpack value that should end the file", jp_cur_left(&c));
    free(ps);
    return rc;
}
