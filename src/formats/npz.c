/* numpy's own files: one array (.npy, numpy.save) and a zip of arrays (.npz,
 * numpy.savez and numpy.savez_compressed).
 *
 * .npy                                  .npz (zip.c draws the zip itself)
 *   93 'NUMPY' ver hlen header            [local header "w.npy"][.npy bytes]
 *   data: shape x item size bytes         [local header "b/c.npy"][.npy bytes]
 *   (npyhdr.c draws the header)           ...
 *                                         [central directory][end records]
 *
 * A .npy file is one array, named NPY_NAME ("arr_0": the name numpy.savez
 * gives an array passed without a name, so npy -> npz gives what
 * np.savez(path, arr) writes). Bytes after the array's data make the file a
 * sequence of records, which is Equinox's format (eqx.c): index.c sends it
 * there, and bytes that are not a record are refused as a broken record 1.
 *
 * An .npz member "<key>.npy" is the array <key>: '/' in a key is kept
 * ("layer/0/w"). Stored members (numpy.savez) are views into the file;
 * deflated ones (numpy.savez_compressed) are inflated into a buffer of the
 * index, their crc32 checked, and offsets in messages about their contents
 * count from the start of the inflated member. A member must hold exactly
 * one .npy record; a member that is not "*.npy" (np.load would hand back its
 * raw bytes) is refused.
 *
 * Both: Fortran-order arrays get column-major strides over the same bytes;
 * big-endian data ('>f4') are byte-swapped into a buffer of the index
 * (JP_TENSOR_OWNED), complex numbers half by half. */
#include <stdint.h>
#include <string.h>

#include "index_impl.h"
#include "npyhdr.h"
#include "zip.h"

#define NPY_NAME "arr_0"
#define NPY_SUFFIX ".npy"
#define NPY_SUFFIX_LEN 4

static bool ends_with_npy(const char *name, size_t len) {
    return len >= NPY_SUFFIX_LEN && memcmp(name + len - NPY_SUFFIX_LEN, NPY_SUFFIX, NPY_SUFFIX_LEN) == 0;
}

bool jp_npz_sniff(const uint8_t *data, size_t len) {
    /* An archive of no members (numpy.savez of nothing) is its end record. */
    if (len >= 4 && memcmp(data, "PK\x05\x06", 4) == 0) return true;
    /* numpy.savez's first local header names an .npy; torch.save's names
     * <folder>/data.pkl. The reader checks every member. */
    jp_cur c = jp_cur_make(data, len, 0);
    jp_cur_seek(&c, 26);
    size_t nlen = (size_t)jp_cur_le(&c, 2);
    jp_cur_le(&c, 2);
    const uint8_t *name = jp_cur_take(&c, nlen);
    return name && ends_with_npy((const char *)name, nlen);
}

jp_code jp_npy_add_tensor(jp_index *ix, const jp_npy_header *h, const char *name, size_t name_len,
                          const uint8_t *data, uint64_t at, bool owned, const char *member,
                          jp_err *err) {
    jp_tensor *t = jp_index_new_tensor(ix, name, name_len);
    if (!t)
        return jp_err_set(err, ix->tensors.len >= JP_LIMIT_TENSORS ? JP_LIMIT : JP_NO_MEMORY, at,
                          member, "no room for another array");
    t->dtype = h->dtype;
    t->ndim = h->ndim;
    memcpy(t->shape, h->shape, sizeof t->shape);
    if (h->fortran_order) {
        int64_t s = 1;
        for (int d = 0; d < t->ndim; d++) {
            t->strides[d] = s;
            s *= t->shape[d] > 0 ? t->shape[d] : 1;
        }
    } else {
        jp_tensor_default_strides(t);
    }
    t->storage = ix->nstorages++;
    if (h->big_endian && h->nbytes) {
        size_t isz = jp_dtype_size(h->dtype);
        if (h->dtype == JP_C32 || h->dtype == JP_C64 || h->dtype == JP_C128) isz /= 2;
        if (h->nbytes > SIZE_MAX)
            return jp_err_set(err, JP_LIMIT, at, member, "the array is too large to byte-swap");
        uint8_t *copy = jp_arena_alloc(&ix->arena, (size_t)h->nbytes);
        if (!copy)
            return jp_err_set(err, JP_NO_MEMORY, at, member,
                              "cannot allocate %llu bytes to byte-swap the array",
                              (unsigned long long)h->nbytes);
        for (uint64_t i = 0; i < h->nbytes; i += isz)
            for (size_t k = 0; k < isz; k++) copy[i + k] = data[i + isz - 1 - k];
        data = copy;
        owned = true;
    }
    jp_code rc = jp_index_place(ix, t, data, h->nbytes, owned ? JP_NO_OFFSET : at, 0, member, err);
    if (!rc && owned) t->flags |= JP_TENSOR_OWNED;
    return rc;
}

/* The data after a parsed header: exactly h->nbytes, then nothing. */
static jp_code one_array(jp_index *ix, jp_cur *c, const jp_npy_header *h, const char *name,
                         size_t name_len, bool owned, const char *member, jp_err *err) {
    uint64_t at = jp_cur_fileoff(c);
    if (h->nbytes > jp_cur_left(c))
        return jp_err_set(err, JP_TRUNCATED, at, member,
                          "the array needs %llu data bytes (shape x item size), but only %zu remain",
                          (unsigned long long)h->nbytes, jp_cur_left(c));
    const uint8_t *p = jp_cur_take(c, (size_t)h->nbytes);
    if (jp_cur_left(c))
        return jp_err_set(err, JP_CORRUPT, jp_cur_fileoff(c), member,
                          "%zu bytes follow the array's data; an .npy holds one array",
                          jp_cur_left(c));
    return jp_npy_add_tensor(ix, h, name, name_len, p, at, owned, member, err);
}

jp_code jp_read_npy(jp_index *ix, const uint8_t *data, size_t len, jp_err *err) {
    jp_cur c = jp_cur_make(data, len, 0);
    jp_npy_header h;
    jp_code rc = jp_npy_header_parse(&c, &h, NULL, err);
    return rc ? rc : one_array(ix, &c, &h, NPY_NAME, strlen(NPY_NAME), false, NULL, err);
}

jp_code jp_read_npz(jp_index *ix, const uint8_t *data, size_t len, jp_err *err) {
    jp_zip z;
    jp_code rc = jp_zip_open(&z, &ix->arena, data, len, err);
    if (rc) return rc;
    for (size_t i = 0; i < z.count; i++) {
        const jp_zip_entry *e = &z.entries[i];
        size_t nlen = strlen(e->name);
        if (!ends_with_npy(e->name, nlen))
            return jp_err_set(err, JP_UNSUPPORTED, e->header_offset, e->name,
                              "the member is not an .npy array (np.load would return its raw "
                              "bytes); jaxport reads npz files of arrays");
        const uint8_t *p;
        uint64_t n;
        if ((rc = jp_zip_read(&z, e, &ix->arena, &p, &n, err))) return rc;
        bool owned = e->method != 0;
        jp_cur c = jp_cur_make(p, (size_t)n, owned ? 0 : e->data_offset);
        jp_npy_header h;
        if ((rc = jp_npy_header_parse(&c, &h, e->name, err))) return rc;
        if ((rc = one_array(ix, &c, &h, e->name, nlen - NPY_SUFFIX_LEN, owned, e->name, err)))
            return rc;
    }
    return JP_OK;
}
