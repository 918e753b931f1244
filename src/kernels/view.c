/* Views: slicing and splitting (pointer and shape arithmetic), reshaping
 * without a copy where the strides allow, concatenation by permuting each
 * part into its slice of the destination, and the extent check readers use
 * before trusting a view's strides. */
#include <stdio.h>
#include <string.h>

#include "kernels.h"

static jp_code check_axis(const jp_view *v, int axis, jp_err *err) {
    if (v->ndim < 0 || v->ndim > JP_MAX_DIMS || axis < 0 || axis >= v->ndim)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL,
                          "axis %d of a tensor with %d dimensions", axis, v->ndim);
    return JP_OK;
}

jp_view jp_view_of_tensor(const jp_tensor *t) {
    jp_view v;
    memset(&v, 0, sizeof v);
    v.data = t->data;
    v.dtype = t->dtype;
    v.ndim = t->ndim;
    for (int d = 0; d < t->ndim && d < JP_MAX_DIMS; d++) {
        v.shape[d] = t->shape[d];
        v.strides[d] = t->strides[d];
    }
    return v;
}

jp_code jp_view_slice(jp_view *out, const jp_view *v, int axis, int64_t start, int64_t len,
                      jp_err *err) {
    jp_code rc = check_axis(v, axis, err);
    if (rc) return rc;
    if (start < 0 || len < 0 || start > v->shape[axis] || len > v->shape[axis] - start)
        return jp_err_set(err, JP_SHAPE, JP_NO_OFFSET, NULL,
                          "elements %lld..%lld of an axis of %lld", (long long)start,
                          (long long)start + (long long)len, (long long)v->shape[axis]);
    *out = *v;
    out->shape[axis] = len;
    if (len && v->data)
        out->data = (const unsigned char *)v->data +
                    start * v->strides[axis] * (int64_t)jp_dtype_size(v->dtype);
    return JP_OK;
}

jp_code jp_view_split(jp_view *out, const jp_view *v, int axis, int64_t count, int64_t index,
                      jp_err *err) {
    jp_code rc = check_axis(v, axis, err);
    if (rc) return rc;
    if (count <= 0 || v->shape[axis] % count != 0)
        return jp_err_set(err, JP_SHAPE, JP_NO_OFFSET, NULL,
                          "an axis of %lld does not split into %lld equal parts",
                          (long long)v->shape[axis], (long long)count);
    if (index < 0 || index >= count)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "part %lld of %lld",
                          (long long)index, (long long)count);
    int64_t len = v->shape[axis] / count;
    return jp_view_slice(out, v, axis, index * len, len, err);
}

jp_code jp_view_reshape(jp_view *out, const jp_view *v, int ndim, int64_t *new_shape,
                        jp_err *err) {
    if (ndim < 0 || ndim > JP_MAX_DIMS || v->ndim < 0 || v->ndim > JP_MAX_DIMS)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "%d dimensions (at most %d)", ndim,
                          JP_MAX_DIMS);
    uint64_t numel = 1, known = 1;
    int infer = -1;
    for (int d = 0; d < v->ndim; d++)
        if (v->shape[d] < 0 || jp_mul_overflow(numel, (uint64_t)v->shape[d], &numel))
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "a bad source shape");
    for (int d = 0; d < ndim; d++) {
        if (new_shape[d] == -1 && infer < 0) {
            infer = d;
            continue;
        }
        if (new_shape[d] < 0 || jp_mul_overflow(known, (uint64_t)new_shape[d], &known))
            return jp_err_set(err, JP_SHAPE, JP_NO_OFFSET, NULL, "dimension %d of the new shape is %lld",
                              d, (long long)new_shape[d]);
    }
    if (infer >= 0) {
        if (known == 0 || numel % known != 0)
            return jp_err_set(err, JP_SHAPE, JP_NO_OFFSET, NULL,
                              "%llu elements do not fill a shape with a -1 and %llu others",
                              (unsigned long long)numel, (unsigned long long)known);
        new_shape[infer] = (int64_t)(numel / known);
        known = numel;
    }
    if (known != numel)
        return jp_err_set(err, JP_SHAPE, JP_NO_OFFSET, NULL,
                          "%llu elements cannot take a shape of %llu", (unsigned long long)numel,
                          (unsigned long long)known);
    jp_view r = *v;
    r.ndim = ndim;
    for (int d = 0; d < ndim; d++) r.shape[d] = new_shape[d];
    /* Walk both shapes from the innermost axis in chunks: a run of source
     * axes that are contiguous with each other can be re-cut any way, and a
     * chunk of the new shape must end exactly where a source chunk ends. */
    int vd = ndim - 1;
    if (numel == 0 || v->ndim == 0) {
        for (int d = ndim - 1; d >= 0; d--) r.strides[d] = d == ndim - 1 ? 1 : r.strides[d + 1] * r.shape[d + 1];
        vd = -1;
    } else {
        int64_t base = v->strides[v->ndim - 1], tnum = 1, vnum = 1;
        for (int td = v->ndim - 1; td >= 0; td--) {
            tnum *= v->shape[td];
            if (td == 0 || (v->shape[td - 1] != 1 && v->strides[td - 1] != tnum * base)) {
                while (vd >= 0 && (vnum < tnum || r.shape[vd] == 1)) {
                    r.strides[vd] = vnum * base;
                    vnum *= r.shape[vd];
                    vd--;
                }
                if (vnum != tnum) break;
                if (td > 0) {
                    base = v->strides[td - 1];
                    tnum = vnum = 1;
                }
            }
        }
        if (vnum != tnum) vd = 0; /* not expressible: mark as failed */
    }
    if (vd != -1)
        return jp_err_set(err, JP_UNSUPPORTED, JP_NO_OFFSET, NULL,
                          "this strided view cannot take the new shape without a copy");
    *out = r;
    return JP_OK;
}

