/* Tests for src/formats/zip.c: archives built here byte by byte (stored,
 * deflated, with data descriptors, zip64), then broken one field at a time;
 * each broken table must fail with the expected code at the expected offset. */
#include "check.h"
#include "formats/zip.h"
#include "zipbuild.h"

static const member two[] = {
    TEXT_MEMBER("arch/data.pkl", "pickle bytes here", false),
    TEXT_MEMBER("arch/data/123", "deflated tensor bytes, deflated tensor bytes, deflated", true),
};

static jp_code open_buf(const uint8_t *buf, size_t len, jp_zip *z, jp_arena *a, jp_err *err) {
    jp_arena_init(a);
    return jp_zip_open(z, a, buf, len, err);
}

static void check_members(const uint8_t *buf, size_t len, const char *what) {
    jp_arena a;
    jp_zip z;
    jp_err err;
    jp_code rc = open_buf(buf, len, &z, &a, &err);
    CHECK_EQ_U64(rc, JP_OK);
    if (rc) {
        fprintf(stderr, "  %s: %s\n", what, err.msg);
        jp_arena_free(&a);
        return;
    }
    CHECK_EQ_U64(z.count, 2);
    CHECK_STR(z.entries[0].name, "arch/data.pkl");
    for (size_t i = 0; i < 2; i++) {
        const jp_zip_entry *e = jp_zip_find(&z, two[i].name);
        CHECK(e == &z.entries[i]);
        const uint8_t *p = NULL;
        uint64_t n = 0;
        CHECK_EQ_U64(jp_zip_read(&z, e, &a, &p, &n, &err), JP_OK);
        CHECK_EQ_U64(n, two[i].len);
        CHECK(p && memcmp(p, two[i].data, (size_t)n) == 0);
        /* Stored members are views into the buffer, deflated ones copies. */
        CHECK((p >= buf && p < buf + len) == !two[i].deflate);
    }
    CHECK(jp_zip_find(&z, "arch/data/12") == NULL);
    jp_arena_free(&a);
}

static void test_valid(void) {
    uint8_t buf[4096];
    layout L;
    check_members(buf, build(buf, two, 2, (opts){0}, &L), "plain");
    check_members(buf, build(buf, two, 2, (opts){.descriptor = true}, &L), "descriptor");
    check_members(buf, build(buf, two, 2, (opts){.zip64 = true}, &L), "zip64");
    check_members(buf, build(buf, two, 2, (opts){.zip64 = true, .descriptor = true}, &L),
                  "zip64+descriptor");
    /* A comment that itself contains an end-record signature. */
    check_members(buf, build(buf, two, 2, (opts){.comment = "PK\x05\x06 fake end record"}, &L),
                  "comment");
    /* An empty archive is valid and has no members. */
    jp_arena a;
    jp_zip z;
    CHECK_EQ_U64(open_buf(buf, build(buf, two, 0, (opts){0}, &L), &z, &a, NULL), JP_OK);
    CHECK_EQ_U64(z.count, 0);
    CHECK(jp_zip_find(&z, "x") == NULL);
    jp_arena_free(&a);
}

/* A broken archive: which field to overwrite, with what, and what to expect. */
typedef struct bad_case {
    const char *what;
    opts o;
    int base;     /* 0 local[0], 1 local[1], 2 central[0], 3 central[1], 4 eocd,
                     5 z64 record, 6 z64 locator, 7 data[1], 8 len, 9 data[0] */
    int delta;    /* added to base */
    uint64_t value;
    int width;    /* bytes written; 0 truncates the file to base+delta */
    jp_code code;
    int off_base, off_delta; /* expected offset, same bases; -1: off_delta itself;
                                -2: anywhere in member 1's data (zlib's position) */
    bool on_read; /* the failure shows when reading member 1, not at open */
} bad_case;

static size_t where(const layout *L, int base) {
    switch (base) {
    case 0: return L->local[0];
    case 1: return L->local[1];
    case 2: return L->central[0];
    case 3: return L->central[1];
    case 4: return L->eocd;
    case 5: return L->z64_record;
    case 6: return L->z64_locator;
    case 7: return L->data[1];
    case 9: return L->data[0];
    default: return L->len;
    }
}

