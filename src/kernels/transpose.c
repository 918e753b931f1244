/* Transposing blocks. Portable C for every element size, SSE2 (part of
 * every x86-64) for the small-tile kernels, and AVX2 compiled with a target
 * attribute and picked at run time (jp_simd_level), so the binary runs on
 * any x86-64 and the tests can force each level.
 *
 * Each SIMD kernel does whole micro-tiles (load a few source rows, shuffle,
 * store as many destination rows); ragged edges take one more tile that
 * overlaps the last, and only blocks smaller than a tile go to the kernel a
 * level down. No shuffle of the AVX2 tiles crosses the two 128-bit halves of
 * a register (those cost several times more): either the loads cross them
 * (source rows k and k + 4 share a register) or the stores do (the two
 * halves go to destination rows k and k + 4). The float32 tiles read 8
 * source rows: rows a multiple of 4 KiB apart share one set of the L1
 * cache, which holds 8 lines, so a tile of 16 such rows evicts its own
 * lines before their last use (the fused float32 -> bfloat16 transpose of
 * large matrices ran a third slower so). The 16-bit tile reads 16 rows of
 * 16 bytes, each of which holds 8 elements: measured, that beats 8 rows of
 * 32 bytes. The tiles are written out register by register, without
 * arrays, so that nothing is spilled to the stack. */
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

/* float32 in, bfloat16 out, one element at a time. */
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

#ifdef JP_X86
/* Runs micro-tiles of R x C with KERNEL; a block smaller than one tile
 * goes to EDGE. Ragged edges are covered by one more tile that overlaps the
 * one before it: its overlap writes the same bytes again, which costs far
 * less than finishing the edge element by element. When every destination
 * row starts at the same place in a 32-byte unit, the tiles after the first
 * start on those units, so that no store is split across cache lines. DES
 * is the destination element size (the source's is ES). */
#define TILED(NAME, R, C, ES, DES, KERNEL, EDGE, ATTR)                                          \
    ATTR static void NAME(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss, \
                          int rows, int cols) {                                                 \
        if (rows < (R) || cols < (C)) {                                                         \
            EDGE(dst, ds, src, ss, rows, cols);                                                 \
            return;                                                                             \
        }                                                                                       \
        int mis = (int)((uintptr_t)dst & 31), skew = 0;                                         \
        if (ds % 32 == 0 && mis % (DES) == 0) skew = ((32 - mis) & 31) / (DES) % (C);           \
        for (int r = 0;; r += (R)) {                                                            \
            if (r > rows - (R)) r = rows - (R);                                                 \
            for (int c = 0;;) {                                                                 \
                KERNEL(dst + r * ds + c * (DES), ds, src + c * ss + r * (ES), ss);              \
                if (c == cols - (C)) break;                                                     \
                c = c < skew ? skew : c + (C);                                                  \
                if (c > cols - (C)) c = cols - (C);                                             \
            }                                                                                   \
            if (r == rows - (R)) break;                                                         \
        }                                                                                       \
    }

#define LD128(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define ST128(p, v) _mm_storeu_si128((__m128i *)(void *)(p), v)
#define LD64(p) _mm_loadl_epi64((const __m128i *)(const void *)(p))
#define ST64(p, v) _mm_storel_epi64((__m128i *)(void *)(p), v)

/* ---- SSE2 */

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

/* The 8x8 transpose of 16-bit lanes, within each 128-bit half for the
 * 256-bit form: column k of rows a0..a7 is stored at d + k * ds. */
