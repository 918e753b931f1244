/* Tests for src/kernels and the thread pool: small exact cases, the errors,
 * views (slice, split, reshape, concat) and output that does not depend on
 * the thread count. The Python tests compare with numpy at scale. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "kernels/cast.h"
#include "kernels/kernels.h"

static uint16_t bf16_bits(float f) {
    uint16_t out;
    jp_permute_cast(&out, JP_BF16, &f, JP_F32, 0, NULL, NULL, NULL, NULL);
    return out;
}

static void test_transpose_small(void) {
    const int32_t src[6] = {1, 2, 3, 4, 5, 6}; /* 2 x 3 */
    int32_t dst[6] = {0};
    const int64_t shape[2] = {2, 3};
    const int perm[2] = {1, 0};
    CHECK_EQ_U64(jp_permute_cast(dst, JP_I32, src, JP_I32, 2, shape, NULL, perm, NULL), JP_OK);
    const int32_t want[6] = {1, 4, 2, 5, 3, 6};
    CHECK(memcmp(dst, want, sizeof want) == 0);

    /* A strided source: every other column of a 2 x 4 int64, as int16. */
    const int64_t wide[8] = {10, 11, 12, 13, 20, 21, 22, 23};
    const int64_t sshape[2] = {2, 2}, sstrides[2] = {4, 2};
    int16_t narrow[4] = {0};
    CHECK_EQ_U64(jp_permute_cast(narrow, JP_I16, wide, JP_I64, 2, sshape, sstrides, perm, NULL),
                 JP_OK);
    CHECK(narrow[0] == 10 && narrow[1] == 20 && narrow[2] == 12 && narrow[3] == 22);

    /* The conv permutation (O,I,kh,kw) -> (kh,kw,I,O) on 2x3x2x2, element by element. */
    float w[24], hwio[24];
    for (int i = 0; i < 24; i++) w[i] = (float)i;
    const int64_t oihw[4] = {2, 3, 2, 2};
    const int to_hwio[4] = {2, 3, 1, 0};
    CHECK_EQ_U64(jp_permute_cast(hwio, JP_F32, w, JP_F32, 4, oihw, NULL, to_hwio, NULL), JP_OK);
    int bad = 0;
    for (int o = 0; o < 2; o++)
        for (int i = 0; i < 3; i++)
            for (int h = 0; h < 2; h++)
                for (int k = 0; k < 2; k++)
                    bad += hwio[((h * 2 + k) * 3 + i) * 2 + o] != w[((o * 3 + i) * 2 + h) * 2 + k];
    CHECK_EQ_U64(bad, 0);
}

static void test_casts(void) {
    CHECK_EQ_U64(bf16_bits(1.0f), 0x3f80);
    CHECK_EQ_U64(bf16_bits(-2.5f), 0xc020);
    CHECK_EQ_U64(bf16_bits(1.0f + 1.0f / 256), 0x3f80); /* a tie goes to even */
    const uint8_t e4m3[4] = {0x38, 0x7e, 0x7f, 0x01}; /* 1, 448, NaN, 2^-9 */
    float f[4];
    const int64_t four[1] = {4};
    CHECK_EQ_U64(jp_permute_cast(f, JP_F32, e4m3, JP_F8_E4M3FN, 1, four, NULL, NULL, NULL), JP_OK);
    CHECK(f[0] == 1.0f && f[1] == 448.0f && f[2] != f[2] && f[3] == 1.0f / 512);
    const double d[2] = {65504.0, 65520.0};
    uint16_t h[2];
    const int64_t two[1] = {2};
    CHECK_EQ_U64(jp_permute_cast(h, JP_F16, d, JP_F64, 1, two, NULL, NULL, NULL), JP_OK);
    CHECK(h[0] == 0x7bff && h[1] == 0x7c00);
    const int64_t c64[2] = {0, 0};
    CHECK_EQ_U64(jp_permute_cast(h, JP_BOOL, c64, JP_I64, 1, two, NULL, NULL, NULL), JP_OK);
}

