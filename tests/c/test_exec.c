/* Tests for the executor (src/exec/exec.c): plans of every shape run into
 * the msgpack and eqx writers, read back with jp_index_open and compared
 * with bytes computed here element by element; tiles smaller than the
 * tensors; interruption and failures leave no file. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "exec/exec.h"
#include "kernels/cast.h"
#include "testfiles.h"

/* ---------------------------------------------------------------- helpers */

/* A source tensor over `data`; strides NULL = dense row-major. */
static jp_tensor tensor(const char *name, jp_dtype dt, int ndim, const int64_t *shape,
                        const int64_t *strides, const void *data) {
    jp_tensor t;
    memset(&t, 0, sizeof t);
    t.name = name;
    t.dtype = dt;
    t.ndim = ndim;
    t.numel = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t.shape[d] = shape[d];
        t.strides[d] = strides ? strides[d] : (d == ndim - 1 ? 1 : t.strides[d + 1] * shape[d + 1]);
    }
    for (int d = 0; d < ndim; d++) t.numel *= (uint64_t)shape[d];
    t.nbytes = t.numel * jp_dtype_size(dt);
    t.data = t.numel ? data : NULL;
    t.flags = strides ? 0 : JP_TENSOR_CONTIGUOUS;
    t.file_offset = JP_NO_OFFSET;
    return t;
}

static jp_plan *new_plan(size_t n) {
    jp_plan *p = calloc(1, sizeof *p);
    jp_arena_init(&p->arena);
    p->n = n;
    p->leaves = jp_arena_alloc_array(&p->arena, n, sizeof *p->leaves);
    return p;
}

/* Leaf i of p: name, dtype, shape; nparts parts (filled by the caller),
 * identity perm. */
static jp_plan_leaf *leaf(jp_plan *p, size_t i, const char *name, jp_dtype dt, int ndim,
                          const int64_t *shape, uint32_t nparts) {
    jp_plan_leaf *l = &p->leaves[i];
    l->name = name;
    l->dtype = dt;
    l->ndim = ndim;
    memcpy(l->shape, shape, (size_t)ndim * sizeof *shape);
    l->nparts = nparts;
    l->parts = nparts ? jp_arena_alloc_array(&p->arena, nparts, sizeof *l->parts) : NULL;
    for (int d = 0; d < JP_MAX_DIMS; d++) l->perm[d] = d;
    l->rule = "test";
    return l;
}

static void part(jp_plan_leaf *l, uint32_t k, uint32_t source, int32_t slice_axis, int64_t start,
                 int64_t len, int ndim, const int64_t *shape) {
    jp_plan_part *q = &l->parts[k];
    q->from.source = source;
    q->from.axis = slice_axis;
    q->from.start = start;
    q->from.len = len;
    q->ndim = ndim;
    memcpy(q->shape, shape, (size_t)ndim * sizeof *shape);
}

/* Run p over src into tmp_path(name). */
static jp_code run_plan(const jp_plan *p, const jp_tensor *src, size_t n, const char *name,
                        const jp_exec_opts *opts, jp_err *err) {
    jp_sink_tensor *ts;
    size_t m;
    jp_code rc = jp_exec_sink_tensors(p, opts && opts->skip_missing, &ts, &m, err);
    if (rc) return rc;
    jp_sink *sink;
    rc = jp_sink_open(&sink, tmp_path(name), JP_FORMAT_UNKNOWN, ts, m, NULL, err);
    free(ts);
    return rc ? rc : jp_exec_run_tensors(p, src, n, sink, opts, err);
}

/* The tensor `tname` of file `name` holds exactly `want`, with dtype dt. */
static void check_tensor(const char *name, const char *tname, jp_dtype dt, const void *want,
                         size_t len) {
    jp_index *ix;
    jp_err err;
    CHECK_EQ_U64(jp_index_open(&ix, tmp_path(name), NULL, &err), JP_OK);
    if (!ix) return;
    const jp_tensor *t = jp_index_find(ix, tname);
    CHECK(t != NULL);
    if (t) {
        CHECK_EQ_U64(t->dtype, dt);
        CHECK_EQ_U64(t->nbytes, len);
        CHECK(t->nbytes == len && (len == 0 || memcmp(t->data, want, len) == 0));
        if (t->nbytes == len && len && memcmp(t->data, want, len)) fprintf(stderr, "  in %s: %s\n", name, tname);
    }
    jp_index_close(ix);
}

static uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16); /* exact for the values used here */
}

/* ---------------------------------------------------------------- tests */

/* Every tensor as it is, through an index, to msgpack and eqx: the bytes
 * pass straight through. */
