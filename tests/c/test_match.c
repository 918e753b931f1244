/* The matcher's parts: name keys, similarity and natural order, the layout
 * solver's rules, pairing on a small source, and plans as JSON (round trip,
 * staleness). End-to-end numerical checks are in tests/python/test_match.py. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "kernels/cast.h"
#include "match/mapping.h"
#include "../../fuzz/plan_source.h"

static void test_names(void) {
    char k[64];
    jp_name_key("layers_0/LayerNorm", 18, k, sizeof k);
    CHECK_STR(k, "layers0layernorm");
    jp_name_key("layer1.10", 9, k, sizeof k);
    CHECK_STR(k, "layer1.10");
    jp_name_key("layer11.0", 9, k, sizeof k);
    CHECK_STR(k, "layer11.0");
    CHECK(jp_name_natural_cmp("Dense_2", "Dense_10") < 0);
    CHECK(jp_name_natural_cmp("Dense_10", "Dense_2") > 0);
    CHECK(jp_name_natural_cmp("a_007", "a_7") == 0);
    CHECK(jp_name_similarity("gn", "GroupNorm_0") > jp_name_similarity("gn", "LayerNorm_0"));
    CHECK(jp_name_similarity("encoder.fc1", "encoder/fc1") == 1000);
    CHECK(jp_name_similarity("a", "b") == 0);
    /* torch's reversed recurrent layer is Flax's backward one */
    CHECK(jp_name_similarity("l0_reverse.hf", "layers_0.backward_rnn.cell.hf") >
          jp_name_similarity("l0.hf", "layers_0.backward_rnn.cell.hf"));
    CHECK(jp_name_similarity("lstm.l1_reverse", "lstm.l1.bwd") == 1000);
    CHECK(jp_name_similarity("reverse", "forward") == 0);
    jp_spelling sp;
    CHECK(jp_role_of("kernel", 6, &sp) == JP_ROLE_WEIGHT && sp == JP_SPELL_KERNEL);
    CHECK(jp_role_of("running_var", 11, &sp) == JP_ROLE_VAR);
    CHECK(jp_role_of("in_proj_weight", 14, &sp) == JP_ROLE_OTHER);
}

