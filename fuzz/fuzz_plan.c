/* Fuzz the plan (mapping file) reader: JSON a person may have edited, or
 * anyone may have written. The source is a small Flax msgpack built in;
 * whatever plan is accepted must only name its tensors, stay inside them
 * and account for every leaf's elements. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "match/mapping.h"
#include "plan_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static const jp_leaf_spec leaves[] = {
    {"params/a/kernel", JP_F32, 2, {3, 4}, NULL},
    {"params/a/bias", JP_F32, 1, {4}, NULL},
    {"params/b/query/kernel", JP_F32, 3, {3, 1, 2}, NULL},
    {"params/b/key/kernel", JP_BF16, 2, {3, 2}, NULL},
};
#define NLEAVES (sizeof leaves / sizeof leaves[0])

/* A tensor (and slice) a read plan names lies inside the source. */
static void check_ref(const jp_index *ix, const jp_plan_ref *r) {
    assert(r->source < jp_index_count(ix));
    const jp_tensor *t = jp_index_at(ix, r->source);
    (void)t;
    if (r->axis >= 0)
        assert(r->axis < t->ndim && r->start >= 0 && r->len >= 0 && r->start + r->len <= t->shape[r->axis]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    jp_index *ix;
    jp_err err;
    if (jp_index_open_memory(&ix, plan_source, sizeof plan_source, "source.msgpack", NULL, &err)) abort();
    jp_plan *plan;
    if (jp_plan_from_json(&plan, (const char *)data, size, ix, leaves, NLEAVES, &err) != JP_OK) {
        assert(err.code != JP_OK && err.msg[0]);
    } else {
        assert(plan->n == NLEAVES);
        for (size_t i = 0; i < plan->n; i++) {
            const jp_plan_leaf *l = &plan->leaves[i];
            for (uint32_t k = 0; k < l->nparts; k++) {
                const jp_plan_part *p = &l->parts[k];
                check_ref(ix, &p->from);
                if (p->has_plus) check_ref(ix, &p->plus);
                assert(isfinite(p->add));
                assert(p->add == 0.0 || jp_dtype_is_castable_float(jp_index_at(ix, p->from.source)->dtype));
            }
        }
        char *text = NULL;
        if (jp_plan_to_json(plan, ix, leaves, NLEAVES, JP_LIB_FLAX, &text, &err) == JP_OK) {
            char *table = NULL;
            assert(jp_plan_json_table(text, strlen(text), &table, &err) == JP_OK);
            free(table);
        }
        free(text);
        jp_plan_free(plan);
    }
    jp_index_close(ix);
    return 0;
}
