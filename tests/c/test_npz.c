/* Tests for the .npy and .npz readers (src/formats/npz.c) and the .npz
 * writer (src/formats/npz_sink.c). Inputs are built here byte by byte (npy
 * records, zip archives from zipbuild.h) and broken one field at a time;
 * tests/python/test_npz.py compares with live numpy as well.
 *
 *   test_npz write OUT       writes the fixed set of tensors of fixture()
 *                            to OUT; test_npz.py checks numpy.load reads them
 *   test_npz zip64 OUT       writes an archive past 2**31 bytes (zip64
 *                            sizes, offsets and end records), reads it back */
#include "formats/npyhdr.h"
#include "formats/zip.h"
#include "testfiles.h"
#include "zipbuild.h"

/* ---------------------------------------------------------------- helpers */

/* An npy record as numpy.save writes it: magic, version, the dict padded
 * with spaces and '\n' so the data start on a multiple of 64, the data. */
static size_t npy(uint8_t *out, int major, const char *dict, const void *data, size_t n) {
    size_t d = strlen(dict), pre = major == 1 ? 10 : 12;
    size_t total = (pre + d + 1 + 63) / 64 * 64;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (uint8_t)major;
    out[7] = 0;
    jp_store_le(out + 8, total - pre, major == 1 ? 2 : 4);
    memcpy(out + pre, dict, d);
    memset(out + pre + d, ' ', total - pre - d - 1);
    out[total - 1] = '\n';
    memcpy(out + total, data, n);
    return total + n;
}

/* ---------------------------------------------------------------- .npy */

static void test_npy(void) {
    static const struct {
        int major;
        const char *dict;
        jp_dtype dtype;
        int ndim;
        int64_t strides1; /* strides[1] when ndim == 2 */
        bool owned;
    } cases[] = {
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", JP_F32, 2, 1, false},
        {1, "{'descr': '<i2', 'fortran_order': True, 'shape': (3, 4), }", JP_I16, 2, 3, false},
        {1, "{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }", JP_F32, 1, 0, true},
        {1, "{'descr': '>c8', 'fortran_order': False, 'shape': (3,), }", JP_C64, 1, 0, true},
        {1, "{'descr': '<V2', 'fortran_order': False, 'shape': (12,), }", JP_BF16, 1, 0, false},
        {1, "{'descr': '>V2', 'fortran_order': True, 'shape': (3, 4), }", JP_BF16, 2, 3, true},
        {1, "{'descr': '<f1', 'fortran_order': False, 'shape': (24,), }", JP_F8_E5M2, 1, 0, false},
        {1, "{'descr': '>u1', 'fortran_order': False, 'shape': (24,), }", JP_U8, 1, 0, false},
        {2, "{'descr': '<u8', 'fortran_order': False, 'shape': (3,), }", JP_U64, 1, 0, false},
        {3, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", JP_I32, 2, 1, false},
    };
    uint8_t data[24];
    for (int i = 0; i < 24; i++) data[i] = (uint8_t)(i + 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[256];
        size_t n = npy(buf, cases[i].major, cases[i].dict, data, 24);
        jp_index *ix;
        jp_err err;
        jp_code rc = jp_index_open_memory(&ix, buf, n, "a.npy", NULL, &err);
        CHECK_EQ_U64(rc, JP_OK);
        if (rc) {
            fprintf(stderr, "case %zu: %s\n", i, err.msg);
            continue;
        }
        CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_NPY);
        CHECK_EQ_U64(jp_index_count(ix), 1);
        const jp_tensor *t = jp_index_find(ix, "arr_0");
        CHECK(t && t->dtype == cases[i].dtype && t->ndim == cases[i].ndim && t->nbytes == 24);
        if (!t) continue;
        if (t->ndim == 2) CHECK_EQ_U64(t->strides[1], cases[i].strides1);
        CHECK_EQ_U64((t->flags & JP_TENSOR_OWNED) != 0, cases[i].owned);
        if (!cases[i].owned) {
            CHECK(t->data == buf + n - 24 && t->file_offset == n - 24);
        } else {
            /* Swapped item by item; complex numbers half by half. */
            size_t isz = jp_dtype_size(t->dtype) / (t->dtype == JP_C64 ? 2 : 1);
            for (size_t b = 0; b < 24; b++) CHECK_EQ_U64(t->data[b], data[b / isz * isz + isz - 1 - b % isz]);
            CHECK_EQ_U64(t->file_offset, JP_NO_OFFSET);
        }
        jp_index_close(ix);
    }
    /* 0-d and zero-size arrays. */
    uint8_t buf[256];
    jp_index *ix;
    jp_err err;
    size_t n = npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", data, 8);
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n, "s.npy", NULL, &err), JP_OK);
    const jp_tensor *t = jp_index_at(ix, 0);
    CHECK(t && t->ndim == 0 && t->numel == 1 && t->data == buf + n - 8);
    jp_index_close(ix);
    n = npy(buf, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (0, 5), }", data, 0);
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n, "z.npy", NULL, &err), JP_OK);
    t = jp_index_at(ix, 0);
    CHECK(t && t->ndim == 2 && t->numel == 0 && t->nbytes == 0 && t->data == NULL);
    jp_index_close(ix);
}