static void test_layouts(void) {
    jp_xform x;
    jp_layout_names nm = {"fc", "Dense_0", NULL};
    int64_t lin[2] = {4, 3}, lin_t[2] = {3, 4};
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 2, lin, 2, lin_t, &nm, NULL, &x));
    CHECK(x.perm[0] == 1 && x.perm[1] == 0);
    CHECK(!jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 2, lin, 2, lin, &nm, NULL, &x));
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_EMBEDDING, 2, lin, 2, lin, &nm, NULL, &x));
    CHECK(x.perm[0] == 0 && x.perm[1] == 1);
    CHECK(!jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_EMBEDDING, 2, lin, 2, lin_t, &nm, NULL, &x));
    int64_t conv[4] = {8, 3, 5, 5}, conv_t[4] = {5, 5, 3, 8}, convt_t[4] = {5, 5, 8, 3};
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 4, conv, 4, conv_t, &nm, NULL, &x));
    CHECK(x.perm[0] == 2 && x.perm[1] == 3 && x.perm[2] == 1 && x.perm[3] == 0 && x.flip == 0);
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 4, conv, 4, convt_t, &nm, NULL, &x));
    CHECK(x.perm[2] == 0 && x.perm[3] == 1 && x.flip == 0xc);
    int64_t sq[4] = {4, 4, 3, 3}, sq_t[4] = {3, 3, 4, 4};
    jp_layout_names up = {"up", "up", "ConvTranspose"};
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 4, sq, 4, sq_t, &up, NULL, &x));
    CHECK(x.flip == 0xc);
    jp_layout_names lax_flips = {"up", "up", "ConvTranspose(transpose_kernel=True)"};
    jp_layout_names linen = {"up", "ConvTranspose_0", NULL};
    CHECK(jp_layout_solve(JP_LIB_NNX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 4, sq, 4, sq_t, &lax_flips, NULL, &x));
    CHECK(x.flip == 0 && x.perm[2] == 1);
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 4, sq, 4, sq_t, &linen, NULL, &x));
    CHECK(x.flip == 0xc && strstr(x.rule, "transpose_kernel=False is assumed"));
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 4, sq, 4, sq_t, &nm, NULL, &x));
    CHECK(x.flip == 0);
    /* Haiku's transposed conv: (I, O, *k) to (*k, O, I), flipped, square or not */
    jp_layout_names hk = {"up.weight", "conv2_d_transpose/w", NULL};
    CHECK(jp_layout_solve(JP_LIB_HAIKU, JP_ROLE_WEIGHT, JP_SPELL_PLAIN, 4, sq, 4, sq_t, &hk, NULL, &x));
    CHECK(x.perm[2] == 1 && x.perm[3] == 0 && x.flip == 0xc);
    CHECK(jp_layout_solve(JP_LIB_HAIKU, JP_ROLE_WEIGHT, JP_SPELL_PLAIN, 4, conv, 4, conv_t, &hk, NULL, &x));
    CHECK(x.perm[0] == 2 && x.perm[2] == 1 && x.perm[3] == 0 && x.flip == 0xc);
    int64_t q[2] = {16, 32}, q_t[3] = {32, 4, 4}, o[2] = {32, 16}, o_t[3] = {4, 4, 32};
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 2, q, 3, q_t, &nm, NULL, &x));
    CHECK(x.ndim == 3 && x.shape[0] == 4 && x.shape[1] == 4 && x.shape[2] == 32 && x.perm[0] == 2);
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 2, o, 3, o_t, &nm, NULL, &x));
    CHECK(x.perm[0] == 1 && x.perm[1] == 2 && x.perm[2] == 0);
    int64_t b[1] = {8}, b_eqx[3] = {8, 1, 1}, b_heads[2] = {2, 4};
    CHECK(jp_layout_solve(JP_LIB_EQUINOX, JP_ROLE_BIAS, JP_SPELL_PLAIN, 1, b, 3, b_eqx, &nm, NULL, &x));
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_BIAS, JP_SPELL_PLAIN, 1, b, 2, b_heads, &nm, NULL, &x));
    int64_t fc[2] = {10, 48}, fc_t[2] = {48, 10};
    jp_flatten_rule fl = {3, 4, 4};
    CHECK(jp_layout_solve(JP_LIB_FLAX, JP_ROLE_WEIGHT, JP_SPELL_KERNEL, 2, fc, 2, fc_t, &nm, &fl, &x));
    CHECK(x.ndim == 4 && x.shape[1] == 3 && x.perm[0] == 2 && x.perm[3] == 0);
}