#define TRANSPOSE8x16(T, UNPACK, STORE, d, ds, a0, a1, a2, a3, a4, a5, a6, a7)            \
    do {                                                                                    \
        T b0 = UNPACK##lo_epi16(a0, a1), b1 = UNPACK##hi_epi16(a0, a1);                     \
        T b2 = UNPACK##lo_epi16(a2, a3), b3 = UNPACK##hi_epi16(a2, a3);                     \
        T b4 = UNPACK##lo_epi16(a4, a5), b5 = UNPACK##hi_epi16(a4, a5);                     \
        T b6 = UNPACK##lo_epi16(a6, a7), b7 = UNPACK##hi_epi16(a6, a7);                     \
        T c0 = UNPACK##lo_epi32(b0, b2), c1 = UNPACK##hi_epi32(b0, b2);                     \
        T c2 = UNPACK##lo_epi32(b1, b3), c3 = UNPACK##hi_epi32(b1, b3);                     \
        T c4 = UNPACK##lo_epi32(b4, b6), c5 = UNPACK##hi_epi32(b4, b6);                     \
        T c6 = UNPACK##lo_epi32(b5, b7), c7 = UNPACK##hi_epi32(b5, b7);                     \
        STORE((d), UNPACK##lo_epi64(c0, c4));                                               \
        STORE((d) + (ds), UNPACK##hi_epi64(c0, c4));                                        \
        STORE((d) + 2 * (ds), UNPACK##lo_epi64(c1, c5));                                    \
        STORE((d) + 3 * (ds), UNPACK##hi_epi64(c1, c5));                                    \
        STORE((d) + 4 * (ds), UNPACK##lo_epi64(c2, c6));                                    \
        STORE((d) + 5 * (ds), UNPACK##hi_epi64(c2, c6));                                    \
        STORE((d) + 6 * (ds), UNPACK##lo_epi64(c3, c7));                                    \
        STORE((d) + 7 * (ds), UNPACK##hi_epi64(c3, c7));                                    \
    } while (0)

static inline void tile2_8x8(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    TRANSPOSE8x16(__m128i, _mm_unpack, ST128, d, ds, LD128(s), LD128(s + ss), LD128(s + 2 * ss),
                  LD128(s + 3 * ss), LD128(s + 4 * ss), LD128(s + 5 * ss), LD128(s + 6 * ss),
                  LD128(s + 7 * ss));
}

/* The 4x4 transpose of 32-bit lanes of a0..a3 into o0..o3. */
#define TRANSPOSE4x32(a0, a1, a2, a3, o0, o1, o2, o3)                                \
    do {                                                                             \
        __m128i b0 = _mm_unpacklo_epi32(a0, a1), b1 = _mm_unpackhi_epi32(a0, a1);    \
        __m128i b2 = _mm_unpacklo_epi32(a2, a3), b3 = _mm_unpackhi_epi32(a2, a3);    \
        o0 = _mm_unpacklo_epi64(b0, b2);                                             \
        o1 = _mm_unpackhi_epi64(b0, b2);                                             \
        o2 = _mm_unpacklo_epi64(b1, b3);                                             \
        o3 = _mm_unpackhi_epi64(b1, b3);                                             \
    } while (0)

static inline void tile4_4x4(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    __m128i o0, o1, o2, o3;
    TRANSPOSE4x32(LD128(s), LD128(s + ss), LD128(s + 2 * ss), LD128(s + 3 * ss), o0, o1, o2, o3);
    ST128(d, o0);
    ST128(d + ds, o1);
    ST128(d + 2 * ds, o2);
    ST128(d + 3 * ds, o3);
}

static inline void tile8_2x2(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    __m128i a0 = LD128(s), a1 = LD128(s + ss);
    ST128(d, _mm_unpacklo_epi64(a0, a1));
    ST128(d + ds, _mm_unpackhi_epi64(a0, a1));
}

/* float32 -> bfloat16 on four lanes, as jp_bf16_from_f32: the result in the
 * low 16 bits of each 32-bit lane. */
static inline __m128i bf16_of4(__m128i u) {
    __m128i hi = _mm_srli_epi32(u, 16);
    __m128i r = _mm_add_epi32(_mm_add_epi32(u, _mm_set1_epi32(0x7fff)),
                              _mm_and_si128(hi, _mm_set1_epi32(1)));
    r = _mm_srli_epi32(r, 16);
    __m128i nan = _mm_or_si128(_mm_and_si128(hi, _mm_set1_epi32(0x8000)), _mm_set1_epi32(0x7fc0));
    __m128i isnan = _mm_castps_si128(_mm_cmpunord_ps(_mm_castsi128_ps(u), _mm_castsi128_ps(u)));
    return _mm_or_si128(_mm_and_si128(isnan, nan), _mm_andnot_si128(isnan, r));
}

/* Two rows of four bfloat16 (in 32-bit lanes) packed into one register,
 * first row low. SSE2 packs only signed, so shift to signed and back. */
static inline __m128i pack_bf16x4(__m128i a, __m128i b) {
    __m128i bias = _mm_set1_epi32(0x8000);
    __m128i p = _mm_packs_epi32(_mm_sub_epi32(a, bias), _mm_sub_epi32(b, bias));
    return _mm_xor_si128(p, _mm_set1_epi16((short)0x8000));
}

static inline void tile_f32_bf16_4x4(unsigned char *d, int64_t ds, const unsigned char *s,
                                     int64_t ss) {
    __m128i o0, o1, o2, o3;
    TRANSPOSE4x32(LD128(s), LD128(s + ss), LD128(s + 2 * ss), LD128(s + 3 * ss), o0, o1, o2, o3);
    __m128i p01 = pack_bf16x4(bf16_of4(o0), bf16_of4(o1));
    __m128i p23 = pack_bf16x4(bf16_of4(o2), bf16_of4(o3));
    ST64(d, p01);
    ST64(d + ds, _mm_unpackhi_epi64(p01, p01));
    ST64(d + 2 * ds, p23);
    ST64(d + 3 * ds, _mm_unpackhi_epi64(p23, p23));
}

TILED(sse2_1, 8, 8, 1, 1, tile1_8x8, portable1, )
TILED(sse2_2, 8, 8, 2, 2, tile2_8x8, portable2, )
TILED(sse2_4, 4, 4, 4, 4, tile4_4x4, portable4, )
TILED(sse2_8, 2, 2, 8, 8, tile8_2x2, portable8, )
TILED(sse2_f32_bf16, 4, 4, 4, 2, tile_f32_bf16_4x4, portable_f32_bf16, )

/* ---- AVX2 */
#define AVX2 __attribute__((target("avx2")))
#define ST256(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define LD256(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
/* The low half of v at p, the high half at p + off. */
#define ST_HALVES(p, off, v)                                      \
    do {                                                          \
        __m256i v_ = (v);                                         \
        ST128(p, _mm256_castsi256_si128(v_));                     \
        ST128((p) + (off), _mm256_extracti128_si256(v_, 1));      \
    } while (0)
/* 128 bits from each of lo and hi, as the low and high halves. */
#define PAIR(lo, hi) _mm256_inserti128_si256(_mm256_castsi128_si256(LD128(lo)), LD128(hi), 1)
#define PAIR_PS(lo, hi)                                                                    \
    _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps((const float *)(const void *)(lo))), \
                         _mm_loadu_ps((const float *)(const void *)(hi)), 1)

/* 8 source rows by 4 columns of 32-bit elements: rows k and k + 4 share a
 * register, and a 4x4 transpose in each half makes whole destination rows
 * of 8. Only four destination rows are open at a time, which matters when
 * their stride is a multiple of 4 KiB (a conv kernel's (kh, kw, I, O)
 * layout): eight rows in one cache set at once cost more than the wider
 * tile saves. */
AVX2 static inline void tile4_4x8(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    __m256 a0 = PAIR_PS(s, s + 4 * ss), a1 = PAIR_PS(s + ss, s + 5 * ss);
    __m256 a2 = PAIR_PS(s + 2 * ss, s + 6 * ss), a3 = PAIR_PS(s + 3 * ss, s + 7 * ss);
    __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
    __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
    ST256(d, _mm256_castps_si256(_mm256_shuffle_ps(t0, t2, 0x44)));
    ST256(d + ds, _mm256_castps_si256(_mm256_shuffle_ps(t0, t2, 0xEE)));
    ST256(d + 2 * ds, _mm256_castps_si256(_mm256_shuffle_ps(t1, t3, 0x44)));
    ST256(d + 3 * ds, _mm256_castps_si256(_mm256_shuffle_ps(t1, t3, 0xEE)));
}

/* float32 -> bfloat16 on eight lanes, rounded to nearest even: the result
 * in the high 16 bits of each 32-bit lane (the low bits are left over). With
 * exact set, NaN becomes the canonical quiet NaN with its sign, as
 * jp_bf16_from_f32 does; without, NaN lanes come out wrong and the caller
 * redoes them. */
AVX2 static inline __m256i bf16_high8(__m256i u, bool exact) {
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    if (!exact) return r;
    __m256i nan = _mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32((int)0x80000000u)),
                                  _mm256_set1_epi32(0x7fc00000));
    __m256 f = _mm256_castsi256_ps(u);
    return _mm256_blendv_epi8(r, nan, _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q)));
}

/* Rows a and b in bfloat16, interleaved: each 32-bit lane holds a's value
 * in its low half and b's in its high half. */
#define BF16_INTERLEAVE(a, b) _mm256_blend_epi16(_mm256_srli_epi32(a, 16), b, 0xAA)

/* 8 source rows by 8 columns of float32 into 8 destination rows of 8
 * bfloat16, from whole 32-byte loads. After rounding, one blend puts rows
 * k and k + 1 side by side in each 32-bit lane; a 4x4 transpose of 32-bit
 * lanes in each half then gives destination row j in the low half and row
 * j + 4 in the high half. NaNs are rare: the tile is made with plain
 * rounding while noting whether any lane was NaN, and only then made again
 * with the exact NaN rule. */
AVX2 static inline void bf16_tile(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss,
                                  bool exact, __m256 *nan) {
    __m256i x[4];
    for (int j = 0; j < 4; j++) {
        __m256i a = LD256(s + 2 * j * ss), b = LD256(s + (2 * j + 1) * ss);
        *nan = _mm256_or_ps(*nan, _mm256_cmp_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b),
                                                _CMP_UNORD_Q));
        x[j] = BF16_INTERLEAVE(bf16_high8(a, exact), bf16_high8(b, exact));
    }
    __m256i t0 = _mm256_unpacklo_epi32(x[0], x[1]), t1 = _mm256_unpackhi_epi32(x[0], x[1]);
    __m256i t2 = _mm256_unpacklo_epi32(x[2], x[3]), t3 = _mm256_unpackhi_epi32(x[2], x[3]);
    ST_HALVES(d, 4 * ds, _mm256_unpacklo_epi64(t0, t2));
    ST_HALVES(d + ds, 4 * ds, _mm256_unpackhi_epi64(t0, t2));
    ST_HALVES(d + 2 * ds, 4 * ds, _mm256_unpacklo_epi64(t1, t3));
    ST_HALVES(d + 3 * ds, 4 * ds, _mm256_unpackhi_epi64(t1, t3));
}

