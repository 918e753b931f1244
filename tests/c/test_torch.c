/* Tests for src/formats/torch.c: checkpoints assembled here opcode by
 * opcode (pickle protocol 2, as torch.save writes) inside zip archives or in
 * the legacy layout, each broken in one way; every failure must carry the
 * expected code and the file offset of the culprit. Real torch files are
 * covered by tests/python/test_torch_reader.py. */
#include "check.h"
#include "formats/index_impl.h"
#include "zipbuild.h"

/* ------------------------------------------------------------ a pickle assembler */

typedef struct pk {
    uint8_t b[4096];
    size_t n;
} pk;

static size_t op(pk *p, uint8_t code) {
    p->b[p->n] = code;
    return p->n++;
}

static size_t pk_bytes(pk *p, const void *s, size_t n) {
    size_t at = p->n;
    memcpy(p->b + p->n, s, n);
    p->n += n;
    return at;
}

static size_t pk_str(pk *p, const char *s) {
    size_t at = op(p, 'X');
    jp_store_le(p->b + p->n, strlen(s), 4);
    p->n += 4;
    pk_bytes(p, s, strlen(s));
    return at;
}

static size_t pk_global(pk *p, const char *module, const char *name) {
    size_t at = op(p, 'c');
    pk_bytes(p, module, strlen(module));
    op(p, '\n');
    pk_bytes(p, name, strlen(name));
    op(p, '\n');
    return at;
}

static size_t pk_int(pk *p, int32_t v) {
    size_t at = op(p, 'J');
    jp_store_le(p->b + p->n, (uint32_t)v, 4);
    p->n += 4;
    return at;
}

static size_t pk_ints(pk *p, const int32_t *v, int n) {
    op(p, '(');
    for (int i = 0; i < n; i++) pk_int(p, v[i]);
    return op(p, 't');
}

/* ------------------------------------------------------------ one checkpoint */

/* A state dict {"w": tensor} whose pieces each case may change. */
typedef struct spec {
    const char *rebuild;  /* torch._utils function */
    const char *dtype;    /* _rebuild_tensor_v3's dtype argument, or NULL */
    const char *stype;    /* storage type in torch */
    const char *key;      /* storage key the tensor names */
    int32_t numel;        /* elements the persistent id declares */
    int32_t offset;       /* storage offset */
    int ndim, nstride;
    int32_t shape[20], stride[20];
    bool legacy;
    bool hostile;         /* adds "x": posix.system('true') */
    bool cycle;           /* adds "c": a list that contains itself */
    bool values;          /* adds plain values of every kind */
    bool wrap_parameter;  /* _rebuild_parameter(tensor, False, OrderedDict()) */
    const char *byteorder;
    const char *first;    /* name of the first member; NULL: arch/data.pkl */
    bool deflate_storage;
    int32_t stored_numel; /* legacy: the count before the raw bytes */
    size_t storage_len;   /* bytes of storage data in the file */
    int32_t protocol;     /* legacy protocol version */
} spec;

static spec base_spec(void) {
    spec s = {"_rebuild_tensor_v2", NULL, "FloatStorage", "0", 6, 0, 2, 2, {2, 3}, {3, 1},
              .stored_numel = 6, .storage_len = 24, .protocol = 1001};
    return s;
}

/* Where things went: pickle offsets and archive layout. */
typedef struct where {
    size_t pid, off, shape, stride, hostile, cycle_list, keys;
    size_t pkl_origin;  /* file offset of the pickle's first byte */
    size_t storage_header, storage_data, byteorder_data, legacy_storage;
    size_t len;
} where;

static const uint8_t storage_bytes[32] = {0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64,
                                          0, 0, 160, 64, 0, 0, 192, 64, 1, 2, 3, 4, 5, 6, 7, 8};

static void emit_tensor(pk *p, const spec *s, where *w) {
    if (s->wrap_parameter) pk_global(p, "torch._utils", "_rebuild_parameter");
    if (s->wrap_parameter) op(p, '(');
    pk_global(p, "torch._utils", s->rebuild);
    op(p, '(');
    op(p, '(');
    pk_str(p, "storage");
    pk_global(p, "torch", s->stype);
    pk_str(p, s->key);
    pk_str(p, "cpu");
    pk_int(p, s->numel);
    if (s->legacy) op(p, 'N');
    op(p, 't');
    w->pid = op(p, 'Q');
    w->off = pk_int(p, s->offset);
    w->shape = pk_ints(p, s->shape, s->ndim);
    w->stride = pk_ints(p, s->stride, s->nstride);
    op(p, 0x89);
    pk_global(p, "collections", "OrderedDict");
    op(p, ')');
    op(p, 'R');
    if (s->dtype) pk_global(p, "torch", s->dtype);
    op(p, 't');
    op(p, 'R');
    if (s->wrap_parameter) {
        op(p, 0x89);
        pk_global(p, "collections", "OrderedDict");
        op(p, ')');
        op(p, 'R');
        op(p, 't');
        op(p, 'R');
    }
}