static void test_identity(void) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t b[4] = {-1, 0, 1, INT64_MAX};
    uint16_t c = 0x3c00;
    int64_t sa[2] = {2, 3}, sb[1] = {4}, se[2] = {0, 5};
    jp_tensor src[4] = {tensor("m/a", JP_F32, 2, sa, NULL, a), tensor("m/b", JP_I64, 1, sb, NULL, b),
                        tensor("c", JP_F16, 0, NULL, NULL, &c), tensor("e", JP_F32, 2, se, NULL, NULL)};
    jp_plan *p;
    jp_err err;
    CHECK_EQ_U64(jp_plan_identity_tensors(&p, src, 4, JP_DTYPE_INVALID, &err), JP_OK);
    jp_exec_stats st;
    jp_exec_opts o = {.stats = &st, .tile_bytes = 8};
    CHECK_EQ_U64(run_plan(p, src, 4, "id.msgpack", &o, &err), JP_OK);
    check_tensor("id.msgpack", "m/a", JP_F32, a, sizeof a);
    check_tensor("id.msgpack", "m/b", JP_I64, b, sizeof b);
    check_tensor("id.msgpack", "c", JP_F16, &c, 2);
    check_tensor("id.msgpack", "e", JP_F32, NULL, 0);
    CHECK_EQ_U64(st.tensors, 4);
    CHECK_EQ_U64(st.bytes_out, 24 + 32 + 2);
    CHECK_EQ_U64(st.bytes_direct, st.bytes_out);
    CHECK_EQ_U64(st.bytes_in, st.bytes_out);
    jp_plan_free(p);

    /* The file just written, as an index, to .eqx (tensors named by place). */
    jp_index *ix;
    CHECK_EQ_U64(jp_index_open(&ix, tmp_path("id.msgpack"), NULL, &err), JP_OK);
    CHECK_EQ_U64(jp_plan_identity(&p, ix, JP_DTYPE_INVALID, &err), JP_OK);
    CHECK_EQ_U64(jp_exec_to_file(p, ix, tmp_path("id.eqx"), JP_FORMAT_UNKNOWN, NULL, NULL, &err), JP_OK);
    jp_plan_free(p);
    jp_index_close(ix);
    check_tensor("id.eqx", "0", JP_F32, a, sizeof a);
    check_tensor("id.eqx", "1", JP_I64, b, sizeof b);
    check_tensor("id.eqx", "2", JP_F16, &c, 2);

    /* Only floats take --dtype. */
    CHECK_EQ_U64(jp_plan_identity_tensors(&p, src, 4, JP_DTYPE_INVALID, &err), JP_OK);
    CHECK_EQ_U64(jp_plan_cast_floats(p, JP_I32, &err), JP_ARGUMENT);
    CHECK_EQ_U64(jp_plan_cast_floats(p, JP_F64, &err), JP_OK);
    CHECK_EQ_U64(run_plan(p, src, 4, "f64.msgpack", NULL, &err), JP_OK);
    double a64[6] = {1, 2, 3, 4, 5, 6}, c64 = 1.0;
    check_tensor("f64.msgpack", "m/a", JP_F64, a64, sizeof a64);
    check_tensor("f64.msgpack", "m/b", JP_I64, b, sizeof b);
    check_tensor("f64.msgpack", "c", JP_F64, &c64, 8);
    jp_plan_free(p);
}

/* A Linear kernel: (out, in) f32 -> (in, out) bf16, from a contiguous
 * source and from a transposed (strided) view of one. */
static void test_perm_cast(void) {
    enum { O = 5, I = 7 };
    float w[O * I];
    for (int i = 0; i < O * I; i++) w[i] = (float)(i - 10) * 0.5f;
    int64_t shape[2] = {O, I}, tshape[2] = {I, O}, tstrides[2] = {1, I};
    jp_tensor src[2] = {tensor("w", JP_F32, 2, shape, NULL, w),
                        tensor("wt", JP_F32, 2, tshape, tstrides, w)}; /* wt = w.T */
    jp_plan *p = new_plan(2);
    jp_plan_leaf *l = leaf(p, 0, "kernel", JP_BF16, 2, tshape, 1);
    part(l, 0, 0, -1, 0, 0, 2, shape);
    l->perm[0] = 1;
    l->perm[1] = 0;
    /* wt permuted back is w itself. */
    l = leaf(p, 1, "back", JP_F32, 2, shape, 1);
    part(l, 0, 1, -1, 0, 0, 2, tshape);
    l->perm[0] = 1;
    l->perm[1] = 0;
    jp_err err;
    jp_exec_stats st;
    jp_exec_opts o = {.stats = &st};
    CHECK_EQ_U64(run_plan(p, src, 2, "pc.msgpack", &o, &err), JP_OK);
    uint16_t want[I * O];
    for (int i = 0; i < I; i++)
        for (int j = 0; j < O; j++) want[i * O + j] = bf16_of(w[j * I + i]);
    check_tensor("pc.msgpack", "kernel", JP_BF16, want, sizeof want);
    check_tensor("pc.msgpack", "back", JP_F32, w, sizeof w);
    /* The permuted-back view is dense again, so it went straight through. */
    CHECK_EQ_U64(st.bytes_direct, sizeof w);
    jp_plan_free(p);
}

