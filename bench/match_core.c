/* The matcher alone, without Python, file parsing or the JSON plan: time
 * jp_match on an index and a JSON leaf list (as `jaxport match --like`
 * reads it), best of N runs.
 *
 *   build/bench/match_core CHECKPOINT LEAVES.json [flax|nnx|haiku|equinox] [N]
 *
 * bench/match.py writes the 10,000-tensor pairs it times; a leaf list for a
 * Flax or Equinox model is {"leaves": [{"path", "shape", "dtype"}, ...]}. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "match/match.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: match_core CHECKPOINT LEAVES.json [LIB] [RUNS]\n");
        return 2;
    }
    jp_index *ix;
    jp_err err;
    if (jp_index_open(&ix, argv[1], NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    json_error_t je;
    json_t *root = json_load_file(argv[2], 0, &je), *lv = json_object_get(root, "leaves");
    size_t n = json_array_size(lv);
    jp_leaf_spec *sp = calloc(n + 1, sizeof *sp);
    if (!root || !sp) {
        fprintf(stderr, "%s: not a leaf list\n", argv[2]);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *l = json_array_get(lv, i), *s = json_object_get(l, "shape");
        sp[i].path = json_string_value(json_object_get(l, "path"));
        sp[i].dtype = jp_dtype_from_name(json_string_value(json_object_get(l, "dtype")));
        sp[i].ndim = (int32_t)json_array_size(s);
        for (int d = 0; d < sp[i].ndim && d < JP_MAX_DIMS; d++) sp[i].shape[d] = json_integer_value(json_array_get(s, (size_t)d));
    }
    jp_match_opts o = {0};
    if (argc > 3 && !jp_lib_from_name(argv[3], &o.lib)) {
        fprintf(stderr, "unknown library %s\n", argv[3]);
        return 2;
    }
    int runs = argc > 4 ? atoi(argv[4]) : 5;
    double best = 1e30;
    bool ok = false;
    for (int r = 0; r < runs; r++) {
        jp_plan *p = NULL;
        double t = now();
        jp_code rc = jp_match(&p, ix, sp, n, &o, &err);
        double dt = now() - t;
        if (dt < best) best = dt;
        ok = !rc && jp_plan_check(p, ix, false, &err) == JP_OK;
        jp_plan_free(p);
    }
    printf("jp_match: %zu tensors, %zu leaves, best of %d: %.1f ms, every leaf paired: %s\n",
           jp_index_count(ix), n, runs, best * 1e3, ok ? "yes" : "no");
    free(sp);
    json_decref(root);
    jp_index_close(ix);
    return ok ? 0 : 1;
}