/* Plain values whose reprs become meta entries. */
static void emit_values(pk *p) {
    static const uint8_t big[] = {0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x40};  /* 2**70 */
    static const uint8_t neg[] = {0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0};  /* -2**70 */
    static const uint8_t tenth[] = {'G', 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a};
    pk_str(p, "big");
    pk_bytes(p, big, sizeof big);
    pk_str(p, "neg");
    pk_bytes(p, neg, sizeof neg);
    pk_str(p, "f");
    pk_bytes(p, tenth, sizeof tenth);
    pk_str(p, "s");
    pk_str(p, "it's\n");
    pk_str(p, "t");
    op(p, '(');
    pk_int(p, 1);
    op(p, 'N');
    op(p, 0x88);
    op(p, 't');
    pk_str(p, "one");
    pk_int(p, 5);
    op(p, 0x85);
    pk_str(p, "dev");
    pk_global(p, "torch", "device");
    pk_str(p, "cpu");
    op(p, 0x85);
    op(p, 'R');
}

static void emit_object(pk *p, const spec *s, where *w) {
    op(p, 0x80);
    op(p, 2);
    op(p, '}');
    op(p, '(');
    pk_str(p, "w");
    emit_tensor(p, s, w);
    if (s->hostile) {
        pk_str(p, "x");
        w->hostile = pk_global(p, "posix", "system");
        pk_str(p, "true");
        op(p, 0x85);
        op(p, 'R');
    }
    if (s->values) emit_values(p);
    if (s->cycle) {
        pk_str(p, "c");
        w->cycle_list = op(p, ']');
        op(p, 'q');
        op(p, 200);
        op(p, 'h');
        op(p, 200);
        op(p, 'a');
    }
    op(p, 'u');
    op(p, '.');
}

static size_t build_zip(uint8_t *buf, const spec *s, where *w) {
    pk p = {.n = 0};
    emit_object(&p, s, w);
    member m[3];
    size_t n = 0;
    m[n++] = (member){s->first ? s->first : "arch/data.pkl", p.b, p.n, false};
    if (s->byteorder) m[n++] = (member){"arch/byteorder", s->byteorder, strlen(s->byteorder), false};
    m[n++] = (member){"arch/data/0", storage_bytes, s->storage_len, s->deflate_storage};
    layout L;
    size_t len = build(buf, m, n, (opts){.descriptor = true}, &L);
    w->pkl_origin = L.data[0];
    w->byteorder_data = s->byteorder ? L.data[1] : 0;
    w->storage_header = L.local[n - 1];
    w->storage_data = L.data[n - 1];
    return len;
}

static void put_pickle(uint8_t *buf, size_t *at, const pk *p) {
    memcpy(buf + *at, p->b, p->n);
    *at += p->n;
}

static size_t build_legacy(uint8_t *buf, const spec *s, where *w) {
    static const uint8_t magic[] = {0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                    0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};
    size_t at = 0;
    memcpy(buf, magic, sizeof magic);
    at = sizeof magic;
    pk p = {.n = 0};
    op(&p, 0x80);
    op(&p, 2);
    pk_int(&p, s->protocol);
    op(&p, '.');
    put_pickle(buf, &at, &p);
    p.n = 0;
    op(&p, 0x80);
    op(&p, 2);
    op(&p, '}');
    op(&p, '.');
    put_pickle(buf, &at, &p);
    p.n = 0;
    w->pkl_origin = at;
    emit_object(&p, s, w);
    put_pickle(buf, &at, &p);
    p.n = 0;
    op(&p, 0x80);
    op(&p, 2);
    op(&p, ']');
    op(&p, '(');
    w->keys = at + pk_str(&p, "0");
    op(&p, 'e');
    op(&p, '.');
    put_pickle(buf, &at, &p);
    w->legacy_storage = at;
    jp_store_le(buf + at, (uint32_t)s->stored_numel, 8);
    at += 8;
    memcpy(buf + at, storage_bytes, s->storage_len);
    return at + s->storage_len;
}

