/* jaxport match SRC --like TEMPLATE: pair a checkpoint with a JAX model's
 * leaves and show (or save) the plan. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "match/mapping.h"
#include "target.h"

static const char *usage_text =
    "usage: jaxport match SRC --like TEMPLATE [options]\n"
    "\n"
    "  SRC                 the PyTorch checkpoint (any file jaxport reads)\n"
    "  --like TEMPLATE     the target's leaves: a Flax msgpack, safetensors or npz of the\n"
    "                      initialised params, an .eqx file, or a JSON leaf list\n"
    "  --to LIB            flax (default), nnx, haiku or equinox\n"
    "  --hint SRC=DST      source module SRC is target module DST (repeatable)\n"
    "  --rules FILE        rename rules applied to source names first, one per line:\n"
    "                      REGEX => REPLACEMENT (\\\\1..\\\\9 for groups; # comments)\n"
    "  --flatten C,H,W     a Linear after a conv stack flattens a CxHxW map (NCHW in\n"
    "                      PyTorch, NHWC in the target): reorder its input axis\n"
    "  --ordered           pair leaf by leaf in order (statedict2pytree's way)\n"
    "  --mapping FILE      check and show a saved plan instead of matching\n"
    "  -o FILE             save the plan (editable JSON; give it back with --mapping)\n"
    "  --json              print the plan as JSON instead of the table\n"
    "  --allow-unsafe      read a checkpoint that would run code under torch.load\n"
    "\n"
    "Exit status: 0 every leaf paired, 1 some leaf missing or ambiguous (the table\n"
    "says which and why), 2 usage.\n";

/* Rules from a file: "REGEX => REPLACEMENT" per line. */
static int read_rules(const char *path, char ***rules, size_t *n, char **buf) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "jaxport match: cannot read %s\n", path);
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
                fprintf(stderr, "jaxport match: %s is too large for a rules file\n", path);
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
            fprintf(stderr, "jaxport match: %s:%d: expected 'REGEX => REPLACEMENT'\n", path, line);
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

int cmd_match(int argc, char **argv) {
    const char *src = NULL, *like = NULL, *to = NULL, *rules_path = NULL, *out = NULL, *mapping = NULL;
    const char **hints = calloc((size_t)argc + 1, sizeof *hints);
    size_t nhints = 0;
    bool json = false, ordered = false, unsafe = false;
    jp_flatten_rule flatten = {0};
    if (!hints) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            free(hints);
            return 0;
        } else if (strcmp(a, "--like") == 0 && has_value) {
            like = argv[++i];
        } else if (strcmp(a, "--to") == 0 && has_value) {
            to = argv[++i];
        } else if (strcmp(a, "--hint") == 0 && has_value && strchr(argv[i + 1], '=')) {
            hints[nhints++] = argv[++i];
        } else if (strcmp(a, "--rules") == 0 && has_value) {
            rules_path = argv[++i];
        } else if (strcmp(a, "--mapping") == 0 && has_value) {
            mapping = argv[++i];
        } else if (strcmp(a, "--flatten") == 0 && has_value) {
            long long c, h, w;
            if (sscanf(argv[++i], "%lld,%lld,%lld", &c, &h, &w) != 3 || c <= 0 || h <= 0 || w <= 0) {
                fprintf(stderr, "jaxport match: --flatten wants C,H,W (positive)\n%s", usage_text);
                free(hints);
                return 2;
            }
            flatten = (jp_flatten_rule){c, h, w};
        } else if (strcmp(a, "-o") == 0 && has_value) {
            out = argv[++i];
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--ordered") == 0) {
            ordered = true;
        } else if (strcmp(a, "--allow-unsafe") == 0) {
            unsafe = true;
        } else if (a[0] == '-' || src) {
            fprintf(stderr, "jaxport match: unexpected argument '%s'\n%s", a, usage_text);
            free(hints);
            return 2;
        } else {
            src = a;
        }
    }
    if (!src || !like) {
        fprintf(stderr, "jaxport match: SRC and --like TEMPLATE are needed\n%s", usage_text);
        free(hints);
        return 2;
    }
    jp_err err;
    jp_match_opts o = {.hints = hints, .nhints = nhints, .ordered = ordered, .flatten = flatten};
    char **rules = NULL, *rules_buf = NULL;
    size_t nrules = 0;
    int status = 1;
    jp_index *ix = NULL;
    cli_target t = {0};
    jp_plan *plan = NULL;
    char *text = NULL, *table = NULL, *map_text = NULL;
    jp_open_opts oo = {unsafe ? JP_OPEN_ALLOW_UNSAFE : 0};
    if (rules_path && read_rules(rules_path, &rules, &nrules, &rules_buf)) goto done;
    o.rules = (const char *const *)rules;
    o.nrules = nrules;
    if (jp_index_open(&ix, src, &oo, &err) || cli_target_load(&t, like, &err)) {
        status = cli_fail(&err);
        goto done;
    }
    o.lib = t.has_lib ? t.lib : JP_LIB_FLAX;
    if (to && !jp_lib_from_name(to, &o.lib)) {
        fprintf(stderr, "jaxport match: unknown library '%s' (flax, nnx, haiku, equinox)\n", to);
        status = 2;
        goto done;
    }
    size_t map_len = 0;
    if (mapping && !(map_text = read_file(mapping, &map_len))) {
        fprintf(stderr, "jaxport match: cannot read %s\n", mapping);
        goto done;
    }
    jp_code rc = mapping ? jp_plan_from_json(&plan, map_text, map_len, ix, t.leaves, t.n, &err)
                         : jp_match(&plan, ix, t.leaves, t.n, &o, &err);
    if (!rc) rc = jp_plan_to_json(plan, ix, t.leaves, t.n, o.lib, &text, &err);
    if (!rc && !json) rc = jp_plan_json_table(text, strlen(text), &table, &err);
    if (rc) {
        status = cli_fail(&err);
        goto done;
    }
    fputs(json ? text : table, stdout);
    if (json) fputc('\n', stdout);
    if (out) {
        FILE *f = fopen(out, "wb");
        if (!f || fputs(text, f) < 0 || fputc('\n', f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "jaxport match: cannot write %s\n", out);
            goto done;
        }
    }
    status = jp_plan_check(plan, &err) ? cli_fail(&err) : 0;
done:
    jp_plan_free(plan);
    free(text);
    free(table);
    free(map_text);
    cli_target_free(&t);
    jp_index_close(ix);
    free(rules);
    free(rules_buf);
    free(hints);
    return status;
}
