/* Plans that need no matching, and freeing plans. */
#include "plan.h"

#include "constants.h"

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
        part->from.source = (uint32_t)i;
        part->from.axis = -1;
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

bool jp_index_aliases(const jp_index *ix, int64_t *alias_of, jp_arena *a) {
    size_t n = jp_index_count(ix), cap = 16;
    while (cap < 2 * n + 1) cap <<= 1;
    int64_t *head = jp_arena_alloc_array(a, cap, sizeof *head), *next = jp_arena_alloc_array(a, n + 1, sizeof *next);
    if (!head || !next) return false;
    memset(head, 0xff, cap * sizeof *head);
    for (size_t i = 0; i < n; i++) {
        const jp_tensor *t = jp_index_at(ix, i);
        alias_of[i] = -1;
        if (!t->data || !(t->flags & JP_TENSOR_SHARED)) continue;
        size_t h = (size_t)(((uintptr_t)t->data >> 4) * 0x9e3779b97f4a7c15ull) & (cap - 1);
        for (int64_t j = head[h]; j >= 0; j = next[j]) {
            const jp_tensor *u = jp_index_at(ix, (size_t)j);
            if (u->data == t->data && u->dtype == t->dtype && u->ndim == t->ndim &&
                memcmp(u->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim) == 0 &&
                memcmp(u->strides, t->strides, sizeof(int64_t) * (size_t)t->ndim) == 0) {
                alias_of[i] = j;
                break;
            }
        }
        if (alias_of[i] < 0) {
            next[i] = head[h];
            head[h] = (int64_t)i;
        }
    }
    return true;
}

static bool is_step_counter(const char *name) {
    static const char suffix[] = "num_batches_tracked";
    size_t n = strlen(name), k = sizeof suffix - 1;
    return n >= k && strcmp(name + n - k, suffix) == 0 && (n == k || name[n - k - 1] == '.' || name[n - k - 1] == '/');
}

/* A slice a leaf takes of a source tensor. */
typedef struct taken {
    uint32_t source;
    int32_t axis;
    int64_t start, end;
} taken;

