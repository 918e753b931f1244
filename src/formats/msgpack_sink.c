/* Flax msgpack writer: the bytes flax.serialization.to_bytes writes for a
 * nested dict of numpy arrays, streamed one tensor at a time.
 *
 * Names are split at '/' into nested maps; keys keep the order in which they
 * first appear, as a Python dict does, so the tensors of one map must come
 * together ("a/x", "b", "a/y" is refused: "a" would have to be reopened).
 * msgpack puts every count and length before the data, and all of them follow
 * from names and shapes, so each tensor's framing is written just before its
 * bytes, which then go straight through. An array of more than chunk_bytes
 * (flax's MAX_CHUNK_SIZE) is chunked as flax does it:
 *   {"__msgpack_chunked_array__": true, "shape": {"0": d0, ...},
 *    "chunks": {"0": flat array, "1": ...}}
 * with floor(chunk_bytes / item size) elements a chunk (at least one); each
 * chunk's framing is written where its bytes start. msgpack.c draws the byte
 * layout of every piece. */
#include <stdio.h>
#include <string.h>

#include "msgpack.h"
#include "sink.h"

/* A map opened before a tensor's key: the component's text and its count. */
typedef struct opened {
    const char *key;
    size_t key_len;
    uint32_t node;
} opened;

typedef struct tensor_plan {
    size_t first_open, nopen;  /* into state.opens */
    const char *leaf;          /* the last component */
    size_t leaf_len;
    uint64_t chunk_bytes;      /* bytes per chunk; 0 when the array is not chunked */
} tensor_plan;

typedef struct state {
    tensor_plan *plans;
    opened *opens;
    uint64_t *counts;          /* entries of each map; node 0 is the top map */
    uint8_t scratch[16];
} state;

/* A path prefix in the set of keys already used. */
typedef struct prefix {
    const char *s;
    size_t len;
} prefix;

/* ---------------------------------------------------------------- encoding */

/* A msgpack header: `fix` covers n below `fix_limit` in the first byte; then
 * one of three tags for a 1-, 2- or 4-byte big-endian size (tags[0] NUL when
 * the kind has no 1-byte form). Returns its length. */
static size_t enc_head(uint8_t *out, uint64_t n, uint8_t fix, uint64_t fix_limit, const uint8_t tags[3]) {
    if (n < fix_limit) {
        out[0] = (uint8_t)(fix | n);
        return 1;
    }
    int size = (tags[0] && n <= 0xff) ? 1 : n <= 0xffff ? 2 : 4;
    out[0] = tags[size == 1 ? 0 : size == 2 ? 1 : 2];
    jp_store_be(out + 1, n, size);
    return 1 + (size_t)size;
}

static const uint8_t str_tags[3] = {0xd9, 0xda, 0xdb};
static const uint8_t bin_tags[3] = {0xc4, 0xc5, 0xc6};
static const uint8_t map_tags[3] = {0, 0xde, 0xdf};
static const uint8_t arr_tags[3] = {0, 0xdc, 0xdd};

static size_t enc_str(uint8_t *out, uint64_t n) { return enc_head(out, n, 0xa0, 32, str_tags); }
static size_t enc_bin(uint8_t *out, uint64_t n) { return enc_head(out, n, 0, 0, bin_tags); }
static size_t enc_map(uint8_t *out, uint64_t n) { return enc_head(out, n, 0x80, 16, map_tags); }
static size_t enc_arr(uint8_t *out, uint64_t n) { return enc_head(out, n, 0x90, 16, arr_tags); }

/* msgpack-python packs a non-negative int in the fewest bytes. */
static size_t enc_uint(uint8_t *out, uint64_t v) {
    if (v < 0x80) {
        out[0] = (uint8_t)v;
        return 1;
    }
    int size = v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffffu ? 4 : 8;
    out[0] = (uint8_t)(size == 1 ? 0xcc : size == 2 ? 0xcd : size == 4 ? 0xce : 0xcf);
    jp_store_be(out + 1, v, size);
    return 1 + (size_t)size;
}

/* fixext for payloads of 1, 2, 4, 8 or 16 bytes, else ext 8/16/32. */
static size_t enc_ext(uint8_t *out, uint64_t n, int type) {
    size_t len;
    if (n == 1 || n == 2 || n == 4 || n == 8 || n == 16) {
        out[0] = (uint8_t)(0xd4 + (n == 1 ? 0 : n == 2 ? 1 : n == 4 ? 2 : n == 8 ? 3 : 4));
        len = 1;
    } else {
        int size = n <= 0xff ? 1 : n <= 0xffff ? 2 : 4;
        out[0] = (uint8_t)(size == 1 ? 0xc7 : size == 2 ? 0xc8 : 0xc9);
        jp_store_be(out + 1, n, size);
        len = 1 + (size_t)size;
    }
    out[len] = (uint8_t)type;
    return len + 1;
}

static jp_code put(jp_sink *s, const void *p, size_t n, jp_err *err) {
    return jp_outfile_write(&s->out, p, n, err);
}

