/* Tests for the Flax msgpack reader and writer (src/formats/msgpack*.c).
 *
 * Golden bytes below are what flax.serialization.to_bytes (flax 0.12.8)
 * wrote; tests/python/test_msgpack.py compares with live flax as well.
 *
 * `test_msgpack copy IN OUT [CHUNK_BYTES]` copies every tensor of any file
 * jaxport reads into OUT (writer chosen by extension): the Python tests use
 * it to check the writers against flax and equinox. */
#include "testfiles.h"

/* flax.serialization.to_bytes({'Dense_0': {'kernel': arange(6, f32).reshape(2, 3),
 * 'bias': int8 [1, 2]}, 'e': zeros((0, 2), f16), 'h': bfloat16 [1.5, -2]}) */
static const uint8_t flax_params[] =
    "\x83\xa7\x44\x65\x6e\x73\x65\x5f\x30\x82\xa6\x6b\x65\x72\x6e\x65\x6c\xc7\x26\x01\x93\x92\x02"
    "\x03\xa7\x66\x6c\x6f\x61\x74\x33\x32\xc4\x18\x00\x00\x00\x00\x00\x00\x80\x3f\x00\x00\x00\x40"
    "\x00\x00\x40\x40\x00\x00\x80\x40\x00\x00\xa0\x40\xa4\x62\x69\x61\x73\xc7\x0c\x01\x93\x91\x02"
    "\xa4\x69\x6e\x74\x38\xc4\x02\x01\x02\xa1\x65\xc7\x0e\x01\x93\x92\x00\x02\xa7\x66\x6c\x6f\x61"
    "\x74\x31\x36\xc4\x00\xa1\x68\xc7\x12\x01\x93\x91\x02\xa8\x62\x66\x6c\x6f\x61\x74\x31\x36\xc4"
    "\x04\xc0\x3f\x00\xc0";

/* The same with MAX_CHUNK_SIZE = 8 of {'x': arange(5, uint16).reshape(5, 1),
 * 'y': array(True)}: x becomes chunks of 4 and 1 elements. */
static const uint8_t flax_chunked[] =
    "\x82\xa1\x78\x83\xb9\x5f\x5f\x6d\x73\x67\x70\x61\x63\x6b\x5f\x63\x68\x75\x6e\x6b\x65\x64\x5f"
    "\x61\x72\x72\x61\x79\x5f\x5f\xc3\xa5\x73\x68\x61\x70\x65\x82\xa1\x30\x05\xa1\x31\x01\xa6\x63"
    "\x68\x75\x6e\x6b\x73\x82\xa1\x30\xc7\x14\x01\x93\x91\x04\xa6\x75\x69\x6e\x74\x31\x36\xc4\x08"
    "\x00\x00\x01\x00\x02\x00\x03\x00\xa1\x31\xc7\x0e\x01\x93\x91\x01\xa6\x75\x69\x6e\x74\x31\x36"
    "\xc4\x02\x04\x00\xa1\x79\xc7\x0a\x01\x93\x90\xa4\x62\x6f\x6f\x6c\xc4\x01\x01";

/* ---------------------------------------------------------------- reading */

static void test_read_params(void) {
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, flax_params, sizeof flax_params - 1, "p", NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_MSGPACK);
    CHECK_EQ_U64(jp_index_count(ix), 4);
    const jp_tensor *k = jp_index_find(ix, "Dense_0/kernel");
    CHECK(k && k->dtype == JP_F32 && k->ndim == 2 && k->shape[0] == 2 && k->shape[1] == 3);
    CHECK(k && k->data == flax_params + 34 && k->file_offset == 34 && !(k->flags & JP_TENSOR_OWNED));
    const jp_tensor *b = jp_index_find(ix, "Dense_0/bias");
    CHECK(b && b->dtype == JP_I8 && b->data[0] == 1 && b->data[1] == 2);
    const jp_tensor *e = jp_index_find(ix, "e");
    CHECK(e && e->dtype == JP_F16 && e->numel == 0 && e->shape[0] == 0 && e->shape[1] == 2);
    const jp_tensor *h = jp_index_find(ix, "h");
    CHECK(h && h->dtype == JP_BF16 && h->nbytes == 4 && h->data[1] == 0x3f);
    CHECK_STR(jp_index_at(ix, 0)->name, "Dense_0/kernel"); /* file order kept */
    CHECK_EQ_U64(jp_index_meta_count(ix), 0);
    jp_index_close(ix);
}