static void test_npy_malformed(void) {
    static const char f4_2[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    static const char u1_1[] = "{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }";
    static const struct {
        const char *what;
        const char *dict;   /* NULL: `raw` is the whole input */
        const char *raw;
        size_t len;         /* bytes of data after the header, or of raw */
        size_t garbage;     /* 'x' bytes after the data */
        jp_code code;
        uint64_t offset;
        const char *member;
    } cases[] = {
        {"bad magic", NULL, "\x93NUMPX\x01\x00\x00\x00", 10, 0, JP_FORMAT, 0, ""},
        {"version 4.0", NULL, "\x93NUMPY\x04\x00\x00\x00", 10, 0, JP_UNSUPPORTED, 6, ""},
        {"version 1.1", NULL, "\x93NUMPY\x01\x01\x00\x00", 10, 0, JP_UNSUPPORTED, 6, ""},
        {"no header length", NULL, "\x93NUMPY\x01\x00\x05", 9, 0, JP_TRUNCATED, 8, ""},
        {"header past the end", NULL, "\x93NUMPY\x01\x00\x76\x00{'descr'", 17, 0, JP_TRUNCATED, 8, ""},
        {"huge v2 header", NULL, "\x93NUMPY\x02\x00\x00\x00\x00\x10{", 13, 0, JP_LIMIT, 8, ""},
        {"no dict", NULL, "\x93NUMPY\x01\x00\x02\x00x\n", 12, 0, JP_CORRUPT, 10, ""},
        {"datetime", "{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (), }", NULL, 8, 0, JP_DTYPE, 20, ""},
        {"unicode", "{'descr': '<U3', 'fortran_order': False, 'shape': (), }", NULL, 12, 0, JP_DTYPE, 20, ""},
        {"long double", "{'descr': '<f16', 'fortran_order': False, 'shape': (), }", NULL, 16, 0, JP_DTYPE, 20, ""},
        {"object", "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", NULL, 16, 0, JP_UNSUPPORTED, 20, ""},
        {"plain void", "{'descr': '|V2', 'fortran_order': False, 'shape': (2,), }", NULL, 4, 0, JP_DTYPE, 20, ""},
        {"float8 as void", "{'descr': '<V1', 'fortran_order': False, 'shape': (2,), }", NULL, 2, 0, JP_DTYPE, 20, ""},
        {"structured", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", NULL, 8, 0, JP_UNSUPPORTED, 20, ""},
        {"descr not a string", "{'descr': 4, 'fortran_order': False, 'shape': (2,), }", NULL, 8, 0, JP_CORRUPT, 20, ""},
        {"negative shape", "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", NULL, 8, 0, JP_CORRUPT, 61, ""},
        {"shape overflows", "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", NULL, 0, 0, JP_LIMIT, 10, ""},
        {"shape too long", "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", NULL, 0, 0, JP_CORRUPT, 79, ""},
        {"data short", f4_2, NULL, 7, 0, JP_TRUNCATED, 128, ""},
        {"no data", f4_2, NULL, 0, 0, JP_TRUNCATED, 128, ""},
        /* Bytes after the data make a sequence of records (Equinox): garbage
         * there is refused as a broken record 1. */
        {"trailing garbage, short", u1_1, NULL, 1, 5, JP_TRUNCATED, 129, "1"},
        {"trailing garbage", u1_1, NULL, 1, 40, JP_CORRUPT, 129, "1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[512], zeros[64] = {0};
        size_t n;
        if (cases[i].dict) {
            n = npy(buf, 1, cases[i].dict, zeros, cases[i].len);
        } else {
            n = cases[i].len;
            memcpy(buf, cases[i].raw, n);
        }
        memset(buf + n, 'x', cases[i].garbage);
        n += cases[i].garbage;
        jp_index *ix;
        jp_err err;
        jp_code rc = jp_index_open_memory(&ix, buf, n, "bad.npy", NULL, &err);
        if (rc != cases[i].code || err.offset != cases[i].offset)
            fprintf(stderr, "npy case '%s': %s (%s)\n", cases[i].what, jp_code_name(rc), err.msg);
        CHECK_EQ_U64(rc, cases[i].code);
        CHECK_EQ_U64(err.offset, cases[i].offset);
        CHECK_STR(err.member, cases[i].member);
        CHECK(strncmp(err.msg, "bad.npy", 7) == 0);
        if (!rc) jp_index_close(ix);
    }
    /* The messages say what to do. */
    uint8_t buf[256];
    static const uint8_t zeros[2] = {0};
    jp_index *ix;
    jp_err err;
    size_t n = npy(buf, 1, "{'descr': '|O', 'fortran_order': False, 'shape': (), }", "", 0);
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n, "o.npy", NULL, &err), JP_UNSUPPORTED);
    CHECK(strstr(err.msg, "allow_pickle") != NULL);
    n = npy(buf, 1, "{'descr': '<V1', 'fortran_order': False, 'shape': (), }", zeros, 1);
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n, "f8.npy", NULL, &err), JP_DTYPE);
    CHECK(strstr(err.msg, "view(np.uint8)") != NULL);
    n = npy(buf, 1, "{'descr': '|V2', 'fortran_order': False, 'shape': (), }", zeros, 2);
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n, "v2.npy", NULL, &err), JP_DTYPE);
    CHECK(strstr(err.msg, "view(ml_dtypes.bfloat16)") != NULL);
}