static jp_code put_head(jp_sink *s, size_t (*enc)(uint8_t *, uint64_t), uint64_t n, jp_err *err) {
    state *st = s->state;
    return put(s, st->scratch, enc(st->scratch, n), err);
}

static jp_code put_str(jp_sink *s, const char *p, size_t n, jp_err *err) {
    jp_code rc = put_head(s, enc_str, n, err);
    return rc ? rc : put(s, p, n, err);
}

/* The ext 1 framing of an array up to its first data byte:
 * ext header, [shape, dtype name, bin header]. */
static jp_code put_ndarray_head(jp_sink *s, jp_dtype dt, int32_t ndim, const int64_t *shape,
                                uint64_t nbytes, jp_err *err) {
    uint8_t buf[16 + 9 * JP_MAX_DIMS + 40 + 5];
    const char *name = jp_dtype_numpy_name(dt);
    size_t name_len = strlen(name);
    size_t o = 0;
    buf[o++] = 0x93;
    o += enc_arr(buf + o, (uint64_t)ndim);
    for (int d = 0; d < ndim; d++) o += enc_uint(buf + o, (uint64_t)shape[d]);
    o += enc_str(buf + o, name_len);
    memcpy(buf + o, name, name_len);
    o += name_len;
    o += enc_bin(buf + o, nbytes);
    uint64_t payload = o + nbytes;
    if (payload > UINT32_MAX)
        return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL,
                          "an array of %llu bytes does not fit a msgpack extension; lower chunk_bytes",
                          (unsigned long long)nbytes);
    uint8_t ext[8];
    jp_code rc = put(s, ext, enc_ext(ext, payload, JP_MSGPACK_EXT_NDARRAY), err);
    return rc ? rc : put(s, buf, o, err);
}

/* Everything of the next tensor before its data: maps it opens, its key, and
 * its array header (or, chunked, the map up to the chunks' count). */
static jp_code mp_tensor_begin(jp_sink *s, jp_err *err) {
    state *st = s->state;
    const jp_sink_tensor *t = &s->tensors[s->cur];
    const tensor_plan *p = &st->plans[s->cur];
    jp_code rc = JP_OK;
    for (size_t k = 0; k < p->nopen && !rc; k++) {
        const opened *o = &st->opens[p->first_open + k];
        if (!(rc = put_str(s, o->key, o->key_len, err))) rc = put_head(s, enc_map, st->counts[o->node], err);
    }
    if (!rc) rc = put_str(s, p->leaf, p->leaf_len, err);
    if (rc) return rc;
    if (!p->chunk_bytes) return put_ndarray_head(s, t->dtype, t->ndim, t->shape, t->nbytes, err);
    static const uint8_t marker_true = 0xc3;
    uint64_t nchunks = (t->nbytes + p->chunk_bytes - 1) / p->chunk_bytes;
    if ((rc = put_head(s, enc_map, 3, err)) ||
        (rc = put_str(s, JP_MSGPACK_CHUNK_MARKER, strlen(JP_MSGPACK_CHUNK_MARKER), err)) ||
        (rc = put(s, &marker_true, 1, err)) || (rc = put_str(s, "shape", 5, err)) ||
        (rc = put_head(s, enc_map, (uint64_t)t->ndim, err)))
        return rc;
    for (int d = 0; d < t->ndim && !rc; d++) {
        char key[4];
        size_t n = (size_t)snprintf(key, sizeof key, "%d", d);
        if (!(rc = put_str(s, key, n, err))) rc = put_head(s, enc_uint, (uint64_t)t->shape[d], err);
    }
    if (!rc) rc = put_str(s, "chunks", 6, err);
    if (!rc) rc = put_head(s, enc_map, nchunks, err);
    return rc;
}

/* ---------------------------------------------------------------- planning */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* Insert a prefix of a name into the set; false if it was there. */
static bool claim(prefix *set, size_t cap, const char *s, size_t len) {
    size_t h = (size_t)hash_bytes(s, len) & (cap - 1);
    while (set[h].s) {
        if (set[h].len == len && memcmp(set[h].s, s, len) == 0) return false;
        h = (h + 1) & (cap - 1);
    }
    set[h].s = s;
    set[h].len = len;
    return true;
}

static size_t count_components(const char *name) {
    size_t n = 1;
    for (; *name; name++) n += *name == '/';
    return n;
}

/* flax's _dtype_from_name takes numpy names only. */
static jp_code check_dtype(const jp_sink_tensor *t, jp_err *err) {
    if (t->dtype == JP_C32 || t->dtype == JP_F4_E2M1FN_X2)
        return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, t->name,
                          "dtype %s has no numpy name that flax.serialization could read",
                          jp_dtype_name(t->dtype));
    return JP_OK;
}

/* Split every name into nested maps, count each map's entries, and refuse
 * names that repeat, that are both a tensor and a map, or whose map would
 * have to be reopened after another key came between. */
