/* The index under construction: what every reader fills. Readers allocate
 * from ix->arena, add tensors with jp_index_new_tensor(), give each its bytes
 * with jp_index_place(), and jp_index_open*() finishes the index (name table,
 * duplicate check, shared/contiguous flags) once the reader returns. */
#ifndef JP_INDEX_IMPL_H
#define JP_INDEX_IMPL_H

#include <string.h>

#include "../common/common.h"

struct jp_index {
    jp_arena arena;
    jp_format format;
    uint32_t flags;        /* jp_open_opts.flags */
    const char *name;      /* the file, for messages */
    jp_vec maps;           /* jp_map: the file, and shards when there are several */
    jp_vec tensors;        /* jp_tensor* */
    jp_vec meta;           /* jp_meta */
    jp_vec findings;       /* jp_finding */
    uint32_t nstorages;
    uint32_t *table;       /* open addressing by name: position + 1, 0 empty; built by finish */
    size_t table_cap;
};

/* Limits every reader shares; five input bytes must never ask for 4 GiB. */
#define JP_LIMIT_TENSORS (1u << 22)        /* tensors in one index */
#define JP_LIMIT_NAME 4096                 /* bytes in one tensor name */

/* A tensor name built while walking a nested structure (dict keys joined by
 * '.' for torch, '/' for msgpack), bounded by JP_LIMIT_NAME. */
typedef struct jp_name {
    char s[JP_LIMIT_NAME + 1];
    size_t len;
} jp_name;

/* Append `sep` (unless the name is empty) and part[0..n); false when the
 * name would grow past JP_LIMIT_NAME, leaving it unchanged. */
static inline bool jp_name_push(jp_name *nm, char sep, const char *part, size_t n) {
    size_t need = n + (nm->len ? 1 : 0);
    if (need > JP_LIMIT_NAME - nm->len) return false;
    if (nm->len) nm->s[nm->len++] = sep;
    memcpy(nm->s + nm->len, part, n);
    nm->len += n;
    nm->s[nm->len] = '\0';
    return true;
}

static inline void jp_name_truncate(jp_name *nm, size_t len) {
    nm->len = len;
    nm->s[len] = '\0';
}

jp_tensor *jp_index_new_tensor(jp_index *ix, const char *name, size_t name_len);
jp_code jp_index_add_meta(jp_index *ix, const char *key, const char *value);
jp_code jp_index_add_finding(jp_index *ix, jp_finding_kind kind, const char *global,
                             const char *member, uint64_t offset);

/* Set t->data (and numel, nbytes) for a tensor whose dtype, ndim, shape and
 * strides are filled: its elements live in `span` (span_len bytes, starting at
 * file offset `span_file_offset`), element 0 at byte `byte_offset`. Fails
 * unless every element addressed by shape and strides lies inside the span. */
jp_code jp_index_place(jp_index *ix, jp_tensor *t, const uint8_t *span, uint64_t span_len,
                       uint64_t span_file_offset, uint64_t byte_offset, const char *member,
                       jp_err *err);

/* Fill row-major strides for t->shape. */
void jp_tensor_default_strides(jp_tensor *t);

/* Map another file into the index (shards); the mapping lives until close. */
jp_code jp_index_map_file(jp_index *ix, const char *path, const uint8_t **data, size_t *len,
                          jp_err *err);

/* Read one file's bytes with the reader they call for, into ix (shards). */
jp_code jp_index_read_any(jp_index *ix, const uint8_t *data, size_t len, jp_err *err);
/* A Hugging Face *.index.json at `path`, its bytes data[0..len). */
jp_code jp_read_sharded(jp_index *ix, const char *path, const uint8_t *data, size_t len, jp_err *err);

/* Readers, one per format. `data`/`len` is the whole file. */
jp_code jp_read_torch_zip(jp_index *ix, const uint8_t *data, size_t len, jp_err *err);
jp_code jp_read_torch_legacy(jp_index *ix, const uint8_t *data, size_t len, jp_err *err);
/* A torch.export archive: z, open, whose members are under prefix/ (pt2.c;
 * the torch zip reader sends archives with prefix/archive_format there,
 * once it has checked the byte order is little-endian). */
struct jp_zip;
jp_code jp_read_pt2(jp_index *ix, const struct jp_zip *z, const char *prefix, jp_err *err);
jp_code jp_read_msgpack(jp_index *ix, const uint8_t *data, size_t len, jp_err *err);
jp_code jp_read_eqx(jp_index *ix, const uint8_t *data, size_t len, jp_err *err);
jp_code jp_read_npy(jp_index *ix, const uint8_t *data, size_t len, jp_err *err);
jp_code jp_read_npz(jp_index *ix, const uint8_t *data, size_t len, jp_err *err);
/* Whether a zip archive is numpy's (its first member is an .npy, or it has
 * none) rather than torch's. */
bool jp_npz_sniff(const uint8_t *data, size_t len);

/* Add the array an npy header describes (npz.c; also used by eqx.c). Its
 * h->nbytes data bytes are at `data`, at file offset `at`; `owned` when they
 * are in a buffer of the index (an inflated member). Fortran order becomes
 * column-major strides; big-endian data are byte-swapped into a buffer of
 * the index. */
struct jp_npy_header;
jp_code jp_npy_add_tensor(jp_index *ix, const struct jp_npy_header *h, const char *name,
                          size_t name_len, const uint8_t *data, uint64_t at, bool owned,
                          const char *member, jp_err *err);
jp_code jp_read_safetensors(jp_index *ix, const uint8_t *data, size_t len, jp_err *err);
/* Whether an npy-looking file holds more than one record (Equinox). */
bool jp_eqx_sniff(const uint8_t *data, size_t len);

#endif /* JP_INDEX_IMPL_H */