static void test_errors(void) {
    jp_err err;
    const int16_t vals[4] = {1, -2, 300, 4}; /* 2 x 2 */
    int8_t out[4];
    const int64_t shape[2] = {2, 2};
    const int perm[2] = {1, 0};
    CHECK_EQ_U64(jp_permute_cast(out, JP_I8, vals, JP_I16, 2, shape, NULL, perm, &err), JP_RANGE);
    CHECK_STR(err.msg, "element [1, 0] is 300, which int8 cannot hold (-128 to 127)");
    CHECK_EQ_U64(jp_permute_cast(out, JP_U8, vals, JP_I16, 2, shape, NULL, NULL, &err), JP_RANGE);
    CHECK_STR(err.msg, "element [0, 1] is -2, which uint8 cannot hold (0 to 255)");
    const float nan[1] = {__builtin_nanf("")};
    const int64_t one[1] = {1};
    CHECK_EQ_U64(jp_permute_cast(out, JP_I8, nan, JP_F32, 1, one, NULL, NULL, &err), JP_RANGE);
    CHECK_STR(err.msg, "element [0] is nan, which int8 cannot hold (-128 to 127)");
    CHECK_EQ_U64(jp_permute_cast(out, JP_F32, vals, JP_C64, 1, one, NULL, NULL, &err), JP_DTYPE);
    CHECK_STR(err.msg, "cannot cast complex64 to float32");
    const int twice[2] = {0, 0};
    CHECK_EQ_U64(jp_permute_cast(out, JP_I16, vals, JP_I16, 2, shape, NULL, twice, &err),
                 JP_ARGUMENT);
    const int64_t negative[1] = {-1};
    CHECK_EQ_U64(jp_permute_cast(out, JP_I16, vals, JP_I16, 1, negative, NULL, NULL, &err),
                 JP_ARGUMENT);
    const int64_t huge[2] = {INT64_MAX / 2, 4};
    CHECK_EQ_U64(jp_permute_cast(out, JP_I16, vals, JP_I16, 2, huge, NULL, NULL, &err), JP_LIMIT);
    CHECK_EQ_U64(jp_permute_cast(out, JP_I16, vals, JP_I16, JP_MAX_DIMS + 1, shape, NULL, NULL,
                                 &err),
                 JP_ARGUMENT);
    /* Zero elements: nothing is read or written, even through NULL. */
    const int64_t empty[2] = {3, 0};
    CHECK_EQ_U64(jp_permute_cast(NULL, JP_BF16, NULL, JP_F32, 2, empty, NULL, perm, &err), JP_OK);
}

static void test_extent(void) {
    uint64_t n;
    int64_t lo, hi;
    const int64_t shape[3] = {2, 3, 4}, strides[3] = {12, -4, 1};
    CHECK_EQ_U64(jp_strided_extent(3, shape, strides, &n, &lo, &hi, NULL), JP_OK);
    CHECK(n == 24 && lo == -8 && hi == 15);
    const int64_t zero[2] = {5, 0}, big[2] = {INT64_MAX, INT64_MAX};
    CHECK_EQ_U64(jp_strided_extent(2, zero, big, &n, &lo, &hi, NULL), JP_OK);
    CHECK(n == 0 && lo == 0 && hi == 0);
    const int64_t two[2] = {2, 2};
    CHECK_EQ_U64(jp_strided_extent(2, two, big, &n, &lo, &hi, NULL), JP_LIMIT);
}

static jp_view view2(const void *data, jp_dtype dt, int64_t rows, int64_t cols) {
    jp_view v = {.data = data, .dtype = dt, .ndim = 2, .shape = {rows, cols}, .strides = {cols, 1}};
    return v;
}

