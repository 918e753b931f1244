/* safetensors (Hugging Face): a JSON header, then every tensor's bytes.
 *
 *   offset 0     u64 LE   N             the header's length in bytes
 *   offset 8     N bytes  header        UTF-8 JSON object, maybe padded with spaces
 *   offset 8+N   ...      data          the tensors' bytes back to back, up to the
 *                                       end of the file, nothing after
 *
 *   header = {"__metadata__": {"key": "value", ...},       optional; strings only
 *             "name": {"dtype": "F32",                     a name of the Dtype enum
 *                      "shape": [2, 3],                    row-major, little-endian
 *                      "data_offsets": [begin, end]},      relative to 8+N
 *             ...}
 *
 * Validation follows the reference implementation (safetensors/src/tensor.rs,
 * read_metadata and Metadata::validate): N at most 100,000,000; the header
 * valid UTF-8 and a JSON object; every dtype one the format names; sorted by
 * offsets, each tensor begins where the previous one ended (the first at 0),
 * holds exactly shape x item size bytes (checked arithmetic), and the last
 * ends exactly at the end of the file. Beyond it, jaxport refuses duplicate
 * names (the reference keeps the last), names with NUL, more than 16
 * dimensions, and dims or offsets of 2**63 or more.
 *
 * F4 counts 4-bit elements; a tensor of shape [..., 2k] is read as torch's
 * float4_e2m1fn_x2 of shape [..., k] (two per byte), as safetensors.torch
 * does. The 6-bit floats have no jaxport dtype and are refused.
 *
 * Errors in the header carry the header's offset, 8 (JSON syntax errors:
 * the offset just past the token where the parser stopped); errors in the
 * data carry the file offset where the tensor's data begin. Tensors keep the
 * header's order; data are views into the file, aligned only as well as
 * the writer aligned them. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "index_impl.h"
#include "safetensors.h"

/* In the order of the reference's Dtype enum: the writer sorts by it. */
static const struct {
    const char *name;
    jp_dtype dt;   /* INVALID: a dtype jaxport does not read */
    unsigned bits; /* per element */
} st_dtypes[] = {
    {"BOOL", JP_BOOL, 8},
    {"F4", JP_F4_E2M1FN_X2, 4},
    {"F6_E2M3", JP_DTYPE_INVALID, 6},
    {"F6_E3M2", JP_DTYPE_INVALID, 6},
    {"U8", JP_U8, 8},
    {"I8", JP_I8, 8},
    {"F8_E5M2", JP_F8_E5M2, 8},
    {"F8_E4M3", JP_F8_E4M3FN, 8},
    {"F8_E8M0", JP_F8_E8M0FNU, 8},
    {"F8_E4M3FNUZ", JP_F8_E4M3FNUZ, 8},
    {"F8_E5M2FNUZ", JP_F8_E5M2FNUZ, 8},
    {"I16", JP_I16, 16},
    {"U16", JP_U16, 16},
    {"F16", JP_F16, 16},
    {"BF16", JP_BF16, 16},
    {"I32", JP_I32, 32},
    {"U32", JP_U32, 32},
    {"F32", JP_F32, 32},
    {"C64", JP_C64, 64},
    {"F64", JP_F64, 64},
    {"I64", JP_I64, 64},
    {"U64", JP_U64, 64},
};
#define N_ST_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

int jp_st_dtype_rank(jp_dtype dt) {
    for (size_t i = 0; i < N_ST_DTYPES; i++)
        if (dt != JP_DTYPE_INVALID && st_dtypes[i].dt == dt) return (int)i;
    return -1;
}

const char *jp_st_dtype_name(jp_dtype dt) {
    int r = jp_st_dtype_rank(dt);
    return r < 0 ? NULL : st_dtypes[r].name;
}

bool jp_st_utf8_valid(const uint8_t *s, size_t n, size_t *bad) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1, cp = c & 0x1fu, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2, cp = c & 0x0fu, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3, cp = c & 0x07u, min = 0x10000;
        } else {
            break;
        }
        if (k > n - i - 1) break;
        size_t j = 1;
        for (; j <= k && (s[i + j] & 0xc0) == 0x80; j++) cp = (cp << 6) | (s[i + j] & 0x3fu);
        if (j <= k || cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) break;
        i += k + 1;
    }
    if (bad) *bad = i;
    return i == n;
}

/* ---------------------------------------------------------------- reading */

typedef struct entry {
    jp_tensor *t;
    uint64_t begin, end;
    size_t pos;     /* in the header, to break ties */
    unsigned bits;  /* per element as the header counts them */
} entry;

static int by_offsets(const void *pa, const void *pb) {
    const entry *a = pa, *b = pb;
    if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end) return a->end < b->end ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