static int taken_order(const void *a, const void *b) {
    const taken *x = a, *y = b;
    if (x->source != y->source) return x->source < y->source ? -1 : 1;
    if (x->axis != y->axis) return x->axis < y->axis ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* The slices of one source (run[0..n), sorted) along one axis of size dim:
 * the first range [*lo, *hi) none of them covers; false when they cover it
 * all, or when they are along different axes (not judged). */
static bool first_gap(const taken *run, size_t n, int64_t dim, int64_t *lo, int64_t *hi) {
    if (run[0].axis != run[n - 1].axis) return false;
    int64_t at = 0;
    for (size_t k = 0; k < n && at < dim; k++) {
        if (run[k].start > at) break;
        if (run[k].end > at) at = run[k].end;
    }
    if (at >= dim) return false;
    *lo = at;
    *hi = dim;
    for (size_t k = 0; k < n; k++)
        if (run[k].start > at && run[k].start < *hi) *hi = run[k].start;
    return true;
}

/* Notes that a part takes source (whole, or a slice along axis). */
static void take(uint8_t *used, taken *slices, size_t *nslices, size_t n, const jp_plan_ref *ref) {
    if (ref->source >= n) return;
    if (ref->axis < 0) {
        used[ref->source] = 1;
        return;
    }
    if (!used[ref->source]) used[ref->source] = 2;
    slices[(*nslices)++] = (taken){ref->source, ref->axis, ref->start, ref->start + ref->len};
}

jp_code jp_plan_list_unused(jp_plan *p, const jp_index *src, jp_err *err) {
    size_t n = jp_index_count(src), k = 0, nslices = 0;
    jp_arena tmp;
    jp_arena_init(&tmp);
    /* used: 0 not taken, 1 taken whole, 2 taken in slices */
    uint8_t *used = jp_arena_alloc_array(&tmp, n + 1, 1);
    int64_t *alias_of = jp_arena_alloc_array(&tmp, n + 1, sizeof *alias_of);
    for (size_t i = 0; i < p->n; i++) nslices += 2 * (size_t)p->leaves[i].nparts;
    taken *slices = jp_arena_alloc_array(&tmp, nslices + 1, sizeof *slices);
    /* partly[i]: why source i, taken only in slices, is not taken whole */
    const char **partly = jp_arena_alloc_array(&tmp, n + 1, sizeof *partly);
    if (!used || !alias_of || !slices || !partly || !jp_index_aliases(src, alias_of, &tmp)) {
        jp_arena_free(&tmp);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    }
    memset(used, 0, n + 1);
    memset(partly, 0, (n + 1) * sizeof *partly);
    nslices = 0;
    for (size_t i = 0; i < p->n; i++)
        for (uint32_t q = 0; q < p->leaves[i].nparts; q++) {
            const jp_plan_part *part = &p->leaves[i].parts[q];
            take(used, slices, &nslices, n, &part->from);
            if (part->has_plus) take(used, slices, &nslices, n, &part->plus);
        }
    qsort(slices, nslices, sizeof *slices, taken_order);
    /* A source taken only in slices that leave part of it out is listed,
     * with the first range no leaf takes. */
    jp_code rc = JP_OK;
    for (size_t a = 0, b; a < nslices && !rc; a = b) {
        b = a + 1;
        while (b < nslices && slices[b].source == slices[a].source) b++;
        uint32_t i = slices[a].source;
        const jp_tensor *t = jp_index_at(src, i);
        int64_t lo, hi;
        if (used[i] == 2 && slices[a].axis < t->ndim &&
            first_gap(slices + a, b - a, t->shape[slices[a].axis], &lo, &hi)) {
            partly[i] = jp_arena_printf(&p->arena,
                                        "only partly taken: no leaf takes [%lld, %lld) of its "
                                        "axis %d (of %lld)",
                                        (long long)lo, (long long)hi, (int)slices[a].axis,
                                        (long long)t->shape[slices[a].axis]);
            if (!partly[i]) rc = JP_NO_MEMORY;
        }
    }
    /* twin[r]: the first tensor of r's tied group (r and its copies) that a
     * leaf takes, or -1: any copy taken makes the others harmless. */
    int64_t *twin = rc ? NULL : jp_arena_alloc_array(&tmp, n + 1, sizeof *twin);
    if (!rc && !twin) rc = JP_NO_MEMORY;
    for (size_t i = 0; i < n && twin; i++) twin[i] = -1;
    for (size_t i = 0; i < n && twin; i++) {
        size_t r = alias_of[i] >= 0 ? (size_t)alias_of[i] : i;
        if (used[i] && twin[r] < 0) twin[r] = (int64_t)i;
    }
    for (size_t i = 0; i < n; i++) k += !used[i] || partly[i];
    p->nunused = 0;
    p->unused = rc ? NULL : jp_arena_alloc_array(&p->arena, k ? k : 1, sizeof *p->unused);
    if (!p->unused) rc = JP_NO_MEMORY;
    for (size_t i = 0; i < n && !rc; i++) {
        if (used[i] && !partly[i]) continue;
        jp_plan_unused *u = &p->unused[p->nunused++];
        const jp_tensor *t = jp_index_at(src, i);
        int64_t tied = twin[alias_of[i] >= 0 ? alias_of[i] : (int64_t)i];
        const char *kind;
        u->source = (uint32_t)i;
        u->harmless = false;
        if (partly[i]) {
            u->why = partly[i];
        } else if (is_step_counter(t->name)) {
            u->harmless = true;
            u->why = "a BatchNorm step counter; JAX models do not keep one";
        } else if (tied >= 0) { /* before the constants: no data to read */
            u->harmless = true;
            u->why = jp_arena_printf(&p->arena, "tied to %s (same storage), which is taken",
                                     jp_index_at(src, (size_t)tied)->name);
        } else if ((kind = jp_constant_kind(t, &tmp)) != NULL) {
            u->harmless = true;
            u->why = jp_arena_strdup(&p->arena, kind);
        } else {
            u->why = "no leaf of the target takes it";
        }
        if (!u->why) rc = JP_NO_MEMORY;
    }
    jp_arena_free(&tmp);
    return rc ? jp_err_set(err, rc, JP_NO_OFFSET, NULL, "out of memory") : JP_OK;
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

bool jp_dtype_is_integer(jp_dtype dt) { return dt >= JP_U8 && dt <= JP_I64; }

jp_code jp_plan_cast_floats(jp_plan *p, jp_dtype dtype, jp_err *err) {
    if (!jp_dtype_is_castable_float(dtype))
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL,
                          "%s is not a dtype floats are cast to (float16, bfloat16, float32, float64)",
                          jp_dtype_numpy_name(dtype));
    for (size_t i = 0; i < p->n; i++)
        if (jp_dtype_is_castable_float(p->leaves[i].dtype)) p->leaves[i].dtype = dtype;
    return JP_OK;
}
