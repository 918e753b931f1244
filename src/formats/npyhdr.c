/* The .npy record header.
 *
 *   offset 0   93 'N' 'U' 'M' 'P' 'Y'
 *          6   major:u8 minor:u8            1.0, 2.0 or 3.0
 *          8   hlen: u16 le (1.0) | u32 le (2.0, 3.0)
 *   10 or 12   header[hlen]: a Python dict literal, padded with spaces and a
 *              final '\n' so that the data start on a 64-byte boundary:
 *              {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 *              (numpy writes the keys sorted and 21 - len(repr(shape[0]))
 *              spaces of room after the '}')
 *   then       the data: shape x item size bytes, C order unless
 *              fortran_order is True.
 */
#include <stdio.h>
#include <string.h>

#include "npyhdr.h"

/* The descr numpy writes for each dtype it can read back, then descrs that
 * are only read. ml_dtypes types reach numpy.save as their dtype.str:
 *   bfloat16 -> "<V2": the only 2-byte ml_dtypes type, and a void that numpy
 *               itself writes as "|V2", so "<V2" (or ">V2") is read as
 *               bfloat16, as jnp.load does; "|V2" is refused as plain bytes.
 *   float8_e5m2 -> "<f1": no other type is a 1-byte float, so it is read;
 *               never written, since numpy.load cannot read it.
 *   every other float8, float6, float4, int4, int2 -> "<V1": which one is
 *               lost, so these are refused (read_descr says what to do). */
static const struct {
    jp_dtype dtype;
    const char *descr;
    bool read_only;
} descrs[] = {
    {JP_BOOL, "|b1", false}, {JP_U8, "|u1", false},  {JP_I8, "|i1", false},
    {JP_U16, "<u2", false},  {JP_I16, "<i2", false}, {JP_U32, "<u4", false},
    {JP_I32, "<i4", false},  {JP_U64, "<u8", false}, {JP_I64, "<i8", false},
    {JP_F16, "<f2", false},  {JP_BF16, "<V2", false}, {JP_F32, "<f4", false},
    {JP_F64, "<f8", false},  {JP_C64, "<c8", false}, {JP_C128, "<c16", false},
    {JP_F8_E5M2, "<f1", true},
};

/* ---------------------------------------------------------------- reading */

typedef struct text {
    const uint8_t *p;
    size_t n, i;
    uint64_t at;         /* file offset of p[0] */
    const char *member;
    jp_err *err;
} text;

static uint64_t here(const text *t) { return t->at + t->i; }

static void skip_space(text *t) {
    while (t->i < t->n && (t->p[t->i] == ' ' || t->p[t->i] == '\t' || t->p[t->i] == '\n' ||
                           t->p[t->i] == '\r'))
        t->i++;
}

static bool eat(text *t, char ch) {
    skip_space(t);
    if (t->i < t->n && t->p[t->i] == (uint8_t)ch) {
        t->i++;
        return true;
    }
    return false;
}

static jp_code bad(text *t, const char *what) {
    return jp_err_set(t->err, JP_CORRUPT, here(t), t->member, "the npy header has %s", what);
}

/* A quoted Python string without escapes; *s and *len point into the header. */
static jp_code quoted(text *t, const uint8_t **s, size_t *len) {
    skip_space(t);
    if (t->i >= t->n || (t->p[t->i] != '\'' && t->p[t->i] != '"')) return bad(t, "no string where one belongs");
    uint8_t q = t->p[t->i++];
    size_t start = t->i;
    while (t->i < t->n && t->p[t->i] != q && t->p[t->i] != '\\') t->i++;
    if (t->i >= t->n || t->p[t->i] != q) return bad(t, "an unfinished or escaped string");
    *s = t->p + start;
    *len = t->i - start;
    t->i++;
    return JP_OK;
}

static bool word(text *t, const char *w) {
    size_t n = strlen(w);
    skip_space(t);
    if (n > t->n - t->i || memcmp(t->p + t->i, w, n) != 0) return false;
    t->i += n;
    return true;
}

