/* The index of tensors: format detection, the shared builder, lookup. */
#include <stdlib.h>
#include <string.h>

#include "index_impl.h"

static const char *const format_names[JP_FORMAT_COUNT] = {
    [JP_FORMAT_UNKNOWN] = "unknown",           [JP_FORMAT_TORCH_ZIP] = "torch-zip",
    [JP_FORMAT_TORCH_LEGACY] = "torch-legacy", [JP_FORMAT_SAFETENSORS] = "safetensors",
    [JP_FORMAT_NPY] = "npy",                   [JP_FORMAT_NPZ] = "npz",
    [JP_FORMAT_MSGPACK] = "msgpack",           [JP_FORMAT_EQX] = "eqx",
    [JP_FORMAT_SHARDED] = "sharded",           [JP_FORMAT_TORCH_EXPORT] = "torch-export",
};

const char *jp_format_name(jp_format f) {
    return (unsigned)f < JP_FORMAT_COUNT ? format_names[f] : "unknown";
}

/* ---------------------------------------------------------------- builder */

jp_tensor *jp_index_new_tensor(jp_index *ix, const char *name, size_t name_len) {
    if (ix->tensors.len >= JP_LIMIT_TENSORS || name_len > JP_LIMIT_NAME) return NULL;
    jp_tensor *t = jp_arena_alloc(&ix->arena, sizeof *t);
    char *n = jp_arena_strndup(&ix->arena, name, name_len);
    jp_tensor **slot = jp_vec_push(&ix->tensors);
    if (!t || !n || !slot) return NULL;
    t->name = n;
    t->file_offset = JP_NO_OFFSET;
    *slot = t;
    return t;
}

jp_code jp_index_add_meta(jp_index *ix, const char *key, const char *value) {
    jp_meta *m = jp_vec_push(&ix->meta);
    if (!m) return JP_NO_MEMORY;
    m->key = jp_arena_strdup(&ix->arena, key);
    m->value = jp_arena_strdup(&ix->arena, value);
    return m->key && m->value ? JP_OK : JP_NO_MEMORY;
}

jp_code jp_index_add_finding(jp_index *ix, jp_finding_kind kind, const char *global,
                             const char *member, uint64_t offset) {
    /* One finding per global and kind is enough to report. */
    for (size_t i = 0; i < ix->findings.len; i++) {
        jp_finding *f = &JP_VEC_AT(&ix->findings, jp_finding, i);
        if (f->kind == kind && strcmp(f->global, global) == 0) return JP_OK;
    }
    jp_finding *f = jp_vec_push(&ix->findings);
    if (!f) return JP_NO_MEMORY;
    f->kind = kind;
    f->global = jp_arena_strdup(&ix->arena, global);
    f->member = jp_arena_strdup(&ix->arena, member ? member : "");
    f->offset = offset;
    return f->global && f->member ? JP_OK : JP_NO_MEMORY;
}

void jp_tensor_default_strides(jp_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->strides[i] = s;
        s *= t->shape[i] > 0 ? t->shape[i] : 1;
    }
}

jp_code jp_index_place(jp_index *ix, jp_tensor *t, const uint8_t *span, uint64_t span_len,
                       uint64_t span_file_offset, uint64_t byte_offset, const char *member,
                       jp_err *err) {
    (void)ix;
    size_t isz = jp_dtype_size(t->dtype);
    if (isz == 0)
        return jp_err_set(err, JP_DTYPE, span_file_offset, member, "tensor %s has no dtype",
                          t->name);
    if (t->ndim < 0 || t->ndim > JP_MAX_DIMS)
        return jp_err_set(err, JP_LIMIT, span_file_offset, member,
                          "tensor %s has %d dimensions; at most %d are supported", t->name,
                          (int)t->ndim, JP_MAX_DIMS);
    uint64_t numel = 1, last = 0; /* last: element offset of the furthest element */
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0 || t->strides[i] < 0)
            return jp_err_set(err, JP_CORRUPT, span_file_offset, member,
                              "tensor %s: negative size or stride in dimension %d", t->name, i);
        if (jp_mul_overflow(numel, (uint64_t)t->shape[i], &numel))
            return jp_err_set(err, JP_LIMIT, span_file_offset, member,
                              "tensor %s: element count overflows", t->name);
    }
    uint64_t nbytes;
    if (jp_mul_overflow(numel, isz, &nbytes))
        return jp_err_set(err, JP_LIMIT, span_file_offset, member,
                          "tensor %s: byte size overflows", t->name);
    t->numel = numel;
    t->nbytes = nbytes;
    if (numel == 0) {
        t->data = NULL;
        t->file_offset = span_file_offset;
        return JP_OK;
    }
    for (int i = 0; i < t->ndim; i++) {
        uint64_t step;
        if (jp_mul_overflow((uint64_t)(t->shape[i] - 1), (uint64_t)t->strides[i], &step) ||
            jp_add_overflow(last, step, &last))
            return jp_err_set(err, JP_LIMIT, span_file_offset, member,
                              "tensor %s: stride extent overflows", t->name);
    }
    uint64_t end_elem = 0, end_byte = 0;
    if (jp_add_overflow(last, 1, &end_elem) || jp_mul_overflow(end_elem, isz, &end_byte) ||
        jp_add_overflow(end_byte, byte_offset, &end_byte) || end_byte > span_len)
        return jp_err_set(err, JP_CORRUPT, span_file_offset, member,
                          "tensor %s needs bytes up to %llu of its storage, which holds %llu",
                          t->name, (unsigned long long)end_byte, (unsigned long long)span_len);
    t->data = span + byte_offset;
    t->file_offset = span_file_offset == JP_NO_OFFSET ? JP_NO_OFFSET : span_file_offset + byte_offset;
    return JP_OK;
}