/* A fused qkv (3E, E): three leaves, each a slice of rows reshaped to
 * (heads, head_dim, E) and permuted to (E, heads, head_dim). */
static void test_qkv(void) {
    enum { H = 2, D = 3, E = H * D };
    int32_t w[3 * E * E];
    for (int i = 0; i < 3 * E * E; i++) w[i] = i * 7 - 100;
    int64_t shape[2] = {3 * E, E}, pshape[3] = {H, D, E}, lshape[3] = {E, H, D};
    jp_tensor src = tensor("attn.qkv.weight", JP_I32, 2, shape, NULL, w);
    static const char *const names[3] = {"q/kernel", "k/kernel", "v/kernel"};
    jp_plan *p = new_plan(3);
    for (uint32_t k = 0; k < 3; k++) {
        jp_plan_leaf *l = leaf(p, k, names[k], JP_I64, 3, lshape, 1);
        part(l, 0, 0, 0, k * E, E, 3, pshape);
        l->perm[0] = 2;
        l->perm[1] = 0;
        l->perm[2] = 1;
    }
    jp_err err;
    for (int tile = 0; tile < 2; tile++) {
        jp_exec_opts o = {.tile_bytes = tile ? 20 : 0}; /* 20: a few elements a tile */
        CHECK_EQ_U64(run_plan(p, &src, 1, "qkv.msgpack", &o, &err), JP_OK);
        for (int k = 0; k < 3; k++) {
            int64_t want[E * H * D];
            for (int i = 0; i < E; i++)
                for (int h = 0; h < H; h++)
                    for (int d = 0; d < D; d++) want[(i * H + h) * D + d] = w[(k * E + h * D + d) * E + i];
            check_tensor("qkv.msgpack", names[k], JP_I64, want, sizeof want);
        }
    }
    /* The same from a file's mapping, whose pages each leaf drops after use
     * and the next leaf maps again. */
    jp_plan *id;
    CHECK_EQ_U64(jp_plan_identity_tensors(&id, &src, 1, JP_DTYPE_INVALID, &err), JP_OK);
    CHECK_EQ_U64(run_plan(id, &src, 1, "qkv_src.msgpack", NULL, &err), JP_OK);
    jp_plan_free(id);
    jp_index *ix;
    CHECK_EQ_U64(jp_index_open(&ix, tmp_path("qkv_src.msgpack"), NULL, &err), JP_OK);
    jp_exec_opts o = {.tile_bytes = 20};
    CHECK_EQ_U64(jp_exec_to_file(p, ix, tmp_path("qkv.eqx"), JP_FORMAT_UNKNOWN, NULL, &o, &err), JP_OK);
    jp_index_close(ix);
    for (int k = 0; k < 3; k++) {
        int64_t want[E * H * D];
        for (int i = 0; i < E; i++)
            for (int h = 0; h < H; h++)
                for (int d = 0; d < D; d++) want[(i * H + h) * D + d] = w[(k * E + h * D + d) * E + i];
        char name[4];
        snprintf(name, sizeof name, "%d", k);
        check_tensor("qkv.eqx", name, JP_I64, want, sizeof want);
    }
    jp_plan_free(p);
}

/* Two parts joined along axis 0, as is and then transposed, with tiles
 * that cut across the parts' boundary. */
static void test_concat(void) {
    float a[2 * 3], b[4 * 3];
    for (int i = 0; i < 6; i++) a[i] = (float)i;
    for (int i = 0; i < 12; i++) b[i] = 100.0f + (float)i;
    int64_t sa[2] = {2, 3}, sb[2] = {4, 3}, joined[2] = {6, 3}, tj[2] = {3, 6};
    jp_tensor src[2] = {tensor("a", JP_F32, 2, sa, NULL, a), tensor("b", JP_F32, 2, sb, NULL, b)};
    jp_plan *p = new_plan(2);
    jp_plan_leaf *l = leaf(p, 0, "joined", JP_F32, 2, joined, 2);
    part(l, 0, 0, -1, 0, 0, 2, sa);
    part(l, 1, 1, -1, 0, 0, 2, sb);
    l = leaf(p, 1, "joined_t", JP_F64, 2, tj, 2);
    part(l, 0, 0, -1, 0, 0, 2, sa);
    part(l, 1, 1, -1, 0, 0, 2, sb);
    l->perm[0] = 1;
    l->perm[1] = 0;
    float want[18];
    double want_t[18];
    memcpy(want, a, sizeof a);
    memcpy(want + 6, b, sizeof b);
    for (int c = 0; c < 3; c++)
        for (int r = 0; r < 6; r++) want_t[c * 6 + r] = want[r * 3 + c];
    jp_err err;
    static const uint64_t tiles[] = {0, 36, 12, 1};
    for (size_t t = 0; t < sizeof tiles / sizeof tiles[0]; t++) {
        jp_exec_opts o = {.tile_bytes = tiles[t]};
        CHECK_EQ_U64(run_plan(p, src, 2, "cat.msgpack", &o, &err), JP_OK);
        check_tensor("cat.msgpack", "joined", JP_F32, want, sizeof want);
        check_tensor("cat.msgpack", "joined_t", JP_F64, want_t, sizeof want_t);
    }
    jp_plan_free(p);
}

