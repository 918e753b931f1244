#include "constants.h"

#include <math.h>
#include <string.h>

#include "../kernels/cast.h"
#include "plan.h"

#define MAX_NUMEL ((uint64_t)1 << 26) /* larger tensors are not read to be judged */
#define MAX_WINDOW 1024               /* most positions in a window's relative index */

/* Where row r (the r-th run along the last axis, the leading axes in
 * row-major order) starts, in elements. */
static int64_t row_start(const jp_tensor *t, uint64_t r) {
    int64_t at = 0;
    for (int d = t->ndim - 2; d >= 0; d--) {
        at += (int64_t)(r % (uint64_t)t->shape[d]) * t->strides[d];
        r /= (uint64_t)t->shape[d];
    }
    return at;
}

/* Reads the rows of a tensor, cast to one type. Elements are first copied
 * to `raw`: a reader's tensor may sit at any byte, and casts read aligned
 * elements. */
typedef struct reader {
    jp_cast c;
    uint8_t *raw;
    void *row; /* one row, cast */
} reader;

/* A reader of t's rows as dst, when t has data, at least one axis and at
 * most MAX_NUMEL elements. */
static bool reader_init(reader *rd, const jp_tensor *t, jp_dtype dst, jp_arena *tmp) {
    jp_err e = {0};
    if (!t->data || t->ndim < 1 || !t->numel || t->numel > MAX_NUMEL || jp_cast_plan(&rd->c, dst, t->dtype, &e))
        return false;
    size_t n = (size_t)t->shape[t->ndim - 1];
    rd->raw = jp_arena_alloc_array(tmp, n, jp_dtype_size(t->dtype));
    rd->row = jp_arena_alloc_array(tmp, n, jp_dtype_size(dst));
    return rd->raw && rd->row;
}

/* Row r of t into rd->row; false when an element does not fit the type. */
static bool read_row(reader *rd, const jp_tensor *t, uint64_t r) {
    int64_t n = t->shape[t->ndim - 1], s = t->strides[t->ndim - 1];
    size_t es = jp_dtype_size(t->dtype);
    const uint8_t *at = t->data + row_start(t, r) * (int64_t)es;
    if (s == 1)
        memcpy(rd->raw, at, (size_t)n * es);
    else
        for (int64_t k = 0; k < n; k++) memcpy(rd->raw + (size_t)k * es, at + k * s * (int64_t)es, es);
    return jp_cast_run(&rd->c, rd->row, rd->raw, (size_t)n) == (size_t)n;
}

static uint64_t rows_of(const jp_tensor *t) { return t->numel / (uint64_t)t->shape[t->ndim - 1]; }

/* Integers each of whose rows is 0, 1, ..., n - 1: the position_ids buffer
 * that Hugging Face checkpoints saved before transformers 4.31 keep. */
static bool is_position_index(const jp_tensor *t, jp_arena *tmp) {
    reader rd;
    if (!jp_dtype_is_integer(t->dtype) || t->ndim < 1 || t->shape[t->ndim - 1] < 2 || !reader_init(&rd, t, JP_I64, tmp))
        return false;
    const int64_t *row = rd.row;
    for (uint64_t r = 0; r < rows_of(t); r++) {
        if (!read_row(&rd, t, r)) return false;
        for (int64_t k = 0; k < t->shape[t->ndim - 1]; k++)
            if (row[k] != k) return false;
    }
    return true;
}

/* Swin's relative position index for a window of n = wh x ww positions (the
 * relative_position_index buffer of torchvision's and timm's Swin): an
 * n x n integer tensor whose entry (i, j), i and j positions in the window
 * in row-major order, is (hi - hj + wh - 1) * (2 ww - 1) + (wi - wj + ww - 1),
 * for some window of n positions. */
static bool is_relative_position_index(const jp_tensor *t, jp_arena *tmp) {
    reader rd;
    int64_t n = t->ndim == 2 ? t->shape[0] : 0;
    if (!jp_dtype_is_integer(t->dtype) || n < 2 || n > MAX_WINDOW || t->shape[1] != n || !reader_init(&rd, t, JP_I64, tmp))
        return false;
    int64_t *all = jp_arena_alloc_array(tmp, (size_t)(n * n), sizeof *all);
    for (int64_t i = 0; all && i < n; i++) {
        if (!read_row(&rd, t, (uint64_t)i)) return false;
        memcpy(all + i * n, rd.row, (size_t)n * sizeof *all);
    }
    for (int64_t wh = 1; all && wh <= n; wh++) {
        int64_t ww = n / wh;
        bool ok = wh * ww == n;
        for (int64_t i = 0; i < n && ok; i++)
            for (int64_t j = 0; j < n && ok; j++)
                ok = all[i * n + j] == (i / ww - j / ww + wh - 1) * (2 * ww - 1) + (i % ww - j % ww + ww - 1);
        if (ok) return true;
    }
    return false;
}

