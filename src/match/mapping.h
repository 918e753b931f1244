/* The plan as a file a person can read, edit and hand back:
 *
 *   {"jaxport_plan": 1, "library": "flax",
 *    "source": {"tensors": 5, "fingerprint": "9f0c..."},
 *    "target": {"leaves": 4, "fingerprint": "31aa..."},
 *    "leaves": [
 *      {"leaf": "params/Dense_0/kernel", "shape": [3, 4], "dtype": "F32",
 *       "from": [{"tensor": "fc.weight", "shape": [4, 3]}],
 *       "permute": [1, 0], "rule": "linear kernel (transposed)"},
 *      {"leaf": "attn/query/kernel", "shape": [8, 2, 4], "dtype": "F32",
 *       "from": [{"tensor": "attn.in_proj_weight", "slice": [0, 0, 8], "shape": [2, 4, 8]}],
 *       "permute": [2, 0, 1]},
 *      {"leaf": "cell/hi/bias", "shape": [7], "dtype": "F32",
 *       "from": [{"tensor": "lstm.bias_ih_l0", "slice": [0, 0, 7], "shape": [7],
 *                 "plus": {"tensor": "lstm.bias_hh_l0", "slice": [0, 0, 7]}}]},
 *      {"leaf": "head/kernel", "missing": "no source module fits ..."}],
 *    "unused": [{"tensor": "bn.num_batches_tracked", "why": "...", "harmless": true}]}
 *
 * "slice" is [axis, start, length]; "plus" adds another tensor's elements
 * (the same count, float dtypes) to a part; "flip" lists reversed axes;
 * "concat" the axis several parts are joined on. The fingerprints cover the names,
 * shapes and dtypes of both sides, so a file made for other models is
 * refused (JP_STALE) while hand edits to the pairing are kept. */
#ifndef JP_MAPPING_H
#define JP_MAPPING_H

#include "match.h"

/* A fingerprint of a source index or of a list of target leaves. */
uint64_t jp_fingerprint_index(const jp_index *ix);
uint64_t jp_fingerprint_leaves(const jp_leaf_spec *leaves, size_t n);

/* The plan as JSON text (malloc'ed, NUL-terminated). */
jp_code jp_plan_to_json(const jp_plan *p, const jp_index *src, const jp_leaf_spec *targets, size_t n,
                        jp_lib lib, char **out, jp_err *err);

/* A plan from JSON text made for src and these targets. Every entry is
 * checked against both (names exist, slices in range, element counts and
 * permutations consistent): a hostile file fails with a message, never
 * produces an out-of-range read. Leaves come back in the targets' order. */
jp_code jp_plan_from_json(jp_plan **out, const char *text, size_t len, const jp_index *src,
                          const jp_leaf_spec *targets, size_t n, jp_err *err);

/* A plan's JSON (as jp_plan_to_json writes it) as a table for people: one
 * line per leaf with its shape, source(s) and rule, then the unused source
 * tensors and a count. malloc'ed into *out. JP_FORMAT if it is not a plan. */
jp_code jp_plan_json_table(const char *json, size_t len, char **out, jp_err *err);

/* Check a plan against its source: every part's tensor, slice and shape,
 * each permutation, and that the result has each leaf's element count. */
jp_code jp_plan_validate(const jp_plan *p, const jp_index *src, jp_err *err);

#endif /* JP_MAPPING_H */
