/* Tests for the safetensors reader and writer (src/formats/safetensors*.c).
 *
 * The golden files below are what the `safetensors` package wrote; they are
 * printed by tests/c/gen_safetensors_golden.py. tests/python/test_safetensors.py
 * compares with live safetensors and huggingface_hub as well.
 *
 * `test_safetensors copy IN OUT [SHARD_BYTES [KEY VALUE]...]` copies every
 * tensor of any file jaxport reads into OUT through the writer OUT's
 * extension picks, in the order the writer asks for them; metadata are the
 * KEY VALUE pairs, or else a safetensors input's own. */
#include "formats/safetensors.h"
#include "testfiles.h"

/* ---------------------------------------------------------------- helpers */

/* A file: the 8-byte length of `header`, the header, then `ndata` bytes
 * 0, 1, 2, ... Returns its length; the data begin at 8 + strlen(header). */
static size_t make(uint8_t *out, const char *header, size_t ndata) {
    size_t n = strlen(header);
    jp_store_le(out, n, 8);
    memcpy(out + 8, header, n);
    for (size_t i = 0; i < ndata; i++) out[8 + n + i] = (uint8_t)i;
    return 8 + n + ndata;
}

/* safetensors 0.8.0: 540 bytes, a header of 488 */
static const char golden_header[] =
    "{\"__metadata__\":{\"format\":\"pt\"},\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]},\"h\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[32,36]},\"e\xc3""\xa9""\\n\\\"\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[36,40]},\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[40,41]},\"b\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[41,43]},\"z\":{\"dtype\":\"U8\",\"shape\":[0,3],\"data_offsets\":[43,43]},\"u\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[43,44]}}      ";
static const uint8_t golden_data[] = {
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x3f,
    0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x40, 0x40, 0x00, 0x00, 0x80, 0x40, 0x00, 0x00, 0xa0, 0x40,
    0xc0, 0x3f, 0x00, 0xc0, 0x01, 0x00, 0x02, 0x00, 0x30, 0x01, 0xfe, 0x01,
};
/* safetensors 0.8.0: 152 bytes, a header of 112 */
static const char golden_bare_header[] =
    "{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]}}   ";
static const uint8_t golden_bare_data[] = {
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x3f,
    0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x40, 0x40, 0x00, 0x00, 0x80, 0x40, 0x00, 0x00, 0xa0, 0x40,
};

/* The golden file assembled: length, header, data. */
static size_t golden_file(uint8_t *out, const char *header, const uint8_t *data, size_t ndata) {
    size_t n = make(out, header, 0);
    memcpy(out + n, data, ndata);
    return n + ndata;
}

/* ---------------------------------------------------------------- reading */

static void test_read_golden(void) {
    uint8_t buf[1024];
    size_t len = golden_file(buf, golden_header, golden_data, sizeof golden_data);
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, len, "g", NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_SAFETENSORS);
    CHECK_EQ_U64(jp_index_count(ix), 8);
    CHECK_STR(jp_index_at(ix, 0)->name, "s"); /* header order */
    const uint64_t origin = 8 + sizeof golden_header - 1;
    const jp_tensor *w = jp_index_find(ix, "w");
    CHECK(w && w->dtype == JP_F32 && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3);
    CHECK(w && w->data == buf + origin + 8 && w->file_offset == origin + 8 && w->nbytes == 24);
    CHECK(w && (w->flags & JP_TENSOR_CONTIGUOUS) && !(w->flags & JP_TENSOR_OWNED));
    const jp_tensor *s = jp_index_find(ix, "s");
    CHECK(s && s->dtype == JP_I64 && s->ndim == 0 && s->numel == 1 && s->data[0] == 7);
    const jp_tensor *q = jp_index_find(ix, "q");
    CHECK(q && q->dtype == JP_F8_E4M3FN && q->data[0] == 0x30);
    const jp_tensor *z = jp_index_find(ix, "z");
    CHECK(z && z->dtype == JP_U8 && z->numel == 0 && z->shape[1] == 3 && z->data == NULL);
    CHECK(jp_index_find(ix, "e\xc3\xa9\n\"") != NULL);
    CHECK(jp_index_find(ix, "u") && jp_index_find(ix, "u")->dtype == JP_BOOL);
    CHECK_EQ_U64(jp_index_meta_count(ix), 1);
    CHECK_STR(jp_index_meta_at(ix, 0)->key, "format");
    CHECK_STR(jp_index_meta_at(ix, 0)->value, "pt");
    jp_index_close(ix);
}

