/* Hugging Face sharded checkpoints: one logical index over several files.
 *
 *   pytorch_model.bin.index.json (or model.safetensors.index.json)
 *   {
 *     "metadata": {"total_size": 123456, ...},      optional, kept as meta
 *     "weight_map": {"tensor name": "shard file",   every tensor, its shard
 *                    ...}
 *   }
 *
 * Shard files sit beside the index; a shard name is a plain file name (no
 * '/', not "." or ".."). Each shard is read by the reader its bytes call for,
 * into the same index, and every tensor must be where the map says. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_impl.h"

#define MAX_SHARDS 100000
#define MAX_INDEX_JSON (64u << 20)

static bool plain_file_name(const char *s) {
    return s[0] && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 &&
           strlen(s) < 256;
}

jp_code jp_read_sharded(jp_index *ix, const char *path, const uint8_t *d, size_t len, jp_err *err) {
    if (len > MAX_INDEX_JSON)
        return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL,
                          "a shard index of %zu bytes is beyond the %u-byte limit", len, MAX_INDEX_JSON);
    json_error_t je;
    json_t *root = json_loadb((const char *)d, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return jp_err_set(err, JP_CORRUPT, (uint64_t)je.position, NULL,
                          "the shard index is not valid JSON: %s", je.text);
    jp_code rc = JP_OK;
    const char **shards = NULL;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(map)) {
        rc = jp_err_set(err, JP_FORMAT, JP_NO_OFFSET, NULL,
                        "a shard index needs a \"weight_map\" object of tensor name to shard file");
        goto done;
    }
    json_t *meta = json_object_get(root, "metadata");
    const char *key;
    json_t *val;
    if (json_is_object(meta)) {
        json_object_foreach(meta, key, val) {
            char *text = json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT);
            char *name = jp_arena_printf(&ix->arena, "metadata.%s", key);
            jp_code mrc = text && name ? jp_index_add_meta(ix, name, text) : JP_NO_MEMORY;
            free(text);
            if (mrc) {
                rc = jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
                goto done;
            }
        }
    }
    /* The distinct shard files, in order of first mention. */
    size_t nshards = 0, cap = 0;
    json_object_foreach(map, key, val) {
        const char *shard = json_string_value(val);
        if (!shard || !plain_file_name(shard)) {
            rc = jp_err_set(err, JP_CORRUPT, JP_NO_OFFSET, key,
                            "the shard of %s must be a file name beside the index, not %s", key,
                            shard ? shard : "a non-string");
            goto done;
        }
        size_t i = 0;
        while (i < nshards && strcmp(shards[i], shard) != 0) i++;
        if (i < nshards) continue;
        if (nshards == MAX_SHARDS) {
            rc = jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "more than %d shards", MAX_SHARDS);
            goto done;
        }
        if (nshards == cap) {
            cap = cap ? cap * 2 : 16;
            const char **n = realloc(shards, cap * sizeof *n);
            if (!n) {
                rc = jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
                goto done;
            }
            shards = n;
        }
        shards[nshards++] = shard;
    }
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) : 1;
    const char *dir = slash ? path : ".";
    size_t matched = 0;
    for (size_t s = 0; s < nshards && !rc; s++) {
        char *shard_path = jp_arena_printf(&ix->arena, "%.*s/%s", dirlen, dir, shards[s]);
        const uint8_t *sd;
        size_t slen;
        size_t before = ix->tensors.len;
        if (!shard_path) {
            rc = jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
            break;
        }
        rc = jp_index_map_file(ix, shard_path, &sd, &slen, err);
        if (!rc) rc = jp_index_read_any(ix, sd, slen, err);
        if (rc) {
            jp_err_prefix(err, shards[s]);
            break;
        }
        for (size_t t = before; t < ix->tensors.len; t++) {
            const jp_tensor *tn = JP_VEC_AT(&ix->tensors, jp_tensor *, t);
            const char *want = json_string_value(json_object_get(map, tn->name));
            if (want && strcmp(want, shards[s]) != 0) {
                rc = jp_err_set(err, JP_CORRUPT, tn->file_offset, tn->name,
                                "%s is in %s but the weight map puts it in %s", tn->name, shards[s], want);
                break;
            }
            if (want) matched++;
        }
    }
    if (!rc && matched != json_object_size(map)) {
        /* Name the first mapped tensor no shard holds. */
        json_object_foreach(map, key, val) {
            bool found = false;
            for (size_t t = 0; t < ix->tensors.len && !found; t++)
                found = strcmp(JP_VEC_AT(&ix->tensors, jp_tensor *, t)->name, key) == 0;
            if (!found) {
                rc = jp_err_set(err, JP_NOT_FOUND, JP_NO_OFFSET, key,
                                "the weight map lists %s in %s, which does not hold it", key,
                                json_string_value(val));
                break;
            }
        }
    }
done:
    free(shards);
    json_decref(root);
    return rc;
}