static bool get_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static jp_code read_meta(jp_index *ix, json_t *meta, jp_err *err) {
    if (json_is_null(meta)) return JP_OK;  /* an absent Option in the reference */
    if (!json_is_object(meta))
        return jp_err_set(err, JP_CORRUPT, JP_ST_LEN_BYTES, "__metadata__",
                          "__metadata__ must be an object of strings");
    const char *key;
    json_t *val;
    json_object_foreach(meta, key, val) {
        if (!json_is_string(val))
            return jp_err_set(err, JP_CORRUPT, JP_ST_LEN_BYTES, "__metadata__",
                              "the __metadata__ value of %s is not a string", key);
        if (jp_index_add_meta(ix, key, json_string_value(val)))
            return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    }
    return JP_OK;
}

/* One tensor's entry: its dtype, shape and offsets; a new tensor in ix. */
static jp_code read_entry(jp_index *ix, const char *name, json_t *v, entry *e, jp_err *err) {
    const uint64_t at = JP_ST_LEN_BYTES;
    if (!json_is_object(v))
        return jp_err_set(err, JP_CORRUPT, at, name, "the entry of tensor %s is not an object", name);
    json_t *dtype = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
           *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offs))
        return jp_err_set(err, JP_CORRUPT, at, name,
                          "tensor %s needs \"dtype\" (a string), \"shape\" and \"data_offsets\" (arrays)",
                          name);
    const char *dn = json_string_value(dtype);
    size_t r = 0;
    while (r < N_ST_DTYPES && strcmp(st_dtypes[r].name, dn) != 0) r++;
    if (r == N_ST_DTYPES)
        return jp_err_set(err, JP_DTYPE, at, name, "tensor %s has dtype %.40s, which safetensors does not name",
                          name, dn);
    if (st_dtypes[r].dt == JP_DTYPE_INVALID)
        return jp_err_set(err, JP_DTYPE, at, name, "tensor %s has dtype %s, which jaxport does not read",
                          name, dn);
    size_t ndim = json_array_size(shape);
    if (ndim > JP_MAX_DIMS)
        return jp_err_set(err, JP_LIMIT, at, name, "tensor %s has %zu dimensions; at most %d are supported",
                          name, ndim, JP_MAX_DIMS);
    jp_tensor *t = jp_index_new_tensor(ix, name, strlen(name));
    if (!t)
        return jp_err_set(err, ix->tensors.len >= JP_LIMIT_TENSORS || strlen(name) > JP_LIMIT_NAME
                                   ? JP_LIMIT : JP_NO_MEMORY,
                          at, name, "no room for tensor %.64s (more than %u tensors or a name over %d bytes)",
                          name, JP_LIMIT_TENSORS, JP_LIMIT_NAME);
    t->dtype = st_dtypes[r].dt;
    t->ndim = (int32_t)ndim;
    for (size_t d = 0; d < ndim; d++) {
        uint64_t dim;
        if (!get_u64(json_array_get(shape, d), &dim))
            return jp_err_set(err, JP_CORRUPT, at, name,
                              "dimension %zu of tensor %s is not a non-negative integer", d, name);
        t->shape[d] = (int64_t)dim;
    }
    if (json_array_size(offs) != 2 || !get_u64(json_array_get(offs, 0), &e->begin) ||
        !get_u64(json_array_get(offs, 1), &e->end))
        return jp_err_set(err, JP_CORRUPT, at, name,
                          "the data_offsets of tensor %s are not [begin, end] of non-negative integers", name);
    e->t = t;
    e->bits = st_dtypes[r].bits;
    return JP_OK;
}

/* Sorted by offsets, each tensor must begin where the previous ended and
 * hold shape x item size bytes; the last must end at the end of the file. */
