/* Plans that need no matching, and freeing plans. */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

void jp_plan_free(jp_plan *p) {
    if (!p) return;
    jp_arena_free(&p->arena);
    free(p);
}

jp_code jp_plan_identity(jp_plan **out, const jp_index *ix, jp_dtype dtype, jp_err *err) {
    *out = NULL;
    jp_plan *p = calloc(1, sizeof *p);
    if (!p) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "cannot allocate a plan");
    jp_arena_init(&p->arena);
    p->n = jp_index_count(ix);
    p->leaves = jp_arena_alloc_array(&p->arena, p->n ? p->n : 1, sizeof *p->leaves);
    jp_plan_part *parts = jp_arena_alloc_array(&p->arena, p->n ? p->n : 1, sizeof *parts);
    if (!p->leaves || !parts) {
        jp_plan_free(p);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "cannot allocate a plan");
    }
    for (size_t i = 0; i < p->n; i++) {
        const jp_tensor *t = jp_index_at(ix, i);
        jp_plan_leaf *l = &p->leaves[i];
        jp_plan_part *part = &parts[i];
        part->source = (uint32_t)i;
        part->slice_axis = -1;
        part->ndim = t->ndim;
        memcpy(part->shape, t->shape, sizeof part->shape);
        l->name = t->name;
        l->dtype = dtype != JP_DTYPE_INVALID ? dtype : t->dtype;
        l->ndim = t->ndim;
        memcpy(l->shape, t->shape, sizeof l->shape);
        l->nparts = 1;
        l->parts = part;
        for (int d = 0; d < JP_MAX_DIMS; d++) l->perm[d] = d;
        l->rule = "as is";
    }
    *out = p;
    return JP_OK;
}