/* Parts with an addend (a recurrent gate's two biases): summed in float64
 * and rounded once, from aligned and misaligned sources, sliced, in
 * float32 and bfloat16; an integer addend and a count that differs fail.
 * The same for a part with a constant added. */
static void test_plus(void) {
    float a[6] = {1.0f, 0.1f, 1e8f, -2.5f, 3.0f, 1e-8f}, b[6] = {1.0f, 0.2f, 1.0f, 2.5f, 0.5f, 1.0f};
    unsigned char raw[6 * 4 + 1];
    memcpy(raw + 1, b, sizeof b); /* b's items one byte off their alignment */
    uint16_t ha[6], hb[6];
    for (int i = 0; i < 6; i++) {
        uint32_t u;
        memcpy(&u, &a[i], 4);
        ha[i] = (uint16_t)(u >> 16); /* truncated: exact bfloat16 values */
        memcpy(&u, &b[i], 4);
        hb[i] = (uint16_t)(u >> 16);
    }
    int32_t ints[6] = {0};
    int64_t s6[1] = {6}, s3[1] = {3};
    jp_tensor src[5] = {tensor("a", JP_F32, 1, s6, NULL, a), tensor("b", JP_F32, 1, s6, NULL, raw + 1),
                        tensor("ha", JP_BF16, 1, s6, NULL, ha), tensor("hb", JP_BF16, 1, s6, NULL, hb),
                        tensor("i", JP_I32, 1, s6, NULL, ints)};
    jp_plan *p = new_plan(3);
    jp_plan_leaf *l = leaf(p, 0, "whole", JP_F32, 1, s6, 1);
    part(l, 0, 0, -1, 0, 0, 1, s6);
    l->parts[0].has_plus = true;
    l->parts[0].plus.source = 1;
    l->parts[0].plus.axis = -1;
    l = leaf(p, 1, "tail", JP_F32, 1, s3, 1);
    part(l, 0, 0, 0, 3, 3, 1, s3);
    l->parts[0].has_plus = true;
    l->parts[0].plus.source = 1;
    l->parts[0].plus.axis = 0;
    l->parts[0].plus.start = 0; /* another slice than the part's own */
    l->parts[0].plus.len = 3;
    l = leaf(p, 2, "bf16", JP_BF16, 1, s6, 1);
    part(l, 0, 2, -1, 0, 0, 1, s6);
    l->parts[0].has_plus = true;
    l->parts[0].plus.source = 3;
    l->parts[0].plus.axis = -1;
    jp_err err;
    CHECK_EQ_U64(run_plan(p, src, 5, "plus.msgpack", NULL, &err), JP_OK);
    float whole[6], tail[3];
    uint16_t h[6];
    for (int i = 0; i < 6; i++) {
        whole[i] = (float)((double)a[i] + (double)b[i]);
        double x, y;
        uint32_t u = (uint32_t)ha[i] << 16, v = (uint32_t)hb[i] << 16;
        float fx, fy;
        memcpy(&fx, &u, 4);
        memcpy(&fy, &v, 4);
        x = fx, y = fy;
        float sum = (float)(x + y); /* exact here: a bfloat16 sum fits a float32 */
        memcpy(&u, &sum, 4);
        h[i] = jp_bf16_from_f32(u);
    }
    for (int i = 0; i < 3; i++) tail[i] = (float)((double)a[3 + i] + (double)b[i]);
    check_tensor("plus.msgpack", "whole", JP_F32, whole, sizeof whole);
    check_tensor("plus.msgpack", "tail", JP_F32, tail, sizeof tail);
    check_tensor("plus.msgpack", "bf16", JP_BF16, h, sizeof h);
    jp_plan_free(p);
    jp_plan *q = new_plan(1);
    l = leaf(q, 0, "bad", JP_F32, 1, s6, 1);
    part(l, 0, 0, -1, 0, 0, 1, s6);
    l->parts[0].has_plus = true;
    l->parts[0].plus.source = 4;
    l->parts[0].plus.axis = -1;
    CHECK_EQ_U64(run_plan(q, src, 5, "plus_bad.msgpack", NULL, &err), JP_DTYPE);
    CHECK(strstr(err.msg, "bad") && strstr(err.msg, "only floats add"));
    l->parts[0].plus.source = 1;
    l->parts[0].plus.axis = 0;
    l->parts[0].plus.start = 1;
    l->parts[0].plus.len = 5;
    CHECK_EQ_U64(run_plan(q, src, 5, "plus_bad.msgpack", NULL, &err), JP_SHAPE);
    CHECK(strstr(err.msg, "addend holds 5 elements, the part 6"));
    jp_plan_free(q);
    /* A constant (Haiku's forget gate, less 1), with an addend and without,
     * in the same float64 sum; on an integer part it fails. */
    jp_plan *c = new_plan(2);
    l = leaf(c, 0, "both", JP_F32, 1, s6, 1);
    part(l, 0, 0, -1, 0, 0, 1, s6);
    l->parts[0].has_plus = true;
    l->parts[0].plus.source = 1;
    l->parts[0].plus.axis = -1;
    l->parts[0].add = -1.0;
    l = leaf(c, 1, "alone", JP_BF16, 1, s6, 1);
    part(l, 0, 2, -1, 0, 0, 1, s6);
    l->parts[0].add = 0.5;
    CHECK_EQ_U64(run_plan(c, src, 5, "add.msgpack", NULL, &err), JP_OK);
    for (int i = 0; i < 6; i++) {
        whole[i] = (float)((double)a[i] + (double)b[i] - 1.0);
        uint32_t u = (uint32_t)ha[i] << 16;
        float fx;
        memcpy(&fx, &u, 4);
        float sum = (float)((double)fx + 0.5);
        memcpy(&u, &sum, 4);
        h[i] = jp_bf16_from_f32(u);
    }
    check_tensor("add.msgpack", "both", JP_F32, whole, sizeof whole);
    check_tensor("add.msgpack", "alone", JP_BF16, h, sizeof h);
    jp_plan_free(c);
    c = new_plan(1);
    l = leaf(c, 0, "int", JP_I32, 1, s6, 1);
    part(l, 0, 4, -1, 0, 0, 1, s6);
    l->parts[0].add = 1.0;
    CHECK_EQ_U64(run_plan(c, src, 5, "add_bad.msgpack", NULL, &err), JP_DTYPE);
    CHECK(strstr(err.msg, "a constant") && strstr(err.msg, "only floats add"));
    jp_plan_free(c);
}

