/* Zip archives as torch.save (miniz) and numpy.savez (Python's zipfile) write
 * them. The central directory is the truth; local headers are only checked
 * against it. All integers are little-endian.
 *
 *   [local header][name][extra][data][data descriptor?]  ... one per member
 *   [central header][name][extra][comment]               ... one per member
 *   [zip64 end record][zip64 locator]                      only in zip64 files
 *   [end of central directory][comment]                    last 22..65557 bytes
 *
 *   local header (30)        central header (46)         end of central dir (22)
 *    0 u32 50 4b 03 04        0 u32 50 4b 01 02           0 u32 50 4b 05 06
 *    4 u16 version needed     4 u16 version made by        4 u16 this disk
 *    6 u16 flags              6 u16 version needed         6 u16 directory's disk
 *    8 u16 method             8 u16 flags                  8 u16 entries on disk
 *   10 u32 dos time/date     10 u16 method                10 u16 entries
 *   14 u32 crc32             12 u32 dos time/date         12 u32 directory size
 *   18 u32 csize             16 u32 crc32                 16 u32 directory offset
 *   22 u32 usize             20 u32 csize                 20 u16 comment length
 *   26 u16 name length       24 u32 usize
 *   28 u16 extra length      28 u16 name length          zip64 locator (20)
 *                            30 u16 extra length           0 u32 50 4b 06 07
 *   extra field: records     32 u16 comment length         4 u32 disk of zip64 record
 *    of u16 id, u16 size;    34 u16 disk number start      8 u64 zip64 record offset
 *    id 1 (zip64) holds      36 u16 internal attributes   16 u32 total disks
 *    u64 usize, u64 csize,   38 u32 external attributes
 *    u64 header offset,      42 u32 local header offset  zip64 end record (56+)
 *    u32 disk, each only                                   0 u32 50 4b 06 06
 *    when the 32-bit field                                 4 u64 size of the rest
 *    above is all ones                                    12 u16 made by, u16 needed
 *                                                         16 u32 disk, u32 dir disk
 *   flags: bit 0 encrypted, bit 3 sizes in a data         24 u64 entries on disk
 *   descriptor after the data (miniz always sets it),     32 u64 entries
 *   bit 6 strong encryption, bit 11 UTF-8 names.          40 u64 directory size
 *                                                         48 u64 directory offset
 */
#include <string.h>
#include <zlib.h>

#include "zip.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_Z64_LOCATOR 0x07064b50u
#define SIG_Z64_EOCD 0x06064b50u

#define LOCAL_SIZE 30u
#define CENTRAL_SIZE 46u
#define EOCD_SIZE 22u
#define Z64_LOCATOR_SIZE 20u
#define Z64_EOCD_SIZE 56u
#define MAX_COMMENT 0xffffu

#define FLAG_ENCRYPTED 0x0001u
#define FLAG_DESCRIPTOR 0x0008u
#define FLAG_STRONG_ENCRYPTION 0x0040u
#define METHOD_STORED 0
#define METHOD_DEFLATED 8

/* Where the central directory is, as the end records say. */
typedef struct dir_info {
    uint64_t count, size, offset;
    uint64_t end;  /* first byte after the directory: where the end records start */
} dir_info;

/* Find the end-of-central-directory record: scan backwards over at most a
 * full comment's worth of bytes and take the last signature whose comment
 * length reaches exactly to the end of the file, so a signature inside the
 * comment is not mistaken for the record. */
static jp_code find_eocd(const uint8_t *d, size_t len, uint64_t *pos, jp_err *err) {
    if (len < EOCD_SIZE)
        return jp_err_set(err, JP_TRUNCATED, 0, NULL,
                          "a zip archive needs at least %u bytes; the file has %zu", EOCD_SIZE, len);
    size_t last = len - EOCD_SIZE;
    size_t first = last > MAX_COMMENT ? last - MAX_COMMENT : 0;
    for (size_t p = last + 1; p-- > first;) {
        if (jp_load_le(d + p, 4) != SIG_EOCD) continue;
        if (jp_load_le(d + p + 20, 2) == len - p - EOCD_SIZE) {
            *pos = p;
            return JP_OK;
        }
    }
    return jp_err_set(err, JP_FORMAT, len - EOCD_SIZE, NULL,
                      "no end-of-central-directory record in the last %zu bytes: not a zip "
                      "archive, or one cut short",
                      len - first);
}

