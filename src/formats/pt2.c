/* torch.export archives (torch.export.save, the PT2 archive format): a zip
 * whose weights are raw bytes described by JSON, no pickle.
 *
 *   <p>/archive_format                          "pt2"
 *   <p>/byteorder                               "little" (or "big")
 *   <p>/models/<model>.json                     the graph (not read)
 *   <p>/data/weights/<model>_weights_config.json
 *       {"config": {"<fqn>": {"path_name": "weight_0", "is_param": true,
 *                             "use_pickle": false,
 *                             "tensor_meta": {"dtype": 7, "layout": 7,
 *                                 "sizes": [{"as_int": 4}, ...],
 *                                 "strides": [{"as_int": 3}, ...],
 *                                 "storage_offset": {"as_int": 0}, ...}}, ...}}
 *   <p>/data/weights/weight_<k>                 one storage's raw bytes: tensors
 *                                               that share a storage (tied weights,
 *                                               views) share a member
 *   <p>/data/constants/<model>_constants_config.json   the same for tensor constants
 *   <p>/data/constants/tensor_<k>, custom_obj_<k>      (custom objects are pickles)
 *
 * dtype and layout are torch._export.serde.schema's ScalarType and Layout.
 * A tensor is named by its fully qualified name, as in the exported
 * program's state_dict; with several models in one archive, by
 * "<model>/<fqn>". Tensors are views into the member's bytes (inflated into
 * a buffer of the index when deflated), checked to lie inside them.
 * Refused: entries saved with pickle (tensor subclasses: jaxport runs no
 * pickle), symbolic sizes, layouts other than strided, big-endian archives.
 * Custom objects, which are not tensors, are listed as values. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "index_impl.h"
#include "zip.h"

#define MAX_CONFIG_BYTES (256u << 20) /* one JSON config, inflated */

/* ScalarType -> jaxport's dtype; INVALID for values with no counterpart. */
static jp_dtype scalar_type(json_int_t v) {
    switch (v) {
    case 1: return JP_U8;
    case 2: return JP_I8;
    case 3: return JP_I16;
    case 4: return JP_I32;
    case 5: return JP_I64;
    case 6: return JP_F16;
    case 7: return JP_F32;
    case 8: return JP_F64;
    case 9: return JP_C32;
    case 10: return JP_C64;
    case 11: return JP_C128;
    case 12: return JP_BOOL;
    case 13: return JP_BF16;
    case 28: return JP_U16;
    case 29: return JP_F8_E4M3FN;
    case 30: return JP_F8_E5M2;
    case 31: return JP_F8_E4M3FNUZ;
    case 32: return JP_F8_E5M2FNUZ;
    case 33: return JP_F8_E8M0FNU;
    case 34: return JP_U32;
    case 35: return JP_U64;
    default: return JP_DTYPE_INVALID;
    }
}

#define LAYOUT_STRIDED 7
#define WEIGHTS_DIR "data/weights/"

typedef struct pctx {
    jp_index *ix;
    const jp_zip *z;
    const char *prefix;
    /* Per zip entry: its storage index + 1 (0 before its first tensor) and
     * its bytes, read once (an inflated member is inflated once, however
     * many tensors view it). */
    uint32_t *storage_of;
    const uint8_t **bytes;
    uint64_t *len;
    jp_err *err;
} pctx;