static jp_code plan(jp_sink *s, state *st, jp_err *err) {
    size_t total = 0;
    for (size_t i = 0; i < s->n; i++) total += count_components(s->tensors[i].name);
    size_t cap = 16;
    while (cap < 2 * total) cap *= 2;
    prefix *set = jp_arena_alloc_array(&s->arena, cap, sizeof *set);
    st->plans = jp_arena_alloc_array(&s->arena, s->n ? s->n : 1, sizeof *st->plans);
    st->opens = jp_arena_alloc_array(&s->arena, total ? total : 1, sizeof *st->opens);
    st->counts = jp_arena_alloc_array(&s->arena, total + 1, sizeof *st->counts);
    if (!set || !st->plans || !st->opens || !st->counts)
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    uint32_t stack[JP_MSGPACK_MAX_DEPTH];   /* open map at each depth (node ids) */
    size_t stack_len = 0, nopens = 0;
    uint32_t nodes = 1;                     /* node 0: the top map */
    const char *prev = "";
    for (size_t i = 0; i < s->n; i++) {
        const jp_sink_tensor *t = &s->tensors[i];
        jp_code rc = check_dtype(t, err);
        if (rc) return rc;
        const char *name = t->name;
        /* Keep the open maps whose whole prefix this name shares. */
        size_t keep = 0;
        for (size_t k = 0; name[k] && name[k] == prev[k]; k++) keep += name[k] == '/';
        stack_len = keep;
        tensor_plan *p = &st->plans[i];
        p->first_open = nopens;
        /* Skip the kept components, then open a map for each further one. */
        const char *c = name;
        for (size_t k = 0; k < keep; k++) c = strchr(c, '/') + 1;
        const char *slash;
        while ((slash = strchr(c, '/'))) {
            if (stack_len + 2 >= JP_MSGPACK_MAX_DEPTH)
                return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, name,
                                  "a name nested deeper than %d maps", JP_MSGPACK_MAX_DEPTH - 2);
            if (!claim(set, cap, name, (size_t)(slash - name)))
                return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, name,
                                  "%.*s was already written as a tensor, or its tensors do not come together",
                                  (int)(slash - name), name);
            st->counts[stack_len ? stack[stack_len - 1] : 0]++;
            opened *o = &st->opens[nopens++];
            o->key = c;
            o->key_len = (size_t)(slash - c);
            o->node = nodes++;
            stack[stack_len++] = o->node;
            p->nopen++;
            c = slash + 1;
        }
        if (!claim(set, cap, name, strlen(name)))
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, name,
                              "the name is given twice, or is also a map of other tensors");
        st->counts[stack_len ? stack[stack_len - 1] : 0]++;
        p->leaf = c;
        p->leaf_len = strlen(c);
        uint64_t limit = s->opts.chunk_bytes ? s->opts.chunk_bytes : JP_MSGPACK_CHUNK_BYTES;
        if (t->nbytes > limit) {
            uint64_t isz = jp_dtype_size(t->dtype);
            uint64_t elems = limit / isz ? limit / isz : 1;
            p->chunk_bytes = elems * isz;
        }
        prev = name;
    }
    return JP_OK;
}

/* ---------------------------------------------------------------- operations */

static jp_code mp_begin(jp_sink *s, jp_err *err) {
    state *st = jp_arena_alloc(&s->arena, sizeof *st);
    if (!st) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    s->state = st;
    jp_code rc = plan(s, st, err);
    return rc ? rc : put_head(s, enc_map, st->counts[0], err);
}

static jp_code mp_write(jp_sink *s, const void *data, size_t len, jp_err *err) {
    state *st = s->state;
    jp_code rc;
    const jp_sink_tensor *t = &s->tensors[s->cur];
    uint64_t cb = st->plans[s->cur].chunk_bytes;
    if (!cb) return put(s, data, len, err);
    const uint8_t *p = data;
    uint64_t pos = t->nbytes - s->left;
    while (len) {
        uint64_t in_chunk = pos % cb;
        if (in_chunk == 0) {
            uint64_t chunk = pos / cb;
            int64_t elems = (int64_t)((t->nbytes - pos < cb ? t->nbytes - pos : cb) / jp_dtype_size(t->dtype));
            char key[24];
            size_t n = (size_t)snprintf(key, sizeof key, "%llu", (unsigned long long)chunk);
            if ((rc = put_str(s, key, n, err)) ||
                (rc = put_ndarray_head(s, t->dtype, 1, &elems, (uint64_t)elems * jp_dtype_size(t->dtype), err)))
                return rc;
        }
        size_t take = cb - in_chunk < len ? (size_t)(cb - in_chunk) : len;
        if ((rc = put(s, p, take, err))) return rc;
        p += take;
        pos += take;
        len -= take;
    }
    return JP_OK;
}

const struct jp_sink_ops jp_sink_msgpack = {
    .extension = ".msgpack",
    .format = JP_FORMAT_MSGPACK,
    .begin = mp_begin,
    .tensor_begin = mp_tensor_begin,
    .write = mp_write,
};