static jp_code open_spec(const spec *s, uint32_t flags, uint8_t *buf, where *w, jp_index **ix,
                         jp_err *err) {
    memset(w, 0, sizeof *w);
    w->len = s->legacy ? build_legacy(buf, s, w) : build_zip(buf, s, w);
    jp_open_opts o = {flags};
    return jp_index_open_memory(ix, buf, w->len, "t.pt", &o, err);
}

/* ------------------------------------------------------------ tests */

static void test_reads(void) {
    uint8_t buf[8192];
    where w;
    jp_index *ix;
    jp_err err;
    for (int legacy = 0; legacy < 2; legacy++) {
        spec s = base_spec();
        s.legacy = legacy;
        s.offset = 1;
        s.shape[0] = 2, s.shape[1] = 2, s.stride[0] = 1, s.stride[1] = 2; /* transposed */
        CHECK_EQ_U64(open_spec(&s, 0, buf, &w, &ix, &err), JP_OK);
        if (!ix) {
            fprintf(stderr, "  %s\n", err.msg);
            continue;
        }
        CHECK_EQ_U64(jp_index_format(ix), legacy ? JP_FORMAT_TORCH_LEGACY : JP_FORMAT_TORCH_ZIP);
        const jp_tensor *t = jp_index_find(ix, "w");
        CHECK(t && t->dtype == JP_F32 && t->ndim == 2 && t->numel == 4 && t->strides[1] == 2);
        size_t data = legacy ? w.legacy_storage + 8 : w.storage_data;
        CHECK(t && t->data == buf + data + 4 && t->file_offset == data + 4);
        CHECK(t && !(t->flags & (JP_TENSOR_OWNED | JP_TENSOR_CONTIGUOUS)));
        CHECK_EQ_U64(jp_index_finding_count(ix), 0);
        jp_index_close(ix);
    }
    /* Big-endian archives are swapped into a copy; so are inflated storages. */
    spec s = base_spec();
    s.byteorder = "big";
    s.wrap_parameter = true;
    CHECK_EQ_U64(open_spec(&s, 0, buf, &w, &ix, &err), JP_OK);
    const jp_tensor *t = ix ? jp_index_at(ix, 0) : NULL;
    CHECK(t && (t->flags & JP_TENSOR_OWNED) && t->data[0] == 63 && t->data[3] == 0 &&
          t->file_offset == JP_NO_OFFSET);
    jp_index_close(ix);
    s = base_spec();
    s.deflate_storage = true;
    s.byteorder = "little";
    CHECK_EQ_U64(open_spec(&s, 0, buf, &w, &ix, &err), JP_OK);
    t = ix ? jp_index_at(ix, 0) : NULL;
    CHECK(t && (t->flags & JP_TENSOR_OWNED) && memcmp(t->data, storage_bytes, 24) == 0);
    jp_index_close(ix);
    /* Untyped storages take the dtype argument of _rebuild_tensor_v3. */
    s = base_spec();
    s.rebuild = "_rebuild_tensor_v3";
    s.stype = "UntypedStorage";
    s.numel = 24;
    s.dtype = "float16";
    s.offset = 2;
    CHECK_EQ_U64(open_spec(&s, 0, buf, &w, &ix, &err), JP_OK);
    t = ix ? jp_index_at(ix, 0) : NULL;
    CHECK(t && t->dtype == JP_F16 && t->nbytes == 12 && t->data == buf + w.storage_data + 4);
    jp_index_close(ix);
    /* A hostile file opens with the flag, still reports what it would run. */
    s = base_spec();
    s.hostile = true;
    CHECK_EQ_U64(open_spec(&s, JP_OPEN_ALLOW_UNSAFE, buf, &w, &ix, &err), JP_OK);
    const jp_finding *f = ix ? jp_index_finding_at(ix, 0) : NULL;
    CHECK(f && f->kind == JP_FIND_DENIED && strcmp(f->global, "posix.system") == 0 &&
          f->offset == w.hostile && strcmp(f->member, "arch/data.pkl") == 0);
    CHECK(ix && jp_index_find(ix, "w") != NULL);
    jp_index_close(ix);
}

static void test_values(void) {
    static const char *const want[][2] = {
        {"big", "1180591620717411303424"}, {"neg", "-1180591620717411303424"}, {"f", "0.1"},
        {"s", "'it\\'s\\n'"}, {"t", "(1, None, True)"}, {"one", "(5,)"},
        {"dev", "torch.device('cpu')"},
    };
    spec s = base_spec();
    s.values = true;
    uint8_t buf[8192];
    where w;
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(open_spec(&s, 0, buf, &w, &ix, &err), JP_OK);
    CHECK_EQ_U64(jp_index_meta_count(ix), 7);
    for (size_t i = 0; i < 7 && i < jp_index_meta_count(ix); i++) {
        CHECK_STR(jp_index_meta_at(ix, i)->key, want[i][0]);
        CHECK_STR(jp_index_meta_at(ix, i)->value, want[i][1]);
    }
    jp_index_close(ix);
}