static void test_views(void) {
    jp_err err;
    /* Fused qkv (3E, E) with E = 2: three (E, E) parts along axis 0. */
    float qkv[12];
    for (int i = 0; i < 12; i++) qkv[i] = (float)i;
    jp_view all = view2(qkv, JP_F32, 6, 2), k;
    CHECK_EQ_U64(jp_view_split(&k, &all, 0, 3, 1, &err), JP_OK);
    CHECK(k.data == qkv + 4 && k.shape[0] == 2 && k.shape[1] == 2 && k.strides[0] == 2);
    CHECK_EQ_U64(jp_view_split(&k, &all, 0, 4, 0, &err), JP_SHAPE);
    CHECK_EQ_U64(jp_view_split(&k, &all, 2, 3, 0, &err), JP_ARGUMENT);
    CHECK_EQ_U64(jp_view_slice(&k, &all, 1, 1, 2, &err), JP_SHAPE);
    CHECK_EQ_U64(jp_view_slice(&k, &all, 1, 1, 1, &err), JP_OK);
    CHECK(k.data == qkv + 1 && k.shape[1] == 1 && k.strides[0] == 2);

    /* Reshape: a contiguous view takes any shape; a transposed one only
     * shapes that keep its strides expressible. */
    int64_t shape3[3] = {3, -1, 2};
    jp_view r;
    CHECK_EQ_U64(jp_view_reshape(&r, &all, 3, shape3, &err), JP_OK);
    CHECK(shape3[1] == 2 && r.strides[0] == 4 && r.strides[1] == 2 && r.strides[2] == 1);
    int64_t bad[2] = {5, 2};
    CHECK_EQ_U64(jp_view_reshape(&r, &all, 2, bad, &err), JP_SHAPE);
    jp_view t = {.data = qkv, .dtype = JP_F32, .ndim = 2, .shape = {2, 6}, .strides = {1, 2}};
    int64_t flat[1] = {12};
    CHECK_EQ_U64(jp_view_reshape(&r, &t, 1, flat, &err), JP_UNSUPPORTED);
    int64_t split_cols[3] = {2, 3, 2};
    CHECK_EQ_U64(jp_view_reshape(&r, &t, 3, split_cols, &err), JP_OK);
    CHECK(r.strides[0] == 1 && r.strides[1] == 4 && r.strides[2] == 2);

    /* Concat: two (2, 3) int32 parts transposed to (3, 2) and joined along
     * axis 1 into (3, 4) float32; a part that does not fit is named. */
    const int32_t a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {7, 8, 9, 10, 11, 12};
    jp_view parts[2] = {view2(a, JP_I32, 2, 3), view2(b, JP_I32, 2, 3)};
    const int perm[2] = {1, 0};
    float out[12];
    CHECK_EQ_U64(jp_concat_cast(out, JP_F32, 1, 2, parts, perm, NULL, &err), JP_OK);
    const float want[12] = {1, 4, 7, 10, 2, 5, 8, 11, 3, 6, 9, 12};
    CHECK(memcmp(out, want, sizeof want) == 0);
    const int32_t big[6] = {1, 2, 3, 4, 500, 6};
    parts[1] = view2(big, JP_I32, 2, 3);
    int8_t small[12];
    CHECK_EQ_U64(jp_concat_cast(small, JP_I8, 1, 2, parts, perm, NULL, &err), JP_RANGE);
    CHECK_STR(err.msg, "part 1: element [1, 1] is 500, which int8 cannot hold (-128 to 127)");
    parts[1] = view2(b, JP_I32, 3, 2);
    CHECK_EQ_U64(jp_concat_cast(out, JP_F32, 1, 2, parts, perm, NULL, &err), JP_SHAPE);
}


/* Random bytes (xorshift64), so float data holds NaNs, infinities and ties. */
static void fill_random(unsigned char *p, size_t n, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)(x >> 32);
    }
}

/* Whether the element at d (of dtype dd) is the one at s (of ds): the same
 * bytes, or for float32 -> bfloat16 the rounding jp_cast does. */
static bool same_element(const unsigned char *d, jp_dtype dd, const unsigned char *s, jp_dtype ds) {
    if (dd == ds) return memcmp(d, s, jp_dtype_size(ds)) == 0;
    uint32_t u;
    uint16_t h;
    memcpy(&u, s, 4);
    memcpy(&h, d, 2);
    return h == jp_bf16_from_f32(u);
}