static jp_code oom(pctx *c) {
    return jp_err_set(c->err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
}

/* {"as_int": n}: JP_OK with n >= 0; JP_UNSUPPORTED for anything else that
 * is not "as_int" (a symbolic size, {"as_expr": ...}); JP_CORRUPT for a
 * negative or non-integer one. */
static jp_code as_int(const json_t *v, int64_t *out) {
    const json_t *n = json_is_object(v) ? json_object_get(v, "as_int") : NULL;
    if (!n) return JP_UNSUPPORTED;
    if (!json_is_integer(n) || json_integer_value(n) < 0) return JP_CORRUPT;
    *out = (int64_t)json_integer_value(n);
    return JP_OK;
}

/* A JSON member of the archive, parsed into *root. */
static jp_code load_json(pctx *c, const jp_zip_entry *e, json_t **root) {
    if (e->usize > MAX_CONFIG_BYTES)
        return jp_err_set(c->err, JP_LIMIT, e->header_offset, e->name,
                          "the config is %llu bytes; jaxport reads configs of at most %u",
                          (unsigned long long)e->usize, MAX_CONFIG_BYTES);
    const uint8_t *p;
    uint64_t n;
    jp_code rc = jp_zip_read(c->z, e, &c->ix->arena, &p, &n, c->err);
    if (rc) return rc;
    json_error_t je;
    *root = json_loadb((const char *)p, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!*root)
        return jp_err_set(c->err, JP_CORRUPT,
                          e->method == 0 ? e->data_offset + (uint64_t)je.position : JP_NO_OFFSET,
                          e->name, "not valid JSON: %s", je.text);
    return JP_OK;
}

/* The shape, strides, dtype and offset of one entry's tensor_meta into t;
 * the element offset into *offset. */
static jp_code read_meta(pctx *c, const jp_zip_entry *cfg, const char *name, const json_t *meta,
                         jp_tensor *t, int64_t *offset) {
    const json_t *dtype = json_object_get(meta, "dtype"), *layout = json_object_get(meta, "layout"),
                 *sizes = json_object_get(meta, "sizes"),
                 *strides = json_object_get(meta, "strides");
    if (!json_is_integer(dtype) || !json_is_array(sizes) || !json_is_array(strides))
        return jp_err_set(c->err, JP_CORRUPT, cfg->header_offset, name,
                          "tensor %s: its tensor_meta needs \"dtype\" (an integer), \"sizes\" and "
                          "\"strides\" (arrays)", name);
    if (layout && !(json_is_integer(layout) && json_integer_value(layout) == LAYOUT_STRIDED))
        return jp_err_set(c->err, JP_UNSUPPORTED, cfg->header_offset, name,
                          "tensor %s is not strided (a sparse or mkldnn layout); jaxport reads "
                          "dense tensors", name);
    t->dtype = scalar_type(json_integer_value(dtype));
    if (t->dtype == JP_DTYPE_INVALID)
        return jp_err_set(c->err, JP_DTYPE, cfg->header_offset, name,
                          "tensor %s has ScalarType %lld, which jaxport does not read", name,
                          (long long)json_integer_value(dtype));
    size_t nd = json_array_size(sizes);
    if (nd > JP_MAX_DIMS)
        return jp_err_set(c->err, JP_LIMIT, cfg->header_offset, name,
                          "tensor %s has %zu dimensions; at most %d are supported", name, nd,
                          JP_MAX_DIMS);
    if (json_array_size(strides) != nd)
        return jp_err_set(c->err, JP_CORRUPT, cfg->header_offset, name,
                          "tensor %s has %zu sizes but %zu strides", name, nd,
                          json_array_size(strides));
    t->ndim = (int32_t)nd;
    for (size_t d = 0; d < nd; d++) {
        jp_code rc = as_int(json_array_get(sizes, d), &t->shape[d]);
        if (!rc) rc = as_int(json_array_get(strides, d), &t->strides[d]);
        if (rc == JP_UNSUPPORTED)
            return jp_err_set(c->err, rc, cfg->header_offset, name,
                              "tensor %s: dimension %zu's size or stride is symbolic; jaxport "
                              "reads concrete tensors", name, d);
        if (rc)
            return jp_err_set(c->err, rc, cfg->header_offset, name,
                              "tensor %s: dimension %zu's size or stride is not a count", name, d);
    }
    const json_t *off = json_object_get(meta, "storage_offset");
    *offset = 0;
    if (off && as_int(off, offset))
        return jp_err_set(c->err, JP_CORRUPT, cfg->header_offset, name,
                          "tensor %s: storage_offset is not {\"as_int\": n} with n >= 0", name);
    return JP_OK;
}

/* One entry of a config: the tensor `name` in member dir/<path_name>. */
static jp_code read_entry(pctx *c, const jp_zip_entry *cfg, const char *dir, const char *name,
                          const json_t *v) {
    const json_t *path = json_object_get(v, "path_name"), *meta = json_object_get(v, "tensor_meta");
    if (!json_is_object(v) || !json_is_string(path))
        return jp_err_set(c->err, JP_CORRUPT, cfg->header_offset, name,
                          "entry %s needs \"path_name\" (a string)", name);
    const char *pn = json_string_value(path);
    if (json_is_null(meta) || !meta) {
        /* A constant may be a custom object (torchbind), not a tensor; a weight may not. */
        if (strcmp(dir, WEIGHTS_DIR) == 0)
            return jp_err_set(c->err, JP_CORRUPT, cfg->header_offset, name,
                              "weight %s has no tensor_meta", name);
        return jp_index_add_meta(c->ix, name, "custom object (not read)") ? oom(c) : JP_OK;
    }
    if (json_is_true(json_object_get(v, "use_pickle")))
        return jp_err_set(c->err, JP_UNSUPPORTED, cfg->header_offset, name,
                          "tensor %s (%s) is saved with pickle, as torch.export saves tensor "
                          "subclasses; jaxport runs no pickle", name, pn);
    if (!json_is_object(meta))
        return jp_err_set(c->err, JP_CORRUPT, cfg->header_offset, name,
                          "entry %s: tensor_meta is not an object", name);
    char *member = jp_arena_printf(&c->ix->arena, "%s/%s%s", c->prefix, dir, pn);
    if (!member) return oom(c);
    const jp_zip_entry *e = jp_zip_find(c->z, member);
    if (!e)
        return jp_err_set(c->err, JP_CORRUPT, cfg->header_offset, name,
                          "tensor %s: the archive has no member %s", name, member);
    if (strlen(name) > JP_LIMIT_NAME)
        return jp_err_set(c->err, JP_LIMIT, cfg->header_offset, NULL,
                          "a tensor name of %zu bytes; at most %d are allowed", strlen(name),
                          JP_LIMIT_NAME);
    jp_tensor *t = jp_index_new_tensor(c->ix, name, strlen(name));
    if (!t)
        return jp_err_set(c->err, c->ix->tensors.len >= JP_LIMIT_TENSORS ? JP_LIMIT : JP_NO_MEMORY,
                          cfg->header_offset, name, "no room for another tensor");
    int64_t offset;
    jp_code rc = read_meta(c, cfg, name, meta, t, &offset);
    if (rc) return rc;
    uint64_t byte_offset;
    if (jp_mul_overflow((uint64_t)offset, jp_dtype_size(t->dtype), &byte_offset))
        return jp_err_set(c->err, JP_LIMIT, e->data_offset, member,
                          "tensor %s: storage_offset overflows", name);
    size_t k = (size_t)(e - c->z->entries);
    if (!c->storage_of[k]) {
        if ((rc = jp_zip_read(c->z, e, &c->ix->arena, &c->bytes[k], &c->len[k], c->err))) return rc;
        c->storage_of[k] = ++c->ix->nstorages;
    }
    t->storage = c->storage_of[k] - 1;
    bool owned = e->method != 0;
    rc = jp_index_place(c->ix, t, c->bytes[k], c->len[k], owned ? JP_NO_OFFSET : e->data_offset,
                        byte_offset, member, c->err);
    if (!rc && owned) t->flags |= JP_TENSOR_OWNED;
    return rc;
}

/* Every entry of one config member (dir: "data/weights/" or
 * "data/constants/"); names get "<model>/" in front when `model` is set. */
static jp_code read_config(pctx *c, const jp_zip_entry *cfg, const char *dir, const char *model) {
    json_t *root = NULL;
    jp_code rc = load_json(c, cfg, &root);
    if (rc) return rc;
    const json_t *entries = json_is_object(root) ? json_object_get(root, "config") : NULL;
    if (!json_is_object(entries))
        rc = jp_err_set(c->err, JP_CORRUPT, cfg->header_offset, cfg->name,
                        "the config is not {\"config\": {name: entry, ...}}");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)entries, key, v) {
        if (rc) break;
        const char *name = model ? jp_arena_printf(&c->ix->arena, "%s/%s", model, key) : key;
        rc = name ? read_entry(c, cfg, dir, name, v) : oom(c);
    }
    json_decref(root);
    return rc;
}