static void test_read_chunked(void) {
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, flax_chunked, sizeof flax_chunked - 1, "c", NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_count(ix), 2);
    const jp_tensor *x = jp_index_find(ix, "x");
    CHECK(x && x->dtype == JP_U16 && x->ndim == 2 && x->shape[0] == 5 && x->shape[1] == 1);
    CHECK(x && (x->flags & JP_TENSOR_OWNED) && x->nbytes == 10);
    for (int i = 0; x && i < 5; i++) CHECK_EQ_U64(jp_load_le(x->data + 2 * i, 2), (uint64_t)i);
    const jp_tensor *y = jp_index_find(ix, "y");
    CHECK(y && y->dtype == JP_BOOL && y->ndim == 0 && y->numel == 1 && y->data[0] == 1);
    jp_index_close(ix);
}

static void put_f64(uint8_t *p, double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    p[0] = 0xcb;
    jp_store_be(p + 1, u, 8);
}

static void test_read_meta(void) {
    uint8_t buf[256];
    size_t n = 0;
#define ADD(lit) (memcpy(buf + n, lit, sizeof lit - 1), n += sizeof lit - 1)
    ADD("\x89");
    ADD("\xa1i\xd1\xfe\xd4");       /* -300 */
    ADD("\xa1n\xc0");
    ADD("\xa1t\xa4h'i\x00");
    ADD("\xa1u\xcf\xff\xff\xff\xff\xff\xff\xff\xff");
    ADD("\xa1""b\xc4\x02\x00\x80");
    ADD("\xa1""e\x80");
    ADD("\xa1l\x96"); /* a list of floats */
    static const double floats[] = {0.1, 1e16, 1e15, 1e-05, 0.0001, -0.0};
    for (size_t i = 0; i < 6; i++, n += 9) put_f64(buf + n, floats[i]);
    ADD("\xa1""c\xc7\x13\x02\x92");
    put_f64(buf + n, 1.0), n += 9;
    put_f64(buf + n, -2.5), n += 9;
    ADD("\xa1s\xd4\x02\x90"); /* a complex of no parts */
#undef ADD
    jp_index *ix;
    jp_err err;
    /* The last entry is malformed: the rest is checked on the good prefix. */
    buf[0] = 0x88;
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n - 5, "m", NULL, &err), JP_OK);
    static const char *const want[][2] = {
        {"i", "-300"},  {"n", "None"},   {"t", "'h\\'i\\x00'"},          {"u", "18446744073709551615"},
        {"b", "b'\\x00\\x80'"}, {"e", "{}"}, {"l/0", "0.1"},          {"l/1", "1e+16"},
        {"l/2", "1000000000000000.0"}, {"l/3", "1e-05"},  {"l/4", "0.0001"}, {"l/5", "-0.0"},
        {"c", "(1.0-2.5j)"},
    };
    CHECK_EQ_U64(jp_index_meta_count(ix), sizeof want / sizeof want[0]);
    for (size_t i = 0; i < jp_index_meta_count(ix) && i < sizeof want / sizeof want[0]; i++) {
        CHECK_STR(jp_index_meta_at(ix, i)->key, want[i][0]);
        CHECK_STR(jp_index_meta_at(ix, i)->value, want[i][1]);
    }
    jp_index_close(ix);
    buf[0] = 0x89;
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, n, "m", NULL, &err), JP_CORRUPT);
    CHECK_EQ_U64(err.offset, n - 1);
    CHECK_STR(err.member, "s");
}

/* ---------------------------------------------------------------- malformed */

#define INT8_ARRAY "\xc7\x0b\x01\x93\x91\x01\xa4int8\xc4\x01\x07"