/* Files the reference reads: jaxport reads them too. */
static void test_read_accepted(void) {
    static const struct {
        const char *header;
        size_t ndata, ntensors;
    } cases[] = {
        {"{}", 0, 0},
        {"{}      ", 0, 0},
        {"{\"__metadata__\":null}", 0, 0},
        {"{\"__metadata__\":{}}", 0, 0},
        /* a header of odd length: the data are not aligned */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 1},
        /* offsets in any header order; empty tensors share an offset */
        {"{\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]},"
         "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
         "\"c\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[2,2]}}", 2, 3},
        /* unknown fields are ignored, as serde does */
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":[1]}}", 1, 1},
        {"{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 1},
        /* F4: 8 elements in 4 bytes, read as 4 float4_e2m1fn_x2 pairs */
        {"{\"f\":{\"dtype\":\"F4\",\"shape\":[2,4],\"data_offsets\":[0,4]}}", 4, 1},
        {"{\"a\":{\"dtype\":\"F8_E8M0\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[512];
        size_t len = make(buf, cases[i].header, cases[i].ndata);
        jp_index *ix = NULL;
        jp_err err;
        jp_code rc = jp_index_open_memory(&ix, buf, len, "ok", NULL, &err);
        if (rc) fprintf(stderr, "accepted case %zu: %s (%s)\n", i, jp_code_name(rc), err.msg);
        CHECK_EQ_U64(rc, JP_OK);
        CHECK_EQ_U64(jp_index_count(ix), cases[i].ntensors);
        jp_index_close(ix);
    }
    uint8_t buf[512];
    size_t len = make(buf, cases[8].header, 4);
    jp_index *ix;
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, len, "f4", NULL, NULL), JP_OK);
    const jp_tensor *f = jp_index_find(ix, "f");
    CHECK(f && f->dtype == JP_F4_E2M1FN_X2 && f->ndim == 2 && f->shape[1] == 2 && f->nbytes == 4);
    jp_index_close(ix);
}

/* ---------------------------------------------------------------- malformed */

#define HDR 8         /* the header's offset */
#define DATA(x) (-1 - (x)) /* data offset x: 8 + N + x */
#define T(d, sh, b, e) "{\"dtype\":\"" d "\",\"shape\":" sh ",\"data_offsets\":[" #b "," #e "]}"