jp_code jp_index_map_file(jp_index *ix, const char *path, const uint8_t **data, size_t *len,
                          jp_err *err) {
    jp_map *m = jp_vec_push(&ix->maps);
    if (!m) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    m->fd = -1;
    jp_code rc = jp_map_open(m, path, err);
    if (rc) {
        ix->maps.len--;
        return rc;
    }
    *data = m->data;
    *len = m->len;
    return JP_OK;
}

/* ---------------------------------------------------------------- finish */

static bool is_contiguous(const jp_tensor *t) {
    if (t->numel == 0) return true; /* no element to be out of place, as torch says */
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

/* Whether t's first byte is in a file the index mapped (not memory a caller
 * lent, not a buffer of the index). */
static bool in_file_mapping(const jp_index *ix, const jp_tensor *t) {
    if (!t->data || (t->flags & JP_TENSOR_OWNED)) return false;
    for (size_t k = 0; k < ix->maps.len; k++) {
        const jp_map *m = &JP_VEC_AT(&ix->maps, jp_map, k);
        if ((uintptr_t)t->data >= (uintptr_t)m->data && (uintptr_t)t->data < (uintptr_t)m->data + m->len) return true;
    }
    return false;
}

static jp_code finish(jp_index *ix, jp_err *err) {
    size_t n = ix->tensors.len;
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    ix->table = jp_arena_alloc_array(&ix->arena, cap, sizeof *ix->table);
    uint32_t *uses = NULL;
    if (ix->nstorages) uses = calloc(ix->nstorages, sizeof *uses);
    if (!ix->table || (ix->nstorages && !uses)) {
        free(uses);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory building the index");
    }
    ix->table_cap = cap;
    for (size_t i = 0; i < n; i++) {
        jp_tensor *t = JP_VEC_AT(&ix->tensors, jp_tensor *, i);
        size_t h = (size_t)jp_hash_str(t->name) & (cap - 1);
        while (ix->table[h]) {
            if (strcmp(JP_VEC_AT(&ix->tensors, jp_tensor *, ix->table[h] - 1)->name, t->name) == 0) {
                free(uses);
                return jp_err_set(err, JP_CORRUPT, t->file_offset, t->name,
                                  "the name %s appears twice", t->name);
            }
            h = (h + 1) & (cap - 1);
        }
        ix->table[h] = (uint32_t)i + 1;
        if (is_contiguous(t)) t->flags |= JP_TENSOR_CONTIGUOUS;
        if (in_file_mapping(ix, t)) t->flags |= JP_TENSOR_MAPPED;
        if (uses && t->storage < ix->nstorages) uses[t->storage]++;
    }
    if (uses) {
        for (size_t i = 0; i < n; i++) {
            jp_tensor *t = JP_VEC_AT(&ix->tensors, jp_tensor *, i);
            if (t->storage < ix->nstorages && uses[t->storage] > 1) t->flags |= JP_TENSOR_SHARED;
        }
    }
    free(uses);
    return JP_OK;
}

/* ---------------------------------------------------------------- open */

static bool has_prefix(const uint8_t *d, size_t len, const char *magic, size_t n) {
    return len >= n && memcmp(d, magic, n) == 0;
}

/* A msgpack map (flax.serialization.to_bytes). 80, the empty map, is also
 * pickle's PROTO, so alone it counts only as the whole file. */
static bool msgpack_like(const uint8_t *d, size_t len) {
    return len > 0 && ((d[0] >= 0x81 && d[0] <= 0x8f) || d[0] == 0xde || d[0] == 0xdf ||
                       (d[0] == 0x80 && len == 1));
}

jp_code jp_index_read_any(jp_index *ix, const uint8_t *d, size_t len, jp_err *err) {
    if (has_prefix(d, len, "PK\x03\x04", 4) || has_prefix(d, len, "PK\x05\x06", 4)) {
        if (jp_npz_sniff(d, len)) {
            ix->format = JP_FORMAT_NPZ;
            return jp_read_npz(ix, d, len, err);
        }
        ix->format = JP_FORMAT_TORCH_ZIP;
        return jp_read_torch_zip(ix, d, len, err);
    }
    /* PROTO 2, then LONG1 of ten bytes: the legacy torch.save magic number. */
    if (has_prefix(d, len, "\x80\x02\x8a\x0a", 4)) {
        ix->format = JP_FORMAT_TORCH_LEGACY;
        return jp_read_torch_legacy(ix, d, len, err);
    }
    /* safetensors: a little-endian u64 header length, then the header's '{'.
     * Lengths below 2**40 have three zero top bytes, which no zip, pickle or
     * npy magic has. The length's first byte may look like a msgpack map, so
     * when the length does not fit the file such a file stays msgpack. */
    if (len > 8 && d[8] == '{' && !d[5] && !d[6] && !d[7] &&
        (jp_load_le(d, 8) <= len - 8 || !msgpack_like(d, len))) {
        ix->format = JP_FORMAT_SAFETENSORS;
        return jp_read_safetensors(ix, d, len, err);
    }
    if (msgpack_like(d, len)) {
        ix->format = JP_FORMAT_MSGPACK;
        return jp_read_msgpack(ix, d, len, err);
    }
    /* One record is a .npy; more are Equinox's sequence of them. */
    if (has_prefix(d, len, "\x93NUMPY", 6)) {
        if (jp_eqx_sniff(d, len)) {
            ix->format = JP_FORMAT_EQX;
            return jp_read_eqx(ix, d, len, err);
        }
        ix->format = JP_FORMAT_NPY;
        return jp_read_npy(ix, d, len, err);
    }
    return jp_err_set(err, JP_FORMAT, 0, NULL,
                      "not a file jaxport reads (it starts with bytes %02x %02x %02x %02x)",
                      len > 0 ? d[0] : 0, len > 1 ? d[1] : 0, len > 2 ? d[2] : 0,
                      len > 3 ? d[3] : 0);
}

static jp_index *new_index(const char *name, const jp_open_opts *opts) {
    jp_index *ix = calloc(1, sizeof *ix);
    if (!ix) return NULL;
    jp_arena_init(&ix->arena);
    jp_vec_init(&ix->maps, sizeof(jp_map));
    jp_vec_init(&ix->tensors, sizeof(jp_tensor *));
    jp_vec_init(&ix->meta, sizeof(jp_meta));
    jp_vec_init(&ix->findings, sizeof(jp_finding));
    ix->flags = opts ? opts->flags : 0;
    ix->name = jp_arena_strdup(&ix->arena, name ? name : "<memory>");
    if (!ix->name) {
        jp_index_close(ix);
        return NULL;
    }
    return ix;
}

/* `path` is NULL for memory. A *.json path is a shard index: the only
 * format told from a name, since JSON has no magic bytes. */
static jp_code open_common(jp_index *ix, const char *path, const uint8_t *d, size_t len,
                           jp_index **out, jp_err *err) {
    size_t plen = path ? strlen(path) : 0;
    bool shards = plen >= 5 && strcmp(path + plen - 5, ".json") == 0;
    jp_code rc = shards ? jp_read_sharded(ix, path, d, len, err) : jp_index_read_any(ix, d, len, err);
    if (!rc && shards) ix->format = JP_FORMAT_SHARDED;
    if (!rc) rc = finish(ix, err);
    if (rc) {
        jp_err_prefix(err, ix->name);
        jp_index_close(ix);
        return rc;
    }
    *out = ix;
    return JP_OK;
}

jp_code jp_index_open(jp_index **out, const char *path, const jp_open_opts *opts, jp_err *err) {
    jp_err_clear(err);
    if (!out || !path) return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "no output or path");
    *out = NULL;
    jp_index *ix = new_index(path, opts);
    if (!ix) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    const uint8_t *d;
    size_t len;
    jp_code rc = jp_index_map_file(ix, path, &d, &len, err);
    if (rc) {
        jp_index_close(ix);
        return rc;
    }
    return open_common(ix, path, d, len, out, err);
}

