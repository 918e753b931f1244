/* Tests for the torch.export archive reader (src/formats/pt2.c). Archives
 * are built here with zipbuild.h, their JSON configs written out, and broken
 * one field at a time; every refusal is checked for its code and offset.
 * tests/python/test_torch_reader.py reads archives torch.export.save wrote. */
#include "check.h"
#include "jaxport.h"
#include "zipbuild.h"

/* Members of the archives below, in this order. */
enum { M_FORMAT, M_ORDER, M_CONFIG, M_WEIGHT, M_CONSTANTS, M_CONSTANT, M_COUNT };

/* 12 float32 values 0..11 as the shared storage weight_0. */
static float storage[12];

/* A tensor_meta of float32 (ScalarType 7) with the given sizes, strides and offset. */
#define META(sizes, strides, offset)                                                       \
    "{\"dtype\": 7, \"layout\": 7, \"sizes\": " sizes ", \"strides\": " strides            \
    ", \"storage_offset\": {\"as_int\": " offset "}, \"device\": {\"type\": \"cpu\"}}"
#define ENTRY(path, meta) "{\"path_name\": \"" path "\", \"is_param\": true, \"use_pickle\": false, \"tensor_meta\": " meta "}"
#define I(n) "{\"as_int\": " #n "}"

/* w: the whole storage as (3, 4); wt: rows 1-2 of it, transposed, a view. */
static const char good_config[] =
    "{\"config\": {\"w\": " ENTRY("weight_0", META("[" I(3) ", " I(4) "]", "[" I(4) ", " I(1) "]", "0"))
    ", \"wt\": " ENTRY("weight_0", META("[" I(4) ", " I(2) "]", "[" I(1) ", " I(4) "]", "4")) "}}";
static const char constants_config[] =
    "{\"config\": {\"scale\": " ENTRY("tensor_0", META("[]", "[]", "0"))
    ", \"obj\": {\"path_name\": \"custom_obj_0\", \"is_param\": false, \"use_pickle\": true,"
    " \"tensor_meta\": null}}}";
static const float scale = 2.0f;

static size_t archive(uint8_t *buf, const char *format, const char *order, const char *config,
                      size_t weight_len, bool deflate, layout *L) {
    member m[M_COUNT] = {
        {"ep/archive_format", format, strlen(format), false},
        {"ep/byteorder", order, strlen(order), false},
        {"ep/data/weights/model_weights_config.json", config, strlen(config), deflate},
        {"ep/data/weights/weight_0", storage, weight_len, deflate},
        {"ep/data/constants/model_constants_config.json", constants_config,
         sizeof constants_config - 1, false},
        {"ep/data/constants/tensor_0", &scale, sizeof scale, false},
    };
    return build(buf, m, M_COUNT, (opts){0}, L);
}

static void test_read(void) {
    for (int deflate = 0; deflate <= 1; deflate++) {
        static uint8_t buf[1 << 14];
        layout L;
        size_t n = archive(buf, "pt2", "little", good_config, sizeof storage, deflate, &L);
        jp_index *ix;
        jp_err err;
        jp_code rc = jp_index_open_memory(&ix, buf, n, "m.pt2", NULL, &err);
        CHECK_EQ_U64(rc, JP_OK);
        if (rc) {
            fprintf(stderr, "%s\n", err.msg);
            continue;
        }
        CHECK_EQ_U64(jp_index_format(ix), JP_FORMAT_TORCH_EXPORT);
        CHECK_EQ_U64(jp_index_count(ix), 3);
        const jp_tensor *w = jp_index_find(ix, "w"), *wt = jp_index_find(ix, "wt"),
                        *s = jp_index_find(ix, "scale");
        CHECK(w && wt && s);
        if (!w || !wt || !s) {
            jp_index_close(ix);
            continue;
        }
        CHECK(w->dtype == JP_F32 && w->ndim == 2 && w->shape[0] == 3 && w->shape[1] == 4);
        CHECK(wt->shape[0] == 4 && wt->shape[1] == 2 && wt->strides[0] == 1 && wt->strides[1] == 4);
        CHECK(!(wt->flags & JP_TENSOR_CONTIGUOUS) && (w->flags & JP_TENSOR_CONTIGUOUS));
        CHECK((w->flags & JP_TENSOR_SHARED) && (wt->flags & JP_TENSOR_SHARED) && w->storage == wt->storage);
        CHECK(!(s->flags & JP_TENSOR_SHARED) && s->storage != w->storage && s->ndim == 0);
        CHECK(wt->data == w->data + 16);
        CHECK_EQ_U64((w->flags & JP_TENSOR_OWNED) != 0, deflate);
        if (!deflate) CHECK(w->data == buf + L.data[M_WEIGHT] && w->file_offset == L.data[M_WEIGHT]);
        CHECK(memcmp(w->data, storage, sizeof storage) == 0);
        CHECK(memcmp(s->data, &scale, 4) == 0);
        /* The custom object is a value, not a tensor. */
        CHECK_EQ_U64(jp_index_meta_count(ix), 1);
        if (jp_index_meta_count(ix) == 1) CHECK_STR(jp_index_meta_at(ix, 0)->key, "obj");
        jp_index_close(ix);
    }
}

/* Where a refusal's offset points. */
typedef enum { AT_CONFIG, AT_CONFIG_DATA, AT_WEIGHT, AT_FORMAT, AT_ORDER, AT_CONSTANT } at;