/* Transposes rows x cols elements of esize bytes at src (row stride sstride
 * elements) with jp_permute_cast_strided and checks each element against the
 * definition; f32 -> bf16 when fused. Returns the number of wrong elements. */
static size_t check_transpose(jp_dtype dt, jp_dtype out_dt, const unsigned char *src,
                              int64_t sstride, int64_t rows, int64_t cols, jp_pool *pool) {
    size_t es = jp_dtype_size(dt), os = jp_dtype_size(out_dt);
    size_t n = (size_t)(rows * cols);
    unsigned char *dst = malloc(n * os + 1);
    if (!dst) return n + 1;
    const int64_t shape[2] = {rows, cols}, strides[2] = {sstride, 1};
    const int perm[2] = {1, 0};
    jp_err err;
    size_t bad = 0;
    if (jp_permute_cast_strided(dst, out_dt, NULL, src, dt, 2, shape, strides, perm, pool, &err))
        bad = n + 1;
    for (int64_t r = 0; r < rows && !bad; r++)
        for (int64_t c = 0; c < cols; c++) {
            const unsigned char *s = src + (r * sstride + c) * (int64_t)es;
            const unsigned char *d = dst + (size_t)(c * rows + r) * os;
            bad += !same_element(d, out_dt, s, dt);
        }
    free(dst);
    return bad;
}

/* Every transpose kernel on every SIMD level the CPU has (JAXPORT_SIMD
 * lowers it), on shapes around the micro-tiles (1 x n, n x 1, ragged edges),
 * on sources with negative and padded row strides, and on a destination
 * large enough to be streamed, split over threads. */
static void test_simd_levels(void) {
    static const struct {
        jp_dtype in, out;
    } kinds[] = {{JP_U8, JP_U8},   {JP_BF16, JP_BF16}, {JP_F32, JP_F32},
                 {JP_F64, JP_F64}, {JP_C128, JP_C128}, {JP_F32, JP_BF16}};
    static const int64_t shapes[][2] = {{1, 1},  {1, 37},  {37, 1},  {7, 9},   {8, 8},   {16, 16},
                                        {17, 33}, {64, 64}, {65, 130}, {300, 257}, {3, 1000},
                                        {37, 128}, {130, 256}, {70, 512}};
    const char *levels[] = {"portable", "sse2", NULL};
    size_t cap = 1300 * 1700 * 16 + 16;
    unsigned char *src = malloc(cap);
    jp_pool *pool = NULL;
    jp_err err;
    CHECK(src != NULL);
    CHECK_EQ_U64(jp_pool_create(&pool, 3, &err), JP_OK);
    if (!src || !pool) return;
    fill_random(src, cap, 7);
    /* Ties to even and NaNs with payloads in the first float32s. */
    const uint32_t special[6] = {0x3f808000, 0x3f818000, 0x7f800001, 0xffc00001, 0x7fffffff, 0x7f7fffff};
    memcpy(src, special, sizeof special);
    for (size_t l = 0; l < sizeof levels / sizeof *levels; l++) {
        if (levels[l])
            setenv("JAXPORT_SIMD", levels[l], 1);
        else
            unsetenv("JAXPORT_SIMD");
        for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
            size_t es = jp_dtype_size(kinds[k].in);
            for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
                int64_t rows = shapes[i][0], cols = shapes[i][1];
                size_t bad = check_transpose(kinds[k].in, kinds[k].out, src, cols, rows, cols, NULL);
                /* Padded rows, and rows in reverse order (a negative stride). */
                bad += check_transpose(kinds[k].in, kinds[k].out, src, cols + 3, rows, cols, NULL);
                bad += check_transpose(kinds[k].in, kinds[k].out,
                                       src + (size_t)((rows - 1) * (cols + 1)) * es, -(cols + 1),
                                       rows, cols, NULL);
                if (bad)
                    fprintf(stderr, "level %s, kind %zu, %lld x %lld: %zu wrong\n",
                            levels[l] ? levels[l] : "native", k, (long long)rows, (long long)cols,
                            bad);
                CHECK_EQ_U64(bad, 0);
            }
            /* Over 8 MiB of output: streamed, in blocks split over threads. */
            int64_t rows = 1300, cols = (int64_t)((9u << 20) / (1300 * jp_dtype_size(kinds[k].out)));
            size_t bad = check_transpose(kinds[k].in, kinds[k].out, src, cols, rows, cols, pool);
            bad += check_transpose(kinds[k].in, kinds[k].out, src + (size_t)((rows - 1) * cols) * es,
                                   -cols, rows, cols, NULL);
            CHECK_EQ_U64(bad, 0);
        }
    }
    unsetenv("JAXPORT_SIMD");
    jp_pool_destroy(pool);
    free(src);
}