static void test_match_and_json(void) {
    jp_index *ix;
    jp_err err;
    CHECK(jp_index_open_memory(&ix, plan_source, sizeof plan_source, "source.msgpack", NULL, &err) == JP_OK);
    jp_leaf_spec leaves[] = {
        {"params/a/bias", JP_F32, 1, {4}, NULL},
        {"params/a/kernel", JP_BF16, 2, {3, 4}, NULL},
        {"params/b/query/kernel", JP_F32, 3, {3, 1, 2}, NULL},
        {"params/b/key/kernel", JP_F32, 3, {3, 1, 2}, NULL},
        {"params/b/value/kernel", JP_F32, 3, {3, 1, 2}, NULL},
    };
    jp_plan *p;
    CHECK(jp_match(&p, ix, leaves, 5, NULL, &err) == JP_OK);
    CHECK(jp_plan_check(p, ix, false, &err) == JP_OK);
    CHECK(p->leaves[1].dtype == JP_BF16 && p->leaves[1].parts[0].from.source == 0 && p->leaves[1].perm[0] == 1);
    CHECK(p->leaves[4].parts[0].from.axis == 0 && p->leaves[4].parts[0].from.start == 4);
    CHECK(p->nunused == 0);
    char *text = NULL;
    CHECK(jp_plan_to_json(p, ix, leaves, 5, JP_LIB_FLAX, &text, &err) == JP_OK);
    jp_plan *q = NULL;
    CHECK(text && jp_plan_from_json(&q, text, strlen(text), ix, leaves, 5, &err) == JP_OK);
    CHECK(q && q->leaves[4].parts[0].from.start == 4 && q->leaves[1].perm[0] == 1);
    leaves[0].shape[0] = 5; /* another target: the file is stale */
    jp_plan *r = NULL;
    CHECK(jp_plan_from_json(&r, text, strlen(text), ix, leaves, 5, &err) == JP_STALE && !r);
    leaves[0].shape[0] = 4;
    jp_match_opts o = {.dtype = JP_F16};
    jp_plan *c = NULL;
    CHECK(jp_match(&c, ix, leaves, 5, &o, &err) == JP_OK && c->leaves[0].dtype == JP_F16);
    jp_leaf_spec extra[] = {{"params/c/kernel", JP_F32, 2, {7, 7}, NULL}};
    jp_plan *m = NULL;
    CHECK(jp_match(&m, ix, extra, 1, NULL, &err) == JP_OK);
    CHECK(m && (m->leaves[0].flags & JP_LEAF_MISSING) && jp_plan_check(m, ix, true, &err) == JP_MATCH);
    CHECK(m && m->nunused == 3 && !m->unused[0].harmless);
    jp_leaf_spec some[] = {{"params/a/bias", JP_F32, 1, {4}, NULL}, {"params/a/kernel", JP_F32, 2, {3, 4}, NULL}};
    jp_plan *u = NULL; /* b's in_proj_weight is left over */
    CHECK(jp_match(&u, ix, some, 2, NULL, &err) == JP_OK);
    CHECK(u && jp_plan_check(u, ix, false, &err) == JP_MATCH && strstr(err.msg, "would be lost"));
    CHECK(u && jp_plan_check(u, ix, true, &err) == JP_OK);
    jp_plan_free(u);
    jp_plan *h = NULL; /* no value: the rest of in_proj_weight is left over */
    CHECK(jp_match(&h, ix, leaves, 4, NULL, &err) == JP_OK);
    CHECK(h && h->nunused == 1 && !h->unused[0].harmless);
    CHECK_STR(h ? h->unused[0].why : "", "only partly taken: no leaf takes [4, 6) of its axis 0 (of 6)");
    CHECK(h && jp_plan_check(h, ix, false, &err) == JP_MATCH && strstr(err.msg, "in_proj_weight"));
    jp_plan_free(h);
    const char *bad_rule[] = {"(", "x"};
    jp_match_opts bo = {.rules = bad_rule, .nrules = 1};
    jp_plan *b = NULL;
    CHECK(jp_match(&b, ix, leaves, 5, &bo, &err) == JP_ARGUMENT && !b);
    jp_plan_free(m);
    jp_plan_free(c);
    jp_plan_free(q);
    jp_plan_free(p);
    free(text);
    jp_index_close(ix);
}

/* flax.serialization.to_bytes({"gru": {"weight_ih": f32[6, 2] (0..11),
 * "weight_hh": f32[6, 2] (12..23), "bias_ih": f32[6] (24..29),
 * "bias_hh": f32[6] (30..35)}}): a torch GRUCell's state dict, H = 2. */
static const uint8_t gru_source[] = {
    129, 163, 103, 114, 117, 132, 169, 119, 101, 105, 103, 104, 116, 95, 105, 104, 199, 62, 1, 147,
    146, 6, 2, 167, 102, 108, 111, 97, 116, 51, 50, 196, 48, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64,
    0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64, 0, 0, 192, 64, 0, 0, 224, 64, 0, 0, 0, 65, 0, 0, 16,
    65, 0, 0, 32, 65, 0, 0, 48, 65, 169, 119, 101, 105, 103, 104, 116, 95, 104, 104, 199, 62, 1,
    147, 146, 6, 2, 167, 102, 108, 111, 97, 116, 51, 50, 196, 48, 0, 0, 64, 65, 0, 0, 80, 65, 0, 0,
    96, 65, 0, 0, 112, 65, 0, 0, 128, 65, 0, 0, 136, 65, 0, 0, 144, 65, 0, 0, 152, 65, 0, 0, 160,
    65, 0, 0, 168, 65, 0, 0, 176, 65, 0, 0, 184, 65, 167, 98, 105, 97, 115, 95, 105, 104, 199, 37,
    1, 147, 145, 6, 167, 102, 108, 111, 97, 116, 51, 50, 196, 24, 0, 0, 192, 65, 0, 0, 200, 65, 0,
    0, 208, 65, 0, 0, 216, 65, 0, 0, 224, 65, 0, 0, 232, 65, 167, 98, 105, 97, 115, 95, 104, 104,
    199, 37, 1, 147, 145, 6, 167, 102, 108, 111, 97, 116, 51, 50, 196, 24, 0, 0, 240, 65, 0, 0, 248,
    65, 0, 0, 0, 66, 0, 0, 4, 66, 0, 0, 8, 66, 0, 0, 12, 66};

