/* Strided permute + cast: every element of a strided source, read once,
 * cast, and written once to its place in the destination.
 *
 * The axes are first put in destination order, size-1 axes dropped and
 * neighbours that are contiguous in both source and destination merged, so a
 * contiguous copy becomes one run and a conv permutation a 3-d problem. */
#include "kernels.h"

#include <stdio.h>
#include <string.h>

#include "cast.h"

#define RUN 256 /* elements gathered per pass when the inner axis is strided */

/* The problem after normalisation: nd axes in destination order, strides in
 * bytes. */
typedef struct plan {
    int nd;
    int64_t n[JP_MAX_DIMS], ss[JP_MAX_DIMS], ds[JP_MAX_DIMS];
    const unsigned char *src;
    unsigned char *dst;
    jp_cast cast;
} plan;

/* Casts the run of n elements at s (source stride ss bytes) to d (stride ds);
 * returns false when a value does not fit. */
static bool run_cast(const plan *p, unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss,
                     int64_t n) {
    const jp_cast *c = &p->cast;
    int64_t ssz = (int64_t)c->src_size, dsz = (int64_t)c->dst_size;
    if (ss == ssz && ds == dsz) return jp_cast_run(c, d, s, (size_t)n) == (size_t)n;
    _Alignas(64) unsigned char in[RUN * 16], out[RUN * 16];
    for (int64_t done = 0; done < n;) {
        int64_t k = n - done < RUN ? n - done : RUN;
        for (int64_t i = 0; i < k; i++) memcpy(in + i * ssz, s + (done + i) * ss, (size_t)ssz);
        if (jp_cast_run(c, out, in, (size_t)k) != (size_t)k) return false;
        for (int64_t i = 0; i < k; i++) memcpy(d + (done + i) * ds, out + i * dsz, (size_t)dsz);
        done += k;
    }
    return true;
}

static bool run_plan(const plan *p) {
    if (p->nd == 0) return run_cast(p, p->dst, 0, p->src, 0, 1);
    int inner = p->nd - 1;
    int64_t idx[JP_MAX_DIMS] = {0};
    const unsigned char *s = p->src;
    unsigned char *d = p->dst;
    for (;;) {
        if (!run_cast(p, d, p->ds[inner], s, p->ss[inner], p->n[inner])) return false;
        int a = inner - 1;
        for (; a >= 0; a--) {
            s += p->ss[a];
            d += p->ds[a];
            if (++idx[a] < p->n[a]) break;
            s -= p->ss[a] * p->n[a];
            d -= p->ds[a] * p->n[a];
            idx[a] = 0;
        }
        if (a < 0) return true;
    }
}

/* Finds the first element, in the source's row-major order, that does not
 * fit, and says which and why. */
static jp_code range_error(const plan *p, const unsigned char *src, int ndim, const int64_t *shape,
                           const int64_t *src_strides, jp_err *err) {
    const jp_cast *c = &p->cast;
    int64_t idx[JP_MAX_DIMS] = {0};
    unsigned char out[16];
    for (;;) {
        const unsigned char *s = src;
        for (int a = 0; a < ndim; a++) s += idx[a] * src_strides[a] * (int64_t)c->src_size;
        if (jp_cast_run(c, out, s, 1) != 1) {
            char where[JP_MAX_DIMS * 22 + 3], value[48];
            size_t w = 0;
            where[w++] = '[';
            for (int a = 0; a < ndim; a++)
                w += (size_t)snprintf(where + w, sizeof where - w, a ? ", %lld" : "%lld",
                                      (long long)idx[a]);
            snprintf(where + w, sizeof where - w, "]");
            jp_cast_format(c->src, s, value, sizeof value);
            const char *range = jp_cast_range_text(c->dst);
            return jp_err_set(err, JP_RANGE, JP_NO_OFFSET, NULL,
                              "element %s is %s, which %s cannot hold%s%s%s", where, value,
                              jp_dtype_numpy_name(c->dst), *range ? " (" : "", range,
                              *range ? ")" : "");
        }
        int a = ndim - 1;
        for (; a >= 0; a--) {
            if (++idx[a] < shape[a]) break;
            idx[a] = 0;
        }
        if (a < 0) break;
    }
    /* run_plan saw a failure, so the scan finds it; reaching here is a bug. */
    return jp_err_set(err, JP_RANGE, JP_NO_OFFSET, NULL, "a value does not fit %s",
                      jp_dtype_numpy_name(c->dst));
}