static const bad_case bad[] = {
    {"too short for an end record", {0}, 8, 0, 0, 0, JP_TRUNCATED, -1, 0, false},
    {"end record cut", {0}, 8, -1, 0, 0, JP_FORMAT, 8, -23, false},
    {"comment length too long", {0}, 4, 20, 5, 2, JP_FORMAT, 8, -22, false},
    {"several disks", {0}, 4, 4, 1, 2, JP_UNSUPPORTED, 4, 4, false},
    {"entry counts disagree", {0}, 4, 8, 1, 2, JP_UNSUPPORTED, 4, 4, false},
    {"directory past the end record", {0}, 4, 16, 4000, 4, JP_CORRUPT, 4, 0, false},
    {"more members than fit", {0}, 4, 8, 200 | (200u << 16), 4, JP_CORRUPT, 4, 0, false},
    {"zip64 values without a locator", {0}, 4, 16, 0xffffffffu, 4, JP_CORRUPT, 4, 0, false},
    {"central signature", {0}, 3, 0, 0x12345678, 4, JP_CORRUPT, 3, 0, false},
    {"central name past the directory", {0}, 3, 28, 0x7fff, 2, JP_CORRUPT, 3, 0, false},
    {"encrypted", {0}, 3, 8, 1, 2, JP_UNSUPPORTED, 3, 8, false},
    {"bzip2", {0}, 3, 10, 12, 2, JP_UNSUPPORTED, 3, 10, false},
    {"stored sizes disagree", {0}, 2, 20, 3, 4, JP_CORRUPT, 2, 20, false},
    {"duplicate name", {0}, 3, 46 + 9, 0x6c6b702e, 4, JP_CORRUPT, 3, 0, false},
    {"name with NUL", {0}, 2, 46 + 2, 0, 1, JP_CORRUPT, 2, 46, false},
    {"empty name", {0}, 2, 28, 0, 2, JP_CORRUPT, 2, 46, false},
    {"local header offset wrong", {0}, 3, 42, 5, 4, JP_CORRUPT, -1, 5, false},
    {"local header past directory", {0}, 3, 42, 0x7fffffff, 4, JP_CORRUPT, -1, 0x7fffffff, false},
    {"local name differs", {0}, 1, 30 + 5, 'X', 1, JP_CORRUPT, 1, 30, false},
    {"local method differs", {0}, 1, 8, 0, 2, JP_CORRUPT, 1, 8, false},
    {"local size differs", {0}, 1, 22, 3, 4, JP_CORRUPT, 1, 18, false},
    {"local encrypted", {0}, 1, 6, 1, 2, JP_UNSUPPORTED, 1, 6, false},
    {"data past the directory", {.descriptor = true}, 2, 20, 4000 | (4000ull << 32), 8, JP_CORRUPT,
     9, 0, false},
    {"deflated stream cut", {.descriptor = true}, 3, 20, 10, 4, JP_TRUNCATED, 7, 10, true},
    {"deflated longer than declared", {.descriptor = true}, 3, 24, 20, 4, JP_CORRUPT, -2, 0, true},
    {"deflated shorter than declared", {.descriptor = true}, 3, 24, 80, 4, JP_CORRUPT, -2, 0, true},
    {"deflated bytes invalid", {0}, 7, 0, 0xff, 1, JP_CORRUPT, -2, 0, true},
    {"crc mismatch", {0}, 3, 16, 0x1234, 4, JP_CORRUPT, 1, 0, true},
    {"trailing bytes in the directory", {0}, 4, 8, 0x00010001, 4, JP_CORRUPT, 3, 0, false},
    {"zip64 locator beyond", {.zip64 = true}, 6, 8, 1u << 30, 8, JP_CORRUPT, 6, 8, false},
    {"zip64 record signature", {.zip64 = true}, 5, 0, 0, 4, JP_CORRUPT, 5, 0, false},
    {"zip64 record size", {.zip64 = true}, 5, 4, 4000, 8, JP_CORRUPT, 5, 4, false},
    {"zip64 several disks", {.zip64 = true}, 6, 16, 3, 4, JP_UNSUPPORTED, 6, 0, false},
    {"zip64 extra missing", {.zip64 = true}, 2, 30, 0, 2, JP_CORRUPT, 2, 46 + 13, false},
    {"zip64 extra too short", {.zip64 = true}, 2, 46 + 13 + 2, 8, 2, JP_CORRUPT, 2, 46 + 13, false},
    {"zip64 extra overruns", {.zip64 = true}, 2, 46 + 13 + 2, 40, 2, JP_CORRUPT, 2, 46 + 13, false},
};

static void test_bad(void) {
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        const bad_case *b = &bad[k];
        uint8_t buf[4096];
        layout L;
        size_t len = build(buf, two, 2, b->o, &L);
        size_t at = (size_t)((long)where(&L, b->base) + b->delta);
        if (b->base == 8 && b->delta == 0 && b->width == 0) len = 21;
        else if (b->width == 0) len = at;
        else jp_store_le(buf + at, b->value, b->width);
        jp_arena a;
        jp_zip z;
        jp_err err;
        jp_err_clear(&err);
        jp_code rc = open_buf(buf, len, &z, &a, &err);
        if (b->on_read && rc == JP_OK) {
            const uint8_t *p;
            uint64_t n;
            rc = jp_zip_read(&z, &z.entries[1], &a, &p, &n, &err);
        }
        uint64_t want = b->off_base == -1   ? (uint64_t)b->off_delta
                        : b->off_base == -2 ? L.data[1]
                                            : where(&L, b->off_base) + (uint64_t)(long)b->off_delta;
        bool offset_ok = b->off_base == -2
                             ? err.offset >= L.data[1] && err.offset <= L.central[0]
                             : err.offset == want;
        check_run++;
        bool ok = rc == b->code && offset_ok;
        if (!ok) {
            check_failed++;
            fprintf(stderr, "bad case '%s': got %s @ %llu (%s), expected %s @ %llu\n", b->what,
                    jp_code_name(rc), (unsigned long long)err.offset, err.msg,
                    jp_code_name(b->code), (unsigned long long)want);
        }
        jp_arena_free(&a);
    }
}

/* Every prefix of a valid archive fails cleanly (no member is missing its
 * end record), and the full length opens. */
static void test_truncations(void) {
    uint8_t buf[4096];
    layout L;
    size_t len = build(buf, two, 2, (opts){.zip64 = true}, &L);
    for (size_t n = 0; n < len; n++) {
        jp_arena a;
        jp_zip z;
        jp_code rc = open_buf(buf, n, &z, &a, NULL);
        CHECK(rc != JP_OK);
        jp_arena_free(&a);
    }
}

int main(void) {
    test_valid();
    test_bad();
    test_truncations();
    return check_done("zip");
}