typedef enum anchor { AT_ZERO, AT_PID, AT_OFF, AT_SHAPE, AT_STRIDE, AT_HOSTILE, AT_CYCLE, AT_STORAGE_HEADER,
                      AT_STORAGE_DATA, AT_BYTEORDER, AT_KEYS, AT_LEGACY_STORAGE,
                      AT_LEGACY_DATA, AT_PROTOCOL, AT_NONE } anchor;

typedef struct bad_case {
    const char *what;
    void (*change)(spec *);
    jp_code code;
    anchor at;
} bad_case;

static void missing_storage(spec *s) { s->key = "9"; }
static void storage_too_small(spec *s) { s->storage_len = 20; }
static void pid_numel_wrong(spec *s) { s->numel = 7; }
static void extent_past_storage(spec *s) { s->shape[0] = 3; }
static void offset_past_storage(spec *s) { s->offset = 1; }
static void quantized(spec *s) { s->stype = "QInt8Storage"; }
static void unknown_storage(spec *s) { s->stype = "Storage"; }
static void stride_count(spec *s) { s->nstride = 1; }
static void negative_offset(spec *s) { s->offset = -1; }
static void too_many_dims(spec *s) {
    s->ndim = s->nstride = 17;
    for (int i = 0; i < 17; i++) s->shape[i] = 1, s->stride[i] = 1;
}
static void negative_size(spec *s) { s->shape[1] = -3; }
static void qtensor(spec *s) { s->rebuild = "_rebuild_qtensor"; }
static void v3_without_dtype(spec *s) { s->rebuild = "_rebuild_tensor_v3"; }
static void v3_unknown_dtype(spec *s) { s->rebuild = "_rebuild_tensor_v3", s->dtype = "bits8"; }
static void bad_byteorder(spec *s) { s->byteorder = "middle"; }
static void not_in_folder(spec *s) { s->first = "data.pkl"; }
static void no_data_pkl(spec *s) { s->first = "arch/other.pkl"; }
static void hostile(spec *s) { s->hostile = true; }
static void cycle(spec *s) { s->cycle = true; }
static void legacy_ok(spec *s) { s->legacy = true; }
static void legacy_count(spec *s) { s->legacy = true, s->stored_numel = 5; }
static void legacy_short(spec *s) { s->legacy = true, s->storage_len = 20; }
static void legacy_key(spec *s) { s->legacy = true, s->key = "1"; }
static void legacy_protocol(spec *s) { s->legacy = true, s->protocol = 1000; }
static void legacy_hostile(spec *s) { s->legacy = true, s->hostile = true; }

static const bad_case bad[] = {
    {"storage member missing", missing_storage, JP_CORRUPT, AT_PID},
    {"storage member too small", storage_too_small, JP_CORRUPT, AT_STORAGE_HEADER},
    {"persistent id count wrong", pid_numel_wrong, JP_CORRUPT, AT_STORAGE_HEADER},
    {"tensor past its storage", extent_past_storage, JP_CORRUPT, AT_STORAGE_DATA},
    {"offset pushes past storage", offset_past_storage, JP_CORRUPT, AT_STORAGE_DATA},
    {"quantized storage", quantized, JP_UNSUPPORTED, AT_PID},
    {"unknown storage type", unknown_storage, JP_UNSUPPORTED, AT_PID},
    {"strides and sizes disagree", stride_count, JP_CORRUPT, AT_STRIDE},
    {"negative storage offset", negative_offset, JP_CORRUPT, AT_OFF},
    {"seventeen dimensions", too_many_dims, JP_LIMIT, AT_SHAPE},
    {"negative size", negative_size, JP_CORRUPT, AT_NONE},
    {"quantized tensor", qtensor, JP_UNSUPPORTED, AT_NONE},
    {"v3 without its dtype", v3_without_dtype, JP_CORRUPT, AT_NONE},
    {"v3 with a dtype jaxport lacks", v3_unknown_dtype, JP_DTYPE, AT_NONE},
    {"byte order", bad_byteorder, JP_CORRUPT, AT_BYTEORDER},
    {"first member not in a folder", not_in_folder, JP_FORMAT, AT_ZERO},
    {"no data.pkl", no_data_pkl, JP_FORMAT, AT_NONE},
    {"hostile global", hostile, JP_UNSAFE, AT_HOSTILE},
    {"a list containing itself", cycle, JP_LIMIT, AT_CYCLE},
    {"legacy storage count", legacy_count, JP_CORRUPT, AT_LEGACY_STORAGE},
    {"legacy storage cut short", legacy_short, JP_TRUNCATED, AT_LEGACY_DATA},
    {"legacy key not declared", legacy_key, JP_CORRUPT, AT_KEYS},
    {"legacy protocol", legacy_protocol, JP_UNSUPPORTED, AT_PROTOCOL},
    {"legacy hostile global", legacy_hostile, JP_UNSAFE, AT_HOSTILE},
};

