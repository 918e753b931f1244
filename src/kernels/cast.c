/* Element casts that agree bit for bit with numpy and ml_dtypes.
 *
 * What the reference libraries do, and so what this file does:
 *  - Rounding is to nearest, ties to even, except float8_e8m0fnu, whose ties
 *    round up (away from zero; it has no sign).
 *  - numpy converts float32 and float64 to float16 directly, and keeps the
 *    top bits of a NaN's payload (a quiet bit is not forced; an all-zero
 *    payload becomes 1). float16 widens to float32 or float64 the same way.
 *  - ml_dtypes converts everything to bfloat16 and float8 through float32
 *    (so float64 is rounded twice, as there), and gives the canonical quiet
 *    NaN of the target, with the source's sign. Types without infinity
 *    (e4m3fn and the fnuz kinds) turn infinity and overflow into NaN. The
 *    fnuz kinds have one NaN (0x80, which reads back as -NaN) and no -0.
 *    float8_e8m0fnu is 2^(b-127): zero, negatives and NaN all become 0xFF.
 *  - bfloat16 to float16 gives the canonical NaN (ml_dtypes), unlike the
 *    float32 route.
 *  - float32 <-> float64 and integer -> float are the C conversions (the
 *    hardware's), which is what both libraries compile to.
 *  - Integer narrowing and float -> integer are refused (JP_RANGE) when the
 *    value would change; numpy would wrap or give an undefined value. A float
 *    that fits after truncation toward zero converts like C does.
 */
#include "cast.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 256 /* scalars per pass through the buffer between two stages */

static inline float f32_of(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}
static inline uint32_t bits_of_f32(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}
static inline double f64_of(uint64_t b) {
    double f;
    memcpy(&f, &b, 8);
    return f;
}
static inline uint64_t bits_of_f64(double f) {
    uint64_t b;
    memcpy(&b, &f, 8);
    return b;
}

/* ------------------------------------------------------------ small floats */

typedef enum { K_IEEE, K_FN, K_FNUZ } fkind;

/* A binary float of at most 16 bits: exponent and mantissa widths, bias, and
 * how it spells infinity and NaN. */
typedef struct fmt {
    int ebits, mbits, bias;
    fkind kind;
} fmt;

static const fmt FMT_F16 = {5, 10, 15, K_IEEE};
static const fmt FMT_E4M3FN = {4, 3, 7, K_FN};
static const fmt FMT_E5M2 = {5, 2, 15, K_IEEE};
static const fmt FMT_E4M3FNUZ = {4, 3, 8, K_FNUZ};
static const fmt FMT_E5M2FNUZ = {5, 2, 16, K_FNUZ};

static inline uint32_t fmt_sign_bit(const fmt *f) { return 1u << (f->ebits + f->mbits); }

/* The canonical NaN ml_dtypes gives for a sign. */
static inline uint32_t fmt_nan(const fmt *f, uint32_t neg) {
    uint32_t allexp = ((1u << f->ebits) - 1) << f->mbits;
    switch (f->kind) {
    case K_IEEE: return (neg ? fmt_sign_bit(f) : 0) | allexp | (1u << (f->mbits - 1));
    case K_FN: return (neg ? fmt_sign_bit(f) : 0) | allexp | ((1u << f->mbits) - 1);
    case K_FNUZ: return fmt_sign_bit(f);
    }
    return 0;
}

/* Rounds the finite nonzero value sig * 2^exp2 (0 < sig < 2^53) to the
 * format, ties to even, with overflow turned into infinity or NaN. */
