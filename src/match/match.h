/* The matcher: pairs every leaf of a JAX model with the PyTorch tensor(s)
 * it comes from and chooses each transform (layouts.h), producing a plan.
 *
 * How it pairs, in order:
 *   1. Rename rules (regex) rewrite source names; hints ("src=dst") say that
 *      a source module prefix is a target module prefix.
 *   2. Leaves are grouped into modules (path minus the last component) and
 *      each leaf gets a role (weight, bias, mean, var); a fused attention
 *      projection (torch's in_proj_weight, a qkv Linear) is also offered as
 *      three virtual modules, query, key and value, each a slice of it.
 *   3. A prefix shared by every module on a side ("bert.", "params/") is
 *      set aside, then modules whose keys are equal pair when their leaves
 *      fit (names need not be spelled alike: "layers_0/LayerNorm" is
 *      "layers.0.layer_norm").
 *   4. The rest are grouped by signature (each role's element count); inside
 *      a group, the two sequences (torch in registration order, JAX leaves in
 *      the natural order of their names, or in field order for Equinox) are
 *      aligned monotonically, preferring similar names. Where two alignments
 *      are equally good the leaves are marked ambiguous, with the hint that
 *      would separate them, instead of guessing.
 *   5. Each paired leaf's transform comes from the target library's layout.
 * Source tensors no leaf takes are listed with the reason (a BatchNorm
 * counter, a tied copy, or none). The order of neither side is trusted to
 * agree with the other's except inside a signature group. */
#ifndef JP_MATCH_H
#define JP_MATCH_H

#include "layouts.h"
#include "plan.h"

/* One leaf of the target model, as Python flattens it: a '/'-separated path
 * ("params/Dense_0/kernel"), its shape and dtype. */
typedef struct jp_leaf_spec {
    const char *path;
    jp_dtype dtype;
    int32_t ndim;
    int64_t shape[JP_MAX_DIMS];
    const char *kind;             /* class of the layer owning it ("ConvTranspose2d"), or NULL */
} jp_leaf_spec;

typedef struct jp_match_opts {
    jp_lib lib;
    const char *const *hints;     /* "src_module=target_module", by key */
    size_t nhints;
    const char *const *rules;     /* pairs: POSIX extended regex, replacement with \1..\9 */
    size_t nrules;                /* number of pairs */
    bool ordered;                 /* pair leaf by leaf in order, as statedict2pytree does */
    jp_flatten_rule flatten;
    jp_dtype dtype;               /* cast floating leaves to this; INVALID: the target's dtype */
} jp_match_opts;

/* Pair src's tensors with the n target leaves. The plan lists the leaves in
 * the given order; leaves that could not be paired carry JP_LEAF_MISSING or
 * JP_LEAF_AMBIGUOUS and a sentence in `rule`. Fails only on bad arguments
 * (a rule that does not compile) or memory; use jp_plan_check to refuse an
 * incomplete plan. The plan borrows src's names: free it first. */
jp_code jp_match(jp_plan **out, const jp_index *src, const jp_leaf_spec *targets, size_t n,
                 const jp_match_opts *opts, jp_err *err);

/* The module a source tensor's name (target false) or a target leaf's path
 * (true: a Flax collection, params/ or batch_stats/, left out) belongs to,
 * as the matcher and its hints name it: path[*start, *start + return). */
size_t jp_match_module_span(const char *path, bool target, size_t *start);

/* JP_MATCH or JP_AMBIGUOUS naming the first leaf without a source; unless
 * allow_unused, JP_MATCH naming the first source tensor whose weights no
 * leaf takes (a BatchNorm counter or a tied copy is fine); or JP_OK. */
jp_code jp_plan_check(const jp_plan *p, const jp_index *src, bool allow_unused, jp_err *err);

#endif /* JP_MATCH_H */
