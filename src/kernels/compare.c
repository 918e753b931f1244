/* Comparing two tensors element by element (kernels.h, jp_compare). */
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cast.h"

#define CHUNK_BYTES (4u << 20) /* of float64s (complex128s) per side at a time */

static bool is_complex(jp_dtype dt) { return dt == JP_C32 || dt == JP_C64 || dt == JP_C128; }

/* One comparison: its tolerance, its buffers (a piece of either side's
 * bytes, then its values) and what it found so far. */
typedef struct cmp {
    double atol, rtol;
    jp_dtype wide;                /* float64, or complex128 */
    bool values, same, cplx;
    uint64_t per;                 /* elements a piece holds at most */
    unsigned char *ra, *rb;
    double *wa, *wb;
    jp_compare_stats *st;
} cmp;

static void note(jp_compare_stats *s, uint64_t i, double diff, double rel, bool bad) {
    if (diff > s->max_abs) s->max_abs = diff;
    if (rel > s->max_rel) s->max_rel = rel;
    if (bad) {
        if (s->differing == 0) s->first = (int64_t)i;
        s->differing++;
    }
}

static uint64_t numel_of(const jp_view *v) {
    uint64_t n = 1;
    for (int d = 0; d < v->ndim; d++) n *= (uint64_t)v->shape[d];
    return n;
}

/* Compare a and b, n elements (at most c->per) whose first is element
 * `base` of the whole, made dense first. */
static jp_code compare_piece(cmp *c, const jp_view *a, const jp_view *b, uint64_t base, uint64_t n, jp_err *err) {
    jp_code rc;
    if ((rc = jp_view_copy_dense(c->ra, a, NULL, err)) || (rc = jp_view_copy_dense(c->rb, b, NULL, err))) return rc;
    size_t ea = jp_dtype_size(a->dtype);
    jp_compare_stats *st = c->st;
    if (c->same && st->bits_equal && memcmp(c->ra, c->rb, (size_t)(n * ea)) != 0) st->bits_equal = false;
    if (!c->values) {
        for (uint64_t i = 0; i < n; i++)
            if (memcmp(c->ra + i * ea, c->rb + i * ea, ea) != 0) note(st, base + i, 0, 0, true);
        return JP_OK;
    }
    int64_t len = (int64_t)n;
    if ((rc = jp_permute_cast(c->wa, c->wide, c->ra, a->dtype, 1, &len, NULL, NULL, err)) ||
        (rc = jp_permute_cast(c->wb, c->wide, c->rb, b->dtype, 1, &len, NULL, NULL, err)))
        return rc;
    size_t lanes = c->cplx ? 2 : 1;
    for (uint64_t i = 0; i < n; i++) {
        double x = c->wa[i * lanes], y = c->wb[i * lanes];
        double xi = c->cplx ? c->wa[i * 2 + 1] : 0, yi = c->cplx ? c->wb[i * 2 + 1] : 0;
        bool xnan = isnan(x) || isnan(xi), ynan = isnan(y) || isnan(yi);
        if (xnan || ynan) { /* NaN matches NaN only */
            note(st, base + i, 0, 0, xnan != ynan);
            continue;
        }
        double diff = c->cplx ? hypot(x - y, xi - yi) : fabs(x - y), mag = c->cplx ? hypot(y, yi) : fabs(y);
        if (isnan(diff)) diff = (x == y && xi == yi) ? 0 : INFINITY; /* inf - inf */
        double rel = diff == 0 ? 0 : mag > 0 ? diff / mag : INFINITY;
        note(st, base + i, diff, rel, !(diff <= c->atol + c->rtol * mag));
    }
    return JP_OK;
}

/* v at index i of its first axis, that axis dropped. */
static jp_view at_index(const jp_view *v, int64_t i) {
    jp_view s = *v;
    s.data = (const unsigned char *)v->data + i * v->strides[0] * (int64_t)jp_dtype_size(v->dtype);
    s.ndim = v->ndim - 1;
    memmove(s.shape, v->shape + 1, (size_t)s.ndim * sizeof s.shape[0]);
    memmove(s.strides, v->strides + 1, (size_t)s.ndim * sizeof s.strides[0]);
    return s;
}

