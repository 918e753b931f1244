/* Target leaves from a template file (see target.h). */
#include "target.h"

#include <jansson.h>
#include <stdio.h>
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

/* Rules from a file: "REGEX => REPLACEMENT" per line. */
static int read_rules(const char *path, char ***rules, size_t *n, char **buf) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "jaxport: cannot read %s\n", path);
        return 1;
    }
    size_t cap = 0, len = 0;
    char *text = NULL;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? 2 * cap : 8192;
            char *nt = realloc(text, cap);
            if (!nt || cap > (1u << 24)) {
                free(nt ? nt : text);
                fclose(f);
                fprintf(stderr, "jaxport: %s is too large for a rules file\n", path);
                return 1;
            }
            text = nt;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    fclose(f);
    text[len] = '\0';
    *buf = text;
    *rules = calloc(2 * (len / 2 + 1), sizeof **rules);
    if (!*rules) return 1;
    *n = 0;
    int line = 0;
    for (char *p = text, *next; p && *p; p = next) {
        line++;
        next = strchr(p, '\n');
        if (next) *next++ = '\0';
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        char *arrow = strstr(p, " => ");
        if (!arrow) {
            fprintf(stderr, "jaxport: %s:%d: expected 'REGEX => REPLACEMENT'\n", path, line);
            return 1;
        }
        *arrow = '\0';
        char *rep = arrow + 4, *end = rep + strlen(rep);
        while (end > rep && (end[-1] == '\r' || end[-1] == ' ')) *--end = '\0';
        (*rules)[2 * *n] = p;
        (*rules)[2 * *n + 1] = rep;
        (*n)++;
    }
    return 0;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len + 65536 > cap) {
            cap = cap ? 2 * cap : 65536;
            char *nb = cap > (1u << 30) ? NULL : realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + *len, 1, cap - *len - 1, f);
        *len += got;
        if (!got) break;
    }
    fclose(f);
    buf[*len] = '\0';
    return buf;
}


int cli_match_option(cli_match_args *a, int argc, char **argv, int *i) {
    const char *o = argv[*i];
    bool has_value = *i + 1 < argc;
    if (strcmp(o, "--ordered") == 0) {
        a->ordered = true;
        return 1;
    }
    const char *const with_value[] = {"--like", "--to", "--hint", "--rules", "--mapping", "--flatten", NULL};
    bool known = false;
    for (const char *const *w = with_value; *w; w++) known |= strcmp(o, *w) == 0;
    if (!known) return 0;
    if (!has_value) {
        fprintf(stderr, "jaxport: %s needs a value\n", o);
        return -1;
    }
    const char *v = argv[++*i];
    if (strcmp(o, "--like") == 0) {
        a->like = v;
    } else if (strcmp(o, "--to") == 0) {
        a->to = v;
    } else if (strcmp(o, "--rules") == 0) {
        a->rules_path = v;
    } else if (strcmp(o, "--mapping") == 0) {
        a->mapping = v;
    } else if (strcmp(o, "--hint") == 0) {
        if (!strchr(v, '=') || a->nhints >= CLI_MAX_HINTS) {
            fprintf(stderr, "jaxport: --hint wants SRC=DST (at most %d)\n", CLI_MAX_HINTS);
            return -1;
        }
        a->hints[a->nhints++] = v;
    } else {
        long long c, h, w;
        if (sscanf(v, "%lld,%lld,%lld", &c, &h, &w) != 3 || c <= 0 || h <= 0 || w <= 0) {
            fprintf(stderr, "jaxport: --flatten wants C,H,W (positive)\n");
            return -1;
        }
        a->flatten = (jp_flatten_rule){c, h, w};
    }
    return 1;
}

int cli_match_plan(cli_match_args *a, const jp_index *ix, jp_dtype dtype, jp_plan **plan, jp_err *err) {
    *plan = NULL;
    if (a->rules_path && read_rules(a->rules_path, &a->rules, &a->nrules, &a->rules_buf)) return 1;
    jp_code rc = cli_target_load(&a->target, a->like, err);
    if (rc) return cli_fail(err);
    if (!a->target.has_lib) { /* a plain dict's leaves: Haiku's names, or Flax's */
        const char **paths = malloc((a->target.n + 1) * sizeof *paths);
        if (!paths) {
            fprintf(stderr, "jaxport: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < a->target.n; i++) paths[i] = a->target.leaves[i].path;
        a->target.lib = jp_lib_of_paths(paths, a->target.n);
        free(paths);
    }
    a->lib = a->target.lib;
    if (a->to && !jp_lib_from_name(a->to, &a->lib)) {
        fprintf(stderr, "jaxport: unknown library '%s' (flax, nnx, haiku, equinox)\n", a->to);
        return 2;
    }
    if (a->mapping) {
        size_t len = 0;
        char *text = read_file(a->mapping, &len);
        if (!text) {
            fprintf(stderr, "jaxport: cannot read %s\n", a->mapping);
            return 1;
        }
        rc = jp_plan_from_json(plan, text, len, ix, a->target.leaves, a->target.n, err);
        free(text);
        if (!rc && dtype) rc = jp_plan_cast_floats(*plan, dtype, err);
    } else {
        jp_match_opts o = {.lib = a->lib, .hints = a->hints, .nhints = a->nhints,
                           .rules = (const char *const *)a->rules, .nrules = a->nrules,
                           .ordered = a->ordered, .flatten = a->flatten, .dtype = dtype};
        rc = jp_match(plan, ix, a->target.leaves, a->target.n, &o, err);
    }
    return rc ? cli_fail(err) : 0;
}

void cli_match_free(cli_match_args *a) {
    cli_target_free(&a->target);
    free(a->rules);
    free(a->rules_buf);
}