typedef struct progress_log {
    int calls;
    uint64_t last_done, total;
    volatile sig_atomic_t *flag;
    int stop_after;
} progress_log;

static void on_progress(void *ctx, uint64_t done, uint64_t total, const char *name) {
    progress_log *g = ctx;
    (void)name;
    CHECK(done >= g->last_done && done <= total);
    g->calls++;
    g->last_done = done;
    g->total = total;
    if (g->flag && g->calls == g->stop_after) *g->flag = 1;
}

/* Tensors many times the tile: a 1-D one, a 3-D one whose single index of
 * the first two axes is over the budget, a permuted one; progress counts
 * every byte. */
static void test_tiles(void) {
    enum { N = 1000, A = 2, B = 3, C = 300, R = 64, S = 50 };
    static float v[N], x[A * B * C], y[R * S];
    for (int i = 0; i < N; i++) v[i] = (float)i;
    for (int i = 0; i < A * B * C; i++) x[i] = (float)(i % 61 - 30) * 0.5f; /* exact in bfloat16 */
    for (int i = 0; i < R * S; i++) y[i] = (float)i * 0.25f;
    int64_t sv[1] = {N}, sx[3] = {A, B, C}, sy[2] = {R, S}, ty[2] = {S, R};
    jp_tensor src[3] = {tensor("v", JP_F32, 1, sv, NULL, v), tensor("x", JP_F32, 3, sx, NULL, x),
                        tensor("y", JP_F32, 2, sy, NULL, y)};
    jp_plan *p = new_plan(3);
    part(leaf(p, 0, "v", JP_F64, 1, sv, 1), 0, 0, -1, 0, 0, 1, sv);
    part(leaf(p, 1, "x", JP_BF16, 3, sx, 1), 0, 1, -1, 0, 0, 3, sx);
    jp_plan_leaf *l = leaf(p, 2, "y", JP_F32, 2, ty, 1);
    part(l, 0, 2, -1, 0, 0, 2, sy);
    l->perm[0] = 1;
    l->perm[1] = 0;
    double wv[N];
    uint16_t wx[A * B * C];
    float wy[S * R];
    for (int i = 0; i < N; i++) wv[i] = v[i];
    for (int i = 0; i < A * B * C; i++) wx[i] = bf16_of(x[i]);
    for (int i = 0; i < S; i++)
        for (int j = 0; j < R; j++) wy[i * R + j] = y[j * S + i];
    progress_log g = {0};
    jp_err err;
    jp_exec_opts o = {.tile_bytes = 100, .progress = on_progress, .progress_ctx = &g, .progress_ms = -1};
    CHECK_EQ_U64(run_plan(p, src, 3, "tiles.msgpack", &o, &err), JP_OK);
    check_tensor("tiles.msgpack", "v", JP_F64, wv, sizeof wv);
    check_tensor("tiles.msgpack", "x", JP_BF16, wx, sizeof wx);
    check_tensor("tiles.msgpack", "y", JP_F32, wy, sizeof wy);
    uint64_t total = sizeof wv + sizeof wx + sizeof wy;
    CHECK_EQ_U64(g.total, total);
    CHECK_EQ_U64(g.last_done, total);
    /* 100-byte tiles, counted in the bigger item of leaf and source: v in
     * 12 elements (84 tiles); x in 25 float32 (a row of 300 is over the
     * budget: 12 a row, 72); y in 25 (a row of 64 is 256 bytes: 3 a row, 150). */
    CHECK_EQ_U64(g.calls, 84 + 72 + 50 * 3);
    /* The default interval calls it once or a few times. */
    g = (progress_log){0};
    o.progress_ms = 0;
    CHECK_EQ_U64(run_plan(p, src, 3, "tiles.msgpack", &o, &err), JP_OK);
    CHECK(g.calls >= 1 && g.calls < 10 && g.last_done == total);
    jp_plan_free(p);
}

