/* Blocks of a 2-d transpose for each element size, the best this CPU runs. */
#ifndef JP_KERNELS_TRANSPOSE_H
#define JP_KERNELS_TRANSPOSE_H

#include "../common/common.h"

/* dst[r][c] = src[c][r] for r < rows and c < cols: element (r, c) of dst is
 * at dst + r * dstride + c * esize, element (c, r) of src at src + c * sstride
 * + r * esize (strides in bytes). */
typedef void (*jp_transpose_fn)(unsigned char *dst, int64_t dstride, const unsigned char *src,
                                int64_t sstride, int rows, int cols);

/* For element sizes 1, 2, 4, 8 and 16; NULL for others. */
jp_transpose_fn jp_transpose_for(size_t esize);

/* The same with float32 in and bfloat16 out (cast as jp_cast does) in one
 * pass, where the CPU has a fused kernel; NULL where it has not. */
jp_transpose_fn jp_transpose_f32_bf16(void);

/* Whole destination lines: like jp_transpose_fn with cols = 64 / esize (one
 * 64-byte line of the destination per row, which must be 64-byte aligned),
 * stored around the cache (non-temporal stores) straight from registers.
 * NULL where the CPU has no such kernel. */
typedef void (*jp_lines_fn)(unsigned char *dst, int64_t dstride, const unsigned char *src,
                            int64_t sstride, int rows);
jp_lines_fn jp_lines_for(size_t esize);
jp_lines_fn jp_lines_f32_bf16(void); /* 32 columns of float32 in, bfloat16 out */

/* Copies `rows` rows of `bytes` bytes from src (row stride ss) to dst (row
 * stride ds). With stream set, rows that are one whole aligned 64-byte line
 * go around the cache (non-temporal stores): a large transpose writes each
 * line once, and skipping the read-for-ownership is what brings it near
 * memcpy speed. Call jp_stream_fence() before the data are handed over. */
void jp_put_rows(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss, int rows,
                 size_t bytes, bool stream);
void jp_stream_fence(void);

#endif /* JP_KERNELS_TRANSPOSE_H */