static const char *part_tensor(const jp_index *ix, const jp_plan_ref *r) {
    return jp_index_at(ix, r->source)->name;
}

/* Equinox's GRUCell bias: rows r and z summed, then b_in, as two parts of
 * one leaf; b_hn its bias_n. */
static void test_equinox_gru(void) {
    jp_index *ix;
    jp_err err;
    CHECK(jp_index_open_memory(&ix, gru_source, sizeof gru_source, "gru.msgpack", NULL, &err) == JP_OK);
    jp_leaf_spec leaves[] = {
        {"cell/weight_ih", JP_F32, 2, {6, 2}, "GRUCell"},
        {"cell/weight_hh", JP_F32, 2, {6, 2}, "GRUCell"},
        {"cell/bias", JP_F32, 1, {6}, "GRUCell"},
        {"cell/bias_n", JP_F32, 1, {2}, "GRUCell"},
    };
    jp_match_opts o = {.lib = JP_LIB_EQUINOX};
    jp_plan *p = NULL;
    CHECK(jp_match(&p, ix, leaves, 4, &o, &err) == JP_OK);
    CHECK(p && jp_plan_check(p, ix, false, &err) == JP_OK);
    if (!p) return;
    const jp_plan_leaf *b = &p->leaves[2], *bn = &p->leaves[3];
    CHECK(b->nparts == 2 && b->cat_axis == 0);
    if (b->nparts == 2) {
        const jp_plan_part *s0 = &b->parts[0], *s1 = &b->parts[1];
        CHECK_STR(part_tensor(ix, &s0->from), "gru/bias_ih");
        CHECK(s0->has_plus && s0->from.start == 0 && s0->from.len == 4 && s0->shape[0] == 4);
        CHECK_STR(part_tensor(ix, &s0->plus), "gru/bias_hh");
        CHECK(s0->plus.start == 0 && s0->plus.len == 4);
        CHECK_STR(part_tensor(ix, &s1->from), "gru/bias_ih");
        CHECK(!s1->has_plus && s1->from.start == 4 && s1->from.len == 2 && s1->shape[0] == 2);
    }
    CHECK(bn->nparts == 1 && !bn->parts[0].has_plus && bn->parts[0].from.start == 4);
    CHECK_STR(part_tensor(ix, &bn->parts[0].from), "gru/bias_hh");
    CHECK(p->nunused == 0);
    char *text = NULL;
    jp_plan *q = NULL;
    CHECK(jp_plan_to_json(p, ix, leaves, 4, JP_LIB_EQUINOX, &text, &err) == JP_OK);
    CHECK(text && jp_plan_from_json(&q, text, strlen(text), ix, leaves, 4, &err) == JP_OK);
    CHECK(q && q->leaves[2].nparts == 2 && q->leaves[2].parts[0].has_plus && !q->leaves[2].parts[1].has_plus);
    jp_plan_free(q);
    free(text);
    jp_plan_free(p);
    jp_index_close(ix);
}

/* flax.serialization.to_bytes({"layers": {"0": {"weight": f32[3, 2] (0..5),
 * "bias": f32[3] (6..8)}, "1": {"weight": (10..15), "bias": (16..18)}}}):
 * two layers alike. */
static const uint8_t layers_source[] = {
    129, 166, 108, 97, 121, 101, 114, 115, 130, 161, 48, 130, 166, 119, 101, 105, 103, 104, 116,
    199, 38, 1, 147, 146, 3, 2, 167, 102, 108, 111, 97, 116, 51, 50, 196, 24, 0, 0, 0, 0, 0, 0, 128,
    63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64, 164, 98, 105, 97, 115, 199, 25, 1,
    147, 145, 3, 167, 102, 108, 111, 97, 116, 51, 50, 196, 12, 0, 0, 192, 64, 0, 0, 224, 64, 0, 0,
    0, 65, 161, 49, 130, 166, 119, 101, 105, 103, 104, 116, 199, 38, 1, 147, 146, 3, 2, 167, 102,
    108, 111, 97, 116, 51, 50, 196, 24, 0, 0, 32, 65, 0, 0, 48, 65, 0, 0, 64, 65, 0, 0, 80, 65, 0,
    0, 96, 65, 0, 0, 112, 65, 164, 98, 105, 97, 115, 199, 25, 1, 147, 145, 3, 167, 102, 108, 111,
    97, 116, 51, 50, 196, 12, 0, 0, 128, 65, 0, 0, 136, 65, 0, 0, 144, 65};