/* ---------------------------------------------------------------- .npz */

/* Two arrays as numpy.savez writes them (stored or deflated): "arr_0"
 * float32 (2, 3) and "layer/0/w" big-endian int16 (4,). */
typedef struct npz_fixture {
    uint8_t a[256], b[256];
    size_t alen, blen;
    member m[3];
} npz_fixture;

static void npz_members(npz_fixture *f, bool deflate) {
    static const float af[6] = {0, 1, 2, 3, 4, 5};
    static const uint8_t bi[8] = {0, 1, 0, 2, 0, 3, 0xff, 0xfc};
    memset(f, 0, sizeof *f);
    f->alen = npy(f->a, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", af, 24);
    f->blen = npy(f->b, 1, "{'descr': '>i2', 'fortran_order': False, 'shape': (4,), }", bi, 8);
    f->m[0] = (member){"arr_0.npy", f->a, f->alen, deflate};
    f->m[1] = (member){"layer/0/w.npy", f->b, f->blen, deflate};
}

static void test_npz(void) {
    for (int variant = 0; variant < 4; variant++) {
        bool deflate = variant & 1, zip64 = variant & 2;
        npz_fixture f;
        npz_members(&f, deflate);
        uint8_t buf[4096];
        layout L;
        size_t n = build(buf, f.m, 2, (opts){.zip64 = zip64}, &L);
        jp_index *ix;
        jp_err err;
        jp_code rc = jp_index_open_memory(&ix, buf, n, "a.npz", NULL, &err);
        CHECK_EQ_U64(rc, JP_OK);
        if (rc) {
            fprintf(stderr, "variant %d: %s\n", variant, err.msg);
            continue;
        }
        CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_NPZ);
        CHECK_EQ_U64(jp_index_count(ix), 2);
        const jp_tensor *a = jp_index_find(ix, "arr_0"), *b = jp_index_find(ix, "layer/0/w");
        CHECK(a && a->dtype == JP_F32 && a->shape[0] == 2 && a->shape[1] == 3);
        CHECK(b && b->dtype == JP_I16 && b->shape[0] == 4);
        if (!a || !b) continue;
        CHECK(memcmp(a->data, f.a + 128, 24) == 0);
        static const int16_t want_b[4] = {1, 2, 3, -4};
        CHECK(memcmp(b->data, want_b, 8) == 0);
        CHECK(b->flags & JP_TENSOR_OWNED);
        if (deflate) {
            CHECK((a->flags & JP_TENSOR_OWNED) && a->file_offset == JP_NO_OFFSET);
        } else {
            /* Stored members are read in place. */
            CHECK(a->data == buf + L.data[0] + 128 && a->file_offset == L.data[0] + 128);
            CHECK(!(a->flags & JP_TENSOR_OWNED));
        }
        jp_index_close(ix);
    }
    /* numpy.savez of nothing: only an end record; no arrays. */
    uint8_t buf[64];
    layout L;
    size_t n = build(buf, NULL, 0, (opts){0}, &L);
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n, "e.npz", NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_NPZ);
    CHECK_EQ_U64(jp_index_count(ix), 0);
    jp_index_close(ix);
}