static jp_code read_zip64_end(const uint8_t *d, size_t len, uint64_t eocd, dir_info *di,
                              jp_err *err) {
    uint64_t loc = eocd - Z64_LOCATOR_SIZE;
    jp_cur c = jp_cur_make(d, len, 0);
    jp_cur_seek(&c, loc + 4);
    uint32_t disk = (uint32_t)jp_cur_le(&c, 4);
    uint64_t rec = jp_cur_le(&c, 8);
    uint32_t disks = (uint32_t)jp_cur_le(&c, 4);
    if (disk != 0 || disks > 1)
        return jp_err_set(err, JP_UNSUPPORTED, loc, NULL,
                          "the archive spans %u disks; only single-file archives are read", disks);
    if (rec > loc || loc - rec < Z64_EOCD_SIZE)
        return jp_err_set(err, JP_CORRUPT, loc + 8, NULL,
                          "the zip64 end record is said to start at %llu, but it must end before "
                          "the locator at %llu",
                          (unsigned long long)rec, (unsigned long long)loc);
    jp_cur_seek(&c, rec);
    uint32_t sig = (uint32_t)jp_cur_le(&c, 4);
    uint64_t rest = jp_cur_le(&c, 8);
    jp_cur_seek(&c, rec + 16);
    uint32_t this_disk = (uint32_t)jp_cur_le(&c, 4), dir_disk = (uint32_t)jp_cur_le(&c, 4);
    uint64_t on_disk = jp_cur_le(&c, 8);
    di->count = jp_cur_le(&c, 8);
    di->size = jp_cur_le(&c, 8);
    di->offset = jp_cur_le(&c, 8);
    if (sig != SIG_Z64_EOCD)
        return jp_err_set(err, JP_CORRUPT, rec, NULL,
                          "expected the zip64 end record signature 50 4b 06 06, found %08x", sig);
    if (rest < Z64_EOCD_SIZE - 12 || rest > loc - rec - 12)
        return jp_err_set(err, JP_CORRUPT, rec + 4, NULL,
                          "the zip64 end record says it holds %llu bytes; between %u and %llu fit",
                          (unsigned long long)rest, Z64_EOCD_SIZE - 12,
                          (unsigned long long)(loc - rec - 12));
    if (this_disk != 0 || dir_disk != 0 || on_disk != di->count)
        return jp_err_set(err, JP_UNSUPPORTED, rec + 16, NULL,
                          "the archive spans several disks; only single-file archives are read");
    di->end = rec;
    return JP_OK;
}

static jp_code read_end(const uint8_t *d, size_t len, dir_info *di, jp_err *err) {
    uint64_t eocd = 0;
    jp_code rc = find_eocd(d, len, &eocd, err);
    if (rc) return rc;
    jp_cur c = jp_cur_make(d, len, 0);
    jp_cur_seek(&c, eocd + 4);
    uint32_t disk = (uint32_t)jp_cur_le(&c, 2), dir_disk = (uint32_t)jp_cur_le(&c, 2);
    uint32_t on_disk = (uint32_t)jp_cur_le(&c, 2);
    di->count = jp_cur_le(&c, 2);
    di->size = jp_cur_le(&c, 4);
    di->offset = jp_cur_le(&c, 4);
    di->end = eocd;
    bool z64 = eocd >= Z64_LOCATOR_SIZE &&
               jp_load_le(d + eocd - Z64_LOCATOR_SIZE, 4) == SIG_Z64_LOCATOR;
    if (z64) return read_zip64_end(d, len, eocd, di, err);
    if (di->count == 0xffff || di->size == 0xffffffffu || di->offset == 0xffffffffu)
        return jp_err_set(err, JP_CORRUPT, eocd, NULL,
                          "the end record defers to zip64 values, but no zip64 locator precedes it");
    if (disk != 0 || dir_disk != 0 || on_disk != di->count)
        return jp_err_set(err, JP_UNSUPPORTED, eocd + 4, NULL,
                          "the archive spans several disks; only single-file archives are read");
    return JP_OK;
}

/* Replace the 32-bit fields that are all ones by the zip64 extra field's
 * values, which appear in this order and only for those fields. */