/* A tensor's first address and its place, sorted without shared state. */
typedef struct by_address {
    uintptr_t data;
    size_t i;
} by_address;

static int cmp_address(const void *a, const void *b) {
    const by_address *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : (x->i > y->i) - (x->i < y->i);
}

jp_code jp_index_open_tensors(jp_index **out, const jp_tensor *tensors, size_t n, const char *name,
                              jp_err *err) {
    jp_err_clear(err);
    if (!out || (!tensors && n)) return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "no output or tensors");
    *out = NULL;
    jp_index *ix = new_index(name ? name : "<arrays>", NULL);
    by_address *order = calloc(n + 1, sizeof *order);
    if (!ix || !order) {
        free(order);
        jp_index_close(ix);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    }
    jp_code rc = JP_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        const jp_tensor *src = &tensors[i];
        jp_tensor *t = src->name ? jp_index_new_tensor(ix, src->name, strlen(src->name)) : NULL;
        if (!t) {
            rc = jp_err_set(err, src->name ? JP_LIMIT : JP_ARGUMENT, JP_NO_OFFSET, src->name,
                            "tensor %zu: no name, a name over the limit, or too many tensors", i);
            break;
        }
        const char *kept = t->name;
        *t = *src;
        t->name = kept;
        t->flags = 0; /* finish() sets what holds */
        t->file_offset = JP_NO_OFFSET;
        order[i] = (by_address){(uintptr_t)src->data, i};
    }
    /* Tensors that start at the same address share a storage (tied weights). */
    if (!rc) qsort(order, n, sizeof *order, cmp_address);
    for (size_t k = 0; k < n && !rc; k++) {
        jp_tensor *t = JP_VEC_AT(&ix->tensors, jp_tensor *, order[k].i);
        bool same = k && t->data && order[k].data == order[k - 1].data;
        t->storage = same ? JP_VEC_AT(&ix->tensors, jp_tensor *, order[k - 1].i)->storage : ix->nstorages++;
    }
    free(order);
    if (!rc) rc = finish(ix, err);
    if (rc) {
        jp_index_close(ix);
        return rc;
    }
    *out = ix;
    return JP_OK;
}

