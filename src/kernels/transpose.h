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

/* The same with float32 in and bfloat16 out, rounded as jp_cast does, in
 * one pass. */
jp_transpose_fn jp_transpose_f32_bf16(void);

/* Copies `rows` rows of `bytes` bytes from src (row stride ss) to dst (row
 * stride ds). With stream set, rows that are whole aligned 64-byte lines go
 * around the cache (non-temporal stores): a large transpose writes each line
 * once, and skipping the read-for-ownership is what brings it near memcpy
 * speed. Call jp_stream_fence() before the data are handed over. */
void jp_put_rows(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss, int rows,
                 size_t bytes, bool stream);
void jp_stream_fence(void);

/* Asks for `rows` rows of `bytes` bytes at src (row stride ss), which the
 * next block will read, to be brought into L2 (into L1 they would evict the
 * block being made). */
void jp_prefetch_rows(const unsigned char *src, int64_t ss, int rows, size_t bytes);

#endif /* JP_KERNELS_TRANSPOSE_H */