static jp_code check_offsets(entry *es, size_t n, uint64_t origin, uint64_t data_len, jp_err *err) {
    uint64_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const entry *e = &es[i];
        const char *name = e->t->name;
        uint64_t at = origin + e->begin;
        if (e->end < e->begin)
            return jp_err_set(err, JP_CORRUPT, at, name, "tensor %s ends (%llu) before it begins (%llu)",
                              name, (unsigned long long)e->end, (unsigned long long)e->begin);
        if (e->begin != start)
            return jp_err_set(err, JP_CORRUPT, at, name,
                              "tensor %s begins at data byte %llu, but the previous tensor ends at %llu (%s)",
                              name, (unsigned long long)e->begin, (unsigned long long)start,
                              e->begin < start ? "they overlap" : "a gap");
        uint64_t numel = 1, bits;
        for (int d = 0; d < e->t->ndim; d++)
            if (jp_mul_overflow(numel, (uint64_t)e->t->shape[d], &numel))
                return jp_err_set(err, JP_LIMIT, at, name, "tensor %s: element count overflows", name);
        if (jp_mul_overflow(numel, e->bits, &bits))
            return jp_err_set(err, JP_LIMIT, at, name, "tensor %s: byte size overflows", name);
        if (bits % 8)
            return jp_err_set(err, JP_CORRUPT, at, name,
                              "tensor %s has %llu elements of 4 bits: not a whole number of bytes", name,
                              (unsigned long long)numel);
        if (e->end - e->begin != bits / 8)
            return jp_err_set(err, JP_CORRUPT, at, name,
                              "tensor %s has %llu bytes, but its shape and dtype need %llu", name,
                              (unsigned long long)(e->end - e->begin), (unsigned long long)(bits / 8));
        start = e->end;
    }
    if (start > data_len) {
        size_t i = 0;
        while (es[i].end <= data_len) i++;
        return jp_err_set(err, JP_TRUNCATED, origin + es[i].begin, es[i].t->name,
                          "tensor %s ends at data byte %llu, but the file holds %llu data bytes",
                          es[i].t->name, (unsigned long long)es[i].end, (unsigned long long)data_len);
    }
    if (start < data_len)
        return jp_err_set(err, JP_CORRUPT, origin + start, NULL,
                          "%llu bytes follow the last tensor's data", (unsigned long long)(data_len - start));
    return JP_OK;
}

/* Strides, storage and bytes of each tensor, in header order; F4 pairs. */
static jp_code place_all(jp_index *ix, entry *es, size_t n, const uint8_t *data, uint64_t origin,
                         jp_err *err) {
    for (size_t i = 0; i < n; i++) {
        entry *e = &es[i];
        jp_tensor *t = e->t;
        uint64_t at = origin + e->begin;
        if (e->bits == 4) {
            if (t->ndim == 0 || t->shape[t->ndim - 1] % 2)
                return jp_err_set(err, JP_DTYPE, at, t->name,
                                  "F4 tensor %s: an odd last dimension has no float4_e2m1fn_x2 (pairs) view",
                                  t->name);
            t->shape[t->ndim - 1] /= 2;
        }
        jp_tensor_default_strides(t);
        t->storage = ix->nstorages++;
        jp_code rc = jp_index_place(ix, t, data + at, e->end - e->begin, at, 0, t->name, err);
        if (rc) return rc;
    }
    return JP_OK;
}

jp_code jp_read_safetensors(jp_index *ix, const uint8_t *data, size_t len, jp_err *err) {
    jp_cur c = jp_cur_make(data, len, 0);
    uint64_t n = jp_cur_le(&c, JP_ST_LEN_BYTES);
    if (c.failed)
        return jp_err_set(err, JP_TRUNCATED, 0, NULL, "the file ends inside the 8-byte header length");
    if (n > JP_ST_MAX_HEADER)
        return jp_err_set(err, JP_LIMIT, 0, NULL, "a header of %llu bytes is beyond the %u-byte limit",
                          (unsigned long long)n, JP_ST_MAX_HEADER);
    const uint8_t *hdr = jp_cur_take(&c, (size_t)n);
    if (!hdr)
        return jp_err_set(err, JP_TRUNCATED, 0, NULL, "a header of %llu bytes, but only %zu bytes follow",
                          (unsigned long long)n, len - JP_ST_LEN_BYTES);
    size_t bad;
    if (!jp_st_utf8_valid(hdr, (size_t)n, &bad))
        return jp_err_set(err, JP_CORRUPT, JP_ST_LEN_BYTES + bad, NULL, "the header is not UTF-8");
    json_error_t je;
    json_t *root = json_loadb((const char *)hdr, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return jp_err_set(err, JP_CORRUPT, JP_ST_LEN_BYTES + (uint64_t)je.position, NULL,
                          "the header is not valid JSON: %s", je.text);
    jp_code rc = JP_OK;
    size_t count = 0;
    entry *es = NULL;
    if (!json_is_object(root)) {
        rc = jp_err_set(err, JP_CORRUPT, JP_ST_LEN_BYTES, NULL, "the header is not a JSON object");
        goto done;
    }
    es = calloc(json_object_size(root) + 1, sizeof *es);
    if (!es) {
        rc = jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            rc = read_meta(ix, val, err);
        } else {
            es[count].pos = count;
            rc = read_entry(ix, key, val, &es[count], err);
            count++;
        }
        if (rc) goto done;
    }
    uint64_t origin = JP_ST_LEN_BYTES + n;
    entry *sorted = malloc((count ? count : 1) * sizeof *sorted);
    if (!sorted) {
        rc = jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
        goto done;
    }
    memcpy(sorted, es, count * sizeof *es);
    qsort(sorted, count, sizeof *sorted, by_offsets);
    rc = check_offsets(sorted, count, origin, len - origin, err);
    free(sorted);
    if (!rc) rc = place_all(ix, es, count, data, origin, err);
done:
    free(es);
    json_decref(root);
    return rc;
}