static uint32_t fmt_round(const fmt *f, uint64_t sig, int exp2, bool neg) {
    uint32_t sign = neg ? fmt_sign_bit(f) : 0;
    uint64_t allexp = (uint64_t)((1u << f->ebits) - 1) << f->mbits;
    int top = 63 - __builtin_clzll(sig);
    int e = top + exp2; /* floor(log2(value)) */
    int emin = 1 - f->bias;
    if (e > (1 << f->ebits) - f->bias) return f->kind == K_IEEE ? sign | (uint32_t)allexp : fmt_nan(f, neg);
    int q = (e > emin ? e : emin) - f->mbits; /* weight of the last kept bit */
    int s = q - exp2;                         /* bits to drop */
    uint64_t r;
    if (s <= 0) {
        r = sig << -s;
    } else if (s > top + 1) {
        r = 0; /* below half the smallest step, so not a tie either */
    } else {
        r = sig >> s;
        uint64_t rem = sig & ((UINT64_C(1) << s) - 1), half = UINT64_C(1) << (s - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
    }
    /* r counts steps of 2^q and its leading bit is the implicit one, so adding
     * it to (exponent field - 1) carries into the exponent; subnormals have
     * q = emin - mbits and land on field 0. */
    uint64_t bits = ((uint64_t)(q + f->mbits - emin) << f->mbits) + r;
    uint64_t mmask = (UINT64_C(1) << f->mbits) - 1;
    switch (f->kind) {
    case K_IEEE:
        if (bits >= allexp) return sign | (uint32_t)allexp;
        break;
    case K_FN:
        if (bits >= (allexp | mmask)) return fmt_nan(f, neg);
        break;
    case K_FNUZ:
        if (bits > (allexp | mmask)) return fmt_nan(f, neg);
        if (bits == 0) return 0; /* no negative zero */
        break;
    }
    return sign | (uint32_t)bits;
}

/* float32 bits to a small format. nan_payload: keep the payload's top bits
 * (numpy's float16) instead of the canonical NaN (ml_dtypes). */
static inline uint32_t fmt_from_f32(const fmt *f, uint32_t b, bool nan_payload) {
    bool neg = b >> 31;
    uint32_t a = b & 0x7fffffffu;
    if (a >= 0x7f800000u) {
        if (a == 0x7f800000u)
            return f->kind == K_IEEE ? (neg ? fmt_sign_bit(f) : 0) | (((1u << f->ebits) - 1) << f->mbits)
                                     : fmt_nan(f, neg);
        if (!nan_payload) return fmt_nan(f, neg);
        uint32_t m = (a & 0x7fffffu) >> (23 - f->mbits);
        return (neg ? fmt_sign_bit(f) : 0) | (((1u << f->ebits) - 1) << f->mbits) | (m ? m : 1);
    }
    if (a == 0) return f->kind == K_FNUZ ? 0 : (neg ? fmt_sign_bit(f) : 0);
    uint32_t e = a >> 23;
    return fmt_round(f, e ? (a & 0x7fffffu) | 0x800000u : a, (int)(e ? e : 1) - 150, neg);
}

/* A small format's bits to float32 bits, exactly. NaN: the payload shifted
 * up (nan_payload, numpy's float16) or the canonical quiet NaN (ml_dtypes). */
static inline uint32_t fmt_to_f32(const fmt *f, uint32_t b, bool nan_payload) {
    uint32_t sign = (b & fmt_sign_bit(f)) ? 0x80000000u : 0;
    uint32_t mmask = (1u << f->mbits) - 1, emask = (1u << f->ebits) - 1;
    uint32_t ex = (b >> f->mbits) & emask, m = b & mmask;
    if (f->kind == K_FNUZ && b == fmt_sign_bit(f)) return 0xffc00000u;
    if ((f->kind == K_IEEE && ex == emask) || (f->kind == K_FN && ex == emask && m == mmask)) {
        if (m == 0) return sign | 0x7f800000u;
        return sign | (nan_payload ? 0x7f800000u | (m << (23 - f->mbits)) : 0x7fc00000u);
    }
    if (ex == 0) {
        if (m == 0) return sign;
        /* subnormal: m * 2^(1 - bias - mbits), normal in float32 */
        int sh = __builtin_clz(m) - 31 + f->mbits; /* shifts to bring the top bit to mbits */
        m <<= sh;
        return sign | ((uint32_t)(1 - f->bias - sh + 127) << 23) | ((m & mmask) << (23 - f->mbits));
    }
    return sign | ((uint32_t)((int)ex - f->bias + 127) << 23) | (m << (23 - f->mbits));
}

/* float8_e8m0fnu: 2^(b - 127), 0xFF is NaN; ties round up. */
static inline uint8_t e8m0_from_f32(uint32_t b) {
    if (b >> 31 || b == 0 || b >= 0x7f800000u) return 0xff; /* negative, zero, -0, inf, NaN */
    uint32_t e = b >> 23, m = b & 0x7fffffu;
    if (e == 0) return m > 0x400000u; /* ml_dtypes: anything above 2^-127 gives 2^-126 */
    return (uint8_t)(e + (m >= 0x400000u)); /* 0xFE + 1 is NaN, as overflow is */
}
static inline uint32_t e8m0_to_f32(uint8_t b) {
    if (b == 0xff) return 0x7fc00000u;
    return b ? (uint32_t)b << 23 : 0x00400000u;
}

/* float64 <-> float16 directly, as numpy does. */
static inline uint16_t f16_from_f64(uint64_t b) {
    bool neg = b >> 63;
    uint64_t a = b & UINT64_C(0x7fffffffffffffff);
    if (a >= UINT64_C(0x7ff0000000000000)) {
        if (a == UINT64_C(0x7ff0000000000000)) return (uint16_t)((neg ? 0x8000u : 0) | 0x7c00u);
        uint32_t m = (uint32_t)((a & UINT64_C(0xfffffffffffff)) >> 42);
        return (uint16_t)((neg ? 0x8000u : 0) | 0x7c00u | (m ? m : 1));
    }
    if (a == 0) return neg ? 0x8000 : 0;
    uint64_t e = a >> 52;
    return (uint16_t)fmt_round(&FMT_F16, e ? (a & UINT64_C(0xfffffffffffff)) | (UINT64_C(1) << 52) : a,
                               (int)(e ? e : 1) - 1075, neg);
}
static inline uint64_t f16_to_f64(uint16_t h) {
    uint64_t sign = (uint64_t)(h >> 15) << 63;
    uint32_t ex = (h >> 10) & 0x1f, m = h & 0x3ffu;
    if (ex == 0x1f) return sign | UINT64_C(0x7ff0000000000000) | ((uint64_t)m << 42);
    /* finite values go through float32 exactly */
    return bits_of_f64((double)f32_of(fmt_to_f32(&FMT_F16, h, true)));
}

/* ------------------------------------------------------------ stages */

/* float32 <-> small floats. */
static size_t bf16_from_f32_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const uint32_t *in = src;
    uint16_t *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = jp_bf16_from_f32(in[i]);
    return n;
}
static size_t bf16_to_f32_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const uint16_t *in = src;
    uint32_t *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = (uint32_t)in[i] << 16;
    return n;
}