/* (O, I, 3, 3) -> (3, 3, I, O), as a conv kernel goes from PyTorch to Flax,
 * checked element by element. The source rows (O) are a multiple of 512
 * bytes apart, so the blocks are staged and the nine-element rows grouped
 * with the input channels; (512, 512) streams its output. Sources on and
 * off a cache line, on one thread and on three. */
static void test_conv_grouped_rows(void) {
    static const struct {
        jp_dtype in, out;
    } kinds[] = {{JP_F32, JP_F32}, {JP_F32, JP_BF16}, {JP_BF16, JP_BF16}};
    static const int64_t sizes[][2] = {{256, 256}, {8, 64}, {512, 512}};
    size_t cap = 512 * 512 * 9 * 4 + 64;
    unsigned char *buf = aligned_alloc(64, cap), *dst = malloc(512 * 512 * 9 * 4);
    jp_pool *pool = NULL;
    jp_err err;
    CHECK(buf && dst);
    CHECK_EQ_U64(jp_pool_create(&pool, 3, &err), JP_OK);
    if (!buf || !dst || !pool) return;
    fill_random(buf, cap, 11);
    const int perm[4] = {2, 3, 1, 0};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
        for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++)
            for (int skip = 0; skip < 2; skip++) {
                int64_t o = sizes[z][0], in = sizes[z][1], shape[4] = {o, in, 3, 3};
                size_t es = jp_dtype_size(kinds[k].in), os = jp_dtype_size(kinds[k].out);
                const unsigned char *src = buf + (size_t)skip * es;
                CHECK_EQ_U64(jp_permute_cast_strided(dst, kinds[k].out, NULL, src, kinds[k].in, 4,
                                                     shape, NULL, perm, skip ? pool : NULL, &err),
                             JP_OK);
                size_t bad = 0;
                for (int64_t a = 0; a < o; a++)
                    for (int64_t b = 0; b < in; b++)
                        for (int64_t q = 0; q < 9; q++) {
                            const unsigned char *s = src + (size_t)((a * in + b) * 9 + q) * es;
                            const unsigned char *d = dst + (size_t)((q * in + b) * o + a) * os;
                            bad += !same_element(d, kinds[k].out, s, kinds[k].in);
                        }
                if (bad)
                    fprintf(stderr, "kind %zu, %lld x %lld x 3 x 3, skip %d: %zu wrong\n", k,
                            (long long)o, (long long)in, skip, bad);
                CHECK_EQ_U64(bad, 0);
            }
    jp_pool_destroy(pool);
    free(dst);
    free(buf);
}

typedef struct {
    int *hits;
} count_ctx;

static void count_task(void *ctx, size_t task, int worker) {
    (void)worker;
    __atomic_fetch_add(&((count_ctx *)ctx)->hits[task], 1, __ATOMIC_RELAXED);
}

