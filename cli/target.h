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

#include "match/match.h"

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

#endif