/* Ones on and below the diagonal of the last two axes (n x n), zeros above,
 * in every leading slab: a causal mask, as GPT-2's, GPT-Neo's and GPT-J's
 * attn.bias buffers were saved until transformers made them non-persistent.
 * A banded one (ones only within w of the diagonal: GPT-Neo's local
 * attention) is one too; w is read from the last row. Any dtype whose
 * values are 0 and 1. */
static bool is_causal_mask(const jp_tensor *t, jp_arena *tmp) {
    reader rd;
    int64_t n = t->ndim >= 2 ? t->shape[t->ndim - 1] : 0, w = 0;
    if (n < 2 || t->shape[t->ndim - 2] != n || !reader_init(&rd, t, JP_F64, tmp)) return false;
    const double *row = rd.row;
    if (!read_row(&rd, t, (uint64_t)(n - 1))) return false;
    while (w < n && row[n - 1 - w] == 1.0) w++;
    for (uint64_t r = 0; r < rows_of(t); r++) {
        int64_t i = (int64_t)(r % (uint64_t)n);
        if (!read_row(&rd, t, r)) return false;
        for (int64_t j = 0; j < n; j++)
            if (row[j] != (j <= i && i - j < w ? 1.0 : 0.0)) return false;
    }
    return true;
}

/* One float of -10000 or below (-inf included): the masked_bias buffer that
 * GPT-2's, GPT-Neo's and GPT-J's checkpoints kept, added where the causal
 * mask is 0. No learned scalar sits there. */
static bool is_masking_constant(const jp_tensor *t, double *value) {
    jp_cast c;
    jp_err e = {0};
    uint8_t raw[8];
    if (t->numel != 1 || !t->data || !jp_dtype_is_castable_float(t->dtype) || jp_cast_plan(&c, JP_F64, t->dtype, &e))
        return false;
    memcpy(raw, t->data, jp_dtype_size(t->dtype));
    return jp_cast_run(&c, value, raw, 1) == 1 && *value <= -1e4;
}

/* A fixed sinusoidal position table, P positions by D channels: sin and cos
 * of position p times frequency w_m, m < D/2, either in halves (every sin,
 * then every cos: Marian, Pegasus, RoFormer, Whisper) or interleaved (sin,
 * cos of each m: the original Transformer's), with w_m = 10000^(-2m/D) or
 * 10000^(-m/(D/2-1)) (Whisper's). Checked within the dtype's rounding and
 * that of an angle computed in float32; random weights never pass. */
static bool is_position_table(const jp_tensor *t, jp_arena *tmp) {
    reader rd;
    int64_t np = t->ndim == 2 ? t->shape[0] : 0, nd = t->ndim == 2 ? t->shape[1] : 0, h = nd / 2;
    if (np < 2 || nd < 4 || nd % 2 || !jp_dtype_is_castable_float(t->dtype) || !reader_init(&rd, t, JP_F64, tmp))
        return false;
    const double *row = rd.row;
    double *w = jp_arena_alloc_array(tmp, 2 * (size_t)h, sizeof *w);
    if (!w) return false;
    for (int64_t m = 0; m < h; m++) {
        w[m] = pow(10000.0, -2.0 * (double)m / (double)nd);
        w[h + m] = pow(10000.0, -(double)m / (double)(h - 1));
    }
    bool half = t->dtype == JP_F16 || t->dtype == JP_BF16;
    double tol = (half ? 1e-2 : 1e-3) + 2e-7 * (double)np;
    unsigned alive = 15; /* bit 2 * layout + frequency: halves 0, 1; interleaved 2, 3 */
    for (int64_t p = 0; p < np && alive; p++) {
        if (!read_row(&rd, t, (uint64_t)p)) return false;
        for (int64_t m = 0; m < h && alive; m++)
            for (unsigned f = 0; f < 2; f++) {
                double a = (double)p * w[f * h + m], sn = sin(a), cs = cos(a);
                if (!(fabs(row[m] - sn) <= tol && fabs(row[h + m] - cs) <= tol)) alive &= ~(1u << f);
                if (!(fabs(row[2 * m] - sn) <= tol && fabs(row[2 * m + 1] - cs) <= tol))
                    alive &= ~(4u << f);
            }
    }
    return alive != 0;
}

const char *jp_constant_kind(const jp_tensor *t, jp_arena *tmp) {
    double v;
    if (is_position_index(t, tmp))
        return "a position index (0, 1, 2, ... along its last axis); models make theirs with arange";
    if (is_relative_position_index(t, tmp))
        return "a window's relative position index (Swin's); models make theirs from the window size";
    if (is_causal_mask(t, tmp)) return "a causal mask (ones on and below the diagonal); models make theirs";
    if (is_masking_constant(t, &v))
        return jp_arena_printf(tmp, "a masking constant (%g) added where a causal mask is 0; models use their own",
                               v);
    if (is_position_table(t, tmp))
        return "a fixed sinusoidal position table; models that compute theirs keep no weight for it";
    return NULL;
}