AVX2 static inline void tile_f32_bf16_8x8(unsigned char *d, int64_t ds, const unsigned char *s,
                                          int64_t ss) {
    __m256 nan = _mm256_setzero_ps();
    bf16_tile(d, ds, s, ss, false, &nan);
    if (__builtin_expect(!_mm256_testz_ps(nan, nan), 0)) bf16_tile(d, ds, s, ss, true, &nan);
}

/* 4x4 of 64-bit elements: rows k and k + 2 share a register. */
AVX2 static inline void tile8_4x4(unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss) {
    __m256i a0 = PAIR(s, s + 2 * ss), a1 = PAIR(s + ss, s + 3 * ss);
    __m256i a2 = PAIR(s + 16, s + 2 * ss + 16), a3 = PAIR(s + ss + 16, s + 3 * ss + 16);
    ST256(d, _mm256_unpacklo_epi64(a0, a1));
    ST256(d + ds, _mm256_unpackhi_epi64(a0, a1));
    ST256(d + 2 * ds, _mm256_unpacklo_epi64(a2, a3));
    ST256(d + 3 * ds, _mm256_unpackhi_epi64(a2, a3));
}

/* 16 source rows by 8 columns of 16-bit elements: rows k and k + 8 share a
 * register, and the 8x8 transpose in each half makes a whole destination row
 * of 16. */