/* Layers alike are offered stacked when a target keeps them so (Flax's
 * nn.scan): each leaf's parts are the layers' tensors, one axis in front. */
static void test_stacked_layers(void) {
    jp_index *ix;
    jp_err err;
    CHECK(jp_index_open_memory(&ix, layers_source, sizeof layers_source, "layers.msgpack", NULL, &err) == JP_OK);
    jp_leaf_spec leaves[] = {
        {"params/ScanBlock_0/Dense_0/bias", JP_F32, 2, {2, 3}, NULL},
        {"params/ScanBlock_0/Dense_0/kernel", JP_F32, 3, {2, 2, 3}, NULL},
    };
    jp_plan *p = NULL;
    CHECK(jp_match(&p, ix, leaves, 2, NULL, &err) == JP_OK);
    CHECK(p && jp_plan_check(p, ix, false, &err) == JP_OK);
    if (!p) return;
    const jp_plan_leaf *k = &p->leaves[1];
    CHECK(k->nparts == 2 && k->cat_axis == 0 && k->ndim == 3);
    CHECK(k->perm[0] == 0 && k->perm[1] == 2 && k->perm[2] == 1 && k->flip == 0);
    if (k->nparts == 2) {
        CHECK_STR(part_tensor(ix, &k->parts[0].from), "layers/0/weight");
        CHECK_STR(part_tensor(ix, &k->parts[1].from), "layers/1/weight");
        CHECK(k->parts[1].ndim == 3 && k->parts[1].shape[0] == 1 && k->parts[1].shape[1] == 3 &&
              k->parts[1].shape[2] == 2);
    }
    CHECK(k->rule && strstr(k->rule, "2 layers stacked"));
    CHECK(p->leaves[0].nparts == 2 && p->leaves[0].parts[0].shape[0] == 1);
    char *text = NULL;
    jp_plan *q = NULL;
    CHECK(jp_plan_to_json(p, ix, leaves, 2, JP_LIB_FLAX, &text, &err) == JP_OK);
    CHECK(text && jp_plan_from_json(&q, text, strlen(text), ix, leaves, 2, &err) == JP_OK);
    CHECK(q && q->leaves[1].nparts == 2 && q->leaves[1].perm[1] == 2);
    jp_plan_free(q);
    free(text);
    jp_plan_free(p);
    leaves[1].shape[0] = 3; /* three layers wanted, two there */
    leaves[0].shape[0] = 3;
    CHECK(jp_match(&p, ix, leaves, 2, NULL, &err) == JP_OK);
    CHECK(p && (p->leaves[1].flags & JP_LEAF_MISSING));
    jp_plan_free(p);
    jp_index_close(ix);
}

/* Position p, channel k of a sinusoidal table of nd channels: halves (sin
 * of every frequency, then cos) or interleaved, frequencies 10000^(-2m/nd). */
static double sinusoid(int p, int k, int nd, bool interleaved) {
    int m = interleaved ? k / 2 : k % (nd / 2);
    bool is_cos = interleaved ? k % 2 : k >= nd / 2;
    double a = p * pow(10000.0, -2.0 * m / nd);
    return is_cos ? cos(a) : sin(a);
}

/* A sinusoidal position table no leaf takes is harmless (the target computes
 * its own), in either layout and in bfloat16, and so are a position index
 * (0, 1, 2, ... in each row), a window's relative position index, a causal
 * mask (banded too) and a masking constant; one element off, a learned
 * table of the same shape, integers that are not positions, or a scalar
 * that is not a masking constant, are not. */