static jp_code apply_zip64_extra(const uint8_t *extra, size_t n, uint64_t extra_off,
                                 uint64_t *usize, uint64_t *csize, uint64_t *hoff,
                                 const char *name, jp_err *err) {
    bool want_u = *usize == 0xffffffffu, want_c = *csize == 0xffffffffu;
    bool want_h = hoff && *hoff == 0xffffffffu;
    jp_cur c = jp_cur_make(extra, n, extra_off);
    while (jp_cur_left(&c) >= 4) {
        uint64_t at = jp_cur_fileoff(&c);
        uint32_t id = (uint32_t)jp_cur_le(&c, 2), size = (uint32_t)jp_cur_le(&c, 2);
        const uint8_t *body = jp_cur_take(&c, size);
        if (!body)
            return jp_err_set(err, JP_CORRUPT, at, name,
                              "an extra field of %u bytes runs past the end of its header", size);
        if (id != 1) continue;
        jp_cur z = jp_cur_make(body, size, at + 4);
        if (want_u) *usize = jp_cur_le(&z, 8);
        if (want_c) *csize = jp_cur_le(&z, 8);
        if (want_h) *hoff = jp_cur_le(&z, 8);
        if (z.failed)
            return jp_err_set(err, JP_CORRUPT, at, name,
                              "the zip64 extra field holds %u bytes, too few for the sizes it "
                              "stands for",
                              size);
        return JP_OK;
    }
    if (want_u || want_c || want_h)
        return jp_err_set(err, JP_CORRUPT, extra_off, name,
                          "a size or offset defers to zip64, but the header has no zip64 field");
    return JP_OK;
}

/* Check the local header against the central one and find the data. */
static jp_code check_local(const jp_zip *z, jp_zip_entry *e, uint64_t dir_offset, jp_err *err) {
    jp_cur c = jp_cur_make(z->data, dir_offset, 0);
    jp_cur_seek(&c, e->header_offset);
    uint32_t sig = (uint32_t)jp_cur_le(&c, 4);
    jp_cur_seek(&c, e->header_offset + 6);
    uint32_t flags = (uint32_t)jp_cur_le(&c, 2), method = (uint32_t)jp_cur_le(&c, 2);
    jp_cur_seek(&c, e->header_offset + 18);
    uint64_t csize = jp_cur_le(&c, 4), usize = jp_cur_le(&c, 4);
    uint32_t nlen = (uint32_t)jp_cur_le(&c, 2), xlen = (uint32_t)jp_cur_le(&c, 2);
    const uint8_t *name = jp_cur_take(&c, nlen);
    const uint8_t *extra = jp_cur_take(&c, xlen);
    if (c.failed)
        return jp_err_set(err, JP_CORRUPT, e->header_offset, e->name,
                          "the local header does not fit before the central directory at %llu",
                          (unsigned long long)dir_offset);
    if (sig != SIG_LOCAL)
        return jp_err_set(err, JP_CORRUPT, e->header_offset, e->name,
                          "expected a local header (50 4b 03 04), found %08x", sig);
    if (nlen != strlen(e->name) || memcmp(name, e->name, nlen) != 0)
        return jp_err_set(err, JP_CORRUPT, e->header_offset + LOCAL_SIZE, e->name,
                          "the local header names a different member than the central directory");
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION))
        return jp_err_set(err, JP_UNSUPPORTED, e->header_offset + 6, e->name,
                          "the member is encrypted");
    if (method != e->method)
        return jp_err_set(err, JP_CORRUPT, e->header_offset + 8, e->name,
                          "the local header says method %u, the central directory %u", method,
                          e->method);
    /* Without a data descriptor the local sizes must agree with the central
     * ones (miniz, hence torch, always writes a descriptor). */
    if (!(flags & FLAG_DESCRIPTOR)) {
        jp_code rc = apply_zip64_extra(extra, xlen, e->header_offset + LOCAL_SIZE + nlen, &usize,
                                       &csize, NULL, e->name, err);
        if (rc) return rc;
        if (csize != e->csize || usize != e->usize)
            return jp_err_set(err, JP_CORRUPT, e->header_offset + 18, e->name,
                              "the local header gives sizes %llu/%llu, the central directory "
                              "%llu/%llu",
                              (unsigned long long)csize, (unsigned long long)usize,
                              (unsigned long long)e->csize, (unsigned long long)e->usize);
    }
    e->data_offset = c.pos;
    uint64_t end;
    if (jp_add_overflow(e->data_offset, e->csize, &end) || end > dir_offset)
        return jp_err_set(err, JP_CORRUPT, e->data_offset, e->name,
                          "the member's %llu bytes of data run past the central directory at %llu",
                          (unsigned long long)e->csize, (unsigned long long)dir_offset);
    return JP_OK;
}