/* A torch.save archive stays torch's: its first member is <folder>/data.pkl. */
static void test_torch_not_npz(void) {
    static const member torchish[] = {
        TEXT_MEMBER("arch/data.pkl", "\x80\x02}q\x00.", false),
        TEXT_MEMBER("arch/data/0.npy", "1234", false),
    };
    uint8_t buf[1024];
    layout L;
    size_t n = build(buf, torchish, 2, (opts){0}, &L);
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n, "t.pt", NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_TORCH_ZIP);
    jp_index_close(ix);
}

enum { BREAK_NONE, BREAK_NAME, BREAK_HEADER, BREAK_DATA_SHORT, BREAK_TRAILING, BREAK_CRC, BREAK_SIZE,
       BREAK_OBJECT };

static void test_npz_malformed(void) {
    static const struct {
        const char *what;
        int how;
        bool deflate;
        jp_code code;
        int at;         /* -1: the local header of member 1; else an offset into member 1's data */
        const char *member;
    } cases[] = {
        {"member not .npy", BREAK_NAME, false, JP_UNSUPPORTED, -1, "notes.txt"},
        {"bad npy magic, stored", BREAK_HEADER, false, JP_CORRUPT, 0, "layer/0/w.npy"},
        {"bad npy magic, deflated", BREAK_HEADER, true, JP_CORRUPT, 0, "layer/0/w.npy"},
        {"data short, stored", BREAK_DATA_SHORT, false, JP_TRUNCATED, 128, "layer/0/w.npy"},
        {"data short, deflated", BREAK_DATA_SHORT, true, JP_TRUNCATED, 128, "layer/0/w.npy"},
        {"bytes after the data", BREAK_TRAILING, false, JP_CORRUPT, 136, "layer/0/w.npy"},
        {"object array", BREAK_OBJECT, true, JP_UNSUPPORTED, 20, "layer/0/w.npy"},
        {"crc of a deflated member", BREAK_CRC, true, JP_CORRUPT, -1, "layer/0/w.npy"},
        {"inflates beyond deflate's ratio", BREAK_SIZE, true, JP_CORRUPT, -1, "layer/0/w.npy"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        npz_fixture f;
        npz_members(&f, cases[i].deflate);
        f.m[0].deflate = false;
        if (cases[i].how == BREAK_NAME) f.m[1].name = "notes.txt";
        if (cases[i].how == BREAK_HEADER) f.b[1] = 'M';
        if (cases[i].how == BREAK_DATA_SHORT) f.m[1].len -= 1;
        if (cases[i].how == BREAK_TRAILING) f.m[1].len += 3;
        if (cases[i].how == BREAK_OBJECT) memcpy(f.b + 21, "|O' ", 4);
        uint8_t buf[4096];
        layout L;
        size_t n = build(buf, f.m, 2, (opts){.descriptor = cases[i].how == BREAK_SIZE}, &L);
        if (cases[i].how == BREAK_CRC) buf[L.central[1] + 16] ^= 1;
        if (cases[i].how == BREAK_SIZE) jp_store_le(buf + L.central[1] + 24, 0xfffffff0u, 4);
        jp_index *ix;
        jp_err err;
        jp_code rc = jp_index_open_memory(&ix, buf, n, "bad.npz", NULL, &err);
        /* Offsets into a deflated member count from its inflated start. */
        uint64_t want = cases[i].at < 0 ? L.local[1]
                        : cases[i].deflate ? (uint64_t)cases[i].at
                                           : L.data[1] + (uint64_t)cases[i].at;
        if (rc != cases[i].code || err.offset != want)
            fprintf(stderr, "npz case '%s': %s (%s)\n", cases[i].what, jp_code_name(rc), err.msg);
        CHECK_EQ_U64(rc, cases[i].code);
        CHECK_EQ_U64(err.offset, want);
        CHECK_STR(err.member, cases[i].member);
        if (!rc) jp_index_close(ix);
    }
}

/* ---------------------------------------------------------------- writer */

/* What numpy.savez(f, a=np.arange(3, dtype=np.int8)) writes (numpy 2.4,
 * Python 3.11 zipfile): local header and zip64 extra, the npy record, the
 * central header, the end record. */
static const char savez_local_hex[] =
    "504b03042d000000000000002100ac98ff33ffffffffffffffff05001400612e6e70790100100083"
    "000000000000008300000000000000";
static const char savez_dir_hex[] =
    "504b01022d032d000000000000002100ac98ff338300000083000000050000000000000000000000"
    "800100000000612e6e7079504b0506000000000100010033000000ba0000000000";

enum { NFIX = 8 };

/* The tensors `test_npz write` writes and test_npz.py checks with numpy:
 * every dtype numpy reads back, names with '/', a 0-d and an empty array. */
static void fixture(jp_sink_tensor *ts, uint8_t **data) {
    static const char *const names[NFIX] = {"w", "layer/0/b", "scalar", "empty", "bf16", "c128", "flags", "ü/x"};
    static const jp_dtype dts[NFIX] = {JP_F32, JP_I64, JP_F64, JP_U16, JP_BF16, JP_C128, JP_BOOL, JP_I8};
    static const int64_t shapes[NFIX][3] = {{2, 3, 4}, {5}, {0}, {0, 3}, {3, 2}, {2}, {7}, {1, 1, 1}};
    static const int ndims[NFIX] = {3, 1, 0, 2, 2, 1, 1, 3};
    for (int i = 0; i < NFIX; i++) {
        ts[i] = (jp_sink_tensor){.name = names[i], .dtype = dts[i], .ndim = ndims[i]};
        uint64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++) numel *= (uint64_t)(ts[i].shape[d] = shapes[i][d]);
        ts[i].nbytes = numel * jp_dtype_size(dts[i]);
        data[i] = malloc(ts[i].nbytes + 1);
        for (uint64_t b = 0; b < ts[i].nbytes; b++)
            data[i][b] = dts[i] == JP_BOOL ? (uint8_t)(b % 3 == 0) : (uint8_t)(b * 7 + (uint64_t)i);
    }
}