static void test_pool(void) {
    jp_pool *pool;
    jp_err err;
    CHECK_EQ_U64(jp_pool_create(&pool, -1, &err), JP_ARGUMENT);
    CHECK_EQ_U64(jp_pool_create(&pool, 3, &err), JP_OK);
    CHECK_EQ_U64(jp_pool_threads(pool), 3);
    CHECK_EQ_U64(jp_pool_threads(NULL), 1);
    int hits[1000] = {0};
    count_ctx ctx = {hits};
    /* Jobs back to back (the workers still spinning), and after a pause
     * long enough for them to fall asleep. */
    for (int round = 0; round < 3; round++) jp_pool_for(pool, 1000, count_task, &ctx);
    nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    jp_pool_for(pool, 1000, count_task, &ctx);
    int wrong = 0;
    for (int i = 0; i < 1000; i++) wrong += hits[i] != 4;
    CHECK_EQ_U64(wrong, 0);

    /* A transpose + cast big enough to be split gives the same bytes on 1
     * and 3 threads. */
    const int64_t shape[2] = {1000, 1100};
    const int perm[2] = {1, 0};
    float *src = malloc(1000 * 1100 * sizeof *src);
    uint16_t *one = malloc(1000 * 1100 * 2), *three = malloc(1000 * 1100 * 2);
    CHECK(src && one && three);
    if (src && one && three) {
        for (int i = 0; i < 1000 * 1100; i++) src[i] = (float)i * 0.37f;
        CHECK_EQ_U64(jp_permute_cast_strided(one, JP_BF16, NULL, src, JP_F32, 2, shape, NULL,
                                             perm, NULL, &err),
                     JP_OK);
        CHECK_EQ_U64(jp_permute_cast_strided(three, JP_BF16, NULL, src, JP_F32, 2, shape, NULL,
                                             perm, pool, &err),
                     JP_OK);
        CHECK(memcmp(one, three, 1000 * 1100 * 2) == 0);
        CHECK_EQ_U64(three[1], bf16_bits(src[1100]));
    }
    free(src);
    free(one);
    free(three);
    jp_pool_destroy(pool);
    jp_pool_destroy(NULL);
}

/* jp_compare: a strided side against a dense one, unaligned items, NaN
 * against NaN and against a number, -0 against 0, a tolerance, complex
 * moduli, packed float4 by bytes, and the refusals. */