#define SMALL_FLOAT_STAGES(name, type, f, nan_payload)                                     \
    static size_t name##_from_f32_stage(const jp_cast *c, void *dst, const void *src, size_t n) { \
        (void)c;                                                                           \
        const uint32_t *in = src;                                                          \
        type *out = dst;                                                                   \
        for (size_t i = 0; i < n; i++) out[i] = (type)fmt_from_f32(&f, in[i], nan_payload); \
        return n;                                                                          \
    }                                                                                      \
    static size_t name##_to_f32_stage(const jp_cast *c, void *dst, const void *src, size_t n) { \
        (void)c;                                                                           \
        const type *in = src;                                                              \
        uint32_t *out = dst;                                                               \
        for (size_t i = 0; i < n; i++) out[i] = fmt_to_f32(&f, in[i], nan_payload);        \
        return n;                                                                          \
    }
SMALL_FLOAT_STAGES(f16, uint16_t, FMT_F16, true)
SMALL_FLOAT_STAGES(e4m3fn, uint8_t, FMT_E4M3FN, false)
SMALL_FLOAT_STAGES(e5m2, uint8_t, FMT_E5M2, false)
SMALL_FLOAT_STAGES(e4m3fnuz, uint8_t, FMT_E4M3FNUZ, false)
SMALL_FLOAT_STAGES(e5m2fnuz, uint8_t, FMT_E5M2FNUZ, false)
#undef SMALL_FLOAT_STAGES

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
/* float16 with the F16C instructions, eight at a time. They round like
 * numpy; only NaNs differ (the hardware sets the quiet bit), so a group
 * holding a NaN is redone by the portable code. */
