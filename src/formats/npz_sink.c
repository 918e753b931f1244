/* .npz writer: the archive numpy.savez writes, byte for byte, streamed one
 * tensor at a time (zip.c draws the zip structures, npyhdr.c the header).
 *
 *   per tensor, in order:
 *     local header   50 4b 03 04, needs 4.5, flags 0 (0x800: UTF-8 name),
 *                    stored, 1980-01-01 00:00, crc32, sizes ff ff ff ff
 *     "<name>.npy"
 *     zip64 extra    01 00 10 00, u64 size, u64 size      (numpy forces zip64)
 *     npy header     numpy.save's, version 1.0 (jp_npy_header_format)
 *     data           the tensor's bytes, as given
 *   central header per tensor: made by 4.5 on Unix, needs 4.5, the same
 *     fields with the real sizes, external attributes 0600 << 16, and a
 *     zip64 extra (sizes, then offset) for what exceeds 2**31 - 1
 *   zip64 end record and locator, when there are more than 65535 members or
 *     the directory's size or offset exceeds 2**31 - 1
 *   end of central directory
 *
 * This is what Python's zipfile writes for numpy.savez's
 * zipf.open(name, 'w', force_zip64=True), limits included. Every size is
 * known before the data (the header's length plus the tensor's bytes); the
 * crc32 is computed while the data stream through and patched into each
 * local header at the end, so no data descriptor is needed. */
#include <string.h>
#include <zlib.h>

#include "npyhdr.h"
#include "sink.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_Z64_EOCD 0x06064b50u
#define SIG_Z64_LOCATOR 0x07064b50u
#define LOCAL_SIZE 30u
#define LOCAL_EXTRA 20u        /* the zip64 field of every local header */
#define CENTRAL_SIZE 46u
#define VERSION_ZIP64 45u      /* 4.5 */
#define MADE_BY_UNIX (3u << 8)
#define DOS_DATE_1980 0x21u    /* 1980-01-01, zipfile's default date */
#define FLAG_UTF8 0x800u
#define EXTERNAL_0600 (0600u << 16)
#define ZIP64_LIMIT 0x7fffffffu /* zipfile's ZIP64_LIMIT */
#define COUNT_LIMIT 0xffffu
#define CRC_AT 14u             /* the crc32 in a local header */
#define MAX_NAME (0xffffu - 4u)
/* zlib's crc32 counts in uInt. */
#define CRC_CHUNK ((size_t)1 << 30)

typedef struct member {
    uint64_t offset;   /* local header */
    uint64_t size;     /* npy header + data */
    uint32_t crc;
    uint16_t name_len; /* without ".npy" */
    bool utf8;
} member;

typedef struct state {
    member *members;
    uLong crc;         /* of the tensor being written */
} state;

static jp_code put(jp_sink *s, const void *p, size_t n, jp_err *err) {
    return jp_outfile_write(&s->out, p, n, err);
}

static bool is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return false;
    return true;
}

static uLong crc_serial(uLong crc, const uint8_t *p, size_t n) {
    while (n) {
        size_t k = n < CRC_CHUNK ? n : CRC_CHUNK;
        crc = crc32(crc, p, (uInt)k);
        p += k;
        n -= k;
    }
    return crc;
}

/* A big piece is checksummed in parts on the pool's threads and the parts'
 * crcs joined with crc32_combine: zlib's crc32 runs at a few GB/s on one
 * core, slower than writing to a fast disk. */
#define CRC_PART ((size_t)256 << 10)
#define CRC_PARTS 64

typedef struct crc_job {
    const uint8_t *p;
    size_t n, part;
    uLong crc[CRC_PARTS];
} crc_job;

static void crc_part(void *ctx, size_t task, int worker) {
    (void)worker;
    crc_job *j = ctx;
    size_t at = task * j->part, len = j->n - at < j->part ? j->n - at : j->part;
    j->crc[task] = crc_serial(crc32(0L, Z_NULL, 0), j->p + at, len);
}

static uLong crc_update(jp_pool *pool, uLong crc, const uint8_t *p, size_t n) {
    if (!pool || jp_pool_threads(pool) < 2 || n < 2 * CRC_PART) return crc_serial(crc, p, n);
    crc_job j = {.p = p, .n = n};
    j.part = n / CRC_PARTS + 1 > CRC_PART ? n / CRC_PARTS + 1 : CRC_PART;
    size_t parts = (n + j.part - 1) / j.part;
    jp_pool_for(pool, parts, crc_part, &j);
    for (size_t i = 0; i < parts; i++) {
        size_t len = i + 1 < parts ? j.part : n - i * j.part;
        crc = crc32_combine(crc, j.crc[i], (z_off_t)len);
    }
    return crc;
}