static jp_code write_fixture(const char *path, size_t piece, jp_err *err) {
    jp_sink_tensor ts[NFIX];
    uint8_t *data[NFIX];
    fixture(ts, data);
    jp_sink *s;
    jp_code rc = jp_sink_open(&s, path, JP_FORMAT_UNKNOWN, ts, NFIX, NULL, err);
    for (size_t i; !rc && (i = jp_sink_expected(s)) < NFIX;) {
        for (uint64_t o = 0; o < ts[i].nbytes && !rc; o += piece)
            rc = jp_sink_write(s, i, data[i] + o, ts[i].nbytes - o < piece ? (size_t)(ts[i].nbytes - o) : piece, err);
    }
    if (!rc) rc = jp_sink_commit(s, err);
    else jp_sink_abort(s);
    for (int i = 0; i < NFIX; i++) free(data[i]);
    return rc;
}

static void test_write_round_trip(void) {
    jp_sink_tensor ts[NFIX];
    uint8_t *data[NFIX];
    fixture(ts, data);
    for (size_t piece = 1; piece <= 64; piece *= 4) {
        jp_err err;
        jp_code wrc = write_fixture(tmp_path("rt.npz"), piece, &err);
        CHECK_EQ_U64(wrc, JP_OK);
        if (wrc) fprintf(stderr, "write: %s\n", err.msg);
        jp_index *ix;
        jp_code rc = jp_index_open(&ix, tmp_path("rt.npz"), NULL, &err);
        CHECK_EQ_U64(rc, JP_OK);
        if (rc) {
            fprintf(stderr, "round trip: %s\n", err.msg);
            continue;
        }
        CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_NPZ);
        CHECK_EQ_U64(jp_index_count(ix), NFIX);
        for (int i = 0; i < NFIX; i++) {
            const jp_tensor *t = jp_index_at(ix, (size_t)i);
            CHECK_STR(t->name, ts[i].name);
            CHECK(t->dtype == ts[i].dtype && t->ndim == ts[i].ndim && t->nbytes == ts[i].nbytes);
            CHECK(memcmp(t->shape, ts[i].shape, sizeof t->shape) == 0);
            CHECK(t->nbytes == 0 || memcmp(t->data, data[i], t->nbytes) == 0);
            CHECK(!(t->flags & JP_TENSOR_OWNED) && (t->flags & JP_TENSOR_CONTIGUOUS));
        }
        jp_index_close(ix);
    }
    for (int i = 0; i < NFIX; i++) free(data[i]);
    /* Every member's crc32 agrees with its bytes (the reader checks only
     * deflated members): recompute them from the archive. */
    uint8_t file[8192];
    size_t n = read_file(tmp_path("rt.npz"), file, sizeof file);
    jp_arena a;
    jp_arena_init(&a);
    jp_zip z;
    CHECK_EQ_U64(jp_zip_open(&z, &a, file, n, NULL), JP_OK);
    for (size_t i = 0; i < z.count; i++) {
        const jp_zip_entry *e = &z.entries[i];
        CHECK_EQ_U64(crc32(0, file + e->data_offset, (uInt)e->usize), e->crc32);
    }
    jp_arena_free(&a);
}

