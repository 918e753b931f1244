/* Transposing blocks. Portable C for every element size, SSE2 (part of
 * every x86-64) for the small-tile kernels, and AVX2 compiled with a target
 * attribute and picked at run time, so the binary runs on any x86-64.
 *
 * Each SIMD kernel does whole micro-tiles (8x8 or 4x4 elements: load a few
 * source rows, shuffle, store as many destination rows) and leaves the ragged
 * edges to the portable loop. */
#include "transpose.h"

#include "cast.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define JP_X86 1
#endif

#define PORTABLE(NAME, T)                                                                    \
    static void NAME(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss, \
                     int rows, int cols) {                                                   \
        for (int r = 0; r < rows; r++) {                                                     \
            unsigned char *d = dst + r * ds;                                                 \
            const unsigned char *s = src + (int64_t)r * (int64_t)sizeof(T);                  \
            for (int c = 0; c < cols; c++) {                                                 \
                T v;                                                                         \
                memcpy(&v, s + c * ss, sizeof v);                                            \
                memcpy(d + (int64_t)c * (int64_t)sizeof v, &v, sizeof v);                    \
            }                                                                                \
        }                                                                                    \
    }
typedef struct {
    uint64_t lo, hi;
} u128;
PORTABLE(portable1, uint8_t)
PORTABLE(portable2, uint16_t)
PORTABLE(portable4, uint32_t)
PORTABLE(portable8, uint64_t)
PORTABLE(portable16, u128)
#undef PORTABLE

#ifdef JP_X86
/* Runs micro-tiles of R x C with KERNEL and the edges with EDGE. */
#define TILED(NAME, R, C, ES, KERNEL, EDGE, ATTR)                                              \
    ATTR static void NAME(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss, \
                          int rows, int cols) {                                                 \
        int rr = rows - rows % (R), cc = cols - cols % (C);                                     \
        for (int r = 0; r < rr; r += (R))                                                       \
            for (int c = 0; c < cc; c += (C))                                                   \
                KERNEL(dst + r * ds + c * (ES), ds, src + c * ss + r * (ES), ss);               \
        if (cc < cols) EDGE(dst + cc * (ES), ds, src + cc * ss, ss, rr, cols - cc);             \
        if (rr < rows) EDGE(dst + rr * ds, ds, src + rr * (ES), ss, rows - rr, cols);           \
    }

#define LD128(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define ST128(p, v) _mm_storeu_si128((__m128i *)(void *)(p), v)
#define LD64(p) _mm_loadl_epi64((const __m128i *)(const void *)(p))
#define ST64(p, v) _mm_storel_epi64((__m128i *)(void *)(p), v)

static inline void tile1_8x8(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    __m128i b0 = _mm_unpacklo_epi8(LD64(s), LD64(s + ss));
    __m128i b1 = _mm_unpacklo_epi8(LD64(s + 2 * ss), LD64(s + 3 * ss));
    __m128i b2 = _mm_unpacklo_epi8(LD64(s + 4 * ss), LD64(s + 5 * ss));
    __m128i b3 = _mm_unpacklo_epi8(LD64(s + 6 * ss), LD64(s + 7 * ss));
    __m128i c0 = _mm_unpacklo_epi16(b0, b1), c1 = _mm_unpackhi_epi16(b0, b1);
    __m128i c2 = _mm_unpacklo_epi16(b2, b3), c3 = _mm_unpackhi_epi16(b2, b3);
    __m128i d01 = _mm_unpacklo_epi32(c0, c2), d23 = _mm_unpackhi_epi32(c0, c2);
    __m128i d45 = _mm_unpacklo_epi32(c1, c3), d67 = _mm_unpackhi_epi32(c1, c3);
    ST64(d, d01);
    ST64(d + ds, _mm_unpackhi_epi64(d01, d01));
    ST64(d + 2 * ds, d23);
    ST64(d + 3 * ds, _mm_unpackhi_epi64(d23, d23));
    ST64(d + 4 * ds, d45);
    ST64(d + 5 * ds, _mm_unpackhi_epi64(d45, d45));
    ST64(d + 6 * ds, d67);
    ST64(d + 7 * ds, _mm_unpackhi_epi64(d67, d67));
}