static jp_code read_descr(text *t, jp_npy_header *h) {
    skip_space(t);
    uint64_t at = here(t);
    if (t->i < t->n && t->p[t->i] == '[')
        return jp_err_set(t->err, JP_UNSUPPORTED, at, t->member,
                          "a structured dtype; jaxport reads plain arrays");
    const uint8_t *s;
    size_t len;
    jp_code rc = quoted(t, &s, &len);
    if (rc) return rc;
    size_t skip = len > 0 && s[0] && strchr("<>|=", s[0]) ? 1 : 0;
    char order = skip ? (char)s[0] : '=';
    const uint8_t *kind = s + skip;
    size_t kind_len = len - skip;
    int shown = (int)(len < 32 ? len : 32);
    if (kind_len > 0 && kind[0] == 'O')
        return jp_err_set(t->err, JP_UNSUPPORTED, at, t->member,
                          "an object array ('%.*s'): its data are a pickle, which np.load reads "
                          "only with allow_pickle=True; jaxport never unpickles array data",
                          shown, (const char *)s);
    if (kind_len == 2 && memcmp(kind, "V1", 2) == 0)
        return jp_err_set(t->err, JP_DTYPE, at, t->member,
                          "1-byte void elements ('%.*s'): numpy saves every ml_dtypes float8 "
                          "(but float8_e5m2), float6, float4 and 4-bit int so, and which one it "
                          "was is lost; save arr.view(np.uint8) and view it back, or use a format "
                          "that keeps the dtype (safetensors, flax msgpack)",
                          shown, (const char *)s);
    if (kind_len == 2 && memcmp(kind, "V2", 2) == 0 && order != '<' && order != '>')
        return jp_err_set(t->err, JP_DTYPE, at, t->member,
                          "2-byte void elements ('%.*s'): ml_dtypes.bfloat16 is saved as '<V2', "
                          "this is numpy's plain void; if they are bfloat16, save "
                          "arr.view(ml_dtypes.bfloat16)",
                          shown, (const char *)s);
    for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++) {
        const char *d = descrs[i].descr + 1;
        if (strlen(d) == kind_len && memcmp(d, kind, kind_len) == 0) {
            h->dtype = descrs[i].dtype;
            h->big_endian = order == '>' && jp_dtype_size(h->dtype) > 1;
            return JP_OK;
        }
    }
    return jp_err_set(t->err, JP_DTYPE, at, t->member, "an array of dtype '%.*s', which jaxport does not read",
                      shown, (const char *)s);
}

static jp_code read_shape(text *t, jp_npy_header *h) {
    if (!eat(t, '(')) return bad(t, "a shape that is not a tuple");
    int commas = 0;
    h->ndim = 0;
    while (!eat(t, ')')) {
        skip_space(t);
        if (h->ndim == JP_MAX_DIMS)
            return jp_err_set(t->err, JP_LIMIT, here(t), t->member,
                              "the npy array has more than %d dimensions", JP_MAX_DIMS);
        uint64_t v = 0;
        size_t start = t->i;
        while (t->i < t->n && t->p[t->i] >= '0' && t->p[t->i] <= '9') {
            if (v > (uint64_t)(INT64_MAX - 9) / 10) return bad(t, "a dimension too large");
            v = v * 10 + (uint64_t)(t->p[t->i++] - '0');
        }
        if (t->i == start) return bad(t, "a shape entry that is not a size");
        if (t->i < t->n && t->p[t->i] == 'L') t->i++; /* Python 2 long */
        h->shape[h->ndim++] = (int64_t)v;
        if (eat(t, ',')) commas++;
        else if (!eat(t, ')')) return bad(t, "a shape tuple without its ')'");
        else break;
    }
    if (h->ndim == 1 && commas == 0) return bad(t, "a shape (n) that is a number, not a tuple");
    return JP_OK;
}

static jp_code read_dict(text *t, jp_npy_header *h) {
    bool seen[3] = {false, false, false};
    static const char *const keys[3] = {"descr", "fortran_order", "shape"};
    if (!eat(t, '{')) return bad(t, "no '{' at its start");
    while (!eat(t, '}')) {
        const uint8_t *k;
        size_t klen;
        uint64_t key_at = here(t);
        jp_code rc = quoted(t, &k, &klen);
        if (rc) return rc;
        int which = -1;
        for (int i = 0; i < 3; i++)
            if (strlen(keys[i]) == klen && memcmp(keys[i], k, klen) == 0) which = i;
        if (which < 0 || seen[which])
            return jp_err_set(t->err, JP_CORRUPT, key_at, t->member,
                              "the npy header has an unknown or repeated key");
        seen[which] = true;
        if (!eat(t, ':')) return bad(t, "a key without ':'");
        if (which == 0) rc = read_descr(t, h);
        else if (which == 1) {
            if (word(t, "True")) h->fortran_order = true;
            else if (word(t, "False")) h->fortran_order = false;
            else rc = bad(t, "a fortran_order that is not True or False");
        } else rc = read_shape(t, h);
        if (rc) return rc;
        if (!eat(t, ',')) {
            if (!eat(t, '}')) return bad(t, "an entry followed by neither ',' nor '}'");
            break;
        }
    }
    skip_space(t);
    if (t->i != t->n) return bad(t, "text after its dict");
    if (!seen[0] || !seen[1] || !seen[2])
        return jp_err_set(t->err, JP_CORRUPT, t->at, t->member,
                          "the npy header lacks '%s'", keys[!seen[0] ? 0 : !seen[1] ? 1 : 2]);
    return JP_OK;
}