static void test_malformed(void) {
    static const struct {
        const char *bytes;
        size_t len;
        jp_code code;
        uint64_t offset;
    } cases[] = {
#define CASE(lit, code, off) {lit, sizeof lit - 1, code, off}
        CASE("\x81", JP_TRUNCATED, 0),                          /* a map of one entry, no bytes */
        CASE("\xdf\xff\xff\xff\xff", JP_TRUNCATED, 0),          /* 4 G entries claimed */
        CASE("\x81\xa1" "a", JP_TRUNCATED, 3),                  /* no value */
        CASE("\x81\xa1" "a\xc1", JP_CORRUPT, 3),                /* the unused byte */
        CASE("\x81\xa1" "a\xcd\x01", JP_TRUNCATED, 3),          /* u16 cut short */
        CASE("\x81\xa1" "a\xc7\x05\x01\x00", JP_TRUNCATED, 3),  /* ext longer than the file */
        CASE("\x81\xa1" "a\xc0\x00", JP_CORRUPT, 4),            /* trailing byte */
        CASE("\x81\xc0\xc0", JP_UNSUPPORTED, 1),                /* nil key */
        CASE("\x81\xa1\xff\xc0", JP_CORRUPT, 1),                /* key not UTF-8 */
        CASE("\x81\xa1\x00\xc0", JP_CORRUPT, 1),                /* key with NUL */
        CASE("\x81\xa1" "a\xd4\x05\x00", JP_UNSUPPORTED, 3),    /* unknown ext type */
        CASE("\x81\xa1" "a\xd4\x02\xc0", JP_CORRUPT, 5),        /* complex not a pair */
        CASE("\x81\xa1" "a\xc7\x0b\x01\x93\x91\x02\xa4int8\xc4\x01\x00", JP_CORRUPT, 14), /* 1 byte, 2 needed */
        CASE("\x81\xa1" "a\xc7\x0b\x01\x93\x91\x01\xa4int9\xc4\x01\x00", JP_DTYPE, 9),
        CASE("\x81\xa1" "a\xc7\x0c\x01\x93\x91\x01\xa4int8\xc4\x01\x00", JP_TRUNCATED, 3),
        CASE("\x81\xa1" "a\xc7\x0c\x01\x93\x91\x01\xa4int8\xc4\x01\x00\xc0", JP_CORRUPT, 17), /* stray */
        CASE("\x81\xa1" "a\xc7\x0a\x01\x93\xc0\xa4int8\xc4\x01\x00", JP_CORRUPT, 7),     /* shape nil */
        CASE("\x81\xa1" "a\xc7\x0a\x01\x92\x90\xa4int8\xc4\x01\x00", JP_CORRUPT, 6),     /* a pair */
        CASE("\x81\xa1" "a\xc7\x0b\x01\x93\x91\xff\xa4int8\xc4\x01\x00", JP_CORRUPT, 8), /* dim -1 */
        CASE("\x81\xa1" "a\xc7\x1b\x01\x93\xdc\x00\x11\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"
             "\x01\x01\x01\x01\x01\x01\xa4int8\xc4\x01\x00", JP_LIMIT, 7),                /* 17 dims */
        CASE("\x82\xa1" "a" INT8_ARRAY "\xa1" "a" INT8_ARRAY, JP_CORRUPT, 32),            /* twice */
        CASE("\x81\xa1" "a\x82\xb9__msgpack_chunked_array__\xc3\xa5shape\x80", JP_CORRUPT, 3),
        CASE("\x81\xa1" "a\x83\xb9__msgpack_chunked_array__\xc3\xa5shape\x81\xa1" "0\x03"
             "\xa6" "chunks\x81\xa1" "0" INT8_ARRAY, JP_CORRUPT, 3),                       /* 1 of 3 */
        CASE("\x81\xa1" "a\x83\xb9__msgpack_chunked_array__\xc3\xa5shape\x81\xa1" "1\x01"
             "\xa6" "chunks\x81\xa1" "0" INT8_ARRAY, JP_UNSUPPORTED, 38),                  /* key "1" */
        CASE("\x81\xa1" "a\x82\xb9__msgpack_chunked_array__\xc2\xa5shape\x80", JP_CORRUPT, 30),
#undef CASE
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        jp_index *ix = NULL;
        jp_err err;
        jp_code rc = jp_index_open_memory(&ix, cases[i].bytes, cases[i].len, "bad.msgpack", NULL, &err);
        if (rc != cases[i].code || err.offset != cases[i].offset)
            fprintf(stderr, "case %zu: %s (%s)\n", i, jp_code_name(rc), err.msg);
        CHECK_EQ_U64(rc, cases[i].code);
        CHECK_EQ_U64(err.offset, cases[i].offset);
        CHECK(ix == NULL);
    }
    /* Nesting: 64 maps are read, 65 are not. */
    uint8_t deep[65 * 3 + 1];
    for (int d = 0; d < 65; d++) memcpy(deep + 3 * d, "\x81\xa1" "a", 3);
    deep[65 * 3] = 0xc0;
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, deep, sizeof deep, "deep", NULL, &err), JP_LIMIT);
    CHECK_EQ_U64(err.offset, 64 * 3);
    CHECK_EQ_U64(jp_index_open_memory(&ix, deep + 3, sizeof deep - 3, "deep", NULL, &err), JP_OK);
    jp_index_close(ix);
}

