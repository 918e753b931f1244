/* Target leaves from a template file (see target.h). */
#include "target.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static jp_code from_json(cli_target *t, const char *path, json_t *root, jp_err *err) {
    json_t *leaves = json_object_get(root, "leaves");
    const char *lib = json_string_value(json_object_get(root, "library"));
    if (!json_is_array(leaves))
        return jp_err_set(err, JP_FORMAT, JP_NO_OFFSET, NULL, "%s: a leaf list needs \"leaves\": [...]", path);
    if (lib) {
        if (!jp_lib_from_name(lib, &t->lib))
            return jp_err_set(err, JP_FORMAT, JP_NO_OFFSET, NULL, "%s: unknown library '%s'", path, lib);
        t->has_lib = true;
    }
    t->n = json_array_size(leaves);
    t->leaves = calloc(t->n + 1, sizeof *t->leaves);
    if (!t->leaves) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    for (size_t i = 0; i < t->n; i++) {
        json_t *l = json_array_get(leaves, i), *shape = json_object_get(l, "shape");
        jp_leaf_spec *sp = &t->leaves[i];
        sp->path = json_string_value(json_object_get(l, "path"));
        const char *dt = json_string_value(json_object_get(l, "dtype"));
        sp->dtype = dt ? jp_dtype_from_name(dt) : JP_F32;
        sp->kind = json_string_value(json_object_get(l, "kind"));
        if (!sp->path || sp->dtype == JP_DTYPE_INVALID || !json_is_array(shape) ||
            json_array_size(shape) > JP_MAX_DIMS)
            return jp_err_set(err, JP_FORMAT, JP_NO_OFFSET, NULL,
                              "%s: leaf %zu needs \"path\", \"shape\" (at most %d dims) and a known \"dtype\"",
                              path, i, JP_MAX_DIMS);
        sp->ndim = (int32_t)json_array_size(shape);
        for (int d = 0; d < sp->ndim; d++) {
            json_t *v = json_array_get(shape, (size_t)d);
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return jp_err_set(err, JP_FORMAT, JP_NO_OFFSET, NULL, "%s: leaf %s has a bad shape", path, sp->path);
            sp->shape[d] = json_integer_value(v);
        }
    }
    return JP_OK;
}

jp_code cli_target_load(cli_target *t, const char *path, jp_err *err) {
    memset(t, 0, sizeof *t);
    size_t len = strlen(path);
    if (len > 5 && strcmp(path + len - 5, ".json") == 0) {
        json_error_t je;
        json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        if (root && json_is_object(root) && json_object_get(root, "leaves")) {
            t->json = root;
            jp_code rc = from_json(t, path, root, err);
            if (rc) cli_target_free(t);
            return rc;
        }
        json_decref(root); /* not a leaf list: perhaps a shard index */
    }
    jp_code rc = jp_index_open(&t->ix, path, NULL, err);
    if (rc) return rc;
    t->n = jp_index_count(t->ix);
    t->leaves = calloc(t->n + 1, sizeof *t->leaves);
    if (!t->leaves) {
        cli_target_free(t);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    }
    for (size_t i = 0; i < t->n; i++) {
        const jp_tensor *x = jp_index_at(t->ix, i);
        t->leaves[i].path = x->name;
        t->leaves[i].dtype = x->dtype;
        t->leaves[i].ndim = x->ndim;
        memcpy(t->leaves[i].shape, x->shape, sizeof x->shape);
    }
    if (jp_index_format(t->ix) == JP_FORMAT_EQX) {
        t->has_lib = true;
        t->lib = JP_LIB_EQUINOX;
    }
    return JP_OK;
}

void cli_target_free(cli_target *t) {
    free(t->leaves);
    jp_index_close(t->ix);
    json_decref(t->json);
    memset(t, 0, sizeof *t);
}