/* One central header at c's position into e; names are checked for
 * duplicates in `table` (open addressing over entry indices + 1). */
static jp_code read_central(jp_zip *z, jp_arena *arena, jp_cur *c, jp_zip_entry *e,
                            uint32_t *table, size_t cap, uint32_t index, jp_err *err) {
    uint64_t at = jp_cur_fileoff(c);
    const uint8_t *h = jp_cur_take(c, CENTRAL_SIZE);
    if (!h)
        return jp_err_set(err, JP_CORRUPT, at, NULL,
                          "central header %u runs past the end of the central directory", index);
    if (jp_load_le(h, 4) != SIG_CENTRAL)
        return jp_err_set(err, JP_CORRUPT, at, NULL,
                          "expected central header %u (50 4b 01 02), found %08x", index,
                          (unsigned)jp_load_le(h, 4));
    uint32_t flags = (uint32_t)jp_load_le(h + 8, 2);
    e->method = (uint16_t)jp_load_le(h + 10, 2);
    e->crc32 = (uint32_t)jp_load_le(h + 16, 4);
    e->csize = jp_load_le(h + 20, 4);
    e->usize = jp_load_le(h + 24, 4);
    size_t nlen = (size_t)jp_load_le(h + 28, 2), xlen = (size_t)jp_load_le(h + 30, 2);
    size_t clen = (size_t)jp_load_le(h + 32, 2);
    uint32_t disk = (uint32_t)jp_load_le(h + 34, 2);
    e->header_offset = jp_load_le(h + 42, 4);
    const uint8_t *name = jp_cur_take(c, nlen);
    const uint8_t *extra = jp_cur_take(c, xlen);
    jp_cur_take(c, clen);
    if (c->failed)
        return jp_err_set(err, JP_CORRUPT, at, NULL,
                          "central header %u's name, extra field and comment run past the end of "
                          "the central directory",
                          index);
    if (nlen == 0 || memchr(name, 0, nlen))
        return jp_err_set(err, JP_CORRUPT, at + CENTRAL_SIZE, NULL,
                          "central header %u has an empty name or one with a NUL byte", index);
    e->name = jp_arena_strndup(arena, (const char *)name, nlen);
    if (!e->name) return jp_err_set(err, JP_NO_MEMORY, at, NULL, "out of memory");
    uint64_t extra_off = at + CENTRAL_SIZE + nlen;
    jp_code rc = apply_zip64_extra(extra, xlen, extra_off, &e->usize, &e->csize, &e->header_offset,
                                   e->name, err);
    if (rc) return rc;
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION))
        return jp_err_set(err, JP_UNSUPPORTED, at + 8, e->name, "the member is encrypted");
    if (e->method != METHOD_STORED && e->method != METHOD_DEFLATED)
        return jp_err_set(err, JP_UNSUPPORTED, at + 10, e->name,
                          "compression method %u; only stored (0) and deflated (8) are read",
                          e->method);
    if (e->method == METHOD_STORED && e->csize != e->usize)
        return jp_err_set(err, JP_CORRUPT, at + 20, e->name,
                          "a stored member with %llu bytes in the archive and %llu uncompressed",
                          (unsigned long long)e->csize, (unsigned long long)e->usize);
    if (disk != 0 && disk != 0xffff)
        return jp_err_set(err, JP_UNSUPPORTED, at + 34, e->name, "the member is on disk %u", disk);
    size_t h0 = (size_t)jp_hash_str(e->name) & (cap - 1);
    for (size_t s = h0; table[s]; s = (s + 1) & (cap - 1))
        if (strcmp(z->entries[table[s] - 1].name, e->name) == 0)
            return jp_err_set(err, JP_CORRUPT, at, e->name,
                              "the archive holds two members named %s", e->name);
    for (size_t s = h0;; s = (s + 1) & (cap - 1))
        if (!table[s]) {
            table[s] = index + 1;
            break;
        }
    return JP_OK;
}