static uint64_t anchor_offset(anchor a, const where *w) {
    switch (a) {
    case AT_ZERO: return 0;
    case AT_PID: return w->pkl_origin + w->pid;
    case AT_OFF: return w->pkl_origin + w->off;
    case AT_SHAPE: return w->pkl_origin + w->shape;
    case AT_STRIDE: return w->pkl_origin + w->stride;
    case AT_HOSTILE: return w->pkl_origin + w->hostile;
    case AT_CYCLE: return w->pkl_origin + w->cycle_list;
    case AT_STORAGE_HEADER: return w->storage_header;
    case AT_STORAGE_DATA: return w->storage_data;
    case AT_BYTEORDER: return w->byteorder_data;
    case AT_KEYS: return w->keys;
    case AT_LEGACY_STORAGE: return w->legacy_storage;
    case AT_LEGACY_DATA: return w->legacy_storage + 8;
    case AT_PROTOCOL: return 15;
    default: return JP_NO_OFFSET;
    }
}

static void test_bad(void) {
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        const bad_case *b = &bad[k];
        spec s = base_spec();
        b->change(&s);
        uint8_t buf[8192];
        where w;
        jp_index *ix = NULL;
        jp_err err;
        jp_code rc = open_spec(&s, 0, buf, &w, &ix, &err);
        uint64_t want = anchor_offset(b->at, &w);
        bool offset_ok = b->at == AT_NONE || err.offset == want;
        check_run++;
        if (rc != b->code || !offset_ok || (rc && !strstr(err.msg, "t.pt: "))) {
            check_failed++;
            fprintf(stderr, "bad case '%s': got %s @ %llu (%s), expected %s @ %llu\n", b->what,
                    jp_code_name(rc), (unsigned long long)err.offset, rc ? err.msg : "",
                    jp_code_name(b->code), (unsigned long long)want);
        }
        jp_index_close(ix);
    }
    /* The unsafe message names the global and what it means. */
    spec s = base_spec();
    hostile(&s);
    uint8_t buf[8192];
    where w;
    jp_index *ix;
    jp_err err;
    open_spec(&s, 0, buf, &w, &ix, &err);
    char want[200];
    snprintf(want, sizeof want,
             "t.pt: arch/data.pkl @ 0x%llx: GLOBAL posix.system is not allowed (this file would "
             "run code under torch.load)",
             (unsigned long long)(w.pkl_origin + w.hostile));
    CHECK_STR(err.msg, want);
    legacy_ok(&s);
    CHECK_EQ_U64(open_spec(&s, JP_OPEN_ALLOW_UNSAFE, buf, &w, &ix, &err), JP_OK);
    jp_index_close(ix);
}

/* Every prefix of a valid file fails cleanly. */
static void test_truncations(void) {
    for (int legacy = 0; legacy < 2; legacy++) {
        spec s = base_spec();
        s.legacy = legacy;
        uint8_t buf[8192];
        where w;
        jp_index *ix;
        jp_err err;
        CHECK_EQ_U64(open_spec(&s, 0, buf, &w, &ix, &err), JP_OK);
        jp_index_close(ix);
        for (size_t n = 0; n < w.len; n++) {
            jp_code rc = jp_index_open_memory(&ix, buf, n, "t.pt", NULL, &err);
            /* The one-byte prefix 0x80 is a valid empty Flax msgpack; no
             * prefix may pass as a torch checkpoint. */
            if (rc == JP_OK) {
                CHECK(jp_index_format(ix) == JP_FORMAT_MSGPACK && jp_index_count(ix) == 0);
                jp_index_close(ix);
            } else {
                CHECK(ix == NULL);
            }
        }
    }
}

int main(void) {
    test_reads();
    test_values();
    test_bad();
    test_truncations();
    return check_done("torch");
}