static void test_malformed(void) {
    static const struct {
        const char *header; /* NULL: `raw` is the whole file */
        size_t ndata;
        jp_code code;
        int64_t offset;     /* DATA(x) for offsets in the data */
        const char *member;
        const char *raw;
        size_t raw_len;
    } cases[] = {
#define RAW(lit, code, off) {NULL, 0, code, off, "", lit, sizeof lit - 1}
        RAW("\x10\0\0\0\0\0\0\0{}", JP_TRUNCATED, 0),                     /* length past the end */
        RAW("\x01\xe1\xf5\x05\0\0\0\0{}", JP_LIMIT, 0),                   /* 100,000,001 */
        RAW("\x00\xe1\xf5\x05\0\0\0\0{}", JP_TRUNCATED, 0),               /* 100,000,000: allowed */
        RAW("\x02\0\0\0\0\0\0\0[]", JP_FORMAT, 0),                        /* not an object: not ours */
        RAW("\x02\0\0\0\0\0\0\x01{}", JP_FORMAT, 0),                      /* a length of 2**56 */
        RAW("\x04\0\0\0\0\0\0\0{\"\xff\"", JP_CORRUPT, 10),               /* not UTF-8 */
        RAW("\x04\0\0\0\0\0\0\0{\"\xed\xa0\x80", JP_CORRUPT, 10),         /* a surrogate */
        RAW("\x03\0\0\0\0\0\0\0{}\0", JP_CORRUPT, 11),                   /* NUL padding */
#undef RAW
#define C(h, nd, code, off, mem) {h, nd, code, off, mem, NULL, 0}
        C("{\"a\":", 0, JP_CORRUPT, HDR + 5, ""),                         /* not JSON */
        C("{} x", 0, JP_CORRUPT, HDR + 4, ""),                            /* trailing garbage */
        C("{\"a\":1}", 0, JP_CORRUPT, HDR, "a"),                          /* entry not an object */
        C("{\"a\":" T("F33", "[1]", 0, 4) "}", 4, JP_DTYPE, HDR, "a"),
        C("{\"a\":" T("float32", "[1]", 0, 4) "}", 4, JP_DTYPE, HDR, "a"), /* a numpy name */
        C("{\"a\":" T("C128", "[1]", 0, 16) "}", 16, JP_DTYPE, HDR, "a"),  /* not a safetensors dtype */
        C("{\"a\":" T("F6_E2M3", "[4]", 0, 3) "}", 3, JP_DTYPE, HDR, "a"), /* one jaxport does not read */
        C("{\"a\":" T("F32", "[2]", 0, 4) "}", 4, JP_CORRUPT, DATA(0), "a"), /* shape x size != bytes */
        C("{\"a\":" T("U8", "[4]", 0, 4) ",\"b\":" T("U8", "[4]", 2, 6) "}", 6, JP_CORRUPT, DATA(2), "b"),
        C("{\"a\":" T("U8", "[4]", 0, 4) ",\"b\":" T("U8", "[4]", 5, 9) "}", 9, JP_CORRUPT, DATA(5), "b"),
        C("{\"a\":" T("U8", "[4]", 1, 5) "}", 5, JP_CORRUPT, DATA(1), "a"),   /* not from 0 */
        C("{\"a\":" T("U8", "[4]", 0, 4) "}", 5, JP_CORRUPT, DATA(4), ""),    /* trailing byte */
        C("{\"a\":" T("U8", "[8]", 0, 8) "}", 4, JP_TRUNCATED, DATA(0), "a"), /* beyond the file */
        C("{\"a\":" T("U8", "[4]", 0, 4) ",\"b\":" T("U8", "[4]", 4, 8) "}", 7, JP_TRUNCATED, DATA(4), "b"),
        C("{\"a\":" T("U8", "[0]", 4, 0) "}", 0, JP_CORRUPT, DATA(4), "a"),   /* ends before it begins */
        C("{\"a\":" T("U8", "[4]", 0, 4) ",\"a\":" T("U8", "[4]", 4, 8) "}", 8, JP_CORRUPT, HDR + 56, ""),
        C("{\"__metadata__\":{\"k\":1}}", 0, JP_CORRUPT, HDR, "__metadata__"),
        C("{\"__metadata__\":[\"k\"]}", 0, JP_CORRUPT, HDR, "__metadata__"),
        C("{\"__metadata__\":{},\"__metadata__\":{}}", 0, JP_CORRUPT, HDR + 33, ""),
        C("{\"a\":" T("U8", "[-1]", 0, 0) "}", 0, JP_CORRUPT, HDR, "a"),     /* negative dim */
        C("{\"a\":" T("U8", "[2.0]", 0, 2) "}", 2, JP_CORRUPT, HDR, "a"),    /* not an integer */
        C("{\"a\":" T("U8", "[1]", -1, 0) "}", 0, JP_CORRUPT, HDR, "a"),
        C("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1, JP_CORRUPT, HDR, "a"),
        C("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, JP_CORRUPT, HDR, "a"),
        C("{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, JP_CORRUPT, HDR, "a"),
        C("{\"a\":" T("U8", "[18446744073709551616]", 0, 0) "}", 0, JP_CORRUPT, HDR + 48, ""),
        C("{\"a\":" T("U8", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]", 0, 1) "}", 1, JP_LIMIT, HDR, "a"),
        C("{\"a\":" T("F32", "[4294967296,4294967296,4294967296]", 0, 0) "}", 0, JP_LIMIT, DATA(0), "a"),
        C("{\"a\":" T("F4", "[3]", 0, 2) "}", 2, JP_CORRUPT, DATA(0), "a"),  /* 12 bits */
        C("{\"a\":" T("F4", "[2,3]", 0, 3) "}", 3, JP_DTYPE, DATA(0), "a"),  /* no pair view */
        C("{\"a\\u0000\":" T("U8", "[1]", 0, 1) "}", 1, JP_CORRUPT, HDR + 10, ""),
#undef C
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[512];
        size_t len, n = 0;
        if (cases[i].header) {
            len = make(buf, cases[i].header, cases[i].ndata);
            n = strlen(cases[i].header);
        } else {
            memcpy(buf, cases[i].raw, cases[i].raw_len);
            len = cases[i].raw_len;
        }
        uint64_t want = cases[i].offset < 0 ? 8 + n + (uint64_t)(-1 - cases[i].offset) : (uint64_t)cases[i].offset;
        jp_index *ix = NULL;
        jp_err err;
        jp_code rc = jp_index_open_memory(&ix, buf, len, "bad.safetensors", NULL, &err);
        if (rc != cases[i].code || err.offset != want || strcmp(err.member, cases[i].member) != 0)
            fprintf(stderr, "case %zu: %s @%llu [%s] (%s)\n", i, jp_code_name(rc),
                    (unsigned long long)err.offset, err.member, err.msg);
        CHECK_EQ_U64(rc, cases[i].code);
        CHECK_EQ_U64(err.offset, want);
        CHECK_STR(err.member, cases[i].member);
        CHECK(ix == NULL);
    }
}

/* A safetensors length whose first byte reads as a msgpack map stays
 * safetensors when the length fits the file, and msgpack when it does not. */
static void test_detection(void) {
    uint8_t buf[256];
    char header[0x89 + 1];
    memset(header, ' ', 0x88);
    memcpy(header, "{}", 2);
    header[0x88] = '\0';
    size_t len = make(buf, header, 0); /* length 0x88: a fixmap of 8 */
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, buf, len, "st", NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_SAFETENSORS);
    jp_index_close(ix);
    /* {"a": [0, 0, 0, 0, 123]}: byte 8 is '{' and the top bytes are zero */
    static const uint8_t mp[] = {0x81, 0xa1, 'a', 0x95, 0, 0, 0, 0, 0x7b};
    CHECK_EQ_U64(jp_index_open_memory(&ix, mp, sizeof mp, "mp", NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_MSGPACK);
    jp_index_close(ix);
}

/* ---------------------------------------------------------------- writing */

static size_t find_at(const jp_index *ix, const char *name) {
    for (size_t i = 0; i < jp_index_count(ix); i++)
        if (strcmp(jp_index_at(ix, i)->name, name) == 0) return i;
    return 0;
}

/* Read a golden file, give its tensors to the writer in `names` order, and
 * compare what it writes with the golden bytes. */
static void golden_round(const char *header, const uint8_t *data, size_t ndata, const char *const *names,
                         size_t n, const jp_meta *meta, size_t nmeta) {
    uint8_t src[1024], got[1024];
    size_t len = golden_file(src, header, data, ndata);
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open_memory(&ix, src, len, "g", NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_count(ix), n);
    size_t given[16];
    for (size_t i = 0; i < n; i++) given[i] = find_at(ix, names[i]);
    jp_sink_opts opts = {.meta = meta, .nmeta = nmeta};
    for (size_t piece = 1; piece < 64; piece *= 3) {
        CHECK_EQ_U64(copy_index(ix, given, tmp_path("g.safetensors"), &opts, piece, &err), JP_OK);
        size_t got_len = read_file(tmp_path("g.safetensors"), got, sizeof got);
        CHECK_EQ_U64(got_len, len);
        CHECK(memcmp(got, src, len) == 0);
    }
    jp_index_close(ix);
    unlink(tmp_path("g.safetensors"));
}

static void test_write_golden(void) {
    static const char *const names[] = {"w", "b", "h", "z", "s", "q", "u", "e\xc3\xa9\n\""};
    static const jp_meta meta[] = {{"format", "pt"}};
    golden_round(golden_header, golden_data, sizeof golden_data, names, 8, meta, 1);
    static const char *const bare[] = {"w", "s"};
    golden_round(golden_bare_header, golden_bare_data, sizeof golden_bare_data, bare, 2, NULL, 0);
    /* No tensors: "{}" padded to 8. */
    jp_sink *s;
    jp_err err;
    CHECK_EQ_U64(jp_sink_open(&s, tmp_path("e.safetensors"), JP_FORMAT_UNKNOWN, NULL, 0, NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_sink_commit(s, &err), JP_OK);
    uint8_t got[64];
    CHECK_EQ_U64(read_file(tmp_path("e.safetensors"), got, sizeof got), 16);
    CHECK(memcmp(got, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
    unlink(tmp_path("e.safetensors"));
}

static jp_code try_write(const jp_sink_tensor *ts, size_t n, const jp_sink_opts *opts, jp_err *err) {
    jp_sink *s;
    jp_code rc = jp_sink_open(&s, tmp_path("bad.safetensors"), JP_FORMAT_UNKNOWN, ts, n, opts, err);
    if (!rc) rc = jp_sink_commit(s, err);
    return rc;
}

static void test_write_refusals(void) {
    jp_err err;
    jp_sink_tensor ts[2] = {{.name = "a", .dtype = JP_F32, .ndim = 1}, {.name = "a", .dtype = JP_U8, .ndim = 1}};
    CHECK_EQ_U64(try_write(ts, 2, NULL, &err), JP_ARGUMENT); /* a name twice */
    CHECK_STR(err.member, "a");
    ts[0].name = "__metadata__";
    CHECK_EQ_U64(try_write(ts, 1, NULL, &err), JP_ARGUMENT);
    ts[0].name = "\xff";
    CHECK_EQ_U64(try_write(ts, 1, NULL, &err), JP_ARGUMENT);
    ts[0].name = "c";
    ts[0].dtype = JP_C128;
    CHECK_EQ_U64(try_write(ts, 1, NULL, &err), JP_DTYPE);
    ts[0].dtype = JP_F4_E2M1FN_X2;
    ts[0].ndim = 0;
    ts[0].nbytes = 1;
    CHECK_EQ_U64(try_write(ts, 1, NULL, &err), JP_DTYPE);
    jp_meta twice[] = {{"k", "1"}, {"k", "2"}};
    jp_sink_opts opts = {.meta = twice, .nmeta = 2};
    ts[0].dtype = JP_U8;
    CHECK_EQ_U64(try_write(ts, 1, &opts, &err), JP_ARGUMENT);
    CHECK_EQ_U64(count_files(), 0); /* nothing left behind */
}

/* F4 pairs: written as "F4" with the last dimension doubled, read back. */
static void test_write_f4(void) {
    jp_sink_tensor t = {.name = "f", .dtype = JP_F4_E2M1FN_X2, .ndim = 2, .shape = {3, 2}, .nbytes = 6};
    jp_sink *s;
    jp_err err;
    CHECK_EQ_U64(jp_sink_open(&s, tmp_path("f.safetensors"), JP_FORMAT_UNKNOWN, &t, 1, NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_sink_write(s, 0, "\x01\x02\x03\x04\x05\x06", 6, &err), JP_OK);
    CHECK_EQ_U64(jp_sink_commit(s, &err), JP_OK);
    uint8_t got[128];
    size_t n = read_file(tmp_path("f.safetensors"), got, sizeof got);
    static const char want[] = "{\"f\":{\"dtype\":\"F4\",\"shape\":[3,4],\"data_offsets\":[0,6]}} ";
    CHECK_EQ_U64(n, 8 + sizeof want - 1 + 6);
    CHECK(memcmp(got + 8, want, sizeof want - 1) == 0);
    jp_index *ix;
    CHECK_EQ_U64(jp_index_open(&ix, tmp_path("f.safetensors"), NULL, &err), JP_OK);
    const jp_tensor *f = jp_index_find(ix, "f");
    CHECK(f && f->dtype == JP_F4_E2M1FN_X2 && f->shape[0] == 3 && f->shape[1] == 2 && f->data[5] == 6);
    jp_index_close(ix);
    unlink(tmp_path("f.safetensors"));
}

/* ---------------------------------------------------------------- shards */

/* Tensors a..d of 2, 6, 2 and 4 bytes, each byte its tensor's letter. */
static const jp_sink_tensor shard_ts[4] = {
    {.name = "a", .dtype = JP_U8, .ndim = 1, .shape = {2}, .nbytes = 2},
    {.name = "b", .dtype = JP_U8, .ndim = 1, .shape = {6}, .nbytes = 6},
    {.name = "c", .dtype = JP_U8, .ndim = 1, .shape = {2}, .nbytes = 2},
    {.name = "d", .dtype = JP_F32, .ndim = 1, .shape = {1}, .nbytes = 4},
};

/* Write shard_ts with `limit`, stopping (and aborting) after `stop` tensors. */
static jp_code write_shards(uint64_t limit, size_t stop, jp_err *err) {
    static const jp_meta meta[] = {{"format", "pt"}};
    jp_sink_opts opts = {.meta = meta, .nmeta = 1, .shard_bytes = limit};
    jp_sink *s;
    jp_code rc = jp_sink_open(&s, tmp_path("m.safetensors"), JP_FORMAT_UNKNOWN, shard_ts, 4, &opts, err);
    for (size_t k = 0, i; !rc && (i = jp_sink_expected(s)) < 4; k++) {
        if (k == stop) {
            jp_sink_abort(s);
            return JP_INTERRUPTED;
        }
        uint8_t buf[8];
        memset(buf, 'a' + (int)i, sizeof buf);
        rc = jp_sink_write(s, i, buf, (size_t)shard_ts[i].nbytes, err);
    }
    if (rc) {
        jp_sink_abort(s);
        return rc;
    }
    return jp_sink_commit(s, err);
}

static void test_shards(void) {
    jp_err err;
    /* b (6 > 5) gets a shard at once; a and c fill the next; d overflows it. */
    CHECK_EQ_U64(write_shards(5, 99, &err), JP_OK);
    CHECK_EQ_U64(count_files(), 4);
    static const char want_index[] =
        "{\n  \"metadata\": {\n    \"total_size\": 14\n  },\n  \"weight_map\": {\n"
        "    \"b\": \"m-00001-of-00003.safetensors\",\n"
        "    \"a\": \"m-00002-of-00003.safetensors\",\n"
        "    \"c\": \"m-00002-of-00003.safetensors\",\n"
        "    \"d\": \"m-00003-of-00003.safetensors\"\n  }\n}";
    uint8_t got[512];
    size_t n = read_file(tmp_path("m.safetensors.index.json"), got, sizeof got);
    CHECK_EQ_U64(n, sizeof want_index - 1);
    CHECK(memcmp(got, want_index, sizeof want_index - 1) == 0);
    static const char want_shard2[] =
        "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
        "\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}aacc";
    n = read_file(tmp_path("m-00002-of-00003.safetensors"), got, sizeof got);
    CHECK_EQ_U64(n, 8 + sizeof want_shard2 - 1);
    CHECK(memcmp(got + 8, want_shard2, sizeof want_shard2 - 1) == 0);
    jp_index *ix;
    CHECK_EQ_U64(jp_index_open(&ix, tmp_path("m.safetensors.index.json"), NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_SHARDED);
    CHECK_EQ_U64(jp_index_count(ix), 4);
    for (size_t i = 0; i < 4; i++) {
        const jp_tensor *t = jp_index_find(ix, shard_ts[i].name);
        CHECK(t && t->nbytes == shard_ts[i].nbytes && t->data[0] == 'a' + i && t->data[t->nbytes - 1] == 'a' + i);
    }
    jp_index_close(ix);
    clear_dir();
    /* Stopped after the first shard is complete: nothing appears. */
    CHECK_EQ_U64(write_shards(5, 2, &err), JP_INTERRUPTED);
    CHECK_EQ_U64(count_files(), 0);
    /* Everything fits: one plain file, no index. */
    CHECK_EQ_U64(write_shards(14, 99, &err), JP_OK);
    CHECK_EQ_U64(count_files(), 1);
    CHECK(access(tmp_path("m.safetensors"), F_OK) == 0);
    clear_dir();
    /* One tensor per shard. */
    CHECK_EQ_U64(write_shards(1, 99, &err), JP_OK);
    CHECK_EQ_U64(count_files(), 5);
    CHECK(access(tmp_path("m-00004-of-00004.safetensors"), F_OK) == 0);
    clear_dir();
}

/* ---------------------------------------------------------------- main */

static int copy(int argc, char **argv) {
    jp_index *ix;
    jp_err err;
    jp_sink_opts opts = {.shard_bytes = argc > 4 ? strtoull(argv[4], NULL, 10) : 0};
    jp_meta meta[16];
    jp_code rc = jp_index_open(&ix, argv[2], NULL, &err);
    if (!rc) {
        if (argc > 5) {
            for (int a = 5; a + 1 < argc && opts.nmeta < 16; a += 2)
                meta[opts.nmeta++] = (jp_meta){argv[a], argv[a + 1]};
            opts.meta = meta;
        } else if (jp_index_format(ix) == JP_FORMAT_SAFETENSORS) {
            opts.nmeta = jp_index_meta_count(ix);
            opts.meta = opts.nmeta ? jp_index_meta_at(ix, 0) : NULL;
        }
        rc = copy_index(ix, NULL, argv[3], &opts, 1u << 20, &err);
        jp_index_close(ix);
    }
    if (rc) fprintf(stderr, "copy: %s\n", err.msg);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "copy") == 0) return copy(argc, argv);
    if (!tmpdir_make("safetensors")) return 2;
    test_read_golden();
    test_read_accepted();
    test_malformed();
    test_detection();
    test_write_golden();
    test_write_refusals();
    test_write_f4();
    test_shards();
    tmpdir_remove();
    return check_done("safetensors");
}