jp_code jp_zip_open(jp_zip *z, jp_arena *arena, const uint8_t *data, size_t len, jp_err *err) {
    memset(z, 0, sizeof *z);
    z->data = data;
    z->len = len;
    dir_info di;
    jp_code rc = read_end(data, len, &di, err);
    if (rc) return rc;
    uint64_t dir_end;
    if (jp_add_overflow(di.offset, di.size, &dir_end) || dir_end > di.end)
        return jp_err_set(err, JP_CORRUPT, di.end, NULL,
                          "the central directory (%llu bytes at %llu) runs past the end records "
                          "at %llu",
                          (unsigned long long)di.size, (unsigned long long)di.offset,
                          (unsigned long long)di.end);
    if (di.count > JP_ZIP_MAX_ENTRIES)
        return jp_err_set(err, JP_LIMIT, di.end, NULL,
                          "the archive says it holds %llu members; at most %u are read",
                          (unsigned long long)di.count, JP_ZIP_MAX_ENTRIES);
    if (di.count > di.size / CENTRAL_SIZE)
        return jp_err_set(err, JP_CORRUPT, di.end, NULL,
                          "%llu members cannot fit in a central directory of %llu bytes",
                          (unsigned long long)di.count, (unsigned long long)di.size);
    size_t cap = 16;
    while (cap < 2 * di.count) cap *= 2;
    z->entries = jp_arena_alloc_array(arena, (size_t)di.count, sizeof *z->entries);
    z->table = jp_arena_alloc_array(arena, cap, sizeof *z->table);
    if ((di.count && !z->entries) || !z->table)
        return jp_err_set(err, JP_NO_MEMORY, di.offset, NULL, "out of memory");
    z->table_cap = cap;
    jp_cur c = jp_cur_make(data + di.offset, (size_t)di.size, di.offset);
    for (size_t i = 0; i < di.count; i++) {
        rc = read_central(z, arena, &c, &z->entries[i], z->table, cap, (uint32_t)i, err);
        if (rc) return rc;
        z->count = i + 1;
    }
    if (jp_cur_left(&c) != 0)
        return jp_err_set(err, JP_CORRUPT, jp_cur_fileoff(&c), NULL,
                          "%zu bytes of the central directory follow its last member",
                          jp_cur_left(&c));
    for (size_t i = 0; i < z->count; i++) {
        rc = check_local(z, &z->entries[i], di.offset, err);
        if (rc) return rc;
    }
    return JP_OK;
}

const jp_zip_entry *jp_zip_find(const jp_zip *z, const char *name) {
    if (!z || !name || !z->table) return NULL;
    for (size_t s = (size_t)jp_hash_str(name) & (z->table_cap - 1); z->table[s];
         s = (s + 1) & (z->table_cap - 1))
        if (strcmp(z->entries[z->table[s] - 1].name, name) == 0) return &z->entries[z->table[s] - 1];
    return NULL;
}

/* zlib counts in uInt; feed it at most this much at a time. */
#define ZCHUNK ((uInt)1 << 30)