#define F16C __attribute__((target("avx2,f16c")))
F16C static size_t f16_from_f32_f16c(const jp_cast *c, void *dst, const void *src, size_t n) {
    const uint32_t *in = src;
    uint16_t *out = dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps((const float *)(const void *)(in + i));
        __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(void *)(out + i), h);
        if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)))
            f16_from_f32_stage(c, out + i, in + i, 8);
    }
    return i + f16_from_f32_stage(c, out + i, in + i, n - i);
}
F16C static size_t f16_to_f32_f16c(const jp_cast *c, void *dst, const void *src, size_t n) {
    const uint16_t *in = src;
    uint32_t *out = dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(in + i)));
        _mm256_storeu_ps((float *)(void *)(out + i), x);
        if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)))
            f16_to_f32_stage(c, out + i, in + i, 8);
    }
    return i + f16_to_f32_stage(c, out + i, in + i, n - i);
}
/* CPUID leaf 1, ECX bit 29 (__builtin_cpu_supports knows "f16c" in GCC,
 * not in clang 14, which builds the fuzz targets). */
static bool has_f16c(void) {
    unsigned a, b, c, d;
    return jp_simd_level() >= JP_SIMD_AVX2 && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

jp_simd jp_simd_level(void) {
    const char *want = getenv("JAXPORT_SIMD");
    if (want && strcmp(want, "portable") == 0) return JP_SIMD_PORTABLE;
#if defined(__x86_64__) && defined(__GNUC__)
    if (want && strcmp(want, "sse2") == 0) return JP_SIMD_SSE2;
    return __builtin_cpu_supports("avx2") ? JP_SIMD_AVX2 : JP_SIMD_SSE2;
#else
    return JP_SIMD_PORTABLE;
#endif
}

static size_t e8m0_from_f32_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const uint32_t *in = src;
    uint8_t *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = e8m0_from_f32(in[i]);
    return n;
}
static size_t e8m0_to_f32_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const uint8_t *in = src;
    uint32_t *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = e8m0_to_f32(in[i]);
    return n;
}

/* bfloat16 -> float16 gives the canonical NaN, so it cannot be the float32
 * route (which keeps payloads). */
static size_t bf16_to_f16_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const uint16_t *in = src;
    uint16_t *out = dst;
    for (size_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)in[i] << 16;
        if ((b & 0x7fffffffu) > 0x7f800000u) b = (b & 0x80000000u) | 0x7fc00000u;
        out[i] = (uint16_t)fmt_from_f32(&FMT_F16, b, true);
    }
    return n;
}

static size_t f16_from_f64_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const uint64_t *in = src;
    uint16_t *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = f16_from_f64(in[i]);
    return n;
}
static size_t f16_to_f64_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const uint16_t *in = src;
    uint64_t *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = f16_to_f64(in[i]);
    return n;
}

static size_t f32_from_f64_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const double *in = src;
    float *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = (float)in[i];
    return n;
}
static size_t f32_to_f64_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const float *in = src;
    double *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = (double)in[i];
    return n;
}

/* Integers. One stage per direction, switching on the integer type once per
 * run. A bool reads as 0 or 1 whatever its byte. Narrowing goes through
 * int64 and checks the target's range (uint64 values above INT64_MAX fit no
 * narrower type, so they fail on the way in). */
#define INT_CASES(X)            \
    X(JP_BOOL, uint8_t, 0)      \
    X(JP_U8, uint8_t, 1)        \
    X(JP_I8, int8_t, 1)         \
    X(JP_U16, uint16_t, 1)      \
    X(JP_I16, int16_t, 1)       \
    X(JP_U32, uint32_t, 1)      \
    X(JP_I32, int32_t, 1)       \
    X(JP_U64, uint64_t, 1)      \
    X(JP_I64, int64_t, 1)

/* Reads element i of an integer run as its value (a bool as 0 or 1). */
#define INT_VALUE(T, is_int, p, i) ((is_int) ? ((const T *)(p))[i] : (T)(((const T *)(p))[i] != 0))