/* Interrupted between tiles: JP_INTERRUPTED and no file, no temporary. */
static void test_interrupt(void) {
    enum { N = 4096 };
    static float v[N];
    int64_t sv[1] = {N};
    jp_tensor src[2] = {tensor("a", JP_F32, 1, sv, NULL, v), tensor("b", JP_F32, 1, sv, NULL, v)};
    jp_plan *p;
    jp_err err;
    CHECK_EQ_U64(jp_plan_identity_tensors(&p, src, 2, JP_DTYPE_INVALID, &err), JP_OK);
    clear_dir();
    volatile sig_atomic_t flag = 0;
    progress_log g = {.flag = &flag, .stop_after = 3};
    jp_exec_opts o = {.tile_bytes = 1024, .progress = on_progress, .progress_ctx = &g,
                      .progress_ms = -1, .interrupt = &flag};
    CHECK_EQ_U64(run_plan(p, src, 2, "int.msgpack", &o, &err), JP_INTERRUPTED);
    CHECK_EQ_U64(g.calls, 3);
    CHECK_STR(err.member, "a");
    CHECK_EQ_U64(count_files(), 0);
    /* Set before the run: nothing is written at all. */
    CHECK_EQ_U64(run_plan(p, src, 2, "int.eqx", &o, &err), JP_INTERRUPTED);
    CHECK_EQ_U64(count_files(), 0);
    jp_plan_free(p);
}