/* ---------------------------------------------------------------- writing */

static void test_write_golden(void) {
    uint8_t got[512];
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, flax_params, sizeof flax_params - 1, "p", NULL, &err), JP_OK);
    CHECK_EQ_U64(copy_index(ix, NULL, tmp_path("p.msgpack"), NULL, 5, &err), JP_OK);
    jp_index_close(ix);
    size_t n = read_file(tmp_path("p.msgpack"), got, sizeof got);
    CHECK_EQ_U64(n, sizeof flax_params - 1);
    CHECK(memcmp(got, flax_params, sizeof flax_params - 1) == 0);

    CHECK_EQ_U64(jp_index_open_memory(&ix, flax_chunked, sizeof flax_chunked - 1, "c", NULL, &err), JP_OK);
    jp_sink_opts opts = {.chunk_bytes = 8};
    for (size_t piece = 1; piece <= 11; piece += 2) {
        CHECK_EQ_U64(copy_index(ix, NULL, tmp_path("c.msgpack"), &opts, piece, &err), JP_OK);
        n = read_file(tmp_path("c.msgpack"), got, sizeof got);
        CHECK_EQ_U64(n, sizeof flax_chunked - 1);
        CHECK(memcmp(got, flax_chunked, sizeof flax_chunked - 1) == 0);
    }
    jp_index_close(ix);
}

static jp_code try_names(const char *const *names, size_t n, jp_dtype dtype, jp_err *err) {
    jp_sink_tensor ts[4] = {{0}};
    for (size_t i = 0; i < n; i++) {
        ts[i].name = names[i];
        ts[i].dtype = dtype;
        ts[i].ndim = 1;
        ts[i].shape[0] = 0;
    }
    jp_sink *s;
    jp_code rc = jp_sink_open(&s, tmp_path("bad.msgpack"), JP_FORMAT_UNKNOWN, ts, n, NULL, err);
    if (!rc) rc = jp_sink_commit(s, err);
    return rc;
}