jp_code jp_permute_cast(void *dst, jp_dtype dst_dt, const void *src, jp_dtype src_dt, int ndim,
                        const int64_t *shape, const int64_t *src_strides, const int *perm,
                        jp_err *err) {
    plan p;
    memset(&p, 0, sizeof p);
    jp_code rc = jp_cast_plan(&p.cast, dst_dt, src_dt, err);
    if (rc) return rc;
    if (ndim < 0 || ndim > JP_MAX_DIMS)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "%d dimensions (at most %d)", ndim,
                          JP_MAX_DIMS);
    int64_t dense[JP_MAX_DIMS];
    bool seen[JP_MAX_DIMS] = {false};
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "dimension %d has size %lld", d,
                              (long long)shape[d]);
        int a = perm ? perm[d] : d;
        if (a < 0 || a >= ndim || seen[a])
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL,
                              "perm is not a permutation of 0..%d", ndim - 1);
        seen[a] = true;
    }
    for (int d = ndim - 1; d >= 0; d--) {
        dense[d] = (int64_t)numel;
        if (jp_mul_overflow(numel, (uint64_t)shape[perm ? perm[d] : d], &numel) ||
            numel > (uint64_t)INT64_MAX / 16)
            return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "the element count overflows");
    }
    if (numel == 0) return JP_OK;
    /* Destination order, bytes, size-1 axes dropped, mergeable neighbours merged. */
    int64_t ssz = (int64_t)p.cast.src_size, dsz = (int64_t)p.cast.dst_size;
    for (int d = 0; d < ndim; d++) {
        int a = perm ? perm[d] : d;
        if (shape[a] == 1) continue;
        int64_t ss = (src_strides ? src_strides[a] : 0) * ssz, ds = dense[d] * dsz;
        if (!src_strides) {
            ss = ssz;
            for (int b = a + 1; b < ndim; b++) ss *= shape[b];
        }
        if (p.nd > 0 && p.ss[p.nd - 1] == ss * shape[a] && p.ds[p.nd - 1] == ds * shape[a]) {
            p.n[p.nd - 1] *= shape[a];
            p.ss[p.nd - 1] = ss;
            p.ds[p.nd - 1] = ds;
            continue;
        }
        p.n[p.nd] = shape[a];
        p.ss[p.nd] = ss;
        p.ds[p.nd] = ds;
        p.nd++;
    }
    p.src = src;
    p.dst = dst;
    if (run_plan(&p)) return JP_OK;
    int64_t strides[JP_MAX_DIMS];
    for (int a = ndim - 1; a >= 0; a--)
        strides[a] = src_strides ? src_strides[a] : (a == ndim - 1 ? 1 : strides[a + 1] * shape[a + 1]);
    return range_error(&p, src, ndim, shape, strides, err);
}

jp_code jp_strided_extent(int ndim, const int64_t *shape, const int64_t *strides, uint64_t *numel,
                          int64_t *lo, int64_t *hi, jp_err *err) {
    *numel = 1;
    *lo = *hi = 0;
    if (ndim < 0 || ndim > JP_MAX_DIMS)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "%d dimensions (at most %d)", ndim,
                          JP_MAX_DIMS);
    int64_t l = 0, h = 0;
    for (int a = 0; a < ndim; a++) {
        if (shape[a] < 0)
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "dimension %d has size %lld", a,
                              (long long)shape[a]);
        if (jp_mul_overflow(*numel, (uint64_t)shape[a], numel) || *numel > (uint64_t)INT64_MAX)
            return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "the element count overflows");
        int64_t step;
        if (shape[a] > 0 && __builtin_mul_overflow(strides[a], shape[a] - 1, &step))
            return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "the strides overflow");
        if (shape[a] > 0 && __builtin_add_overflow(step > 0 ? h : l, step, step > 0 ? &h : &l))
            return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "the strides overflow");
    }
    if (*numel) {
        *lo = l;
        *hi = h;
    }
    return JP_OK;
}