/* Failures name the leaf and the source and leave no file. */
static void test_failures(void) {
    int64_t big[3] = {1, 300, -5};
    float f[6] = {0};
    int64_t s3[1] = {3}, s6[1] = {6}, s23[2] = {2, 3}, s7[1] = {7};
    jp_tensor src[2] = {tensor("src.big", JP_I64, 1, s3, NULL, big), tensor("src.f", JP_F32, 1, s6, NULL, f)};
    jp_err err;
    clear_dir();

    /* A value that does not fit: the cast's JP_RANGE, from the kernel. */
    jp_plan *p = new_plan(2);
    part(leaf(p, 0, "ok", JP_F32, 2, s23, 1), 0, 1, -1, 0, 0, 2, s23);
    part(leaf(p, 1, "narrow", JP_I8, 1, s3, 1), 0, 0, -1, 0, 0, 1, s3);
    CHECK_EQ_U64(run_plan(p, src, 2, "f.msgpack", NULL, &err), JP_RANGE);
    CHECK_STR(err.member, "narrow");
    CHECK(strstr(err.msg, "narrow (from src.big): ") == err.msg);
    CHECK_EQ_U64(count_files(), 0);
    jp_plan_free(p);

    /* Shapes that do not add up; a slice out of range; a bad perm; a bad source. */
    p = new_plan(1);
    part(leaf(p, 0, "l", JP_F32, 1, s7, 1), 0, 1, -1, 0, 0, 1, s6);
    CHECK_EQ_U64(run_plan(p, src, 2, "f.eqx", NULL, &err), JP_SHAPE);
    CHECK_STR(err.member, "l");
    part(leaf(p, 0, "l", JP_F32, 1, s3, 1), 0, 1, 0, 4, 3, 1, s3);
    CHECK_EQ_U64(run_plan(p, src, 2, "f.eqx", NULL, &err), JP_SHAPE);
    CHECK(strstr(err.msg, "l (from src.f): ") == err.msg);
    part(leaf(p, 0, "l", JP_F32, 1, s6, 1), 0, 1, -1, 0, 0, 1, s6);
    p->leaves[0].perm[0] = 1;
    CHECK_EQ_U64(run_plan(p, src, 2, "f.eqx", NULL, &err), JP_ARGUMENT);
    part(leaf(p, 0, "l", JP_F32, 1, s6, 1), 0, 9, -1, 0, 0, 1, s6);
    CHECK_EQ_U64(run_plan(p, src, 2, "f.eqx", NULL, &err), JP_ARGUMENT);
    CHECK_EQ_U64(count_files(), 0);
    jp_plan_free(p);

    /* A missing leaf is refused unless skipped. */
    p = new_plan(2);
    leaf(p, 0, "gone", JP_F32, 1, s6, 0)->flags = JP_LEAF_MISSING;
    part(leaf(p, 1, "here", JP_F32, 1, s6, 1), 0, 1, -1, 0, 0, 1, s6);
    CHECK_EQ_U64(run_plan(p, src, 2, "m.msgpack", NULL, &err), JP_MATCH);
    CHECK_STR(err.member, "gone");
    CHECK_EQ_U64(count_files(), 0);
    jp_exec_opts skip = {.skip_missing = true};
    CHECK_EQ_U64(run_plan(p, src, 2, "m.msgpack", &skip, &err), JP_OK);
    check_tensor("m.msgpack", "here", JP_F32, f, sizeof f);
    jp_plan_free(p);
    clear_dir();

    /* The writer's own failure half way (the file size limit): no file. */
    enum { BIG = 1 << 21 }; /* 8 MiB: past the writer's 4 MiB buffer */
    static float zeros[BIG];
    int64_t sz[1] = {BIG};
    jp_tensor zt = tensor("zeros", JP_F32, 1, sz, NULL, zeros);
    CHECK_EQ_U64(jp_plan_identity_tensors(&p, &zt, 1, JP_DTYPE_INVALID, &err), JP_OK);
    struct rlimit old, small = {64 << 10, 0};
    getrlimit(RLIMIT_FSIZE, &old);
    small.rlim_max = old.rlim_max;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &small);
    jp_exec_opts o = {.tile_bytes = 4096};
    CHECK_EQ_U64(run_plan(p, &zt, 1, "io.msgpack", &o, &err), JP_IO);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    CHECK_STR(err.member, "zeros");
    CHECK_EQ_U64(count_files(), 0);
    jp_plan_free(p);
}

/* A reshape that the strides cannot express: a transposed view reshaped
 * across its axes is made dense first. */
static void test_reshape_copy(void) {
    int16_t w[12];
    for (int i = 0; i < 12; i++) w[i] = (int16_t)(i * 3);
    int64_t tshape[2] = {4, 3}, tstrides[2] = {1, 4}, flat[1] = {12};
    jp_tensor src = tensor("wt", JP_I16, 2, tshape, tstrides, w); /* (3,4) transposed */
    jp_plan *p = new_plan(1);
    part(leaf(p, 0, "flat", JP_I16, 1, flat, 1), 0, 0, -1, 0, 0, 1, flat);
    jp_err err;
    CHECK_EQ_U64(run_plan(p, &src, 1, "rc.msgpack", NULL, &err), JP_OK);
    int16_t want[12];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) want[i * 3 + j] = w[j * 4 + i];
    check_tensor("rc.msgpack", "flat", JP_I16, want, sizeof want);
    jp_plan_free(p);
}

/* Many small transposed leaves, some cast, around a direct one and a
 * concat (which are not batched): with a pool they are made in batches,
 * and every file is the same as without one; .safetensors wants them in
 * its own order. A value that does not fit is reported for its leaf. */