#define INT_TO(OUT_T)                                                                 \
    switch (c->src) {                                                                 \
        INT_CASES(INT_TO_CASE_##OUT_T)                                                \
    default: break;                                                                   \
    }                                                                                 \
    return n;

#define INT_TO_CASE_float(DT, T, is_int) \
    case DT: for (size_t i = 0; i < n; i++) out[i] = (float)INT_VALUE(T, is_int, src, i); break;
#define INT_TO_CASE_double(DT, T, is_int) \
    case DT: for (size_t i = 0; i < n; i++) out[i] = (double)INT_VALUE(T, is_int, src, i); break;
#define INT_TO_CASE_bool(DT, T, is_int) \
    case DT: for (size_t i = 0; i < n; i++) out[i] = ((const T *)src)[i] != 0; break;

static size_t int_to_f32_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    float *out = dst;
    INT_TO(float)
}
static size_t int_to_f64_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    double *out = dst;
    INT_TO(double)
}
static size_t int_to_bool_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    uint8_t *out = dst;
    INT_TO(bool)
}

static size_t int_to_i64_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    int64_t *out = dst;
    if (c->src == JP_U64) {
        const uint64_t *in = src;
        for (size_t i = 0; i < n; i++) {
            if (in[i] > (uint64_t)INT64_MAX) return i;
            out[i] = (int64_t)in[i];
        }
        return n;
    }
#define CASE(DT, T, is_int) \
    case DT: for (size_t i = 0; i < n; i++) out[i] = (int64_t)INT_VALUE(T, is_int, src, i); break;
    switch (c->src) {
        INT_CASES(CASE)
    default: break;
    }
#undef CASE
    return n;
}

/* The range of each integer target, as int64 (uint64 above INT64_MAX never
 * arrives here) and as the doubles that bound a float before truncation. */
static const struct {
    int64_t lo, hi;
    double flo, fhi; /* trunc(v) must be >= flo and < fhi; both are powers of two */
    const char *text;
} int_range[JP_DTYPE_COUNT] = {
    [JP_U8] = {0, UINT8_MAX, 0.0, 256.0, "0 to 255"},
    [JP_I8] = {INT8_MIN, INT8_MAX, -128.0, 128.0, "-128 to 127"},
    [JP_U16] = {0, UINT16_MAX, 0.0, 65536.0, "0 to 65535"},
    [JP_I16] = {INT16_MIN, INT16_MAX, -32768.0, 32768.0, "-32768 to 32767"},
    [JP_U32] = {0, UINT32_MAX, 0.0, 4294967296.0, "0 to 4294967295"},
    [JP_I32] = {INT32_MIN, INT32_MAX, -2147483648.0, 2147483648.0, "-2147483648 to 2147483647"},
    [JP_U64] = {0, INT64_MAX, 0.0, 18446744073709551616.0, "0 to 18446744073709551615"},
    [JP_I64] = {INT64_MIN, INT64_MAX, -9223372036854775808.0, 9223372036854775808.0,
                "-9223372036854775808 to 9223372036854775807"},
};

static size_t int_from_i64_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    const int64_t *in = src;
    int64_t lo = int_range[c->dst].lo, hi = int_range[c->dst].hi;
    for (size_t i = 0; i < n; i++)
        if (in[i] < lo || in[i] > hi) {
            n = i;
            break;
        }
#define CASE(DT, T, is_int) \
    case DT: for (size_t i = 0; i < n; i++) ((T *)dst)[i] = (T)in[i]; break;
    switch (c->dst) {
        INT_CASES(CASE)
    default: break;
    }
#undef CASE
    return n;
}

/* Float to integer: truncation toward zero, as C and numpy do, for values
 * whose truncation fits; NaN, infinities and the rest are refused. */
#define FLOAT_TO_INT(IN_T)                                                           \
    const IN_T *in = src;                                                            \
    double flo = int_range[c->dst].flo, fhi = int_range[c->dst].fhi;                 \
    for (size_t i = 0; i < n; i++) {                                                 \
        double t = trunc((double)in[i]);                                             \
        if (!(t >= flo && t < fhi)) {                                                \
            n = i;                                                                   \
            break;                                                                   \
        }                                                                            \
    }                                                                                \
    switch (c->dst) {                                                                \
        INT_CASES(FLOAT_TO_INT_CASE)                                                 \
    default: break;                                                                  \
    }                                                                                \
    return n;
#define FLOAT_TO_INT_CASE(DT, T, is_int) \
    case DT: for (size_t i = 0; i < n; i++) ((T *)dst)[i] = (T)trunc((double)in[i]); break;