AVX2 static inline void tile2_16x8(unsigned char *d, int64_t ds, const unsigned char *s,
                                   int64_t ss) {
    TRANSPOSE8x16(__m256i, _mm256_unpack, ST256, d, ds, PAIR(s, s + 8 * ss),
                  PAIR(s + ss, s + 9 * ss), PAIR(s + 2 * ss, s + 10 * ss),
                  PAIR(s + 3 * ss, s + 11 * ss), PAIR(s + 4 * ss, s + 12 * ss),
                  PAIR(s + 5 * ss, s + 13 * ss), PAIR(s + 6 * ss, s + 14 * ss),
                  PAIR(s + 7 * ss, s + 15 * ss));
}

TILED(avx2_2, 8, 16, 2, 2, tile2_16x8, sse2_2, AVX2)
TILED(avx2_4, 4, 8, 4, 4, tile4_4x8, sse2_4, AVX2)
TILED(avx2_8, 4, 4, 8, 8, tile8_4x4, sse2_8, AVX2)
TILED(avx2_f32_bf16, 8, 8, 4, 2, tile_f32_bf16_8x8, sse2_f32_bf16, AVX2)
#endif /* JP_X86 */

jp_transpose_fn jp_transpose_for(size_t esize) {
    jp_simd level = jp_simd_level();
#ifdef JP_X86
    if (level >= JP_SIMD_SSE2) {
        bool avx2 = level >= JP_SIMD_AVX2;
        switch (esize) {
        case 1: return sse2_1;
        case 2: return avx2 ? avx2_2 : sse2_2;
        case 4: return avx2 ? avx2_4 : sse2_4;
        case 8: return avx2 ? avx2_8 : sse2_8;
        case 16: return portable16;
        default: return NULL;
        }
    }
#else
    (void)level;
#endif
    switch (esize) {
    case 1: return portable1;
    case 2: return portable2;
    case 4: return portable4;
    case 8: return portable8;
    case 16: return portable16;
    default: return NULL;
    }
}

