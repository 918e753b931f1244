/* Tests for the npy record header (src/formats/npyhdr.c) and the Equinox
 * reader and writer (src/formats/eqx.c). The golden records are what
 * eqx.tree_serialise_leaves (equinox 0.13.8, numpy 2.4) wrote for
 * (arange(3, f32), 2, True, jnp.ones((2, 1), bfloat16), 'skip');
 * tests/python/test_eqx.py compares with live equinox as well. */
#include "formats/npyhdr.h"
#include "testfiles.h"

/* One npy record: magic, version 1.0, the dict, `pad` spaces, '\n', data. */
static size_t record(uint8_t *out, const char *dict, size_t pad, const void *data, size_t n) {
    size_t d = strlen(dict), o = 10;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    jp_store_le(out + 8, d + pad + 1, 2);
    memcpy(out + o, dict, d);
    o += d;
    memset(out + o, ' ', pad);
    o += pad;
    out[o++] = '\n';
    memcpy(out + o, data, n);
    return o + n;
}

static size_t golden(uint8_t *out) {
    static const float f[3] = {0, 1, 2};
    static const uint8_t i8[8] = {2}, yes = 1, bf[4] = {0x80, 0x3f, 0x80, 0x3f};
    size_t n = 0;
    n += record(out + n, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 60, f, 12);
    n += record(out + n, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }", 62, i8, 8);
    n += record(out + n, "{'descr': '|b1', 'fortran_order': False, 'shape': (), }", 62, &yes, 1);
    n += record(out + n, "{'descr': '<V2', 'fortran_order': False, 'shape': (2, 1), }", 58, bf, 4);
    return n;
}

/* ---------------------------------------------------------------- header */

static void test_header_parse(void) {
    static const struct {
        const char *dict;
        jp_dtype dtype;
        int ndim;
        int64_t dim0;
        bool fortran, big;
    } good[] = {
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", JP_F32, 2, 2, false, false},
        {"{\"shape\":(7,),\"descr\":\"|u1\",\"fortran_order\":True}", JP_U8, 1, 7, true, false},
        {"{'descr': '>i8', 'fortran_order': False, 'shape': (5L, 2L), }", JP_I64, 2, 5, false, true},
        {"{'descr': '>u1', 'fortran_order': False, 'shape': (), }", JP_U8, 0, 0, false, false},
        {"{'descr': '<c16', 'fortran_order': False, 'shape': ( 0 , ), }\n", JP_C128, 1, 0, false, false},
        {"{'descr': '<V2', 'fortran_order': False, 'shape': (1,), }", JP_BF16, 1, 1, false, false},
        {"{'descr': 'b1', 'fortran_order': False, 'shape': (1,), }", JP_BOOL, 1, 1, false, false},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint8_t buf[256];
        size_t n = record(buf, good[i].dict, 3, "", 0);
        jp_cur c = jp_cur_make(buf, n, 0);
        jp_npy_header h;
        jp_err err;
        CHECK_EQ_U64(jp_npy_header_parse(&c, &h, "x", &err), JP_OK);
        CHECK_EQ_U64(h.dtype, good[i].dtype);
        CHECK_EQ_U64(h.ndim, good[i].ndim);
        if (h.ndim) CHECK_EQ_U64(h.shape[0], good[i].dim0);
        CHECK(h.fortran_order == good[i].fortran && h.big_endian == good[i].big);
        CHECK_EQ_U64(c.pos, n);
    }
    /* Versions 2.0 and 3.0 have a 4-byte length. */
    uint8_t v2[128] = "\x93NUMPY\x02\x00";
    const char *dict = "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }";
    jp_store_le(v2 + 8, strlen(dict), 4);
    memcpy(v2 + 12, dict, strlen(dict));
    jp_cur c = jp_cur_make(v2, 12 + strlen(dict), 0);
    jp_npy_header h;
    CHECK_EQ_U64(jp_npy_header_parse(&c, &h, NULL, NULL), JP_OK);
    CHECK(h.dtype == JP_F16 && h.nbytes == 8);
}