/* The 8x8 transpose of 16-bit lanes: out[k] is column k of the rows in a. */
static inline void transpose8x16(__m128i a[8]) {
    __m128i b[8];
    for (int k = 0; k < 8; k += 2) {
        b[k] = _mm_unpacklo_epi16(a[k], a[k + 1]);
        b[k + 1] = _mm_unpackhi_epi16(a[k], a[k + 1]);
    }
    __m128i c0 = _mm_unpacklo_epi32(b[0], b[2]), c1 = _mm_unpackhi_epi32(b[0], b[2]);
    __m128i c2 = _mm_unpacklo_epi32(b[1], b[3]), c3 = _mm_unpackhi_epi32(b[1], b[3]);
    __m128i c4 = _mm_unpacklo_epi32(b[4], b[6]), c5 = _mm_unpackhi_epi32(b[4], b[6]);
    __m128i c6 = _mm_unpacklo_epi32(b[5], b[7]), c7 = _mm_unpackhi_epi32(b[5], b[7]);
    a[0] = _mm_unpacklo_epi64(c0, c4);
    a[1] = _mm_unpackhi_epi64(c0, c4);
    a[2] = _mm_unpacklo_epi64(c1, c5);
    a[3] = _mm_unpackhi_epi64(c1, c5);
    a[4] = _mm_unpacklo_epi64(c2, c6);
    a[5] = _mm_unpackhi_epi64(c2, c6);
    a[6] = _mm_unpacklo_epi64(c3, c7);
    a[7] = _mm_unpackhi_epi64(c3, c7);
}

static inline void tile2_8x8(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    __m128i a[8];
    for (int k = 0; k < 8; k++) a[k] = LD128(s + k * ss);
    transpose8x16(a);
    for (int k = 0; k < 8; k++) ST128(d + k * ds, a[k]);
}

static inline void tile4_4x4(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    __m128i a0 = LD128(s), a1 = LD128(s + ss), a2 = LD128(s + 2 * ss), a3 = LD128(s + 3 * ss);
    __m128i b0 = _mm_unpacklo_epi32(a0, a1), b1 = _mm_unpackhi_epi32(a0, a1);
    __m128i b2 = _mm_unpacklo_epi32(a2, a3), b3 = _mm_unpackhi_epi32(a2, a3);
    ST128(d, _mm_unpacklo_epi64(b0, b2));
    ST128(d + ds, _mm_unpackhi_epi64(b0, b2));
    ST128(d + 2 * ds, _mm_unpacklo_epi64(b1, b3));
    ST128(d + 3 * ds, _mm_unpackhi_epi64(b1, b3));
}

static inline void tile8_2x2(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    __m128i a0 = LD128(s), a1 = LD128(s + ss);
    ST128(d, _mm_unpacklo_epi64(a0, a1));
    ST128(d + ds, _mm_unpackhi_epi64(a0, a1));
}

TILED(sse2_1, 8, 8, 1, tile1_8x8, portable1, )
TILED(sse2_2, 8, 8, 2, tile2_8x8, portable2, )
TILED(sse2_4, 4, 4, 4, tile4_4x4, portable4, )
TILED(sse2_8, 2, 2, 8, tile8_2x2, portable8, )

/* ---- AVX2 */
#define AVX2 __attribute__((target("avx2")))
#define LD256(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define ST256(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)

/* The 8x8 transpose of 32-bit lanes: out[k] is column k of the rows in a. */
AVX2 static inline void transpose8x32(__m256i a[8]) {
    __m256 r[8], t[8];
    for (int k = 0; k < 8; k++) r[k] = _mm256_castsi256_ps(a[k]);
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    __m256 u0 = _mm256_shuffle_ps(t[0], t[2], 0x44), u1 = _mm256_shuffle_ps(t[0], t[2], 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t[1], t[3], 0x44), u3 = _mm256_shuffle_ps(t[1], t[3], 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t[4], t[6], 0x44), u5 = _mm256_shuffle_ps(t[4], t[6], 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t[5], t[7], 0x44), u7 = _mm256_shuffle_ps(t[5], t[7], 0xEE);
    a[0] = _mm256_castps_si256(_mm256_permute2f128_ps(u0, u4, 0x20));
    a[1] = _mm256_castps_si256(_mm256_permute2f128_ps(u1, u5, 0x20));
    a[2] = _mm256_castps_si256(_mm256_permute2f128_ps(u2, u6, 0x20));
    a[3] = _mm256_castps_si256(_mm256_permute2f128_ps(u3, u7, 0x20));
    a[4] = _mm256_castps_si256(_mm256_permute2f128_ps(u0, u4, 0x31));
    a[5] = _mm256_castps_si256(_mm256_permute2f128_ps(u1, u5, 0x31));
    a[6] = _mm256_castps_si256(_mm256_permute2f128_ps(u2, u6, 0x31));
    a[7] = _mm256_castps_si256(_mm256_permute2f128_ps(u3, u7, 0x31));
}

