/* Element casts over contiguous runs, shared by the kernels of this folder.
 *
 * A cast is planned once per tensor (jp_cast_plan) and then applied to runs
 * of elements (jp_cast_run). Every pair is one or two stages: a stage turns a
 * run of one type into a run of another and reports the first element it
 * could not represent; two stages meet in a small buffer on the stack (f32,
 * f64 or i64), so no pair needs its own loop unless it is hot. */
#ifndef JP_KERNELS_CAST_H
#define JP_KERNELS_CAST_H

#include "../common/common.h"

/* float32 bits to bfloat16 as ml_dtypes rounds: to nearest even; a NaN
 * becomes the canonical quiet NaN with its sign. Branch-free enough for the
 * vectoriser; the SIMD kernels do the same on eight lanes. */
static inline uint16_t jp_bf16_from_f32(uint32_t u) {
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = ((u >> 16) & 0x8000u) | 0x7fc0u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : r);
}

/* The instruction sets the kernels use: what the CPU has, lowered by the
 * environment variable JAXPORT_SIMD ("portable": plain C only; "sse2": no
 * AVX2 or F16C), which is how the tests run every path on one machine. Read
 * when a cast or transpose is planned, so a change applies to later calls. */
typedef enum { JP_SIMD_PORTABLE, JP_SIMD_SSE2, JP_SIMD_AVX2 } jp_simd;
jp_simd jp_simd_level(void);

typedef struct jp_cast jp_cast;

/* Converts n scalars; returns n, or the index of the first one that does not
 * fit the destination type (those before it are written). */
typedef size_t (*jp_cast_stage)(const jp_cast *c, void *dst, const void *src, size_t n);

struct jp_cast {
    jp_dtype src, dst;
    size_t src_size, dst_size;
    size_t lanes;             /* scalars per element: 2 for complex, else 1 */
    jp_cast_stage first, second; /* second is NULL for a one-stage pair */
    size_t mid_size;          /* bytes per scalar between the stages */
    bool copy;                /* same type: the bytes are copied as they are */
};

/* Plans the cast of src to dst; JP_DTYPE (with a message) for a pair that is
 * not supported. */
jp_code jp_cast_plan(jp_cast *c, jp_dtype dst, jp_dtype src, jp_err *err);

/* Casts n contiguous elements; returns n or the index of the first element
 * that does not fit. */
size_t jp_cast_run(const jp_cast *c, void *dst, const void *src, size_t n);

/* Writes the value of one source element as text ("300", "nan", "1e+40"). */
void jp_cast_format(jp_dtype dt, const void *elem, char *out, size_t cap);

/* The range of the integer type dt as text ("-128 to 127"); "" for others. */
const char *jp_cast_range_text(jp_dtype dt);

#endif /* JP_KERNELS_CAST_H */