jp_code jp_npy_header_parse(jp_cur *c, jp_npy_header *h, const char *member, jp_err *err) {
    memset(h, 0, sizeof *h);
    uint64_t at = jp_cur_fileoff(c);
    const uint8_t *magic = jp_cur_take(c, JP_NPY_MAGIC_LEN + 2);
    if (!magic)
        return jp_err_set(err, JP_TRUNCATED, at, member, "the data end inside an npy magic number");
    if (memcmp(magic, JP_NPY_MAGIC, JP_NPY_MAGIC_LEN) != 0)
        return jp_err_set(err, JP_CORRUPT, at, member, "an npy record does not start with \\x93NUMPY");
    uint8_t major = magic[6], minor = magic[7];
    if (major < 1 || major > 3 || minor != 0)
        return jp_err_set(err, JP_UNSUPPORTED, at + 6, member, "npy format version %u.%u (1.0 to 3.0 are known)",
                          major, minor);
    uint64_t hlen = jp_cur_le(c, major == 1 ? 2 : 4);
    if (c->failed) return jp_err_set(err, JP_TRUNCATED, at + 8, member, "the data end inside an npy header length");
    if (hlen > JP_NPY_MAX_HEADER)
        return jp_err_set(err, JP_LIMIT, at + 8, member, "an npy header of %llu bytes (at most %d are read)",
                          (unsigned long long)hlen, JP_NPY_MAX_HEADER);
    text t = {NULL, (size_t)hlen, 0, jp_cur_fileoff(c), member, err};
    if (!(t.p = jp_cur_take(c, (size_t)hlen)))
        return jp_err_set(err, JP_TRUNCATED, at + 8, member, "an npy header of %llu bytes, but only %zu remain",
                          (unsigned long long)hlen, jp_cur_left(c));
    jp_code rc = read_dict(&t, h);
    if (rc) return rc;
    h->nbytes = jp_dtype_size(h->dtype);
    for (int d = 0; d < h->ndim; d++)
        if (jp_mul_overflow(h->nbytes, (uint64_t)h->shape[d], &h->nbytes))
            return jp_err_set(err, JP_LIMIT, t.at, member, "the npy array's byte size overflows");
    return JP_OK;
}

/* ---------------------------------------------------------------- writing */

size_t jp_npy_header_format(uint8_t *out, jp_dtype dtype, int32_t ndim, const int64_t *shape) {
    const char *descr = NULL;
    for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++)
        if (descrs[i].dtype == dtype && !descrs[i].read_only) descr = descrs[i].descr;
    if (!descr || ndim < 0 || ndim > JP_MAX_DIMS) return 0;
    /* The dict as numpy's _write_array_header spells it, from offset 10. */
    char *dict = (char *)out + 10;
    size_t room = JP_NPY_HEADER_CAP - 10, n = 0;
    n += (size_t)snprintf(dict + n, room - n, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int d = 0; d < ndim; d++)
        n += (size_t)snprintf(dict + n, room - n, d ? ", %lld" : "%lld", (long long)shape[d]);
    n += (size_t)snprintf(dict + n, room - n, "%s), }", ndim == 1 ? "," : "");
    if (ndim > 0) {
        int digits = snprintf(NULL, 0, "%lld", (long long)shape[0]);
        for (int i = digits; i < 21; i++) dict[n++] = ' ';
    }
    /* Spaces and a newline up to the next multiple of 64 (a whole 64 when
     * already aligned, as numpy does). Version 1.0 always suffices here. */
    size_t pad = 64 - (10 + n + 1) % 64;
    memset(dict + n, ' ', pad);
    n += pad;
    dict[n++] = '\n';
    memcpy(out, JP_NPY_MAGIC, JP_NPY_MAGIC_LEN);
    out[6] = 1;
    out[7] = 0;
    jp_store_le(out + 8, n, 2);
    return 10 + n;
}