AVX2 static inline void tile4_8x8(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    __m256i a[8];
    for (int k = 0; k < 8; k++) a[k] = LD256(s + k * ss);
    transpose8x32(a);
    for (int k = 0; k < 8; k++) ST256(d + k * ds, a[k]);
}

/* float32 -> bfloat16 on eight lanes, as jp_bf16_from_f32. */
AVX2 static inline __m128i bf16_of8(__m256i u) {
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    __m256i mag = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    __m256i isnan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7f800000));
    __m256i nan = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x8000)),
                                  _mm256_set1_epi32(0x7fc0));
    r = _mm256_blendv_epi8(r, nan, isnan);
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

AVX2 static inline void tile4_8x8_bf16(unsigned char *d, int64_t ds, const unsigned char *s,
                                       int64_t ss) {
    __m256i a[8];
    for (int k = 0; k < 8; k++) a[k] = LD256(s + k * ss);
    transpose8x32(a);
    for (int k = 0; k < 8; k++) ST128(d + k * ds, bf16_of8(a[k]));
}

AVX2 static inline void tile8_4x4(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    __m256d r0 = _mm256_castsi256_pd(LD256(s)), r1 = _mm256_castsi256_pd(LD256(s + ss));
    __m256d r2 = _mm256_castsi256_pd(LD256(s + 2 * ss)), r3 = _mm256_castsi256_pd(LD256(s + 3 * ss));
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    ST256(d, _mm256_castpd_si256(_mm256_permute2f128_pd(t0, t2, 0x20)));
    ST256(d + ds, _mm256_castpd_si256(_mm256_permute2f128_pd(t1, t3, 0x20)));
    ST256(d + 2 * ds, _mm256_castpd_si256(_mm256_permute2f128_pd(t0, t2, 0x31)));
    ST256(d + 3 * ds, _mm256_castpd_si256(_mm256_permute2f128_pd(t1, t3, 0x31)));
}

/* The ragged edges of the fused kernel, one element at a time. */
static void portable_f32_bf16(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss,
                              int rows, int cols) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            uint32_t u;
            memcpy(&u, src + c * ss + r * 4, 4);
            uint16_t h = jp_bf16_from_f32(u);
            memcpy(dst + r * ds + c * 2, &h, 2);
        }
}

TILED(avx2_4, 8, 8, 4, tile4_8x8, sse2_4, AVX2)
TILED(avx2_8, 4, 4, 8, tile8_4x4, sse2_8, AVX2)

/* The fused kernel: ES is the source size for src offsets; dst offsets use 2. */
AVX2 static void avx2_f32_bf16(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss,
                               int rows, int cols) {
    int rr = rows - rows % 8, cc = cols - cols % 8;
    for (int r = 0; r < rr; r += 8)
        for (int c = 0; c < cc; c += 8) tile4_8x8_bf16(dst + r * ds + c * 2, ds, src + c * ss + r * 4, ss);
    if (cc < cols) portable_f32_bf16(dst + cc * 2, ds, src + cc * ss, ss, rr, cols - cc);
    if (rr < rows) portable_f32_bf16(dst + rr * ds, ds, src + rr * 4, ss, rows - rr, cols);
}

/* ---- whole lines, streamed straight from registers */

#define PUT128(p, v) _mm_stream_si128((__m128i *)(void *)(p), v)
#define PUT256(p, v) _mm256_stream_si256((__m256i *)(void *)(p), v)