/* Check names and dtypes before a byte is written: every dtype needs an npy
 * descr numpy reads back, names fit a zip header and are unique. */
static jp_code npz_begin(jp_sink *s, jp_err *err) {
    state *st = jp_arena_alloc(&s->arena, sizeof *st);
    size_t cap = 16;
    while (cap < 2 * s->n) cap *= 2;
    const char **seen = jp_arena_alloc_array(&s->arena, cap, sizeof *seen);
    if (!st || !seen || !(st->members = jp_arena_alloc_array(&s->arena, s->n ? s->n : 1, sizeof *st->members)))
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    s->state = st;
    uint8_t hdr[JP_NPY_HEADER_CAP];
    for (size_t i = 0; i < s->n; i++) {
        const jp_sink_tensor *t = &s->tensors[i];
        size_t hlen = jp_npy_header_format(hdr, t->dtype, t->ndim, t->shape);
        if (!hlen)
            return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, t->name,
                              "dtype %s has no npy descr that numpy.load reads back",
                              jp_dtype_name(t->dtype));
        size_t nlen = strlen(t->name);
        if (nlen > MAX_NAME)
            return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL,
                              "a name of %zu bytes; a zip member name holds at most %u", nlen, MAX_NAME);
        size_t h = (size_t)jp_hash_str(t->name) & (cap - 1);
        for (; seen[h]; h = (h + 1) & (cap - 1))
            if (strcmp(seen[h], t->name) == 0)
                return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, t->name, "the name is given twice");
        seen[h] = t->name;
        member *m = &st->members[i];
        m->size = hlen + t->nbytes;
        m->name_len = (uint16_t)nlen;
        m->utf8 = !is_ascii(t->name);
    }
    return JP_OK;
}

static jp_code npz_tensor_begin(jp_sink *s, jp_err *err) {
    state *st = s->state;
    const jp_sink_tensor *t = &s->tensors[s->cur];
    member *m = &st->members[s->cur];
    m->offset = s->out.written;
    uint8_t h[LOCAL_SIZE], x[LOCAL_EXTRA], hdr[JP_NPY_HEADER_CAP];
    jp_store_le(h, SIG_LOCAL, 4);
    jp_store_le(h + 4, VERSION_ZIP64, 2);
    jp_store_le(h + 6, m->utf8 ? FLAG_UTF8 : 0, 2);
    jp_store_le(h + 8, 0, 2);              /* stored */
    jp_store_le(h + 10, 0, 2);             /* 00:00 */
    jp_store_le(h + 12, DOS_DATE_1980, 2);
    jp_store_le(h + CRC_AT, 0, 4);         /* patched by npz_finish */
    jp_store_le(h + 18, 0xffffffffu, 4);
    jp_store_le(h + 22, 0xffffffffu, 4);
    jp_store_le(h + 26, m->name_len + 4u, 2);
    jp_store_le(h + 28, LOCAL_EXTRA, 2);
    jp_store_le(x, 1, 2);
    jp_store_le(x + 2, 16, 2);
    jp_store_le(x + 4, m->size, 8);
    jp_store_le(x + 12, m->size, 8);
    size_t hlen = jp_npy_header_format(hdr, t->dtype, t->ndim, t->shape);
    st->crc = crc_serial(crc32(0L, Z_NULL, 0), hdr, hlen);
    jp_code rc;
    if ((rc = put(s, h, sizeof h, err)) || (rc = put(s, t->name, m->name_len, err)) ||
        (rc = put(s, ".npy", 4, err)) || (rc = put(s, x, sizeof x, err)))
        return rc;
    return put(s, hdr, hlen, err);
}

static jp_code npz_write(jp_sink *s, const void *data, size_t len, jp_err *err) {
    state *st = s->state;
    st->crc = crc_update(s->opts.pool, st->crc, data, len);
    return put(s, data, len, err);
}

static jp_code npz_tensor_done(jp_sink *s, jp_err *err) {
    (void)err;
    state *st = s->state;
    st->members[s->cur].crc = (uint32_t)st->crc;
    return JP_OK;
}