jp_code jp_index_open_memory(jp_index **out, const void *data, size_t len, const char *name,
                             const jp_open_opts *opts, jp_err *err) {
    jp_err_clear(err);
    if (!out || (!data && len)) return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "no output or data");
    *out = NULL;
    jp_index *ix = new_index(name, opts);
    if (!ix) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    return open_common(ix, NULL, data, len, out, err);
}

void jp_index_close(jp_index *ix) {
    if (!ix) return;
    for (size_t i = 0; i < ix->maps.len; i++) jp_map_close(&JP_VEC_AT(&ix->maps, jp_map, i));
    jp_vec_free(&ix->maps);
    jp_vec_free(&ix->tensors);
    jp_vec_free(&ix->meta);
    jp_vec_free(&ix->findings);
    jp_arena_free(&ix->arena);
    free(ix);
}

jp_format jp_index_format(const jp_index *ix) { return ix ? ix->format : JP_FORMAT_UNKNOWN; }
size_t jp_index_count(const jp_index *ix) { return ix ? ix->tensors.len : 0; }

const jp_tensor *jp_index_at(const jp_index *ix, size_t i) {
    return ix && i < ix->tensors.len ? JP_VEC_AT(&ix->tensors, jp_tensor *, i) : NULL;
}

size_t jp_index_position(const jp_index *ix, const char *name) {
    if (!ix || !name || !ix->table) return SIZE_MAX;
    size_t h = (size_t)jp_hash_str(name) & (ix->table_cap - 1);
    while (ix->table[h]) {
        size_t i = ix->table[h] - 1;
        if (strcmp(JP_VEC_AT(&ix->tensors, jp_tensor *, i)->name, name) == 0) return i;
        h = (h + 1) & (ix->table_cap - 1);
    }
    return SIZE_MAX;
}

const jp_tensor *jp_index_find(const jp_index *ix, const char *name) {
    size_t i = jp_index_position(ix, name);
    return i == SIZE_MAX ? NULL : JP_VEC_AT(&ix->tensors, jp_tensor *, i);
}

size_t jp_index_meta_count(const jp_index *ix) { return ix ? ix->meta.len : 0; }
const jp_meta *jp_index_meta_at(const jp_index *ix, size_t i) {
    return ix && i < ix->meta.len ? &JP_VEC_AT(&ix->meta, jp_meta, i) : NULL;
}
size_t jp_index_finding_count(const jp_index *ix) { return ix ? ix->findings.len : 0; }
const jp_finding *jp_index_finding_at(const jp_index *ix, size_t i) {
    return ix && i < ix->findings.len ? &JP_VEC_AT(&ix->findings, jp_finding, i) : NULL;
}