/* The model a config member names ("<p>/<dir><model><suffix>"), or NULL. */
static const char *config_model(pctx *c, const char *member, const char *dir, const char *suffix,
                                size_t *len) {
    size_t pl = strlen(c->prefix), dl = strlen(dir), sl = strlen(suffix), ml = strlen(member);
    if (ml <= pl + 1 + dl + sl || strncmp(member, c->prefix, pl) != 0 || member[pl] != '/' ||
        strncmp(member + pl + 1, dir, dl) != 0 || strcmp(member + ml - sl, suffix) != 0)
        return NULL;
    const char *m = member + pl + 1 + dl;
    *len = ml - pl - 1 - dl - sl;
    return memchr(m, '/', *len) ? NULL : m;
}

static const struct {
    const char *dir, *suffix;
} configs[] = {{WEIGHTS_DIR, "_weights_config.json"},
               {"data/constants/", "_constants_config.json"}};

/* A config member found, and the model its name says. */
typedef struct found {
    const jp_zip_entry *e;
    const char *dir, *model;
    size_t model_len;
} found;

static bool same_model(const found *a, const found *b) {
    return a->model_len == b->model_len && strncmp(a->model, b->model, a->model_len) == 0;
}

jp_code jp_read_pt2(jp_index *ix, const jp_zip *z, const char *prefix, jp_err *err) {
    pctx c = {.ix = ix, .z = z, .prefix = prefix, .err = err};
    size_t slots = z->count ? z->count : 1;
    c.storage_of = jp_arena_alloc_array(&ix->arena, slots, sizeof *c.storage_of);
    c.bytes = jp_arena_alloc_array(&ix->arena, slots, sizeof *c.bytes);
    c.len = jp_arena_alloc_array(&ix->arena, slots, sizeof *c.len);
    if (!c.storage_of || !c.bytes || !c.len) return oom(&c);
    memset(c.storage_of, 0, slots * sizeof *c.storage_of);
    /* The configs, and the models they name: with more than one model,
     * tensor names say whose. */
    size_t nconfigs = sizeof configs / sizeof configs[0], nf = 0;
    found *f = jp_arena_alloc_array(&ix->arena, slots * nconfigs, sizeof *f);
    if (!f) return oom(&c);
    for (size_t i = 0; i < z->count; i++)
        for (size_t k = 0; k < nconfigs; k++) {
            found *x = &f[nf];
            x->model = config_model(&c, z->entries[i].name, configs[k].dir, configs[k].suffix,
                                    &x->model_len);
            if (!x->model) continue;
            x->e = &z->entries[i];
            x->dir = configs[k].dir;
            nf++;
        }
    bool several = false;
    for (size_t j = 1; j < nf; j++) several = several || !same_model(&f[j], &f[0]);
    for (size_t j = 0; j < nf; j++) {
        const char *model = NULL;
        if (several && !(model = jp_arena_strndup(&ix->arena, f[j].model, f[j].model_len)))
            return oom(&c);
        jp_code rc = read_config(&c, f[j].e, f[j].dir, model);
        if (rc) return rc;
    }
    return JP_OK;
}