/* Compare a and b (element `base` of the whole first) in pieces of whole
 * rows of their first axis, or one index of it at a time when a row alone
 * is more than a piece. */
static jp_code compare_views(cmp *c, const jp_view *a, const jp_view *b, uint64_t base, jp_err *err) {
    uint64_t n = numel_of(a);
    if (n <= c->per) return n ? compare_piece(c, a, b, base, n, err) : JP_OK;
    uint64_t inner = n / (uint64_t)a->shape[0];
    jp_code rc = JP_OK;
    if (inner > c->per) {
        for (int64_t i = 0; i < a->shape[0] && !rc; i++) {
            jp_view sa = at_index(a, i), sb = at_index(b, i);
            rc = compare_views(c, &sa, &sb, base + (uint64_t)i * inner, err);
        }
        return rc;
    }
    int64_t rows = (int64_t)(c->per / inner);
    for (int64_t r = 0; r < a->shape[0] && !rc; r += rows) {
        int64_t k = a->shape[0] - r < rows ? a->shape[0] - r : rows;
        jp_view sa, sb;
        if (!(rc = jp_view_slice(&sa, a, 0, r, k, err)) && !(rc = jp_view_slice(&sb, b, 0, r, k, err)))
            rc = compare_piece(c, &sa, &sb, base + (uint64_t)r * inner, (uint64_t)k * inner, err);
    }
    return rc;
}

jp_code jp_compare(const jp_view *a, const jp_view *b, double atol, double rtol, jp_compare_stats *out,
                   jp_err *err) {
    memset(out, 0, sizeof *out);
    out->first = -1;
    if (a->ndim != b->ndim)
        return jp_err_set(err, JP_SHAPE, JP_NO_OFFSET, NULL, "%d dimensions against %d", a->ndim, b->ndim);
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d] || a->shape[d] < 0)
            return jp_err_set(err, JP_SHAPE, JP_NO_OFFSET, NULL, "dimension %d is %lld against %lld", d,
                              (long long)a->shape[d], (long long)b->shape[d]);
    out->numel = numel_of(a);
    cmp c = {.atol = atol, .rtol = rtol, .cplx = is_complex(a->dtype), .same = a->dtype == b->dtype, .st = out};
    if (c.cplx != is_complex(b->dtype))
        return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, NULL, "%s against %s: one is complex",
                          jp_dtype_numpy_name(a->dtype), jp_dtype_numpy_name(b->dtype));
    c.wide = c.cplx ? JP_C128 : JP_F64;
    jp_cast probe;
    jp_err ignored;
    /* a type with no float64 reading (packed float4 pairs) is compared by its bytes */
    c.values = !jp_cast_plan(&probe, c.wide, a->dtype, &ignored) && !jp_cast_plan(&probe, c.wide, b->dtype, &ignored);
    if (!c.values && !c.same)
        return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, NULL, "%s and %s have no common type to compare in",
                          jp_dtype_numpy_name(a->dtype), jp_dtype_numpy_name(b->dtype));
    out->values = c.values;
    out->bits_equal = c.same;
    size_t ew = jp_dtype_size(c.wide);
    c.per = CHUNK_BYTES / ew;
    c.ra = malloc((size_t)c.per * jp_dtype_size(a->dtype) + 1);
    c.rb = malloc((size_t)c.per * jp_dtype_size(b->dtype) + 1);
    c.wa = malloc((size_t)c.per * ew + 8);
    c.wb = malloc((size_t)c.per * ew + 8);
    jp_code rc = c.ra && c.rb && c.wa && c.wb ? compare_views(&c, a, b, 0, err)
                                              : jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    free(c.ra);
    free(c.rb);
    free(c.wa);
    free(c.wb);
    return rc;
}