/* Each line kernel stores a line's pieces back to back: a streamed line
 * whose pieces arrive apart is flushed in parts, which costs more than the
 * stores save.
 *
 * A line of 2-byte elements holds 32 columns, so it needs 32 source rows,
 * and reading 32 rows at once defeats the prefetchers (16 is fine). So a run
 * of up to STAGE rows is done in two passes of 16 source rows: the first
 * leaves the left half-lines in a stage in L1, the second adds the right
 * halves and stores whole lines. */
#define STAGE 256

/* Half a line of 2-byte elements, for SSE2. */
typedef struct {
    __m128i lo, hi;
} half_line;

#define PUT_HALVES2(d, first, second) \
    (PUT128(d, (first).lo), PUT128((d) + 16, (first).hi), PUT128((d) + 32, (second).lo), \
     PUT128((d) + 48, (second).hi))
#define PUT_HALVES256(d, first, second) (PUT256(d, first), PUT256((d) + 32, second))

/* The two-pass kernel around MAKE(half[8], src, ss), which makes the
 * half-lines (of type HALF) of rows r..r+7 from 16 source rows; PUT stores
 * two halves as a line; EDGE does leftover rows. */
#define STAGED_LINES(NAME, ATTR, ES, HALF, MAKE, PUT, EDGE)                                     \
    ATTR static void NAME(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss,  \
                          int rows) {                                                            \
        HALF stage[STAGE], half[8];                                                              \
        int rr = rows - rows % 8;                                                                \
        for (int r0 = 0; r0 < rr; r0 += STAGE) {                                                 \
            int rn = rr - r0 < STAGE ? rr - r0 : STAGE;                                          \
            for (int pass = 0; pass < 2; pass++)                                                 \
                for (int r = r0; r < r0 + rn; r += 8) {                                          \
                    MAKE(half, src + 16 * pass * ss + r * (ES), ss);                             \
                    for (int k = 0; k < 8; k++) {                                                \
                        if (pass == 0) {                                                         \
                            stage[r - r0 + k] = half[k];                                         \
                            continue;                                                            \
                        }                                                                        \
                        PUT(dst + (r + k) * ds, stage[r - r0 + k], half[k]);                     \
                    }                                                                            \
                }                                                                                \
        }                                                                                        \
        if (rr < rows) EDGE(dst + rr * ds, ds, src + rr * (ES), ss, rows - rr, 32);              \
    }

static inline void halves2(half_line half[8], const unsigned char *s, int64_t ss) {
    __m128i a[8], b[8];
    for (int k = 0; k < 8; k++) {
        a[k] = LD128(s + k * ss);
        b[k] = LD128(s + (8 + k) * ss);
    }
    transpose8x16(a);
    transpose8x16(b);
    for (int k = 0; k < 8; k++) half[k] = (half_line){a[k], b[k]};
}

AVX2 static inline void halves_f32_bf16(__m256i half[8], const unsigned char *s, int64_t ss) {
    __m256i a[8], b[8];
    for (int k = 0; k < 8; k++) {
        a[k] = LD256(s + k * ss);
        b[k] = LD256(s + (8 + k) * ss);
    }
    transpose8x32(a);
    transpose8x32(b);
    for (int k = 0; k < 8; k++) half[k] = _mm256_set_m128i(bf16_of8(b[k]), bf16_of8(a[k]));
}

STAGED_LINES(lines2_sse2, , 2, half_line, halves2, PUT_HALVES2, portable2)

AVX2 static void lines4_avx2(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss,
                             int rows) {
    int rr = rows - rows % 8;
    for (int r = 0; r < rr; r += 8) {
        __m256i a[8], b[8];
        for (int k = 0; k < 8; k++) {
            a[k] = LD256(src + k * ss + r * 4);
            b[k] = LD256(src + (8 + k) * ss + r * 4);
        }
        transpose8x32(a);
        transpose8x32(b);
        for (int k = 0; k < 8; k++) {
            PUT256(dst + (r + k) * ds, a[k]);
            PUT256(dst + (r + k) * ds + 32, b[k]);
        }
    }
    if (rr < rows) portable4(dst + rr * ds, ds, src + rr * 4, ss, rows - rr, 16);
}