static void test_compare(void) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    float at[6] = {1, 4, 2, 5, 3, 6}; /* a (2x3) stored transposed, read back through strides */
    jp_view va = {a, JP_F32, 2, {2, 3}, {3, 1}}, vt = {at, JP_F32, 2, {2, 3}, {1, 2}};
    jp_compare_stats st;
    jp_err err;
    CHECK_EQ_U64(jp_compare(&va, &vt, 0, 0, &st, &err), JP_OK);
    CHECK(st.numel == 6 && st.differing == 0 && st.first == -1 && st.bits_equal && st.values && st.max_abs == 0);
    unsigned char raw[6 * 4 + 1];
    float b[6] = {1, 2, 3.5f, 4, 5, 6.25f};
    memcpy(raw + 1, b, sizeof b); /* one byte off alignment */
    jp_view vb = {raw + 1, JP_F32, 2, {2, 3}, {3, 1}};
    CHECK_EQ_U64(jp_compare(&va, &vb, 0, 0, &st, &err), JP_OK);
    CHECK(st.differing == 2 && st.first == 2 && !st.bits_equal && st.max_abs == 0.5);
    CHECK(st.max_rel == 0.5 / 3.5);
    CHECK_EQ_U64(jp_compare(&va, &vb, 0.3, 0.1, &st, &err), JP_OK); /* 0.25 <= 0.3 + 0.625, 0.5 <= 0.3 + 0.35 */
    CHECK(st.differing == 0 && st.max_abs == 0.5);
    CHECK_EQ_U64(jp_compare(&va, &vb, 0.3, 0, &st, &err), JP_OK);
    CHECK(st.differing == 1 && st.first == 2);
    double n1[3] = {NAN, 1, 0.0}, n2[3] = {NAN, NAN, -0.0};
    jp_view w1 = {n1, JP_F64, 1, {3}, {1}}, w2 = {n2, JP_F64, 1, {3}, {1}};
    CHECK_EQ_U64(jp_compare(&w1, &w2, 0, 0, &st, &err), JP_OK);
    CHECK(st.differing == 1 && st.first == 1 && !st.bits_equal && st.max_abs == 0);
    uint16_t h[3] = {0x3f80, 0x4000, 0x4040}; /* bfloat16 1, 2, 3 */
    float f[3] = {1, 2, 3};
    jp_view vh = {h, JP_BF16, 1, {3}, {1}}, vf = {f, JP_F32, 1, {3}, {1}};
    CHECK_EQ_U64(jp_compare(&vh, &vf, 0, 0, &st, &err), JP_OK);
    CHECK(st.differing == 0 && !st.bits_equal);
    float c1[4] = {3, 4, 1, 1}, c2[4] = {0, 0, 1, 1}; /* complex64 (3+4j, 1+1j) against (0, 1+1j) */
    jp_view vc1 = {c1, JP_C64, 1, {2}, {1}}, vc2 = {c2, JP_C64, 1, {2}, {1}};
    CHECK_EQ_U64(jp_compare(&vc1, &vc2, 0, 0, &st, &err), JP_OK);
    CHECK(st.differing == 1 && st.first == 0 && st.max_abs == 5);
    CHECK_EQ_U64(jp_compare(&vc1, &vf, 0, 0, &st, &err), JP_SHAPE);
    jp_view vr = {f, JP_F32, 1, {2}, {1}};
    CHECK_EQ_U64(jp_compare(&vc1, &vr, 0, 0, &st, &err), JP_DTYPE);
    CHECK(strstr(err.msg, "complex"));
    uint8_t p1[2] = {0x12, 0x34}, p2[2] = {0x12, 0x35};
    jp_view vp1 = {p1, JP_F4_E2M1FN_X2, 1, {2}, {1}}, vp2 = {p2, JP_F4_E2M1FN_X2, 1, {2}, {1}};
    CHECK_EQ_U64(jp_compare(&vp1, &vp2, 0, 0, &st, &err), JP_OK);
    CHECK(!st.values && st.differing == 1 && st.first == 1);
    CHECK_EQ_U64(jp_compare(&vp1, &vr, 0, 0, &st, &err), JP_DTYPE);
    jp_view v0 = {f, JP_F32, 0, {0}, {0}};
    CHECK_EQ_U64(jp_compare(&v0, &v0, 0, 0, &st, &err), JP_OK);
    CHECK(st.numel == 1 && st.differing == 0 && st.bits_equal);
    jp_view e1 = {f, JP_F32, 2, {0, 3}, {3, 1}};
    CHECK_EQ_U64(jp_compare(&e1, &e1, 0, 0, &st, &err), JP_OK);
    CHECK(st.numel == 0 && st.differing == 0);
    /* More than one piece (524288 float64s): rows of the first axis at a
     * time (3 x 300000), and an index of it at a time when a row is more
     * (2 x 600000); a transposed side, and the first differing element
     * counted in the whole's row-major order. */
    static const int64_t shapes[2][2] = {{3, 300000}, {2, 600000}};
    for (int k = 0; k < 2; k++) {
        int64_t r = shapes[k][0], n = shapes[k][1];
        float *x = malloc((size_t)(r * n) * sizeof *x), *xt = malloc((size_t)(r * n) * sizeof *xt);
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < n; j++) x[i * n + j] = xt[j * r + i] = (float)(i * n + j);
        jp_view dense = {x, JP_F32, 2, {r, n}, {n, 1}}, strided = {xt, JP_F32, 2, {r, n}, {1, r}};
        CHECK_EQ_U64(jp_compare(&dense, &strided, 0, 0, &st, &err), JP_OK);
        CHECK(st.numel == (uint64_t)(r * n) && st.differing == 0 && st.bits_equal);
        xt[(n - 7) * r + (r - 1)] += 1; /* element [r - 1, n - 7] */
        x[n + 5] -= 2;                  /* element [1, 5] */
        CHECK_EQ_U64(jp_compare(&dense, &strided, 0, 0, &st, &err), JP_OK);
        CHECK(st.differing == 2 && st.first == n + 5 && st.max_abs == 2);
        free(x);
        free(xt);
    }
}

int main(void) {
    test_compare();
    test_transpose_small();
    test_casts();
    test_errors();
    test_extent();
    test_views();
    test_pool();
    test_simd_levels();
    test_conv_grouped_rows();
    return check_done("test_kernels");
}