static size_t int_from_f32_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    FLOAT_TO_INT(float)
}
static size_t int_from_f64_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    FLOAT_TO_INT(double)
}

/* Floats to bool: nonzero is true, and so is NaN. */
static size_t bool_from_f32_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const float *in = src;
    uint8_t *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = in[i] != 0.0f;
    return n;
}
static size_t bool_from_f64_stage(const jp_cast *c, void *dst, const void *src, size_t n) {
    (void)c;
    const double *in = src;
    uint8_t *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = in[i] != 0.0;
    return n;
}

/* ------------------------------------------------------------ planning */

typedef enum { C_NONE, C_INT, C_FLOAT, C_F64, C_COMPLEX, C_OPAQUE } dclass;

static dclass class_of(jp_dtype dt) {
    switch (dt) {
    case JP_BOOL: case JP_U8: case JP_I8: case JP_U16: case JP_I16:
    case JP_U32: case JP_I32: case JP_U64: case JP_I64:
        return C_INT;
    case JP_F16: case JP_BF16: case JP_F32: case JP_F8_E4M3FN: case JP_F8_E5M2:
    case JP_F8_E4M3FNUZ: case JP_F8_E5M2FNUZ: case JP_F8_E8M0FNU:
        return C_FLOAT;
    case JP_F64:
        return C_F64;
    case JP_C64: case JP_C128:
        return C_COMPLEX;
    case JP_C32: case JP_F4_E2M1FN_X2:
        return C_OPAQUE;
    default:
        return C_NONE;
    }
}

/* The stages between float32 and each narrower float (NULL for float32). */
static jp_cast_stage from_f32_of(jp_dtype dt) {
    switch (dt) {
#ifdef F16C
    case JP_F16: return has_f16c() ? f16_from_f32_f16c : f16_from_f32_stage;
#else
    case JP_F16: return f16_from_f32_stage;
#endif
    case JP_BF16: return bf16_from_f32_stage;
    case JP_F8_E4M3FN: return e4m3fn_from_f32_stage;
    case JP_F8_E5M2: return e5m2_from_f32_stage;
    case JP_F8_E4M3FNUZ: return e4m3fnuz_from_f32_stage;
    case JP_F8_E5M2FNUZ: return e5m2fnuz_from_f32_stage;
    case JP_F8_E8M0FNU: return e8m0_from_f32_stage;
    default: return NULL;
    }
}
static jp_cast_stage to_f32_of(jp_dtype dt) {
    switch (dt) {
#ifdef F16C
    case JP_F16: return has_f16c() ? f16_to_f32_f16c : f16_to_f32_stage;
#else
    case JP_F16: return f16_to_f32_stage;
#endif
    case JP_BF16: return bf16_to_f32_stage;
    case JP_F8_E4M3FN: return e4m3fn_to_f32_stage;
    case JP_F8_E5M2: return e5m2_to_f32_stage;
    case JP_F8_E4M3FNUZ: return e4m3fnuz_to_f32_stage;
    case JP_F8_E5M2FNUZ: return e5m2fnuz_to_f32_stage;
    case JP_F8_E8M0FNU: return e8m0_to_f32_stage;
    default: return NULL;
    }
}

/* Fills first/second/mid_size so that src -> [mid] -> dst. */
static void stages(jp_cast *c, jp_cast_stage a, jp_cast_stage b, size_t mid_size) {
    if (!a) {
        a = b;
        b = NULL;
    }
    c->first = a;
    c->second = b;
    c->mid_size = b ? mid_size : 0;
}