AVX2 static void lines8_avx2(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss,
                             int rows) {
    int rr = rows - rows % 4;
    for (int r = 0; r < rr; r += 4) {
        __m256i o[2][4];
        for (int h = 0; h < 2; h++) {
            const unsigned char *s = src + 4 * h * ss + r * 8;
            __m256d r0 = _mm256_castsi256_pd(LD256(s)), r1 = _mm256_castsi256_pd(LD256(s + ss));
            __m256d r2 = _mm256_castsi256_pd(LD256(s + 2 * ss)),
                    r3 = _mm256_castsi256_pd(LD256(s + 3 * ss));
            __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
            __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
            o[h][0] = _mm256_castpd_si256(_mm256_permute2f128_pd(t0, t2, 0x20));
            o[h][1] = _mm256_castpd_si256(_mm256_permute2f128_pd(t1, t3, 0x20));
            o[h][2] = _mm256_castpd_si256(_mm256_permute2f128_pd(t0, t2, 0x31));
            o[h][3] = _mm256_castpd_si256(_mm256_permute2f128_pd(t1, t3, 0x31));
        }
        for (int k = 0; k < 4; k++) {
            PUT256(dst + (r + k) * ds, o[0][k]);
            PUT256(dst + (r + k) * ds + 32, o[1][k]);
        }
    }
    if (rr < rows) portable8(dst + rr * ds, ds, src + rr * 8, ss, rows - rr, 8);
}

STAGED_LINES(lines_f32_bf16_avx2, AVX2, 4, __m256i, halves_f32_bf16, PUT_HALVES256,
             portable_f32_bf16)

static bool has_avx2(void) { return __builtin_cpu_supports("avx2"); }
#endif /* JP_X86 */

jp_transpose_fn jp_transpose_for(size_t esize) {
#ifdef JP_X86
    bool avx2 = has_avx2();
    switch (esize) {
    case 1: return sse2_1;
    case 2: return sse2_2;
    case 4: return avx2 ? avx2_4 : sse2_4;
    case 8: return avx2 ? avx2_8 : sse2_8;
    case 16: return portable16;
    default: return NULL;
    }
#else
    switch (esize) {
    case 1: return portable1;
    case 2: return portable2;
    case 4: return portable4;
    case 8: return portable8;
    case 16: return portable16;
    default: return NULL;
    }
#endif
}

jp_transpose_fn jp_transpose_f32_bf16(void) {
#ifdef JP_X86
    if (has_avx2()) return avx2_f32_bf16;
#endif
    return NULL;
}

jp_lines_fn jp_lines_for(size_t esize) {
#ifdef JP_X86
    bool avx2 = has_avx2();
    switch (esize) {
    case 2: return lines2_sse2;
    case 4: return avx2 ? lines4_avx2 : NULL;
    case 8: return avx2 ? lines8_avx2 : NULL;
    default: return NULL;
    }
#else
    (void)esize;
    return NULL;
#endif
}

jp_lines_fn jp_lines_f32_bf16(void) {
#ifdef JP_X86
    if (has_avx2()) return lines_f32_bf16_avx2;
#endif
    return NULL;
}

void jp_put_rows(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss, int rows,
                 size_t bytes, bool stream) {
#ifdef JP_X86
    if (stream && bytes == 64) {
        for (int r = 0; r < rows; r++) {
            unsigned char *d = dst + r * ds;
            const unsigned char *s = src + r * ss;
            if (((uintptr_t)d & 63) != 0) {
                memcpy(d, s, 64);
                continue;
            }
            _mm_stream_si128((__m128i *)(void *)d, LD128(s));
            _mm_stream_si128((__m128i *)(void *)(d + 16), LD128(s + 16));
            _mm_stream_si128((__m128i *)(void *)(d + 32), LD128(s + 32));
            _mm_stream_si128((__m128i *)(void *)(d + 48), LD128(s + 48));
        }
        return;
    }
#else
    (void)stream;
#endif
    for (int r = 0; r < rows; r++) memcpy(dst + r * ds, src + r * ss, bytes);
}

void jp_stream_fence(void) {
#ifdef JP_X86
    _mm_sfence();
#endif
}