static void test_batches(void) {
    enum { N = 40 };
    static float data[N][7 * 9];
    static char names[N][16];
    jp_tensor src[N];
    int64_t s79[2] = {7, 9}, s97[2] = {9, 7}, s149[2] = {14, 9};
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 7 * 9; k++) data[i][k] = (float)(i * 100 + k) * 0.5f;
        snprintf(names[i], sizeof names[i], "t%02d", i);
        src[i] = tensor(names[i], JP_F32, 2, s79, NULL, data[i]);
    }
    jp_plan *p = new_plan(N);
    for (int i = 0; i < N; i++) {
        jp_plan_leaf *l;
        if (i == 20) { /* direct: not batched */
            l = leaf(p, (size_t)i, names[(N - 1) - i], JP_F32, 2, s79, 1);
            part(l, 0, (uint32_t)i, -1, 0, 0, 2, s79);
        } else if (i == 30) { /* a concat of two sources: not batched */
            l = leaf(p, (size_t)i, names[(N - 1) - i], JP_F32, 2, s149, 2);
            part(l, 0, (uint32_t)i, -1, 0, 0, 2, s79);
            part(l, 1, (uint32_t)i - 1, -1, 0, 0, 2, s79);
            l->cat_axis = 0;
        } else {
            l = leaf(p, (size_t)i, names[(N - 1) - i], i % 3 ? JP_F32 : JP_F16, 2, s97, 1);
            part(l, 0, (uint32_t)i, -1, 0, 0, 2, s79);
            l->perm[0] = 1;
            l->perm[1] = 0;
        }
    }
    jp_pool *pool = NULL;
    jp_err err;
    CHECK_EQ_U64(jp_pool_create(&pool, 3, &err), JP_OK);
    const char *files[] = {"batch.safetensors", "batch.msgpack"};
    for (size_t f = 0; f < 2; f++) {
        char alone[64], pooled[64];
        snprintf(alone, sizeof alone, "alone-%s", files[f]);
        snprintf(pooled, sizeof pooled, "pooled-%s", files[f]);
        jp_exec_stats st1, st3;
        jp_exec_opts o1 = {.stats = &st1}, o3 = {.stats = &st3, .pool = pool};
        CHECK_EQ_U64(run_plan(p, src, N, alone, &o1, &err), JP_OK);
        CHECK_EQ_U64(run_plan(p, src, N, pooled, &o3, &err), JP_OK);
        CHECK_EQ_U64(st1.batched, 0);
        CHECK_EQ_U64(st3.batched, N - 2);
        CHECK_EQ_U64(st3.tensors, N);
        CHECK_EQ_U64(st3.bytes_in, st1.bytes_in);
        static uint8_t a[1 << 16], b[1 << 16];
        size_t na = read_file(tmp_path(alone), a, sizeof a), nb = read_file(tmp_path(pooled), b, sizeof b);
        CHECK(na > 0 && na < sizeof a && na == nb && memcmp(a, b, na) == 0);
    }
    /* Into memory, where each leaf is made in its own buffer (batched,
     * in tiles, or copied): the bytes of the file. */
    jp_sink_tensor *ts;
    size_t m;
    CHECK_EQ_U64(jp_exec_sink_tensors(p, false, &ts, &m, &err), JP_OK);
    static unsigned char mem[N][14 * 9 * 4];
    void *bufs[N];
    for (size_t k = 0; k < m; k++) bufs[k] = mem[k];
    for (int run = 0; run < 4; run++) {
        memset(mem, 0xee, sizeof mem);
        jp_exec_stats st;
        /* tile_bytes 24: no batches, and a few rows a tile */
        jp_exec_opts o = {.stats = &st, .pool = run & 1 ? pool : NULL, .tile_bytes = run & 2 ? 24 : 0};
        jp_sink *sink;
        CHECK_EQ_U64(jp_sink_open_memory(&sink, ts, m, bufs, &err), JP_OK);
        CHECK_EQ_U64(jp_exec_run_tensors(p, src, N, sink, &o, &err), JP_OK);
        CHECK_EQ_U64(st.batched, run == 1 ? N - 2 : 0);
        for (size_t k = 0; k < m; k++)
            check_tensor("alone-batch.safetensors", ts[k].name, ts[k].dtype, mem[k], (size_t)ts[k].nbytes);
    }
    free(ts);
    /* Leaves 9 and 11 as int8, whose values do not fit: the error is the
     * first one's, whichever thread made it. */
    p->leaves[9].dtype = p->leaves[11].dtype = JP_I8;
    CHECK_EQ_U64(run_plan(p, src, N, "err.msgpack", &(jp_exec_opts){.pool = pool}, &err), JP_RANGE);
    CHECK(strstr(err.msg, names[N - 1 - 9]) == err.msg && strstr(err.msg, "(from t09)") != NULL);
    jp_pool_destroy(pool);
    jp_plan_free(p);
}

int main(void) {
    if (!tmpdir_make("exec")) return 2;
    test_batches();
    test_identity();
    test_perm_cast();
    test_qkv();
    test_concat();
    test_plus();
    test_tiles();
    test_interrupt();
    test_failures();
    test_reshape_copy();
    tmpdir_remove();
    return check_done("exec");
}