static void test_constants(void) {
    enum { P = 24, D = 8 };
    static float halves[P][D], learned[P][D], off[P][D], weight[4];
    static uint16_t inter[P][D];
    for (int p = 0; p < P; p++)
        for (int k = 0; k < D; k++) {
            halves[p][k] = off[p][k] = (float)sinusoid(p, k, D, false);
            float f = (float)sinusoid(p, k, D, true);
            uint32_t u;
            memcpy(&u, &f, 4);
            inter[p][k] = jp_bf16_from_f32(u);
            learned[p][k] = (float)((p * 7 + k * 3) % 11) / 11.0f - 0.5f;
        }
    off[P - 1][D - 1] += 0.05f;
    static int64_t ids[2][P], bad_ids[P];
    static int8_t codes[P];
    for (int k = 0; k < P; k++) ids[0][k] = ids[1][k] = bad_ids[k] = k, codes[k] = (int8_t)k;
    bad_ids[P - 1] = 0;
    static bool causal[5][5];
    static uint8_t band[2][5][5]; /* ones within 2 of the diagonal */
    static float bad_mask[5][5], masking = -1e4f, scalar = 0.5f;
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            causal[i][j] = j <= i;
            band[0][i][j] = band[1][i][j] = j <= i && i - j < 2;
            bad_mask[i][j] = causal[i][j];
        }
    bad_mask[0][4] = 1.0f;
    static int64_t window[6][6]; /* a 2 x 3 window's relative position index */
    for (int hi = 0; hi < 2; hi++)
        for (int wi = 0; wi < 3; wi++)
            for (int hj = 0; hj < 2; hj++)
                for (int wj = 0; wj < 3; wj++)
                    window[hi * 3 + wi][hj * 3 + wj] = (hi - hj + 1) * 5 + (wi - wj + 2);
    jp_tensor t[] = {
        {.name = "out.bias", .dtype = JP_F32, .ndim = 1, .shape = {4}, .strides = {1}, .data = (void *)weight, .numel = 4},
        {.name = "halves", .dtype = JP_F32, .ndim = 2, .shape = {P, D}, .strides = {D, 1}, .data = (void *)halves},
        {.name = "inter", .dtype = JP_BF16, .ndim = 2, .shape = {P, D}, .strides = {D, 1}, .data = (void *)inter},
        {.name = "learned", .dtype = JP_F32, .ndim = 2, .shape = {P, D}, .strides = {D, 1}, .data = (void *)learned},
        {.name = "off", .dtype = JP_F32, .ndim = 2, .shape = {P, D}, .strides = {D, 1}, .data = (void *)off},
        {.name = "position_ids", .dtype = JP_I64, .ndim = 2, .shape = {2, P}, .strides = {P, 1}, .data = (void *)ids,
         .numel = 2 * P, .nbytes = 16 * P},
        {.name = "bad_ids", .dtype = JP_I64, .ndim = 1, .shape = {P}, .strides = {1}, .data = (void *)bad_ids,
         .numel = P, .nbytes = 8 * P},
        {.name = "window", .dtype = JP_I64, .ndim = 2, .shape = {6, 6}, .strides = {6, 1}, .data = (void *)window,
         .numel = 36, .nbytes = 288},
        {.name = "causal", .dtype = JP_BOOL, .ndim = 4, .shape = {1, 1, 5, 5}, .strides = {25, 25, 5, 1},
         .data = (void *)causal, .numel = 25, .nbytes = 25},
        {.name = "band", .dtype = JP_U8, .ndim = 3, .shape = {2, 5, 5}, .strides = {25, 5, 1}, .data = (void *)band,
         .numel = 50, .nbytes = 50},
        {.name = "bad_mask", .dtype = JP_F32, .ndim = 2, .shape = {5, 5}, .strides = {5, 1},
         .data = (void *)bad_mask, .numel = 25, .nbytes = 100},
        {.name = "masking", .dtype = JP_F32, .ndim = 0, .data = (void *)&masking, .numel = 1, .nbytes = 4},
        {.name = "scalar", .dtype = JP_F32, .ndim = 0, .data = (void *)&scalar, .numel = 1, .nbytes = 4},
        {.name = "codes", .dtype = JP_I8, .ndim = 1, .shape = {P / 2}, .strides = {2}, .data = (void *)codes,
         .numel = P / 2, .nbytes = P / 2},
    };
    for (size_t i = 1; i < 5; i++) {
        t[i].numel = P * D;
        t[i].nbytes = P * D * jp_dtype_size(t[i].dtype);
    }
    t[0].nbytes = 16;
    jp_index *ix;
    jp_err err;
    CHECK(jp_index_open_tensors(&ix, t, 14, "tables", &err) == JP_OK);
    jp_leaf_spec leaves[] = {{"out/bias", JP_F32, 1, {4}, NULL}};
    jp_plan *p = NULL;
    CHECK(jp_match(&p, ix, leaves, 1, NULL, &err) == JP_OK);
    CHECK(p && p->nunused == 13);
    for (size_t i = 0; p && i < p->nunused; i++) {
        const char *name = jp_index_at(ix, p->unused[i].source)->name;
        bool table = strcmp(name, "halves") == 0 || strcmp(name, "inter") == 0;
        bool index = strcmp(name, "position_ids") == 0, rel = strcmp(name, "window") == 0;
        bool mask = strcmp(name, "causal") == 0 || strcmp(name, "band") == 0;
        CHECK(p->unused[i].harmless == (table || index || rel || mask || strcmp(name, "masking") == 0));
        CHECK(!mask || strstr(p->unused[i].why, "causal mask"));
        CHECK(!rel || strstr(p->unused[i].why, "relative position index"));
        CHECK(!table || strstr(p->unused[i].why, "sinusoidal position table"));
        CHECK(!index || strstr(p->unused[i].why, "position index"));
    }
    CHECK(p && jp_plan_check(p, ix, false, &err) == JP_MATCH && strstr(err.msg, "learned"));
    jp_plan_free(p);
    jp_index_close(ix);
}