static void test_malformed(void) {
    static const struct {
        const char *what, *format, *order, *config;
        size_t weight_len;
        jp_code code;
        at where;
        uint64_t plus; /* added to the place */
    } cases[] = {
        {"not pt2", "pt3", "little", good_config, 48, JP_FORMAT, AT_FORMAT, 0},
        {"big-endian", "pt2", "big", good_config, 48, JP_UNSUPPORTED, AT_ORDER, 0},
        {"config not JSON", "pt2", "little", "{\"config\": {", 48, JP_CORRUPT, AT_CONFIG_DATA, 12},
        {"config not an object", "pt2", "little", "[1]", 48, JP_CORRUPT, AT_CONFIG, 0},
        {"no config key", "pt2", "little", "{\"w\": 1}", 48, JP_CORRUPT, AT_CONFIG, 0},
        {"entry without path_name", "pt2", "little", "{\"config\": {\"w\": {}}}", 48, JP_CORRUPT,
         AT_CONFIG, 0},
        {"weight without tensor_meta", "pt2", "little",
         "{\"config\": {\"w\": {\"path_name\": \"weight_0\", \"tensor_meta\": null}}}", 48,
         JP_CORRUPT, AT_CONFIG, 0},
        {"no such member", "pt2", "little",
         "{\"config\": {\"w\": " ENTRY("weight_9", META("[" I(3) "]", "[" I(1) "]", "0")) "}}", 48,
         JP_CORRUPT, AT_CONFIG, 0},
        {"pickled", "pt2", "little",
         "{\"config\": {\"w\": {\"path_name\": \"weight_0\", \"use_pickle\": true, \"tensor_meta\": "
         META("[" I(3) "]", "[" I(1) "]", "0") "}}}", 48, JP_UNSUPPORTED, AT_CONFIG, 0},
        {"symbolic size", "pt2", "little",
         "{\"config\": {\"w\": " ENTRY("weight_0", META("[{\"as_expr\": {}}]", "[" I(1) "]", "0")) "}}",
         48, JP_UNSUPPORTED, AT_CONFIG, 0},
        {"negative size", "pt2", "little",
         "{\"config\": {\"w\": " ENTRY("weight_0", META("[{\"as_int\": -3}]", "[" I(1) "]", "0")) "}}",
         48, JP_CORRUPT, AT_CONFIG, 0},
        {"sizes and strides differ", "pt2", "little",
         "{\"config\": {\"w\": " ENTRY("weight_0", META("[" I(3) "]", "[]", "0")) "}}", 48,
         JP_CORRUPT, AT_CONFIG, 0},
        {"unknown ScalarType", "pt2", "little",
         "{\"config\": {\"w\": {\"path_name\": \"weight_0\", \"tensor_meta\": {\"dtype\": 14, "
         "\"sizes\": [], \"strides\": []}}}}", 48, JP_DTYPE, AT_CONFIG, 0},
        {"sparse", "pt2", "little",
         "{\"config\": {\"w\": {\"path_name\": \"weight_0\", \"tensor_meta\": {\"dtype\": 7, "
         "\"layout\": 1, \"sizes\": [], \"strides\": []}}}}", 48, JP_UNSUPPORTED, AT_CONFIG, 0},
        {"17 dimensions", "pt2", "little",
         "{\"config\": {\"w\": {\"path_name\": \"weight_0\", \"tensor_meta\": {\"dtype\": 7, "
         "\"sizes\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], \"strides\": []}}}}", 48, JP_LIMIT,
         AT_CONFIG, 0},
        {"past the storage", "pt2", "little", good_config, 44, JP_CORRUPT, AT_WEIGHT, 0},
        {"offset past the storage", "pt2", "little",
         "{\"config\": {\"w\": " ENTRY("weight_0", META("[" I(12) "]", "[" I(1) "]", "1")) "}}", 48,
         JP_CORRUPT, AT_WEIGHT, 0},
        {"offset overflows", "pt2", "little",
         "{\"config\": {\"w\": " ENTRY("weight_0", META("[" I(1) "]", "[" I(1) "]",
                                                         "4611686018427387904")) "}}",
         48, JP_LIMIT, AT_WEIGHT, 0},
        {"a name twice", "pt2", "little",
         "{\"config\": {\"scale\": " ENTRY("weight_0", META("[" I(3) "]", "[" I(1) "]", "0")) "}}",
         48, JP_CORRUPT, AT_CONSTANT, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        static uint8_t buf[1 << 14];
        layout L;
        size_t n = archive(buf, cases[i].format, cases[i].order, cases[i].config, cases[i].weight_len,
                           false, &L);
        jp_index *ix = NULL;
        jp_err err;
        jp_code rc = jp_index_open_memory(&ix, buf, n, "m.pt2", NULL, &err);
        CHECK_EQ_U64(rc, cases[i].code);
        CHECK(ix == NULL && err.msg[0]);
        uint64_t want = cases[i].where == AT_CONFIG        ? L.local[M_CONFIG]
                        : cases[i].where == AT_CONFIG_DATA ? L.data[M_CONFIG]
                        : cases[i].where == AT_WEIGHT      ? L.data[M_WEIGHT]
                        : cases[i].where == AT_FORMAT      ? L.data[M_FORMAT]
                        : cases[i].where == AT_ORDER       ? L.data[M_ORDER]
                                                           : L.data[M_CONSTANT];
        want += cases[i].plus;
        CHECK_EQ_U64(err.offset, want);
        if (rc != cases[i].code || err.offset != want)
            fprintf(stderr, "case %s: %s\n", cases[i].what, err.msg);
        jp_index_close(ix);
    }
}

int main(void) {
    for (int k = 0; k < 12; k++) storage[k] = (float)k;
    test_read();
    test_malformed();
    return check_done("pt2");
}