jp_transpose_fn jp_transpose_f32_bf16(void) {
    jp_simd level = jp_simd_level();
#ifdef JP_X86
    if (level >= JP_SIMD_AVX2) return avx2_f32_bf16;
    if (level >= JP_SIMD_SSE2) return sse2_f32_bf16;
#else
    (void)level;
#endif
    return portable_f32_bf16;
}

void jp_put_rows(unsigned char *dst, int64_t ds, const unsigned char *src, int64_t ss, int rows,
                 size_t bytes, bool stream) {
#ifdef JP_X86
    /* Rows are short (a block's, at most ROW_BYTES), so they are copied
     * inline: a call to memcpy per row costs as much as the copy. */
    if (bytes % 16 == 0) {
        for (int r = 0; r < rows; r++) {
            unsigned char *d = dst + r * ds;
            const unsigned char *s = src + r * ss;
            if (stream && bytes % 64 == 0 && ((uintptr_t)d & 63) == 0) {
                for (size_t k = 0; k < bytes; k += 64) {
                    _mm_stream_si128((__m128i *)(void *)(d + k), LD128(s + k));
                    _mm_stream_si128((__m128i *)(void *)(d + k + 16), LD128(s + k + 16));
                    _mm_stream_si128((__m128i *)(void *)(d + k + 32), LD128(s + k + 32));
                    _mm_stream_si128((__m128i *)(void *)(d + k + 48), LD128(s + k + 48));
                }
            } else {
                for (size_t k = 0; k < bytes; k += 16) ST128(d + k, LD128(s + k));
            }
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

void jp_prefetch_rows(const unsigned char *src, int64_t ss, int rows, size_t bytes) {
    for (int r = 0; r < rows; r++)
        for (size_t k = 0; k < bytes; k += 64) __builtin_prefetch(src + r * ss + (int64_t)k, 0, 2);
}
