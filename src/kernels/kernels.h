/* Layout and dtype kernels: pure functions over buffers, no I/O. */
#ifndef JP_KERNELS_H
#define JP_KERNELS_H

#include "../common/common.h"

/* Copy a strided source into a dense row-major destination, permuting axes
 * and casting in one pass.
 *   src: element [0,...,0] of the source; src_strides in elements (torch's)
 *   shape: the source shape; perm: destination axis d takes source axis
 *          perm[d] (NULL = identity), so dst shape[d] = shape[perm[d]]
 *   dst: dense, jp_dtype_size(dst_dt) * numel bytes
 * Fails with JP_DTYPE for a pair it cannot cast and JP_RANGE when an integer
 * does not fit the narrower type (err->member left for the caller). */
jp_code jp_permute_cast(void *dst, jp_dtype dst_dt, const void *src, jp_dtype src_dt, int ndim,
                        const int64_t *shape, const int64_t *src_strides, const int *perm,
                        jp_err *err);

/* The elements a strided view reaches, relative to element [0,...,0]: the
 * first *lo and last *hi (in elements; lo <= 0 <= hi when strides may be
 * negative). *numel is the element count; lo and hi are 0 when it is 0.
 * JP_ARGUMENT for a negative size, JP_LIMIT when the offsets overflow. Callers
 * check [lo, hi] against the storage before reading. */
jp_code jp_strided_extent(int ndim, const int64_t *shape, const int64_t *strides, uint64_t *numel,
                          int64_t *lo, int64_t *hi, jp_err *err);

#endif /* JP_KERNELS_H */
