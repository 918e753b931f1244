/* Layout and dtype kernels: pure functions over buffers, no I/O.
 *
 * Casts agree bit for bit with numpy and ml_dtypes (see cast.c for the
 * rules); integer narrowing and float -> integer refuse values that would
 * change (JP_RANGE) instead of wrapping. Large tensors are cut into blocks
 * that a jp_pool spreads over its threads; each output byte belongs to one
 * block, so the bytes never depend on the thread count. */
#ifndef JP_KERNELS_H
#define JP_KERNELS_H

#include "../common/common.h"
#include "../common/pool.h"

/* Copy a strided source into a dense row-major destination, permuting axes
 * and casting in one pass.
 *   src: element [0,...,0] of the source; src_strides in elements (torch's;
 *        NULL = dense row-major)
 *   shape: the source shape; perm: destination axis d takes source axis
 *          perm[d] (NULL = identity), so dst shape[d] = shape[perm[d]]
 *   dst: dense, jp_dtype_size(dst_dt) * numel bytes
 * Fails with JP_DTYPE for a pair it cannot cast and JP_RANGE when a value
 * does not fit the target type: the message names the first such element in
 * the source's row-major order and its value (err->member left for the
 * caller). After a failure the destination holds partial output. */
jp_code jp_permute_cast(void *dst, jp_dtype dst_dt, const void *src, jp_dtype src_dt, int ndim,
                        const int64_t *shape, const int64_t *src_strides, const int *perm,
                        jp_err *err);

/* The general form. dst_strides (elements, one per destination axis; NULL =
 * dense row-major) lets the destination be a slice of a larger tensor, which
 * is how jp_concat_cast writes each part; destination elements must not
 * overlap. pool spreads a large tensor over its threads (NULL = the calling
 * thread only); tensors under about 1 MiB always stay on the calling thread. */
jp_code jp_permute_cast_strided(void *dst, jp_dtype dst_dt, const int64_t *dst_strides,
                                const void *src, jp_dtype src_dt, int ndim, const int64_t *shape,
                                const int64_t *src_strides, const int *perm, jp_pool *pool,
                                jp_err *err);

/* ---- views: split, concatenate, reshape */

/* A strided view of tensor data, as a reader's jp_tensor describes one. */
typedef struct jp_view {
    const void *data; /* element [0,...,0]; may be NULL when numel is 0 */
    jp_dtype dtype;
    int ndim;
    int64_t shape[JP_MAX_DIMS];
    int64_t strides[JP_MAX_DIMS]; /* in elements */
} jp_view;

/* The view of a tensor from an index. */
jp_view jp_view_of_tensor(const jp_tensor *t);

/* Elements [start, start + len) along axis: a split is a slice, no copy.
 * JP_SHAPE when the range is outside the axis. */
jp_code jp_view_slice(jp_view *out, const jp_view *v, int axis, int64_t start, int64_t len,
                      jp_err *err);

/* Part `index` of `count` equal parts along axis (a fused qkv (3E, E) is
 * three (E, E) parts along axis 0; LSTM gates are four along axis 0).
 * JP_SHAPE when the axis does not divide evenly. */
jp_code jp_view_split(jp_view *out, const jp_view *v, int axis, int64_t count, int64_t index,
                      jp_err *err);

/* The same elements with a new shape, without copying, when the strides
 * allow it (as torch's view does). new_shape may hold one -1, which is
 * inferred and written back. JP_SHAPE when the element counts differ,
 * JP_UNSUPPORTED when the source's strides need a copy first (permute it
 * into a dense buffer, then reshape that). */
jp_code jp_view_reshape(jp_view *out, const jp_view *v, int ndim, int64_t *new_shape,
                        jp_err *err);

/* A dense row-major copy of v's elements, in its dtype, at dst; a view
 * whose items are not aligned to their size (msgpack and npy data at any
 * offset) is copied byte by byte. */
jp_code jp_view_copy_dense(void *dst, const jp_view *v, jp_pool *pool, jp_err *err);
/* Whether v's first item sits off a multiple of its size (so are all). */
bool jp_view_misaligned(const jp_view *v);

/* Concatenate count parts along destination axis `axis` into dense dst of
 * dst_dt, each part permuted by perm (NULL = identity; the same for every
 * part) and cast on the way. The parts' permuted shapes must agree except
 * along axis (JP_SHAPE otherwise). Errors in part k say "part k". */
jp_code jp_concat_cast(void *dst, jp_dtype dst_dt, int axis, size_t count, const jp_view *parts,
                       const int *perm, jp_pool *pool, jp_err *err);

/* The elements a strided view reaches, relative to element [0,...,0]: the
 * first *lo and last *hi (in elements; lo <= 0 <= hi when strides may be
 * negative). *numel is the element count; lo and hi are 0 when it is 0.
 * JP_ARGUMENT for a negative size, JP_LIMIT when the offsets overflow. Callers
 * check [lo, hi] against the storage before reading. */
jp_code jp_strided_extent(int ndim, const int64_t *shape, const int64_t *strides, uint64_t *numel,
                          int64_t *lo, int64_t *hi, jp_err *err);

/* ---- comparing two tensors */

typedef struct jp_compare_stats {
    uint64_t numel;
    uint64_t differing;           /* elements outside the tolerance (NaN matches only NaN) */
    int64_t first;                /* row-major index of the first of them, or -1 */
    double max_abs, max_rel;      /* over pairs without NaN: |a - b| and |a - b| / |b| */
    bool bits_equal;              /* same dtype and the same bytes */
    bool values;                  /* compared as float64 (complex128) values; false: by bytes only */
} jp_compare_stats;

/* Compare two views of the same shape element by element, in float64 (both
 * complex: complex128, |a - b| the modulus), as numpy.isclose does: an
 * element differs when |a - b| > atol + rtol * |b|. Views may be strided
 * and their items unaligned. A type with no float64 reading (packed float4
 * pairs) is compared by its bytes when both sides have it. JP_SHAPE for
 * different shapes, JP_DTYPE for a real side against a complex one. */
jp_code jp_compare(const jp_view *a, const jp_view *b, double atol, double rtol, jp_compare_stats *out,
                   jp_err *err);

#endif /* JP_KERNELS_H */