static jp_code inflate_member(const jp_zip *z, const jp_zip_entry *e, uint8_t *out, jp_err *err) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -MAX_WBITS) != Z_OK)
        return jp_err_set(err, JP_NO_MEMORY, e->data_offset, e->name, "zlib could not start");
    const uint8_t *in = z->data + e->data_offset;
    uint64_t in_left = e->csize, out_done = 0;
    uint8_t spare; /* room for one byte past the declared size, to see a longer stream */
    bool past_end = false;
    int zr;
    for (;;) {
        if (s.avail_in == 0 && in_left) {
            s.next_in = (Bytef *)(uintptr_t)in;
            s.avail_in = in_left > ZCHUNK ? ZCHUNK : (uInt)in_left;
            in += s.avail_in;
            in_left -= s.avail_in;
        }
        if (s.avail_out == 0) {
            uint64_t room = e->usize - out_done;
            past_end = room == 0;
            s.next_out = past_end ? &spare : out + out_done;
            s.avail_out = past_end ? 1 : room > ZCHUNK ? ZCHUNK : (uInt)room;
        }
        uInt before = s.avail_out;
        zr = inflate(&s, Z_NO_FLUSH);
        if (past_end && s.avail_out != before) {
            zr = Z_BUF_ERROR;
            break;
        }
        out_done += before - s.avail_out;
        /* Z_BUF_ERROR with room to write means the input ran out. */
        if (zr != Z_OK) break;
    }
    uint64_t consumed = e->csize - in_left - s.avail_in;
    inflateEnd(&s);
    if (zr == Z_STREAM_END && out_done == e->usize) return JP_OK;
    if (zr == Z_DATA_ERROR || zr == Z_NEED_DICT)
        return jp_err_set(err, JP_CORRUPT, e->data_offset + consumed, e->name,
                          "the deflated data are invalid");
    if (zr == Z_MEM_ERROR)
        return jp_err_set(err, JP_NO_MEMORY, e->data_offset, e->name, "zlib ran out of memory");
    if (past_end)
        return jp_err_set(err, JP_CORRUPT, e->data_offset + consumed, e->name,
                          "the deflated data inflate to more than the declared %llu bytes",
                          (unsigned long long)e->usize);
    if (zr == Z_STREAM_END)
        return jp_err_set(err, JP_CORRUPT, e->data_offset + consumed, e->name,
                          "the deflated data inflate to %llu bytes, not the declared %llu",
                          (unsigned long long)out_done, (unsigned long long)e->usize);
    return jp_err_set(err, JP_TRUNCATED, e->data_offset + e->csize, e->name,
                      "the deflated data end after %llu of the declared %llu bytes",
                      (unsigned long long)out_done, (unsigned long long)e->usize);
}

#define MAX_DEFLATE_RATIO 1032u
#define DEFLATE_SLACK 1024u

jp_code jp_zip_read(const jp_zip *z, const jp_zip_entry *e, jp_arena *arena, const uint8_t **out,
                    uint64_t *len, jp_err *err) {
    /* A stored member is a view into the mapping. Its crc32 is not checked:
     * that would read every byte of every tensor at open, which defeats the
     * mapping; the sizes and offsets are checked instead. */
    if (e->method == METHOD_STORED) {
        *out = z->data + e->data_offset;
        *len = e->usize;
        return JP_OK;
    }
    /* Deflate turns at most 258 bytes into 2 bits, so no stream inflates to
     * more than about 1032 times its size: a member that claims more is
     * refused before its buffer is allocated. */
    uint64_t most;
    if (jp_mul_overflow(e->csize, MAX_DEFLATE_RATIO, &most) || jp_add_overflow(most, DEFLATE_SLACK, &most))
        most = UINT64_MAX;
    if (e->usize > most)
        return jp_err_set(err, JP_CORRUPT, e->header_offset, e->name,
                          "the member says %llu deflated bytes inflate to %llu, more than deflate "
                          "can produce",
                          (unsigned long long)e->csize, (unsigned long long)e->usize);
    if (e->usize > JP_ZIP_MAX_INFLATE || e->usize > SIZE_MAX - 1)
        return jp_err_set(err, JP_LIMIT, e->header_offset, e->name,
                          "the member inflates to %llu bytes; at most %llu are allowed",
                          (unsigned long long)e->usize, (unsigned long long)JP_ZIP_MAX_INFLATE);
    uint8_t *buf = jp_arena_alloc(arena, e->usize ? (size_t)e->usize : 1);
    if (!buf)
        return jp_err_set(err, JP_NO_MEMORY, e->header_offset, e->name,
                          "cannot allocate %llu bytes to inflate the member",
                          (unsigned long long)e->usize);
    jp_code rc = inflate_member(z, e, buf, err);
    if (rc) return rc;
    uLong crc = crc32(0L, Z_NULL, 0);
    for (uint64_t done = 0; done < e->usize;) {
        uInt n = e->usize - done > ZCHUNK ? ZCHUNK : (uInt)(e->usize - done);
        crc = crc32(crc, buf + done, n);
        done += n;
    }
    if ((uint32_t)crc != e->crc32)
        return jp_err_set(err, JP_CORRUPT, e->header_offset, e->name,
                          "the inflated data have crc32 %08x; the central directory says %08x",
                          (unsigned)crc, (unsigned)e->crc32);
    *out = buf;
    *len = e->usize;
    return JP_OK;
}