jp_code jp_cast_plan(jp_cast *c, jp_dtype dst, jp_dtype src, jp_err *err) {
    memset(c, 0, sizeof *c);
    c->src = src;
    c->dst = dst;
    c->src_size = jp_dtype_size(src);
    c->dst_size = jp_dtype_size(dst);
    c->lanes = 1;
    dclass sc = class_of(src), dc = class_of(dst);
    if (sc == C_NONE || dc == C_NONE)
        return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, NULL, "dtype %d is not a jaxport dtype",
                          sc == C_NONE ? (int)src : (int)dst);
    if (src == dst) {
        c->copy = true;
        return JP_OK;
    }
    jp_cast_stage s32 = to_f32_of(src), d32 = from_f32_of(dst);
    switch (sc) {
    case C_INT:
        if (dc == C_INT && dst == JP_BOOL) stages(c, int_to_bool_stage, NULL, 0);
        else if (dc == C_INT) stages(c, src == JP_I64 ? NULL : int_to_i64_stage,
                                     dst == JP_I64 ? NULL : int_from_i64_stage, 8);
        else if (dst == JP_F64) stages(c, int_to_f64_stage, NULL, 0);
        else if (dc == C_FLOAT) stages(c, int_to_f32_stage, d32, 4);
        break;
    case C_FLOAT:
        if (dc == C_INT) stages(c, s32, dst == JP_BOOL ? bool_from_f32_stage : int_from_f32_stage, 4);
        else if (dst == JP_F64) stages(c, src == JP_F16 ? f16_to_f64_stage : s32,
                                       src == JP_F16 ? NULL : f32_to_f64_stage, 4);
        else if (src == JP_BF16 && dst == JP_F16) stages(c, bf16_to_f16_stage, NULL, 0);
        else if (dc == C_FLOAT) stages(c, s32, d32, 4);
        break;
    case C_F64:
        if (dc == C_INT) stages(c, dst == JP_BOOL ? bool_from_f64_stage : int_from_f64_stage, NULL, 0);
        else if (dst == JP_F16) stages(c, f16_from_f64_stage, NULL, 0);
        else if (dc == C_FLOAT) stages(c, f32_from_f64_stage, d32, 4);
        break;
    case C_COMPLEX:
        if (dc == C_COMPLEX) {
            c->lanes = 2;
            stages(c, src == JP_C64 ? f32_to_f64_stage : f32_from_f64_stage, NULL, 0);
        }
        break;
    default:
        break;
    }
    if (!c->first)
        return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, NULL, "cannot cast %s to %s",
                          jp_dtype_numpy_name(src), jp_dtype_numpy_name(dst));
    return JP_OK;
}

size_t jp_cast_run(const jp_cast *c, void *dst, const void *src, size_t n) {
    if (c->copy) {
        if (n) memcpy(dst, src, n * c->src_size);
        return n;
    }
    size_t m = n * c->lanes;
    if (!c->second) return c->first(c, dst, src, m) / c->lanes;
    _Alignas(64) unsigned char mid[CHUNK * 8];
    const unsigned char *in = src;
    unsigned char *out = dst;
    size_t ssz = c->src_size / c->lanes, dsz = c->dst_size / c->lanes;
    for (size_t done = 0; done < m;) {
        size_t k = m - done < CHUNK ? m - done : CHUNK;
        size_t r = c->first(c, mid, in + done * ssz, k);
        if (r == k) r = c->second(c, out + done * dsz, mid, k);
        if (r < k) return (done + r) / c->lanes;
        done += k;
    }
    return n;
}

/* ------------------------------------------------------------ messages */

void jp_cast_format(jp_dtype dt, const void *elem, char *out, size_t cap) {
    const unsigned char *p = elem;
    switch (dt) {
#define CASE(DT, T, is_int)                                                              \
    case DT:                                                                             \
        if (DT == JP_U64) snprintf(out, cap, "%llu", (unsigned long long)INT_VALUE(T, is_int, p, 0)); \
        else snprintf(out, cap, "%lld", (long long)INT_VALUE(T, is_int, p, 0));          \
        return;
        INT_CASES(CASE)
#undef CASE
    case JP_F64: {
        double v;
        memcpy(&v, p, 8);
        snprintf(out, cap, "%.17g", v);
        return;
    }
    default: {
        jp_cast c;
        uint32_t b;
        if (class_of(dt) == C_FLOAT && jp_cast_plan(&c, JP_F32, dt, NULL) == JP_OK &&
            jp_cast_run(&c, &b, p, 1) == 1) {
            snprintf(out, cap, "%.9g", (double)f32_of(b));
            return;
        }
        snprintf(out, cap, "?");
        return;
    }
    }
}

const char *jp_cast_range_text(jp_dtype dt) {
    return (unsigned)dt < JP_DTYPE_COUNT && int_range[dt].text ? int_range[dt].text : "";
}