/* Tied copies: whichever of them a leaf takes, the others are harmless,
 * the first one in the file included. */
static void test_tied_copies(void) {
    static float w[12];
    jp_tensor t[] = {
        {.name = "head.weight", .dtype = JP_F32, .ndim = 2, .shape = {3, 4}, .strides = {4, 1}, .data = (void *)w},
        {.name = "emb.weight", .dtype = JP_F32, .ndim = 2, .shape = {3, 4}, .strides = {4, 1}, .data = (void *)w},
    };
    for (size_t i = 0; i < 2; i++) t[i].numel = 12, t[i].nbytes = 48;
    jp_index *ix;
    jp_err err;
    CHECK(jp_index_open_tensors(&ix, t, 2, "tied", &err) == JP_OK);
    jp_leaf_spec leaves[] = {{"emb/embedding", JP_F32, 2, {3, 4}, NULL}};
    jp_plan *p = NULL;
    CHECK(jp_match(&p, ix, leaves, 1, NULL, &err) == JP_OK);
    CHECK(p && p->leaves[0].nparts == 1 && p->nunused == 1);
    if (p && p->nunused == 1) {
        CHECK(p->leaves[0].parts[0].from.source == 1 && p->unused[0].source == 0 && p->unused[0].harmless);
        CHECK_STR(p->unused[0].why, "tied to emb.weight (same storage), which is taken");
    }
    CHECK(p && jp_plan_check(p, ix, false, &err) == JP_OK);
    jp_plan_free(p);
    jp_index_close(ix);
}

/* A plain dict's library from its leaf paths: Haiku's w and offset, unless
 * a kernel says Flax. */
static void test_library_of_paths(void) {
    const char *haiku[] = {"mlp/~/linear_0/w", "mlp/~/linear_0/b", "layer_norm/offset"};
    const char *flax[] = {"params/Dense_0/kernel", "params/Dense_0/bias"};
    const char *both[] = {"a/w", "params/b/kernel"};
    const char *neither[] = {"a/bias", "a/scale"};
    CHECK(jp_lib_of_paths(haiku, 3) == JP_LIB_HAIKU);
    CHECK(jp_lib_of_paths(haiku + 2, 1) == JP_LIB_HAIKU);
    CHECK(jp_lib_of_paths(flax, 2) == JP_LIB_FLAX);
    CHECK(jp_lib_of_paths(both, 2) == JP_LIB_FLAX);
    CHECK(jp_lib_of_paths(neither, 2) == JP_LIB_FLAX);
    CHECK(jp_lib_of_paths(NULL, 0) == JP_LIB_FLAX);
}

int main(void) {
    test_names();
    test_library_of_paths();
    test_layouts();
    test_match_and_json();
    test_equinox_gru();
    test_stacked_layers();
    test_constants();
    test_tied_copies();
    return check_done("match");
}
