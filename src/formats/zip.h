/* Zip archives as torch.save and numpy.savez write them: the central
 * directory is the truth, zip64 is normal, stored members are read in place
 * from the mapping and deflated ones are inflated with zlib. */
#ifndef JP_ZIP_H
#define JP_ZIP_H

#include "../common/common.h"

typedef struct jp_zip_entry {
    const char *name;       /* NUL-terminated copy */
    uint16_t method;        /* 0 stored, 8 deflated */
    uint32_t crc32;
    uint64_t csize, usize;  /* compressed and uncompressed sizes */
    uint64_t header_offset; /* local header */
    uint64_t data_offset;   /* first byte of the member's data, checked in range */
} jp_zip_entry;

typedef struct jp_zip {
    const uint8_t *data;
    size_t len;
    jp_zip_entry *entries;  /* in central directory order */
    size_t count;
    uint32_t *table;        /* names by hash: entry index + 1, 0 for empty */
    size_t table_cap;
} jp_zip;

#define JP_ZIP_MAX_ENTRIES (1u << 20)
#define JP_ZIP_MAX_INFLATE ((uint64_t)1 << 34) /* one deflated member, inflated */

/* Parse the central directory of data[0..len); entries live in `arena`. */
jp_code jp_zip_open(jp_zip *z, jp_arena *arena, const uint8_t *data, size_t len, jp_err *err);
const jp_zip_entry *jp_zip_find(const jp_zip *z, const char *name);
/* The member's bytes: a view into the mapping for stored members (no copy),
 * else inflated into `arena` with size and crc checked (a member claiming
 * more than deflate can produce from its bytes is refused first). */
jp_code jp_zip_read(const jp_zip *z, const jp_zip_entry *e, jp_arena *arena, const uint8_t **out,
                    uint64_t *len, jp_err *err);

#endif /* JP_ZIP_H */