static size_t unhex(uint8_t *out, const char *h) {
    size_t n = 0;
    for (; h[0] && h[1]; h += 2) {
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
    }
    return n;
}

static void test_write_golden(void) {
    uint8_t want[512], got[512];
    size_t n = unhex(want, savez_local_hex);
    n += npy(want + n, 1, "{'descr': '|i1', 'fortran_order': False, 'shape': (3,), }", "\x00\x01\x02", 3);
    n += unhex(want + n, savez_dir_hex);
    CHECK_EQ_U64(n, 259);
    jp_sink_tensor t = {.name = "a", .dtype = JP_I8, .ndim = 1, .shape = {3}, .nbytes = 3};
    jp_sink *s;
    jp_err err;
    CHECK_EQ_U64(jp_sink_open(&s, tmp_path("g.npz"), JP_FORMAT_NPZ, &t, 1, NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_sink_write(s, 0, "\x00\x01", 2, &err), JP_OK);
    CHECK_EQ_U64(jp_sink_write(s, 0, "\x02", 1, &err), JP_OK);
    CHECK_EQ_U64(jp_sink_commit(s, &err), JP_OK);
    CHECK_EQ_U64(read_file(tmp_path("g.npz"), got, sizeof got), n);
    CHECK(memcmp(got, want, n) == 0);
    unlink(tmp_path("g.npz"));
}

static void test_write_refusals(void) {
    jp_sink_tensor ts[2] = {
        {.name = "a", .dtype = JP_F32, .ndim = 1, .shape = {2}, .nbytes = 8},
        {.name = "a", .dtype = JP_F32, .ndim = 1, .shape = {2}, .nbytes = 8},
    };
    jp_sink *s;
    jp_err err;
    CHECK_EQ_U64(jp_sink_open(&s, tmp_path("r.npz"), JP_FORMAT_UNKNOWN, ts, 2, NULL, &err), JP_ARGUMENT);
    CHECK_STR(err.member, "a");
    ts[1].name = "b";
    ts[1].dtype = JP_F8_E4M3FN;
    ts[1].nbytes = 2;
    CHECK_EQ_U64(jp_sink_open(&s, tmp_path("r.npz"), JP_FORMAT_UNKNOWN, ts, 2, NULL, &err), JP_DTYPE);
    CHECK_STR(err.member, "b");
    ts[1].dtype = JP_F8_E5M2; /* '<f1' is read, but numpy.load cannot read it */
    CHECK_EQ_U64(jp_sink_open(&s, tmp_path("r.npz"), JP_FORMAT_UNKNOWN, ts, 2, NULL, &err), JP_DTYPE);
    /* An abandoned archive leaves nothing behind. */
    ts[1].dtype = JP_U8;
    CHECK_EQ_U64(jp_sink_open(&s, tmp_path("r.npz"), JP_FORMAT_UNKNOWN, ts, 2, NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_sink_write(s, 0, "12345678", 8, &err), JP_OK);
    jp_sink_abort(s);
    CHECK(access(tmp_path("r.npz"), F_OK) != 0);
}

/* ---------------------------------------------------------------- zip64 */

/* An archive past 2**31 - 1 bytes: member "big" is larger than that (zip64
 * sizes in its central header), "after" starts beyond it (zip64 offset) and
 * so does the directory (zip64 end records). Reads it back and checks every
 * byte's pattern. */
static int zip64_run(const char *path) {
    const uint64_t big = ((uint64_t)1 << 31) + 40;
    jp_sink_tensor ts[2] = {
        {.name = "big", .dtype = JP_U8, .ndim = 1, .shape = {(int64_t)big}, .nbytes = big},
        {.name = "after", .dtype = JP_I32, .ndim = 2, .shape = {2, 2}, .nbytes = 16},
    };
    enum { CHUNK = 1 << 20 };
    uint8_t *chunk = malloc(CHUNK);
    if (!chunk) return 2;
    for (size_t b = 0; b < CHUNK; b++) chunk[b] = (uint8_t)(b * 131 + 7);
    jp_sink *s;
    jp_err err;
    jp_code rc = jp_sink_open(&s, path, JP_FORMAT_NPZ, ts, 2, NULL, &err);
    for (uint64_t o = 0; o < big && !rc; o += CHUNK)
        rc = jp_sink_write(s, 0, chunk, big - o < CHUNK ? (size_t)(big - o) : CHUNK, &err);
    if (!rc) rc = jp_sink_write(s, 1, "\x01\0\0\0\x02\0\0\0\x03\0\0\0\x04\0\0\0", 16, &err);
    if (!rc) rc = jp_sink_commit(s, &err);
    else jp_sink_abort(s);
    jp_index *ix = NULL;
    if (!rc) rc = jp_index_open(&ix, path, NULL, &err);
    if (rc) {
        fprintf(stderr, "zip64: %s\n", err.msg);
        free(chunk);
        return 1;
    }
    const jp_tensor *t = jp_index_find(ix, "big"), *u = jp_index_find(ix, "after");
    CHECK(jp_index_format(ix) == JP_FORMAT_NPZ && t && u && t->nbytes == big);
    for (uint64_t o = 0; t && o < big; o += CHUNK)
        CHECK(memcmp(t->data + o, chunk, big - o < CHUNK ? (size_t)(big - o) : CHUNK) == 0);
    CHECK(u && u->file_offset > big && u->data[12] == 4);
    jp_index_close(ix);
    free(chunk);
    return check_done("npz zip64");
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "write") == 0) {
        jp_err err;
        jp_code rc = write_fixture(argv[2], 1000, &err);
        if (rc) fprintf(stderr, "write: %s\n", err.msg);
        return rc ? 1 : 0;
    }
    if (argc == 3 && strcmp(argv[1], "zip64") == 0) return zip64_run(argv[2]);
    if (!tmpdir_make("npz")) return 2;
    test_npy();
    test_npy_malformed();
    test_npz();
    test_torch_not_npz();
    test_npz_malformed();
    test_write_round_trip();
    test_write_golden();
    test_write_refusals();
    tmpdir_remove();
    return check_done("npz");
}
