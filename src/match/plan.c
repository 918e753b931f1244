/* Plans that need no matching, and freeing plans. */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

void jp_plan_free(jp_plan *p) {
    if (!p) return;
    jp_arena_free(&p->arena);
    free(p);
}

/* The identity plan over n tensors, tensor i given by at(ctx, i). */
static jp_code identity(jp_plan **out, size_t n, const jp_tensor *(*at)(const void *, size_t),
                        const void *ctx, jp_dtype dtype, jp_err *err) {
    *out = NULL;
    jp_plan *p = calloc(1, sizeof *p);
    if (!p) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "cannot allocate a plan");
    jp_arena_init(&p->arena);
    p->n = n;
    p->leaves = jp_arena_alloc_array(&p->arena, p->n ? p->n : 1, sizeof *p->leaves);
    jp_plan_part *parts = jp_arena_alloc_array(&p->arena, p->n ? p->n : 1, sizeof *parts);
    if (!p->leaves || !parts) {
        jp_plan_free(p);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "cannot allocate a plan");
    }
    for (size_t i = 0; i < p->n; i++) {
        const jp_tensor *t = at(ctx, i);
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

static const jp_tensor *index_at(const void *ctx, size_t i) { return jp_index_at(ctx, i); }

static const jp_tensor *array_at(const void *ctx, size_t i) { return (const jp_tensor *)ctx + i; }

jp_code jp_plan_identity(jp_plan **out, const jp_index *ix, jp_dtype dtype, jp_err *err) {
    return identity(out, jp_index_count(ix), index_at, ix, dtype, err);
}

jp_code jp_plan_identity_tensors(jp_plan **out, const jp_tensor *tensors, size_t n, jp_dtype dtype,
                                 jp_err *err) {
    return identity(out, n, array_at, tensors, dtype, err);
}

bool jp_dtype_is_castable_float(jp_dtype dt) {
    return dt == JP_F16 || dt == JP_BF16 || dt == JP_F32 || dt == JP_F64;
}

jp_code jp_plan_cast_floats(jp_plan *p, jp_dtype dtype, jp_err *err) {
    if (!jp_dtype_is_castable_float(dtype))
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL,
                          "%s is not a dtype floats are cast to (float16, bfloat16, float32, float64)",
                          jp_dtype_numpy_name(dtype));
    for (size_t i = 0; i < p->n; i++)
        if (jp_dtype_is_castable_float(p->leaves[i].dtype)) p->leaves[i].dtype = dtype;
    return JP_OK;
}
