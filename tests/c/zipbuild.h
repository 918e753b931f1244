/* Builds zip archives byte by byte for the C tests, recording where each
 * structure went so a test can break one field at a time. */
#ifndef JP_TEST_ZIPBUILD_H
#define JP_TEST_ZIPBUILD_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "common/common.h"

#define MAX_MEMBERS 8

typedef struct member {
    const char *name;
    const void *data;
    size_t len;
    bool deflate;
} member;

#define TEXT_MEMBER(name, text, deflate) {name, text, sizeof(text) - 1, deflate}

/* Where the builder put things, so tests can break them. */
typedef struct layout {
    size_t local[MAX_MEMBERS], data[MAX_MEMBERS], central[MAX_MEMBERS], len;
    size_t z64_record, z64_locator, eocd;
} layout;

typedef struct opts {
    bool zip64, descriptor;
    const char *comment;
} opts;

static size_t put(uint8_t *buf, size_t at, uint64_t v, int n) {
    jp_store_le(buf + at, v, n);
    return at + (size_t)n;
}

static size_t put_bytes(uint8_t *buf, size_t at, const void *p, size_t n) {
    memcpy(buf + at, p, n);
    return at + n;
}

/* A zip64 extra field holding n 8-byte values. */
static size_t put_zip64(uint8_t *buf, size_t at, const uint64_t *v, int n) {
    at = put(buf, at, 1, 2);
    at = put(buf, at, 8u * (unsigned)n, 2);
    for (int i = 0; i < n; i++) at = put(buf, at, v[i], 8);
    return at;
}

/* Raw deflate of data into out; returns the compressed size. */
static size_t deflate_raw(const void *data, size_t len, uint8_t *out, size_t cap) {
    z_stream s;
    memset(&s, 0, sizeof s);
    deflateInit2(&s, 9, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    s.next_in = (Bytef *)(uintptr_t)data;
    s.avail_in = (uInt)len;
    s.next_out = out;
    s.avail_out = (uInt)cap;
    deflate(&s, Z_FINISH);
    size_t n = s.total_out;
    deflateEnd(&s);
    return n;
}

static size_t build(uint8_t *buf, const member *m, size_t n, opts o, layout *L) {
    size_t at = 0;
    uint64_t csz[MAX_MEMBERS], usz[MAX_MEMBERS];
    uint32_t crc[MAX_MEMBERS];
    for (size_t i = 0; i < n; i++) {
        uint8_t packed[4096];
        const uint8_t *payload = m[i].data;
        usz[i] = m[i].len;
        csz[i] = usz[i];
        if (m[i].deflate) {
            csz[i] = deflate_raw(m[i].data, m[i].len, packed, sizeof packed);
            payload = packed;
        }
        crc[i] = (uint32_t)crc32(0, (const Bytef *)m[i].data, (uInt)usz[i]);
        size_t nlen = strlen(m[i].name);
        L->local[i] = at;
        at = put(buf, at, 0x04034b50, 4);
        at = put(buf, at, 45, 2);
        at = put(buf, at, o.descriptor ? 8 : 0, 2);
        at = put(buf, at, m[i].deflate ? 8 : 0, 2);
        at = put(buf, at, 0, 4);
        at = put(buf, at, o.descriptor ? 0 : crc[i], 4);
        uint64_t lc = o.descriptor ? 0 : o.zip64 ? 0xffffffffu : csz[i];
        uint64_t lu = o.descriptor ? 0 : o.zip64 ? 0xffffffffu : usz[i];
        at = put(buf, at, lc, 4);
        at = put(buf, at, lu, 4);
        at = put(buf, at, nlen, 2);
        at = put(buf, at, o.zip64 ? 20 : 0, 2);
        at = put_bytes(buf, at, m[i].name, nlen);
        if (o.zip64) at = put_zip64(buf, at, (uint64_t[]){usz[i], csz[i]}, 2);
        L->data[i] = at;
        at = put_bytes(buf, at, payload, (size_t)csz[i]);
        if (o.descriptor) {
            at = put(buf, at, 0x08074b50, 4);
            at = put(buf, at, crc[i], 4);
            at = put(buf, at, csz[i], 4);
            at = put(buf, at, usz[i], 4);
        }
    }
    size_t dir = at;
    for (size_t i = 0; i < n; i++) {
        size_t nlen = strlen(m[i].name);
        L->central[i] = at;
        at = put(buf, at, 0x02014b50, 4);
        at = put(buf, at, 45, 2);
        at = put(buf, at, 45, 2);
        at = put(buf, at, o.descriptor ? 8 : 0, 2);
        at = put(buf, at, m[i].deflate ? 8 : 0, 2);
        at = put(buf, at, 0, 4);
        at = put(buf, at, crc[i], 4);
        at = put(buf, at, o.zip64 ? 0xffffffffu : csz[i], 4);
        at = put(buf, at, o.zip64 ? 0xffffffffu : usz[i], 4);
        at = put(buf, at, nlen, 2);
        at = put(buf, at, o.zip64 ? 28 : 0, 2);
        at = put(buf, at, 0, 2);  /* comment */
        at = put(buf, at, 0, 2);  /* disk */
        at = put(buf, at, 0, 2);  /* internal attributes */
        at = put(buf, at, 0, 4);  /* external attributes */
        at = put(buf, at, o.zip64 ? 0xffffffffu : L->local[i], 4);
        at = put_bytes(buf, at, m[i].name, nlen);
        if (o.zip64) at = put_zip64(buf, at, (uint64_t[]){usz[i], csz[i], L->local[i]}, 3);
    }
    size_t dir_size = at - dir;
    if (o.zip64) {
        L->z64_record = at;
        at = put(buf, at, 0x06064b50, 4);
        at = put(buf, at, 44, 8);
        at = put(buf, at, 45, 2);
        at = put(buf, at, 45, 2);
        at = put(buf, at, 0, 4);
        at = put(buf, at, 0, 4);
        at = put(buf, at, n, 8);
        at = put(buf, at, n, 8);
        at = put(buf, at, dir_size, 8);
        at = put(buf, at, dir, 8);
        L->z64_locator = at;
        at = put(buf, at, 0x07064b50, 4);
        at = put(buf, at, 0, 4);
        at = put(buf, at, L->z64_record, 8);
        at = put(buf, at, 1, 4);
    }
    size_t clen = o.comment ? strlen(o.comment) : 0;
    L->eocd = at;
    at = put(buf, at, 0x06054b50, 4);
    at = put(buf, at, 0, 2);
    at = put(buf, at, 0, 2);
    at = put(buf, at, o.zip64 ? 0xffff : n, 2);
    at = put(buf, at, o.zip64 ? 0xffff : n, 2);
    at = put(buf, at, o.zip64 ? 0xffffffffu : dir_size, 4);
    at = put(buf, at, o.zip64 ? 0xffffffffu : dir, 4);
    at = put(buf, at, clen, 2);
    at = put_bytes(buf, at, o.comment ? o.comment : "", clen);
    L->len = at;
    return at;
}

#endif