jp_code jp_concat_cast(void *dst, jp_dtype dst_dt, int axis, size_t count, const jp_view *parts,
                       const int *perm, jp_pool *pool, jp_err *err) {
    if (count == 0)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "nothing to concatenate");
    int nd = parts[0].ndim;
    jp_code rc = check_axis(&parts[0], axis, err);
    if (rc) return rc;
    /* The destination's shape and dense strides. */
    int64_t shape[JP_MAX_DIMS], strides[JP_MAX_DIMS];
    for (int d = 0; d < nd; d++) shape[d] = parts[0].shape[perm ? perm[d] : d];
    shape[axis] = 0;
    for (size_t k = 0; k < count; k++) {
        const jp_view *v = &parts[k];
        bool same = v->ndim == nd;
        for (int d = 0; same && d < nd; d++) {
            int a = perm ? perm[d] : d;
            same = a >= 0 && a < nd && (d == axis || v->shape[a] == shape[d]);
        }
        if (!same)
            return jp_err_set(err, JP_SHAPE, JP_NO_OFFSET, NULL,
                              "part %zu's shape does not match part 0's except along axis %d", k,
                              axis);
        uint64_t len;
        if (v->shape[perm ? perm[axis] : axis] < 0 ||
            jp_add_overflow((uint64_t)shape[axis], (uint64_t)v->shape[perm ? perm[axis] : axis], &len) ||
            len > (uint64_t)INT64_MAX)
            return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "the concatenated axis overflows");
        shape[axis] = (int64_t)len;
    }
    uint64_t numel = 1;
    for (int d = nd - 1; d >= 0; d--) {
        strides[d] = (int64_t)numel;
        if (jp_mul_overflow(numel, (uint64_t)shape[d], &numel) || numel > (uint64_t)INT64_MAX / 16)
            return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "the element count overflows");
    }
    int64_t at = 0, dsz = (int64_t)jp_dtype_size(dst_dt);
    for (size_t k = 0; k < count; k++) {
        const jp_view *v = &parts[k];
        rc = jp_permute_cast_strided((unsigned char *)dst + at * strides[axis] * dsz, dst_dt,
                                     strides, v->data, v->dtype, nd, v->shape, v->strides, perm,
                                     pool, err);
        if (rc) {
            if (err) {
                char msg[JP_ERR_MSG_MAX];
                snprintf(msg, sizeof msg, "part %zu: %s", k, err->msg);
                memcpy(err->msg, msg, sizeof msg);
            }
            return rc;
        }
        at += v->shape[perm ? perm[axis] : axis];
    }
    return JP_OK;
}

jp_code jp_strided_extent(int ndim, const int64_t *shape, const int64_t *strides, uint64_t *numel,
                          int64_t *lo, int64_t *hi, jp_err *err) {
    *numel = 1;
    *lo = *hi = 0;
    if (ndim < 0 || ndim > JP_MAX_DIMS)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "%d dimensions (at most %d)", ndim,
                          JP_MAX_DIMS);
    for (int a = 0; a < ndim; a++) {
        if (shape[a] < 0)
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "dimension %d has size %lld", a,
                              (long long)shape[a]);
        if (jp_mul_overflow(*numel, (uint64_t)shape[a], numel) || *numel > (uint64_t)INT64_MAX)
            return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "the element count overflows");
    }
    if (*numel == 0) return JP_OK; /* reaches nothing, whatever the strides */
    int64_t l = 0, h = 0, step;
    for (int a = 0; a < ndim; a++)
        if (__builtin_mul_overflow(strides[a], shape[a] - 1, &step) ||
            __builtin_add_overflow(step > 0 ? h : l, step, step > 0 ? &h : &l))
            return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "the strides overflow");
    *lo = l;
    *hi = h;
    return JP_OK;
}

/* Copy v into dense row-major bytes at dst one byte at a time (as a uint8
 * view with the item's bytes as a last axis), so its elements need no
 * alignment: msgpack and npy place data at any offset, and the kernels read
 * whole items. */
static jp_code gather_bytes(void *dst, const jp_view *v, jp_pool *pool, jp_err *err) {
    if (v->ndim >= JP_MAX_DIMS)
        return jp_err_set(err, JP_UNSUPPORTED, JP_NO_OFFSET, NULL,
                          "data not aligned to their item size in a tensor of %d dimensions", v->ndim);
    int64_t isz = (int64_t)jp_dtype_size(v->dtype), shape[JP_MAX_DIMS], strides[JP_MAX_DIMS];
    for (int d = 0; d < v->ndim; d++) {
        shape[d] = v->shape[d];
        strides[d] = v->strides[d] * isz;
    }
    shape[v->ndim] = isz;
    strides[v->ndim] = 1;
    return jp_permute_cast_strided(dst, JP_U8, NULL, v->data, JP_U8, v->ndim + 1, shape, strides, NULL,
                                   pool, err);
}

bool jp_view_misaligned(const jp_view *v) {
    size_t isz = jp_dtype_size(v->dtype);
    return v->data && isz > 1 && (uintptr_t)v->data % isz != 0;
}

jp_code jp_view_copy_dense(void *dst, const jp_view *v, jp_pool *pool, jp_err *err) {
    return jp_view_misaligned(v) ? gather_bytes(dst, v, pool, err)
                                 : jp_permute_cast_strided(dst, v->dtype, NULL, v->data, v->dtype, v->ndim,
                                                           v->shape, v->strides, NULL, pool, err);
}