static jp_code put_central(jp_sink *s, size_t i, jp_err *err) {
    const member *m = &((state *)s->state)->members[i];
    bool big_size = m->size > ZIP64_LIMIT, big_offset = m->offset > ZIP64_LIMIT;
    uint8_t h[CENTRAL_SIZE], x[4 + 24];
    size_t xlen = 0;
    if (big_size || big_offset) {
        xlen = 4;
        if (big_size) {
            jp_store_le(x + xlen, m->size, 8);
            jp_store_le(x + xlen + 8, m->size, 8);
            xlen += 16;
        }
        if (big_offset) {
            jp_store_le(x + xlen, m->offset, 8);
            xlen += 8;
        }
        jp_store_le(x, 1, 2);
        jp_store_le(x + 2, xlen - 4, 2);
    }
    jp_store_le(h, SIG_CENTRAL, 4);
    jp_store_le(h + 4, VERSION_ZIP64 | MADE_BY_UNIX, 2);
    jp_store_le(h + 6, VERSION_ZIP64, 2);
    jp_store_le(h + 8, m->utf8 ? FLAG_UTF8 : 0, 2);
    jp_store_le(h + 10, 0, 2);
    jp_store_le(h + 12, 0, 2);
    jp_store_le(h + 14, DOS_DATE_1980, 2);
    jp_store_le(h + 16, m->crc, 4);
    jp_store_le(h + 20, big_size ? 0xffffffffu : m->size, 4);
    jp_store_le(h + 24, big_size ? 0xffffffffu : m->size, 4);
    jp_store_le(h + 28, m->name_len + 4u, 2);
    jp_store_le(h + 30, xlen, 2);
    jp_store_le(h + 32, 0, 2);             /* comment */
    jp_store_le(h + 34, 0, 2);             /* disk */
    jp_store_le(h + 36, 0, 2);             /* internal attributes */
    jp_store_le(h + 38, EXTERNAL_0600, 4);
    jp_store_le(h + 42, big_offset ? 0xffffffffu : m->offset, 4);
    jp_code rc;
    if ((rc = put(s, h, sizeof h, err)) || (rc = put(s, s->tensors[i].name, m->name_len, err)) ||
        (rc = put(s, ".npy", 4, err)))
        return rc;
    return put(s, x, xlen, err);
}

static jp_code put_end(jp_sink *s, uint64_t dir_offset, jp_err *err) {
    uint64_t end = s->out.written, dir_size = end - dir_offset, count = s->n;
    jp_code rc;
    if (count > COUNT_LIMIT || dir_offset > ZIP64_LIMIT || dir_size > ZIP64_LIMIT) {
        uint8_t r[56 + 20];
        jp_store_le(r, SIG_Z64_EOCD, 4);
        jp_store_le(r + 4, 44, 8);         /* the bytes that follow this field */
        jp_store_le(r + 12, VERSION_ZIP64, 2);
        jp_store_le(r + 14, VERSION_ZIP64, 2);
        jp_store_le(r + 16, 0, 4);
        jp_store_le(r + 20, 0, 4);
        jp_store_le(r + 24, count, 8);
        jp_store_le(r + 32, count, 8);
        jp_store_le(r + 40, dir_size, 8);
        jp_store_le(r + 48, dir_offset, 8);
        jp_store_le(r + 56, SIG_Z64_LOCATOR, 4);
        jp_store_le(r + 60, 0, 4);
        jp_store_le(r + 64, end, 8);
        jp_store_le(r + 72, 1, 4);
        if ((rc = put(s, r, sizeof r, err))) return rc;
        /* The 32-bit fields keep what fits, as zipfile does. */
        if (count > COUNT_LIMIT) count = COUNT_LIMIT;
        if (dir_size > 0xffffffffu) dir_size = 0xffffffffu;
        if (dir_offset > 0xffffffffu) dir_offset = 0xffffffffu;
    }
    uint8_t e[22];
    jp_store_le(e, SIG_EOCD, 4);
    jp_store_le(e + 4, 0, 4);              /* disks */
    jp_store_le(e + 8, count, 2);
    jp_store_le(e + 10, count, 2);
    jp_store_le(e + 12, dir_size, 4);
    jp_store_le(e + 16, dir_offset, 4);
    jp_store_le(e + 20, 0, 2);             /* comment */
    return put(s, e, sizeof e, err);
}

/* Each local header gets its crc32, then the directory and end records follow. */
static jp_code npz_finish(jp_sink *s, jp_err *err) {
    state *st = s->state;
    jp_code rc;
    for (size_t i = 0; i < s->n; i++) {
        uint8_t crc[4];
        jp_store_le(crc, st->members[i].crc, 4);
        if ((rc = jp_outfile_pwrite(&s->out, crc, 4, st->members[i].offset + CRC_AT, err))) return rc;
    }
    uint64_t dir_offset = s->out.written;
    for (size_t i = 0; i < s->n; i++)
        if ((rc = put_central(s, i, err))) return rc;
    return put_end(s, dir_offset, err);
}

const struct jp_sink_ops jp_sink_npz = {
    .extension = ".npz",
    .format = JP_FORMAT_NPZ,
    .begin = npz_begin,
    .tensor_begin = npz_tensor_begin,
    .write = npz_write,
    .tensor_done = npz_tensor_done,
    .finish = npz_finish,
};
