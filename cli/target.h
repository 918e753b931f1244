/* The target model for `match` and `convert --like`, from a file: any file
 * jaxport reads (Flax msgpack, safetensors, npz of the initialised params;
 * its tensors are the leaves) or a JSON leaf list:
 *
 *   {"library": "equinox",
 *    "leaves": [{"path": "layers/0/weight", "shape": [8, 4], "dtype": "float32",
 *                "kind": "Linear"}, ...]}
 */
#ifndef JP_CLI_TARGET_H
#define JP_CLI_TARGET_H

#include "cli.h"
#include "match/mapping.h"

typedef struct cli_target {
    jp_leaf_spec *leaves;
    size_t n;
    bool has_lib;              /* the file named its library */
    jp_lib lib;
    jp_index *ix;              /* the template, when it was a checkpoint */
    void *json;                /* the JSON document the leaves borrow from */
} cli_target;

jp_code cli_target_load(cli_target *t, const char *path, jp_err *err);
void cli_target_free(cli_target *t);

/* The options `match` and `convert --like` share. */
#define CLI_MAX_HINTS 256
#define CLI_MATCH_USAGE                                                                        \
    "  --like TEMPLATE     the target's leaves: a Flax msgpack, safetensors or npz of the\n"  \
    "                      initialised params, an .eqx file, or a JSON leaf list\n"           \
    "  --to LIB            flax, nnx, haiku or equinox (default: the template's own, or\n"  \
    "                      told from its leaf names: haiku's w and offset, else flax)\n"       \
    "  --hint SRC=DST      source module SRC is target module DST (repeatable)\n"             \
    "  --rules FILE        rename rules applied to source names first, one per line:\n"       \
    "                      REGEX => REPLACEMENT (\\\\1..\\\\9 for groups; # comments)\n"      \
    "  --flatten C,H,W     a Linear after a conv stack flattens a CxHxW map (NCHW in\n"       \
    "                      PyTorch, NHWC in the target): reorder its input axis\n"            \
    "  --ordered           pair leaf by leaf in order (statedict2pytree's way)\n"             \
    "  --mapping FILE      use a saved (perhaps edited) plan instead of matching\n"

typedef struct cli_match_args {
    const char *like, *to, *rules_path, *mapping;
    const char *hints[CLI_MAX_HINTS];
    size_t nhints;
    bool ordered;
    jp_flatten_rule flatten;
    /* filled by cli_match_plan */
    cli_target target;
    jp_lib lib;
    char **rules, *rules_buf;
    size_t nrules;
} cli_match_args;

/* argv[*i] if it is one of the options above (advancing *i past its value):
 * 1 taken, 0 not one of them, -1 a bad value (said on stderr). */
int cli_match_option(cli_match_args *a, int argc, char **argv, int *i);

/* The plan for a->like against ix: matched, or read from a->mapping; dtype
 * (or JP_DTYPE_INVALID) casts floating leaves. An exit status: 0, or 1/2
 * with the reason printed. */
int cli_match_plan(cli_match_args *a, const jp_index *ix, jp_dtype dtype, jp_plan **plan, jp_err *err);
void cli_match_free(cli_match_args *a);

#endif
