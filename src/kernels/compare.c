/* Comparing two tensors element by element (kernels.h, jp_compare). */
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cast.h"

#define CHUNK_BYTES (4u << 20) /* of either tensor's elements, or their float64s, at a time */

static bool is_complex(jp_dtype dt) { return dt == JP_C32 || dt == JP_C64 || dt == JP_C128; }

/* Elements [first, first + n) of v in row-major order, their bytes packed
 * at dst. memcpy per run, so any alignment is fine. */
static void gather(unsigned char *dst, const jp_view *v, uint64_t first, uint64_t n) {
    size_t es = jp_dtype_size(v->dtype);
    int nd = v->ndim;
    int64_t idx[JP_MAX_DIMS];
    uint64_t rest = first;
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = v->shape[d] ? (int64_t)(rest % (uint64_t)v->shape[d]) : 0;
        rest = v->shape[d] ? rest / (uint64_t)v->shape[d] : 0;
    }
    bool rows = nd > 0 && v->strides[nd - 1] == 1;
    for (uint64_t done = 0; done < n;) {
        const unsigned char *p = v->data;
        for (int d = 0; d < nd; d++) p += idx[d] * v->strides[d] * (int64_t)es;
        uint64_t run = rows ? (uint64_t)(v->shape[nd - 1] - idx[nd - 1]) : 1;
        if (run > n - done) run = n - done;
        memcpy(dst + done * es, p, (size_t)(run * es));
        done += run;
        /* advance the odometer by run elements */
        uint64_t step = run;
        for (int d = nd - 1; d >= 0 && step; d--) {
            uint64_t at = (uint64_t)idx[d] + step;
            idx[d] = (int64_t)(at % (uint64_t)v->shape[d]);
            step = at / (uint64_t)v->shape[d];
        }
    }
}

static void note(jp_compare_stats *s, uint64_t i, double diff, double rel, bool bad) {
    if (diff > s->max_abs) s->max_abs = diff;
    if (rel > s->max_rel) s->max_rel = rel;
    if (bad) {
        if (s->differing == 0) s->first = (int64_t)i;
        s->differing++;
    }
}

jp_code jp_compare(const jp_view *a, const jp_view *b, double atol, double rtol, jp_compare_stats *out,
                   jp_err *err) {
    memset(out, 0, sizeof *out);
    out->first = -1;
    if (a->ndim != b->ndim)
        return jp_err_set(err, JP_SHAPE, JP_NO_OFFSET, NULL, "%d dimensions against %d", a->ndim, b->ndim);
    uint64_t numel = 1;
    for (int d = 0; d < a->ndim; d++) {
        if (a->shape[d] != b->shape[d] || a->shape[d] < 0)
            return jp_err_set(err, JP_SHAPE, JP_NO_OFFSET, NULL, "dimension %d is %lld against %lld", d,
                              (long long)a->shape[d], (long long)b->shape[d]);
        numel *= (uint64_t)a->shape[d];
    }
    out->numel = numel;
    bool cplx = is_complex(a->dtype);
    if (cplx != is_complex(b->dtype))
        return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, NULL, "%s against %s: one is complex",
                          jp_dtype_numpy_name(a->dtype), jp_dtype_numpy_name(b->dtype));
    jp_dtype wide = cplx ? JP_C128 : JP_F64;
    jp_cast probe;
    jp_err ignored;
    /* a type with no float64 reading (packed float4 pairs) is compared by its bytes */
    bool values = !jp_cast_plan(&probe, wide, a->dtype, &ignored) && !jp_cast_plan(&probe, wide, b->dtype, &ignored);
    if (!values && a->dtype != b->dtype)
        return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, NULL, "%s and %s have no common type to compare in",
                          jp_dtype_numpy_name(a->dtype), jp_dtype_numpy_name(b->dtype));
    out->values = values;
    size_t ea = jp_dtype_size(a->dtype), eb = jp_dtype_size(b->dtype), ew = jp_dtype_size(wide);
    bool same = a->dtype == b->dtype;
    /* each side's values as float64 (complex128), and for one dtype their bytes */
    uint64_t per = CHUNK_BYTES / ew;
    if (per == 0) per = 1;
    unsigned char *ra = malloc((size_t)per * ea + 1), *rb = malloc((size_t)per * eb + 1);
    double *wa = malloc((size_t)per * ew + 8), *wb = malloc((size_t)per * ew + 8);
    jp_code rc = ra && rb && wa && wb ? JP_OK : jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    out->bits_equal = same;
    size_t lanes = cplx ? 2 : 1;
    for (uint64_t at = 0; at < numel && !rc; at += per) {
        uint64_t n = numel - at < per ? numel - at : per;
        gather(ra, a, at, n);
        gather(rb, b, at, n);
        if (same && out->bits_equal && memcmp(ra, rb, (size_t)(n * ea)) != 0) out->bits_equal = false;
        if (!values) {
            for (uint64_t i = 0; i < n; i++)
                if (memcmp(ra + i * ea, rb + i * ea, ea) != 0) note(out, at + i, 0, 0, true);
            continue;
        }
        int64_t len = (int64_t)n;
        if ((rc = jp_permute_cast(wa, wide, ra, a->dtype, 1, &len, NULL, NULL, err)) ||
            (rc = jp_permute_cast(wb, wide, rb, b->dtype, 1, &len, NULL, NULL, err)))
            break;
        for (uint64_t i = 0; i < n; i++) {
            double x = wa[i * lanes], y = wb[i * lanes], xi = cplx ? wa[i * 2 + 1] : 0, yi = cplx ? wb[i * 2 + 1] : 0;
            bool xnan = isnan(x) || isnan(xi), ynan = isnan(y) || isnan(yi);
            if (xnan || ynan) { /* NaN matches NaN only */
                note(out, at + i, 0, 0, xnan != ynan);
                continue;
            }
            double diff = cplx ? hypot(x - y, xi - yi) : fabs(x - y), mag = cplx ? hypot(y, yi) : fabs(y);
            if (isnan(diff)) diff = (x == y && xi == yi) ? 0 : INFINITY; /* inf - inf */
            double rel = diff == 0 ? 0 : mag > 0 ? diff / mag : INFINITY;
            note(out, at + i, diff, rel, !(diff <= atol + rtol * mag));
        }
    }
    free(ra);
    free(rb);
    free(wa);
    free(wb);
    return rc;
}