static void test_header_malformed(void) {
    static const struct {
        const char *dict; /* NULL: `raw` is the whole input */
        const char *raw;
        size_t raw_len;
        jp_code code;
        uint64_t offset;
    } cases[] = {
        {NULL, "\x93NUMP", 5, JP_TRUNCATED, 0},
        {NULL, "\x93NUMPX\x01\x00\x00\x00", 10, JP_CORRUPT, 0},
        {NULL, "\x93NUMPY\x04\x00\x00\x00", 10, JP_UNSUPPORTED, 6},
        {NULL, "\x93NUMPY\x01\x00\x05", 9, JP_TRUNCATED, 8},
        {NULL, "\x93NUMPY\x01\x00\x05\x00{", 11, JP_TRUNCATED, 8},
        {NULL, "\x93NUMPY\x02\x00\x00\x00\x10\x00", 12, JP_LIMIT, 8},
        {"{'descr': '<f4', 'fortran_order': False, }", NULL, 0, JP_CORRUPT, 10},
        {"{'descx': '<f4', 'fortran_order': False, 'shape': (), }", NULL, 0, JP_CORRUPT, 11},
        {"{'descr': '<f4', 'descr': '<f4', 'shape': (), }", NULL, 0, JP_CORRUPT, 27},
        {"{'descr': '<M8', 'fortran_order': False, 'shape': (), }", NULL, 0, JP_DTYPE, 20},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (), }", NULL, 0, JP_UNSUPPORTED, 20},
        {"{'descr': '<f4', 'fortran_order': maybe, 'shape': (), }", NULL, 0, JP_CORRUPT, 44},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3), }", NULL, 0, JP_CORRUPT, 63},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3 4), }", NULL, 0, JP_CORRUPT, 63},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", NULL, 0, JP_CORRUPT, 61},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", NULL, 0, JP_CORRUPT, 79},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", NULL, 0, JP_LIMIT, 10},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1), }", NULL, 0, JP_LIMIT, 93},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (), } x", NULL, 0, JP_CORRUPT, 66},
        {"{'descr': '<f4\\', 'fortran_order': False, 'shape': (), }", NULL, 0, JP_CORRUPT, 24},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[256];
        size_t n = cases[i].dict ? record(buf, cases[i].dict, 0, "", 0) - 1 : cases[i].raw_len;
        if (!cases[i].dict) memcpy(buf, cases[i].raw, n);
        else jp_store_le(buf + 8, strlen(cases[i].dict), 2);
        jp_cur c = jp_cur_make(buf, n, 0);
        jp_npy_header h;
        jp_err err;
        jp_code rc = jp_npy_header_parse(&c, &h, "r", &err);
        if (rc != cases[i].code || err.offset != cases[i].offset)
            fprintf(stderr, "case %zu: %s (%s)\n", i, jp_code_name(rc), err.msg);
        CHECK_EQ_U64(rc, cases[i].code);
        CHECK_EQ_U64(err.offset, cases[i].offset);
        CHECK_STR(err.member, "r");
    }
}

static void test_header_format(void) {
    uint8_t want[256], got[JP_NPY_HEADER_CAP];
    int64_t shape[2] = {2, 1};
    size_t n = record(want, "{'descr': '<V2', 'fortran_order': False, 'shape': (2, 1), }", 58, "", 0);
    CHECK_EQ_U64(jp_npy_header_format(got, JP_BF16, 2, shape), n);
    CHECK(memcmp(got, want, n) == 0);
    n = record(want, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }", 62, "", 0);
    CHECK_EQ_U64(jp_npy_header_format(got, JP_I64, 0, shape), n);
    CHECK(memcmp(got, want, n) == 0);
    /* A dict that ends exactly on the boundary gets 64 spaces, as numpy does. */
    int64_t big[16];
    for (int i = 0; i < 16; i++) big[i] = 1000000000000000000ll;
    n = jp_npy_header_format(got, JP_F32, 16, big);
    CHECK(n % 64 == 0 && n < JP_NPY_HEADER_CAP && got[n - 1] == '\n');
    jp_cur c = jp_cur_make(got, n, 0);
    jp_npy_header h;
    CHECK_EQ_U64(jp_npy_header_parse(&c, &h, NULL, NULL), JP_LIMIT); /* 16 x 1e18 elements overflow */
    CHECK_EQ_U64(jp_npy_header_format(got, JP_F8_E4M3FN, 1, shape), 0);
    CHECK_EQ_U64(jp_npy_header_format(got, JP_C32, 1, shape), 0);
}

/* ---------------------------------------------------------------- eqx */