static void test_write_refusals(void) {
    jp_err err;
    static const char *const apart[] = {"a/x", "b", "a/y"};
    static const char *const twice[] = {"a", "a"};
    static const char *const leaf_then_map[] = {"a", "a/b"};
    static const char *const map_then_leaf[] = {"a/b", "a"};
    static const char *const fine[] = {"a/b", "a/c/d", "e", ""};
    CHECK_EQ_U64(try_names(apart, 3, JP_F32, &err), JP_ARGUMENT);
    CHECK_STR(err.member, "a/y");
    CHECK_EQ_U64(try_names(twice, 2, JP_F32, &err), JP_ARGUMENT);
    CHECK_EQ_U64(try_names(leaf_then_map, 2, JP_F32, &err), JP_ARGUMENT);
    CHECK_EQ_U64(try_names(map_then_leaf, 2, JP_F32, &err), JP_ARGUMENT);
    CHECK_EQ_U64(try_names(fine, 1, JP_C32, &err), JP_DTYPE);
    CHECK(access(tmp_path("bad.msgpack"), F_OK) != 0); /* nothing left behind */
    CHECK_EQ_U64(try_names(fine, 4, JP_F32, &err), JP_OK);
    jp_index *ix;
    CHECK_EQ_U64(jp_index_open(&ix, tmp_path("bad.msgpack"), NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_count(ix), 4);
    CHECK(jp_index_find(ix, "a/c/d") && jp_index_find(ix, ""));
    jp_index_close(ix);
}

/* Many shapes through the writer with small chunks and back. */
static void test_round_trip(void) {
    enum { N = 6 };
    static const char *const names[N] = {"m/w", "m/sub/b", "m/sub/c", "s", "big", "z/e"};
    static const jp_dtype dts[N] = {JP_F64, JP_I16, JP_C64, JP_U8, JP_F32, JP_BOOL};
    static const int64_t shapes[N][2] = {{3, 5}, {7, 1}, {2, 2}, {1, 1}, {300, 3}, {0, 4}};
    uint8_t *data[N];
    jp_sink_tensor ts[N] = {{0}};
    for (int i = 0; i < N; i++) {
        ts[i].name = names[i];
        ts[i].dtype = dts[i];
        ts[i].ndim = 2;
        ts[i].shape[0] = shapes[i][0];
        ts[i].shape[1] = shapes[i][1];
        ts[i].nbytes = (uint64_t)(shapes[i][0] * shapes[i][1]) * jp_dtype_size(dts[i]);
        data[i] = malloc(ts[i].nbytes + 1);
        for (uint64_t b = 0; b < ts[i].nbytes; b++) data[i][b] = (uint8_t)(b * 7 + (uint64_t)i);
    }
    jp_sink_opts opts = {.chunk_bytes = 100};
    jp_sink *s;
    jp_err err;
    CHECK_EQ_U64(jp_sink_open(&s, tmp_path("rt.msgpack"), JP_FORMAT_UNKNOWN, ts, N, &opts, &err), JP_OK);
    for (int i = 0; i < N; i++)
        for (uint64_t o = 0; o < ts[i].nbytes; o += 33)
            CHECK_EQ_U64(jp_sink_write(s, (size_t)i, data[i] + o, ts[i].nbytes - o < 33 ? ts[i].nbytes - o : 33, &err), JP_OK);
    CHECK_EQ_U64(jp_sink_commit(s, &err), JP_OK);
    jp_index *ix;
    CHECK_EQ_U64(jp_index_open(&ix, tmp_path("rt.msgpack"), NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_count(ix), N);
    for (int i = 0; i < N; i++) {
        const jp_tensor *t = jp_index_find(ix, names[i]);
        CHECK(t && t->dtype == dts[i] && t->shape[0] == shapes[i][0] && t->nbytes == ts[i].nbytes);
        CHECK(t && (t->nbytes == 0 || memcmp(t->data, data[i], t->nbytes) == 0));
        CHECK(t && ((t->flags & JP_TENSOR_OWNED) != 0) == (ts[i].nbytes > 100));
        free(data[i]);
    }
    jp_index_close(ix);
}

/* ---------------------------------------------------------------- main */

static int copy(int argc, char **argv) {
    jp_index *ix;
    jp_err err;
    jp_sink_opts opts = {.chunk_bytes = argc > 4 ? strtoull(argv[4], NULL, 10) : 0};
    jp_code rc = jp_index_open(&ix, argv[2], NULL, &err);
    if (!rc) {
        rc = copy_index(ix, NULL, argv[3], &opts, 1u << 20, &err);
        jp_index_close(ix);
    }
    if (rc) fprintf(stderr, "copy: %s\n", err.msg);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "copy") == 0) return copy(argc, argv);
    if (!tmpdir_make("msgpack")) return 2;
    test_read_params();
    test_read_chunked();
    test_read_meta();
    test_malformed();
    test_write_golden();
    test_write_refusals();
    test_round_trip();
    tmpdir_remove();
    return check_done("msgpack");
}