static void test_read_golden(void) {
    uint8_t buf[1024];
    size_t n = golden(buf);
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(n, 537);
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n, "g.eqx", NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_EQX);
    CHECK_EQ_U64(jp_index_count(ix), 4);
    const jp_tensor *t = jp_index_at(ix, 0);
    CHECK(t->dtype == JP_F32 && t->ndim == 1 && t->shape[0] == 3 && t->data == buf + 128);
    CHECK_STR(t->name, "0");
    t = jp_index_find(ix, "1");
    CHECK(t && t->dtype == JP_I64 && t->ndim == 0 && t->data[0] == 2 && t->file_offset == 140 + 128);
    t = jp_index_find(ix, "2");
    CHECK(t && t->dtype == JP_BOOL && t->data[0] == 1);
    t = jp_index_find(ix, "3");
    CHECK(t && t->dtype == JP_BF16 && t->shape[0] == 2 && t->shape[1] == 1);
    jp_index_close(ix);
    /* A single record is an ordinary .npy, not Equinox. */
    CHECK(!jp_index_open_memory(&ix, buf, 140, "one.npy", NULL, &err) ? jp_index_format(ix) != JP_FORMAT_EQX : 1);
    jp_index_close(ix);
}

static void test_read_fortran(void) {
    uint8_t buf[512];
    static const uint8_t one = 9;
    static const int16_t v[6] = {1, 2, 3, 4, 5, 6};
    size_t n = record(buf, "{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }", 0, &one, 1);
    n += record(buf + n, "{'descr': '<i2', 'fortran_order': True, 'shape': (2, 3), }", 0, v, 12);
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n, "f.eqx", NULL, &err), JP_OK);
    const jp_tensor *t = jp_index_find(ix, "1");
    CHECK(t && t->strides[0] == 1 && t->strides[1] == 2 && !(t->flags & JP_TENSOR_CONTIGUOUS));
    jp_index_close(ix);
}

static void test_eqx_malformed(void) {
    static const uint8_t one = 9;
    static const struct {
        const char *dict;
        size_t data;   /* data bytes present */
        size_t extra;  /* raw bytes after the second record instead */
        jp_code code;
        uint64_t offset;
    } cases[] = {
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 4, 0, JP_TRUNCATED, 140},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8, 0, JP_UNSUPPORTED, 140},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,),  ", 8, 0, JP_CORRUPT, 140},
        {NULL, 0, 7, JP_TRUNCATED, 72},
        {NULL, 0, 9, JP_CORRUPT, 72},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[512], zeros[16] = {0};
        size_t n = record(buf, "{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }", 3, &one, 1);
        if (cases[i].dict) n += record(buf + n, cases[i].dict, 0, zeros, cases[i].data);
        else memset(buf + n, 'x', cases[i].extra), n += cases[i].extra;
        jp_index *ix;
        jp_err err;
        jp_code rc = jp_index_open_memory(&ix, buf, n, "bad.eqx", NULL, &err);
        if (rc != cases[i].code || err.offset != cases[i].offset)
            fprintf(stderr, "case %zu: %s (%s)\n", i, jp_code_name(rc), err.msg);
        CHECK_EQ_U64(rc, cases[i].code);
        CHECK_EQ_U64(err.offset, cases[i].offset);
        CHECK_STR(err.member, "1");
    }
}

static void test_write(void) {
    const char *path = tmp_path("g.eqx");
    uint8_t want[1024], got[1024];
    size_t n = golden(want);
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, want, n, "g.eqx", NULL, &err), JP_OK);
    CHECK_EQ_U64(copy_index(ix, NULL, path, NULL, 1, &err), JP_OK);
    CHECK_EQ_U64(read_file(path, got, sizeof got), n);
    CHECK(memcmp(got, want, n) == 0);
    unlink(path);
    /* float8 would be written "|V1", which equinox cannot read back. */
    const jp_tensor *t = jp_index_at(ix, 0);
    jp_sink_tensor ts = {.name = t->name, .dtype = JP_F8_E5M2, .ndim = t->ndim, .nbytes = 3};
    memcpy(ts.shape, t->shape, sizeof ts.shape);
    jp_sink *s;
    CHECK_EQ_U64(jp_sink_open(&s, path, JP_FORMAT_EQX, &ts, 1, NULL, &err), JP_DTYPE);
    CHECK(access(path, F_OK) != 0);
    jp_index_close(ix);
}

int main(void) {
    if (!tmpdir_make("eqx")) return 2;
    test_header_parse();
    test_header_malformed();
    test_header_format();
    test_read_golden();
    test_read_fortran();
    test_eqx_malformed();
    test_write();
    tmpdir_remove();
    return check_done("eqx");
}
