/* The matcher (the method is described in match.h). */
#include "match.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 512
#define DP_MAX_CELLS (1u << 22)   /* beyond this a signature group is paired by order only */
#define MATCH_SCORE 1000000       /* a pair always beats any name similarity (0..1000) */

typedef struct sleaf {            /* a source tensor, or a slice of one */
    uint32_t tensor;
    jp_role role;
    const char *name;             /* after rename rules */
    char *leafkey;
    int32_t ndim;
    int64_t shape[JP_MAX_DIMS];
    int32_t slice_axis;
    int64_t slice_start, slice_len;
    uint64_t numel;
    bool has_plus;                /* plus the same slice of another tensor (summed biases) */
    uint32_t plus_tensor;
    int64_t then;                 /* the sleaf joined after this one along axis 0, or -1 */
    double add;                   /* a constant added to every element (Haiku's forget gate) */
    bool lstm_gates;              /* Haiku's LSTM weight: then is joined along axis 1, and the
                                     gates go from i f g o to i g f o (set_parts) */
    int32_t stack;                /* > 0: this many layers' leaves stacked on a new axis 0 (the
                                     first is this one's tensor, the rest follow by then) */
} sleaf;

typedef struct tleaf {
    size_t spec;                  /* index into the caller's targets */
    jp_role role;
    jp_spelling spelling;
    char *leafkey;
} tleaf;

typedef struct module {
    const char *path;             /* without the leaf and, for targets, the collection */
    char *key;
    uint64_t order;
    uint64_t rank;                /* place in its side's sequence (set_ranks) */
    uint32_t *leaves;             /* sleaf or tleaf indices */
    uint32_t nleaves, capleaves;
    int64_t pair;                 /* module on the other side, -1 */
    int64_t parent;               /* fused module a virtual one slices, -1 */
    bool source;
    bool alias;                   /* every leaf is a tied copy of another tensor */
    bool ambiguous;
 char *last;                   /* last component, canonical (query_proj is query) */
    char *stem;                   /* the key without its digits: Dense_0 and Dense_1 share one */
    char *sig;
    char *why;                    /* for an ambiguous target: the candidates */
} module;

/* A string -> index table with chaining through `next`, for module paths and keys. */
typedef struct strtab {
    int64_t *head;
    int64_t *next;
    size_t cap;                   /* power of two */
    size_t nnext;                 /* entries next has room for */
    jp_arena *arena;
} strtab;

typedef struct side {
    jp_vec mods;                  /* module */
    strtab bypath;
    size_t strip;                 /* leading components every module shares */
} side;

typedef struct matcher {
    const jp_index *ix;
    const jp_leaf_spec *specs;
    size_t nspecs;
    const jp_match_opts *o;
    jp_arena *arena;              /* the plan's */
    jp_arena tmp;
    jp_vec sl;                    /* sleaf */
    jp_vec tl;                    /* tleaf */
    side src, dst;
    int64_t *alias_of;            /* per tensor: the first tensor with the same bytes, or -1 */
    uint32_t *used;               /* per tensor: leaves taking it */
    int single_bias;              /* haiku_single_bias: -1 not asked yet */
    jp_err *err;
} matcher;

#define MOD(sd, i) (&((module *)(sd)->mods.items)[i])
#define SL(m, i) (&((sleaf *)(m)->sl.items)[i])
#define TL(m, i) (&((tleaf *)(m)->tl.items)[i])

static jp_code oom(matcher *m) { return jp_err_set(m->err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory while matching"); }

/* ---- string table */

/* n: the entries expected; more may be added (a side's virtual modules). */
static bool strtab_init(strtab *t, size_t n, jp_arena *a) {
    t->cap = 16;
    while (t->cap < 2 * n + 1) t->cap <<= 1;
    t->nnext = n + 1;
    t->arena = a;
    t->head = jp_arena_alloc_array(a, t->cap, sizeof *t->head);
    t->next = jp_arena_alloc_array(a, t->nnext, sizeof *t->next);
    if (!t->head || !t->next) return false;
    memset(t->head, 0xff, t->cap * sizeof *t->head);
    return true;
}

static bool strtab_add(strtab *t, const char *s, int64_t i) {
    if ((size_t)i >= t->nnext) {
        size_t n = 2 * (size_t)i + 1;
        int64_t *next = jp_arena_alloc_array(t->arena, n, sizeof *next);
        if (!next) return false;
        memcpy(next, t->next, t->nnext * sizeof *next);
        t->next = next;
        t->nnext = n;
    }
    size_t h = (size_t)jp_hash_str(s) & (t->cap - 1);
    t->next[i] = t->head[h];
    t->head[h] = i;
    return true;
}

/* ---- building the two sides */

static bool is_sep(char c) { return c == '.' || c == '/' || c == '[' || c == ']' || c == '\'' || c == '"'; }

/* Module path (everything before the leaf component, separators trimmed). */
static char *module_path(jp_arena *a, const char *name, size_t leafstart) {
    size_t end = leafstart;
    while (end > 0 && is_sep(name[end - 1])) end--;
    return jp_arena_strndup(a, name, end);
}

/* A new module of a side, without leaves: its index, -1 when out of memory. */
static int64_t push_module(matcher *m, side *sd, const char *path, uint64_t order) {
    module *md = jp_vec_push(&sd->mods);
    if (!md) return -1;
    md->path = path;
    md->order = order;
    md->pair = -1;
    md->parent = -1;
    md->source = sd == &m->src;
    return (int64_t)sd->mods.len - 1;
}

static int64_t find_or_add_module(matcher *m, side *sd, const char *path, uint64_t order) {
    size_t h = (size_t)jp_hash_str(path) & (sd->bypath.cap - 1);
    for (int64_t i = sd->bypath.head[h]; i >= 0; i = sd->bypath.next[i])
        if (strcmp(MOD(sd, i)->path, path) == 0) return i;
    int64_t i = push_module(m, sd, path, order);
    return i >= 0 && strtab_add(&sd->bypath, path, i) ? i : -1;
}

static bool module_add_leaf(matcher *m, module *md, uint32_t leaf) {
    if (md->nleaves == md->capleaves) {
        uint32_t cap = md->capleaves ? 2 * md->capleaves : 4;
        uint32_t *nl = jp_arena_alloc_array(&m->tmp, cap, sizeof *nl);
        if (!nl) return false;
        if (md->nleaves) memcpy(nl, md->leaves, md->nleaves * sizeof *nl);
        md->leaves = nl;
        md->capleaves = cap;
    }
    md->leaves[md->nleaves++] = leaf;
    return true;
}

static char *leaf_key(jp_arena *a, const char *s, size_t len) {
    char k[KEY_MAX];
    jp_name_key(s, len, k, sizeof k);
    return jp_arena_strdup(a, k);
}

/* Apply the rename rules to a source name. */
static const char *rename_source(matcher *m, regex_t *res, const char *name) {
    const char *cur = name;
    for (size_t r = 0; r < m->o->nrules; r++) {
        regmatch_t g[10];
        if (regexec(&res[r], cur, 10, g, 0) != 0) continue;
        const char *rep = m->o->rules[2 * r + 1];
        char out[JP_ERR_MSG_MAX * 8];
        size_t n = 0;
        size_t pre = (size_t)g[0].rm_so;
        if (pre >= sizeof out) continue;
        memcpy(out, cur, pre);
        n = pre;
        for (const char *p = rep; *p && n + 1 < sizeof out; p++) {
            if (*p == '\\' && p[1] >= '0' && p[1] <= '9') {
                int gi = p[1] - '0';
                p++;
                if (g[gi].rm_so < 0) continue;
                size_t gl = (size_t)(g[gi].rm_eo - g[gi].rm_so);
                if (n + gl + 1 >= sizeof out) break;
                memcpy(out + n, cur + g[gi].rm_so, gl);
                n += gl;
            } else {
                out[n++] = *p;
            }
        }
        size_t post = strlen(cur + g[0].rm_eo);
        if (n + post + 1 > sizeof out) continue;
        memcpy(out + n, cur + g[0].rm_eo, post + 1);
        const char *dup = jp_arena_strdup(&m->tmp, out);
        if (dup) cur = dup;
    }
    return cur;
}

/* torch.nn.utils.parametrizations.weight_norm stores a layer's weight as
 * "parametrizations.weight.original0" (g) and "original1" (v); the older
 * weight_norm, and JAX ports, call them weight_g and weight_v. */
static const char *undo_parametrization(matcher *m, const char *name) {
    static const char *const mid = ".parametrizations.";
    const char *p = strstr(name, mid);
    if (!p) return name;
    const char *param = p + strlen(mid);
    const char *dot = strchr(param, '.');
    if (!dot || (strcmp(dot, ".original0") != 0 && strcmp(dot, ".original1") != 0)) return name;
    const char *out = jp_arena_printf(&m->tmp, "%.*s.%.*s_%c", (int)(p - name), name, (int)(dot - param), param,
                                      dot[9] == '0' ? 'g' : 'v');
    return out ? out : name;
}

static int64_t push_sleaf(matcher *m, uint32_t tensor, const char *name, jp_role role, char *leafkey) {
    sleaf *l = jp_vec_push(&m->sl);
    if (!l) return -1;
    const jp_tensor *t = jp_index_at(m->ix, tensor);
    l->tensor = tensor;
    l->role = role;
    l->name = name;
    l->leafkey = leafkey;
    l->ndim = t->ndim;
    memcpy(l->shape, t->shape, sizeof l->shape);
    l->slice_axis = -1;
    l->numel = t->numel;
    l->has_plus = false;
    l->then = -1;
    l->add = 0.0;
    l->lstm_gates = false;
    l->stack = 0;
    return (int64_t)m->sl.len - 1;
}

/* A virtual module of the source at path, slicing its parent's tensors:
 * its index, -1 when out of memory, -2 when a real module has that path. */
static int64_t virtual_module(matcher *m, int64_t parent, const char *path, uint64_t order) {
    if (!path) return -1;
    int64_t vi = find_or_add_module(m, &m->src, path, order);
    if (vi < 0) return -1;
    if (MOD(&m->src, vi)->nleaves) return -2;
    MOD(&m->src, vi)->parent = parent;
    return vi;
}

/* A leaf made of source leaf `from`: rows [start, start + len) of it (len <
 * 0: all of it), plus the same rows of source leaf `plus` when plus >= 0.
 * Its index, or -1 when out of memory. */
static int64_t slice_leaf(matcher *m, int64_t from, int64_t plus, jp_role role, char *key, int64_t start,
                          int64_t len) {
    sleaf base = *SL(m, from);
    int64_t li = push_sleaf(m, base.tensor, base.name, role, key);
    if (li < 0) return -1;
    sleaf *l = SL(m, li);
    if (len >= 0) {
        l->slice_axis = 0;
        l->slice_start = start;
        l->slice_len = len;
        l->numel = base.shape[0] ? base.numel / (uint64_t)base.shape[0] * (uint64_t)len : 0;
        l->shape[0] = len;
    }
    if (plus >= 0) {
        l->has_plus = true;
        l->plus_tensor = SL(m, plus)->tensor;
    }
    return li;
}

/* Joins leaf `next` after leaf li (and any joined to it) along axis 0. */
static void join_leaf(matcher *m, int64_t li, int64_t next) {
    sleaf *l = SL(m, li);
    while (l->then >= 0) l = SL(m, l->then);
    l->then = next;
    SL(m, li)->shape[0] += SL(m, next)->shape[0];
    SL(m, li)->numel += SL(m, next)->numel;
}

/* Adds leaf li to virtual module vi. */
static jp_code add_leaf(matcher *m, int64_t vi, int64_t li) {
    if (li < 0) return oom(m);
    return module_add_leaf(m, MOD(&m->src, vi), (uint32_t)li) ? JP_OK : oom(m);
}

/* Adds to virtual module vi the leaf slice_leaf makes. */
static jp_code virtual_leaf(matcher *m, int64_t vi, int64_t from, int64_t plus, jp_role role,
                            char *key, int64_t start, int64_t len) {
    return add_leaf(m, vi, slice_leaf(m, from, plus, role, key, start, len));
}

/* A fused q/k/v projection: torch's MultiheadAttention keeps in_proj_weight
 * (3E, E) and in_proj_bias (3E) beside out_proj; timm and others a Linear
 * named qkv. Offer query, key and value as virtual modules. */
static jp_code add_virtual_qkv(matcher *m, int64_t mi) {
    module *md = MOD(&m->src, mi);
    int64_t w = -1, b = -1;
    bool qkv_linear = false;
    size_t ls;
    size_t ll = jp_name_leaf(md->path, &ls);
    char last[KEY_MAX];
    jp_name_key(md->path + ls, ll, last, sizeof last);
    if (strcmp(last, "qkv") == 0 || strcmp(last, "wqkv") == 0) qkv_linear = true;
    for (uint32_t k = 0; k < md->nleaves; k++) {
        sleaf *l = SL(m, md->leaves[k]);
        if (qkv_linear ? l->role == JP_ROLE_WEIGHT : strcmp(l->leafkey, "inprojweight") == 0) w = md->leaves[k];
        if (qkv_linear ? l->role == JP_ROLE_BIAS : strcmp(l->leafkey, "inprojbias") == 0) b = md->leaves[k];
    }
    if (w < 0 || SL(m, w)->ndim != 2 || SL(m, w)->shape[0] % 3) return JP_OK;
    if (b >= 0 && (SL(m, b)->ndim != 1 || SL(m, b)->shape[0] != SL(m, w)->shape[0])) return JP_OK;
    static const char *const parts[3] = {"query", "key", "value"};
    int64_t e = SL(m, w)->shape[0] / 3;
    for (int p = 0; p < 3; p++) {
        /* A qkv Linear's parts are its siblings ("attn.qkv" gives "attn.query");
         * in_proj's are the attention module's children. */
        char *path = qkv_linear && ls > 0 ? jp_arena_printf(&m->tmp, "%.*s.%s", (int)(ls - 1), md->path, parts[p])
                                          : jp_arena_printf(&m->tmp, "%s%s%s", md->path, *md->path ? "." : "",
                                                            parts[p]);
        int64_t vi = virtual_module(m, mi, path, md->order + 1 + (uint64_t)p);
        if (vi == -1) return oom(m);
        md = MOD(&m->src, mi);
        if (vi < 0) continue; /* a real module of that name exists */
        jp_code rc = virtual_leaf(m, vi, w, -1, JP_ROLE_WEIGHT, "weight", p * e, e);
        if (!rc && b >= 0) rc = virtual_leaf(m, vi, b, -1, JP_ROLE_BIAS, "bias", p * e, e);
        if (rc) return rc;
    }
    return JP_OK;
}

/* One layer of a torch recurrent module: nn.LSTM, nn.GRU and nn.RNN keep
 * weight_ih_l0, weight_hh_l0, bias_ih_l0 and bias_hh_l0 (and _reverse
 * ones), their cells weight_ih ... bias_hh; -1 where absent. */
typedef struct rnn_layer {
    char suffix[24];              /* "_l0", "_l1_reverse", "" */
    int64_t w_ih, w_hh, b_ih, b_hh;
} rnn_layer;

/* Whether the template's hk.VanillaRNN cores keep one bias: some module
 * named linear_1 has a `w` and no `b` (double_bias=False). Asked once. */
static bool haiku_single_bias(matcher *m) {
    if (m->single_bias >= 0) return m->single_bias;
    m->single_bias = 0;
    static const char name[] = "linear_1";
    const size_t nl = sizeof name - 1;
    for (size_t i = 0; i < m->nspecs && !m->single_bias; i++) {
        const char *p = m->specs[i].path;
        size_t ls, ll = jp_name_leaf(p, &ls); /* the leaf, after its module and one separator */
        if (ll != 1 || p[ls] != 'w' || ls < nl + 1) continue;
        const char *mod = p + ls - 1 - nl;  /* the module's last component, if it is the name */
        if (strncmp(mod, name, nl) != 0 || (mod > p && !is_sep(mod[-1]))) continue;
        bool b = false;
        for (size_t j = 0; j < m->nspecs && !b; j++) {
            const char *q = m->specs[j].path;
            b = strlen(q) == ls + 1 && strncmp(q, p, ls) == 0 && q[ls] == 'b';
        }
        m->single_bias = !b;
    }
    return m->single_bias;
}

/* Haiku's recurrent cores (G gates of H rows), under the layer's path:
 *   VanillaRNN: linear (x, weight_ih and bias_ih) and linear_1 (h, weight_hh
 *     and bias_hh: its double_bias, on by default); when the template's
 *     linear_1 modules have no bias (double_bias=False), linear takes
 *     bias_ih + bias_hh and linear_1 weight_hh alone;
 *   LSTM: one linear over [x, h], its weight [weight_ih | weight_hh] with the
 *     gates as Haiku splits them (i, g, f, o), its bias b_ih + b_hh in that
 *     order less 1 on the forget gate, as Haiku adds 1 there as it runs.
 * Haiku's GRU applies the reset gate before the hidden matmul ((r * h) W,
 * PyTorch's r * (W h + b)): no weights make one compute the other, so none
 * is offered. */
static jp_code add_haiku_rnn_layer(matcher *m, int64_t mi, const rnn_layer *ly, int64_t h, int64_t g,
                                   const char *base, uint64_t order) {
    int64_t bi = ly->b_ih, bh = ly->b_hh;
    if (g == 3 || bi < 0 || bh < 0) return JP_OK;
    const char *dot = *base ? "." : "";
    if (g == 1) {
        bool single = haiku_single_bias(m);
        jp_code rc = JP_OK;
        for (int hid = 0; hid < 2 && !rc; hid++) {
            int64_t vi = virtual_module(m, mi, jp_arena_printf(&m->tmp, "%s%slinear%s", base, dot, hid ? "_1" : ""),
                                        order++);
            if (vi == -1) return oom(m);
            if (vi < 0) continue;
            rc = virtual_leaf(m, vi, hid ? ly->w_hh : ly->w_ih, -1, JP_ROLE_WEIGHT, "weight", 0, -1);
            if (!rc && !(single && hid))
                rc = virtual_leaf(m, vi, hid ? bh : bi, single ? bh : -1, JP_ROLE_BIAS, "bias", 0, -1);
        }
        return rc;
    }
    int64_t vi = virtual_module(m, mi, jp_arena_printf(&m->tmp, "%s%slinear", base, dot), order);
    if (vi == -1) return oom(m);
    if (vi < 0) return JP_OK;
    int64_t w = slice_leaf(m, ly->w_ih, -1, JP_ROLE_WEIGHT, "weight", 0, -1),
            w2 = slice_leaf(m, ly->w_hh, -1, JP_ROLE_WEIGHT, "weight", 0, -1);
    if (w < 0 || w2 < 0) return oom(m);
    SL(m, w)->then = w2; /* (4H, in + H), as a Linear over [x, h] keeps it */
    SL(m, w)->shape[1] += h;
    SL(m, w)->numel += SL(m, w2)->numel;
    SL(m, w)->lstm_gates = true;
    jp_code rc = add_leaf(m, vi, w);
    static const int haiku_order[4] = {0, 2, 1, 3}; /* torch's gate rows for Haiku's i, g, f, o */
    int64_t b = -1;
    for (int q = 0; q < 4 && !rc; q++) {
        int64_t part = slice_leaf(m, bi, bh, JP_ROLE_BIAS, "bias", haiku_order[q] * h, h);
        if (part < 0) return oom(m);
        if (haiku_order[q] == 1) SL(m, part)->add = -1.0;
        if (b < 0) b = part;
        else join_leaf(m, b, part);
    }
    return rc ? rc : add_leaf(m, vi, b);
}

/* The gate rows of a torch recurrent layer (G gates of H rows each: LSTM
 * i, f, g, o; GRU r, z, n; RNN one) offered as the modules JAX cells keep:
 *   Flax linen and NNX cells, one Dense per gate and side: i<gate> (x) and
 *     h<gate> (h), the two biases summed into one of them (LSTM: h<gate>;
 *     GRU: ir, iz summed, in and hn their own; SimpleCell: i);
 *   NNX's OptimizedLSTMCell and SimpleCell, dense_i and dense_h, every gate
 *     in one kernel;
 *   Equinox's LSTMCell and GRUCell, weight_ih, weight_hh and one bias
 *     (the GRU's joins summed rows r, z to b_in; b_hn is its bias_n).
 * They go under the layer's path ("lstm.l0", "lstm.l1_reverse", or the
 * cell's own), in order after the layer's first tensor. */
static jp_code add_rnn_layer(matcher *m, int64_t mi, const rnn_layer *ly) {
    const sleaf *wi = SL(m, ly->w_ih), *wh = SL(m, ly->w_hh);
    if (wi->ndim != 2 || wh->ndim != 2 || wh->shape[1] <= 0 || wi->shape[0] != wh->shape[0] ||
        wh->shape[0] % wh->shape[1])
        return JP_OK;
    int64_t h = wh->shape[1], g = wh->shape[0] / h, bi = ly->b_ih, bh = ly->b_hh;
    if (g != 1 && g != 3 && g != 4) return JP_OK;
    for (int k = 0; k < 2; k++) {
        int64_t b = k ? bh : bi;
        if (b >= 0 && (SL(m, b)->ndim != 1 || SL(m, b)->shape[0] != g * h)) return JP_OK;
    }
    bool both = bi >= 0 && bh >= 0;
    const char *base = *ly->suffix ? jp_arena_printf(&m->tmp, "%s%s%s", MOD(&m->src, mi)->path,
                                                     *MOD(&m->src, mi)->path ? "." : "", ly->suffix + 1)
                                   : MOD(&m->src, mi)->path;
    if (!base) return oom(m);
    uint64_t order = (uint64_t)wi->tensor * 16 + 1;
    if (m->o->lib == JP_LIB_HAIKU) return add_haiku_rnn_layer(m, mi, ly, h, g, base, order);
    static const char *const gates[5] = {"", "", "", "rzn", "ifgo"};
    jp_code rc = JP_OK;
    for (int64_t q = 0; q < g && !rc; q++) {
        char gate = g > 1 ? gates[g][q] : '\0';
        for (int hid = 0; hid < 2 && !rc; hid++) { /* 0: i<gate>, 1: h<gate> */
            int64_t vi = virtual_module(m, mi, jp_arena_printf(&m->tmp, "%s%s%c%.1s", base, *base ? "." : "",
                                                              hid ? 'h' : 'i', &gate),
                                        order++);
            if (vi == -1) return oom(m);
            if (vi < 0) continue;
            rc = virtual_leaf(m, vi, hid ? ly->w_hh : ly->w_ih, -1, JP_ROLE_WEIGHT, "weight", q * h, h);
            /* which side's Dense takes the gate's bias, and whether summed */
            bool summed = g == 4 ? hid == 1 : g == 1 ? hid == 0 : q < 2 && hid == 0;
            int64_t own = g == 3 && q == 2 ? (hid ? bh : bi) : -1;
            if (!rc && summed && both)
                rc = virtual_leaf(m, vi, bi, bh, JP_ROLE_BIAS, "bias", q * h, h);
            else if (!rc && own >= 0)
                rc = virtual_leaf(m, vi, own, -1, JP_ROLE_BIAS, "bias", q * h, h);
        }
    }
    /* every gate in one kernel (NNX), or one cell (Equinox) */
    static const char *const fused[3] = {"dense_i", "dense_h", "cell"};
    for (int f = g == 3 ? 2 : 0; f < 3 && !rc; f++) {
        if (f == 2 && g == 1) break;
        int64_t vi = virtual_module(m, mi, jp_arena_printf(&m->tmp, "%s%s%s", base, *base ? "." : "", fused[f]),
                                    order++);
        if (vi == -1) return oom(m);
        if (vi < 0) continue;
        if (f < 2)
            rc = virtual_leaf(m, vi, f ? ly->w_hh : ly->w_ih, -1, JP_ROLE_WEIGHT, "weight", 0, -1);
        else if (!(rc = virtual_leaf(m, vi, ly->w_ih, -1, JP_ROLE_OTHER, "weightih", 0, -1)))
            rc = virtual_leaf(m, vi, ly->w_hh, -1, JP_ROLE_OTHER, "weighthh", 0, -1);
        /* the summed bias: LSTM's on dense_h and the cell, RNN's on dense_i;
         * Equinox's GRU cell sums r and z, keeps b_in and holds b_hn apart */
        if (!rc && both && g == 3) {
            int64_t li = slice_leaf(m, bi, bh, JP_ROLE_BIAS, "bias", 0, 2 * h),
                    in = slice_leaf(m, bi, -1, JP_ROLE_BIAS, "bias", 2 * h, h);
            if (li < 0 || in < 0) return oom(m);
            join_leaf(m, li, in);
            if (!(rc = add_leaf(m, vi, li)))
                rc = virtual_leaf(m, vi, bh, -1, JP_ROLE_OTHER, "biasn", 2 * h, h);
        } else if (!rc && both && (g == 4 ? f != 0 : f == 0)) {
            rc = virtual_leaf(m, vi, bi, bh, JP_ROLE_BIAS, "bias", 0, -1);
        }
    }
    return rc;
}

/* The recurrent layers among a source module's leaves. */
static jp_code add_virtual_rnn(matcher *m, int64_t mi) {
    rnn_layer ly[16];
    size_t n = 0;
    static const char *const kinds[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    for (uint32_t k = 0; k < MOD(&m->src, mi)->nleaves; k++) {
        int64_t li = MOD(&m->src, mi)->leaves[k];
        const char *name = SL(m, li)->name;
        size_t ls, ll = jp_name_leaf(name, &ls);
        int kind = 0;
        while (kind < 4 && strncmp(name + ls, kinds[kind], strlen(kinds[kind])) != 0) kind++;
        if (kind == 4) continue;
        const char *suffix = name + ls + strlen(kinds[kind]);
        size_t sl = ll - strlen(kinds[kind]);
        if (sl >= sizeof ly[0].suffix || (sl && strncmp(suffix, "_l", 2) != 0)) continue;
        size_t at = 0;
        while (at < n && (strlen(ly[at].suffix) != sl || strncmp(ly[at].suffix, suffix, sl) != 0)) at++;
        if (at == n) {
            if (n == sizeof ly / sizeof ly[0]) continue;
            ly[n] = (rnn_layer){.w_ih = -1, .w_hh = -1, .b_ih = -1, .b_hh = -1};
            memcpy(ly[n].suffix, suffix, sl);
            ly[n++].suffix[sl] = '\0';
        }
        int64_t *slot[4] = {&ly[at].w_ih, &ly[at].w_hh, &ly[at].b_ih, &ly[at].b_hh};
        *slot[kind] = li;
    }
    jp_code rc = JP_OK;
    for (size_t i = 0; i < n && !rc; i++)
        if (ly[i].w_ih >= 0 && ly[i].w_hh >= 0) rc = add_rnn_layer(m, mi, &ly[i]);
    return rc;
}

static jp_code build_source(matcher *m) {
    size_t n = jp_index_count(m->ix);
    regex_t *res = NULL;
    jp_code rc = JP_OK;
    if (m->o->nrules) {
        res = calloc(m->o->nrules, sizeof *res);
        if (!res) return oom(m);
        for (size_t r = 0; r < m->o->nrules; r++)
            if (regcomp(&res[r], m->o->rules[2 * r], REG_EXTENDED) != 0) {
                for (size_t q = 0; q < r; q++) regfree(&res[q]);
                free(res);
                return jp_err_set(m->err, JP_ARGUMENT, JP_NO_OFFSET, NULL,
                                  "rename rule %zu: '%s' is not a valid regular expression", r + 1,
                                  m->o->rules[2 * r]);
            }
    }
    if (!strtab_init(&m->src.bypath, 4 * n + 4, &m->tmp)) rc = oom(m);
    for (size_t i = 0; i < n && !rc; i++) {
        const jp_tensor *t = jp_index_at(m->ix, i);
        const char *name = undo_parametrization(m, t->name);
        if (res) name = rename_source(m, res, name);
        size_t ls, ll = jp_name_leaf(name, &ls);
        jp_spelling sp;
        jp_role role = jp_role_of(name + ls, ll, &sp);
        char *path = module_path(&m->tmp, name, ls);
        char *lk = leaf_key(&m->tmp, name + ls, ll);
        if (!path || !lk) {
            rc = oom(m);
            break;
        }
        int64_t li = push_sleaf(m, (uint32_t)i, name, role, lk);
        int64_t mi = li < 0 ? -1 : find_or_add_module(m, &m->src, path, (uint64_t)i * 16);
        if (mi < 0 || !module_add_leaf(m, MOD(&m->src, mi), (uint32_t)li)) rc = oom(m);
    }
    if (res) {
        for (size_t r = 0; r < m->o->nrules; r++) regfree(&res[r]);
        free(res);
    }
    size_t nreal = m->src.mods.len;
    /* Orders leave 15 places after each tensor's for the virtual modules. */
    for (size_t i = 0; i < nreal && !rc; i++)
        if (!(rc = add_virtual_qkv(m, (int64_t)i))) rc = add_virtual_rnn(m, (int64_t)i);
    for (size_t i = 0; i < m->src.mods.len; i++) {
        module *md = MOD(&m->src, i);
        md->alias = md->nleaves > 0 && md->parent < 0;
        for (uint32_t k = 0; k < md->nleaves && md->alias; k++)
            if (m->alias_of[SL(m, md->leaves[k])->tensor] < 0) md->alias = false;
    }
    return rc;
}

/* The collection a Flax linen variables dict starts with. */
static size_t skip_collection(const char *path) {
    static const char *const cols[] = {"params/", "batch_stats/", "params.", "batch_stats.", NULL};
    for (const char *const *c = cols; *c; c++)
        if (strncmp(path, *c, strlen(*c)) == 0) return strlen(*c);
    return 0;
}

size_t jp_match_module_span(const char *path, bool target, size_t *start) {
    size_t skip = target ? skip_collection(path) : 0, ls;
    jp_name_leaf(path + skip, &ls);
    size_t end = ls;
    while (end > 0 && is_sep(path[skip + end - 1])) end--;
    *start = skip;
    return end;
}

static jp_code build_target(matcher *m) {
    if (!strtab_init(&m->dst.bypath, m->nspecs + 1, &m->tmp)) return oom(m);
    for (size_t i = 0; i < m->nspecs; i++) {
        const char *name = m->specs[i].path + skip_collection(m->specs[i].path);
        size_t ls, ll = jp_name_leaf(name, &ls);
        tleaf *l = jp_vec_push(&m->tl);
        if (!l) return oom(m);
        l->spec = i;
        l->role = jp_role_of(name + ls, ll, &l->spelling);
        l->leafkey = leaf_key(&m->tmp, name + ls, ll);
        char *path = module_path(&m->tmp, name, ls);
        if (!l->leafkey || !path) return oom(m);
        int64_t mi = find_or_add_module(m, &m->dst, path, i);
        if (mi < 0 || !module_add_leaf(m, MOD(&m->dst, mi), (uint32_t)(m->tl.len - 1))) return oom(m);
    }
    return JP_OK;
}

/* ---- keys */

/* Leading components shared by every module path of a side. */
static size_t common_components(side *sd) {
    if (sd->mods.len < 2) return 0;
    const char *first = MOD(sd, 0)->path;
    size_t strip = 0;
    for (;;) {
        /* the (strip+1)-th component of the first path */
        const char *p = first;
        for (size_t k = 0; k < strip; k++) {
            while (*p && !is_sep(*p)) p++;
            while (*p && is_sep(*p)) p++;
        }
        const char *e = p;
        while (*e && !is_sep(*e)) e++;
        if (e == p) return strip;
        size_t clen = (size_t)(e - p), off = (size_t)(p - first);
        for (size_t i = 1; i < sd->mods.len; i++) {
            const char *q = MOD(sd, i)->path;
            if (MOD(sd, i)->parent >= 0) continue;
            if (strlen(q) < off + clen || strncmp(q, first, off + clen) != 0 ||
                (q[off + clen] && !is_sep(q[off + clen])) || !q[off + clen])
                return strip; /* a module that is the prefix itself would lose its name */
        }
        strip++;
    }
}

static const char *after_components(const char *p, size_t k) {
    for (size_t i = 0; i < k; i++) {
        while (*p && !is_sep(*p)) p++;
        while (*p && is_sep(*p)) p++;
    }
    return p;
}

static char *key_of(jp_arena *a, const char *path, size_t strip) {
    const char *p = after_components(path, strip);
    return leaf_key(a, p, strlen(p));
}

/* Whether module path is the module prefix[0..n) or lies under it. */
static bool under(const char *path, const char *prefix, size_t n) {
    return strncmp(path, prefix, n) == 0 && (!path[n] || is_sep(path[n]));
}

/* A hint "A=B": source modules under A are the target modules under B. */
static const char *hinted_path(matcher *m, const char *path) {
    for (size_t h = 0; h < m->o->nhints; h++) {
        const char *eq = strchr(m->o->hints[h], '=');
        if (!eq) continue;
        size_t al = (size_t)(eq - m->o->hints[h]);
        if (!under(path, m->o->hints[h], al)) continue;
        return jp_arena_printf(&m->tmp, "%s%s", eq + 1, path + al);
    }
    return NULL;
}

/* Whether a module of sd is the module `prefix` (its first n bytes) or lies under it. */
static bool any_under(const side *sd, const char *prefix, size_t n) {
    for (size_t i = 0; i < sd->mods.len; i++)
        if (under(MOD(sd, i)->path, prefix, n)) return true;
    return false;
}

/* The distinct first components of sd's module paths, the first few, for a
 * message. */
static const char *first_components(matcher *m, const side *sd) {
    enum { SHOWN = 8 };
    const char *seen[SHOWN];
    size_t len[SHOWN], k = 0, more = 0;
    for (size_t i = 0; i < sd->mods.len; i++) {
        const char *p = MOD(sd, i)->path;
        size_t n = 0;
        while (p[n] && !is_sep(p[n])) n++;
        bool dup = !n;
        for (size_t j = 0; j < k && !dup; j++) dup = len[j] == n && strncmp(seen[j], p, n) == 0;
        if (dup) continue;
        if (k == SHOWN) {
            more++;
            continue;
        }
        seen[k] = p;
        len[k++] = n;
    }
    char *s = jp_arena_printf(&m->tmp, "%s", "");
    for (size_t j = 0; s && j < k; j++) s = jp_arena_printf(&m->tmp, "%s%s%.*s", s, j ? ", " : "", (int)len[j], seen[j]);
    if (s && more) s = jp_arena_printf(&m->tmp, "%s and %zu more", s, more);
    return s && *s ? s : "none";
}

/* Each hint names a source module and a target module that are there: one
 * that names nothing (a typo, a tensor's name, the target's collection)
 * would otherwise do nothing without a word. */
static jp_code check_hints(matcher *m) {
    for (size_t h = 0; h < m->o->nhints; h++) {
        const char *hint = m->o->hints[h], *eq = strchr(hint, '=');
        if (!eq)
            return jp_err_set(m->err, JP_ARGUMENT, JP_NO_OFFSET, NULL,
                              "hint \"%s\" is not SRC=DST (a source module and a target module)", hint);
        bool src = any_under(&m->src, hint, (size_t)(eq - hint));
        if (src && any_under(&m->dst, eq + 1, strlen(eq + 1))) continue;
        const side *sd = src ? &m->dst : &m->src;
        const char *what = first_components(m, sd);
        return jp_err_set(m->err, JP_ARGUMENT, JP_NO_OFFSET, NULL,
                          "hint \"%s\": %s has no module %.*s (hints name modules, not tensors; its modules "
                          "start with %s)",
                          hint, src ? "the target" : "the checkpoint", src ? (int)strlen(eq + 1) : (int)(eq - hint),
                          src ? eq + 1 : hint, what);
    }
    return JP_OK;
}

/* The last component of a module path, with the spellings of one role
 * made one: q, q_proj, query_proj and query are "query". */
static char *last_key(jp_arena *a, const char *path) {
    size_t ls, ll = jp_name_leaf(path, &ls);
    char k[KEY_MAX];
    size_t n = jp_name_key(path + ls, ll, k, sizeof k);
    static const char *const suffixes[] = {"projection", "proj", NULL};
    for (const char *const *sfx = suffixes; *sfx; sfx++) {
        size_t sl = strlen(*sfx);
        if (n > sl && strcmp(k + n - sl, *sfx) == 0) {
            k[n -= sl] = '\0';
            break;
        }
    }
    static const char *const same[][2] = {{"q", "query"}, {"k", "key"}, {"v", "value"}, {"o", "out"},
                                          {"output", "out"}, {"wq", "query"}, {"wk", "key"}, {"wv", "value"},
                                          {"wo", "out"}};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        if (strcmp(k, same[i][0]) == 0) return jp_arena_strdup(a, same[i][1]);
    return jp_arena_strdup(a, k);
}

static char *stem_of(jp_arena *a, const char *key) {
    char *s = jp_arena_strdup(a, key);
    if (!s) return NULL;
    size_t n = 0;
    for (const char *p = key; *p; p++)
        if (!(*p >= '0' && *p <= '9') && *p != '.') s[n++] = *p;
    s[n] = '\0';
    return s;
}

static jp_code module_keys(matcher *m, module *md) {
    md->last = last_key(&m->tmp, md->path);
    md->stem = md->key ? stem_of(&m->tmp, md->key) : NULL;
    return md->key && md->last && md->stem ? JP_OK : oom(m);
}

static jp_code make_keys(matcher *m) {
    m->src.strip = common_components(&m->src);
    m->dst.strip = common_components(&m->dst);
    for (size_t i = 0; i < m->src.mods.len; i++) {
        module *md = MOD(&m->src, i);
        const char *h = hinted_path(m, md->path);
        md->key = h ? key_of(&m->tmp, h, m->dst.strip) : key_of(&m->tmp, md->path, m->src.strip);
        if (module_keys(m, md)) return JP_NO_MEMORY;
    }
    for (size_t i = 0; i < m->dst.mods.len; i++) {
        module *md = MOD(&m->dst, i);
        md->key = key_of(&m->tmp, md->path, m->dst.strip);
        if (module_keys(m, md)) return JP_NO_MEMORY;
    }
    return JP_OK;
}

/* ---- fitting one module to another */

/* A layer's transform x, applied to each of a stack's layers: the stacking
 * axis goes first. */
static void lift_stacked(jp_xform *x, int64_t layers) {
    for (int d = x->ndim; d > 0; d--) {
        x->shape[d] = x->shape[d - 1];
        x->perm[d] = x->perm[d - 1] + 1;
    }
    x->shape[0] = layers;
    x->perm[0] = 0;
    x->flip <<= 1;
    x->ndim++;
}

/* For target leaf tl, the source leaf of module s that feeds it, and how. */
static int64_t fit_leaf(matcher *m, const module *s, const module *t, const tleaf *tl, jp_xform *x) {
    const jp_leaf_spec *spec = &m->specs[tl->spec];
    for (uint32_t k = 0; k < s->nleaves; k++) {
        const sleaf *sl = SL(m, s->leaves[k]);
        if (sl->role != tl->role) continue;
        if (tl->role == JP_ROLE_OTHER && strcmp(sl->leafkey, tl->leafkey) != 0) continue;
        jp_layout_names nm = {s->path, t->path, spec->kind};
        const jp_flatten_rule *fl = m->o->flatten.c > 0 ? &m->o->flatten : NULL;
        if (sl->stack > 0) { /* each layer as one, under the target's leading axis */
            if (spec->ndim < 1 || spec->ndim >= JP_MAX_DIMS || spec->shape[0] != sl->stack ||
                !jp_layout_solve(m->o->lib, tl->role, tl->spelling, sl->ndim - 1, sl->shape + 1, spec->ndim - 1,
                                 spec->shape + 1, &nm, fl, x) ||
                x->ndim >= JP_MAX_DIMS)
                continue;
            lift_stacked(x, sl->stack);
            return s->leaves[k];
        }
        if (jp_layout_solve(m->o->lib, tl->role, tl->spelling, sl->ndim, sl->shape, spec->ndim, spec->shape, &nm,
                            fl, x) &&
            /* Haiku's LSTM kernel is made as a Linear kernel is, its gates swapped by the permute */
            (!sl->lstm_gates || (x->ndim == 2 && x->perm[0] == 1 && x->perm[1] == 0 && !x->flip)))
            return s->leaves[k];
    }
    (void)t;
    return -1;
}

/* Whether every leaf of t has a source in s, and every parameter of s a
 * leaf in t (buffers JAX does not keep aside): nothing is dropped. A tied
 * copy of an earlier tensor may be left (DistilBERT's vocab_projector.weight
 * is the word embeddings, which Flax's twin reuses), and so may an integer
 * tensor no float leaf could take (Swin's relative position index beside its
 * bias table): the list of unused tensors says whether either is harmless. */
static bool fits(matcher *m, const module *s, const module *t) {
    uint32_t taken = 0;
    for (uint32_t k = 0; k < t->nleaves; k++) {
        jp_xform x;
        int64_t li = fit_leaf(m, s, t, TL(m, t->leaves[k]), &x);
        if (li < 0) return false;
        for (uint32_t q = 0; q < s->nleaves; q++)
            if (s->leaves[q] == (uint32_t)li && q < 32) taken |= 1u << q;
    }
    for (uint32_t q = 0; q < s->nleaves && q < 32; q++) {
        const sleaf *l = SL(m, s->leaves[q]);
        jp_dtype dt = jp_index_at(m->ix, l->tensor)->dtype;
        if (!(taken & (1u << q)) && l->role != JP_ROLE_COUNTER && m->alias_of[l->tensor] < 0 && dt != JP_BOOL &&
            !jp_dtype_is_integer(dt))
            return false;
    }
    return true;
}

/* ---- pairing by key */

static void pair(matcher *m, int64_t si, int64_t ti) {
    MOD(&m->src, si)->pair = ti;
    MOD(&m->dst, ti)->pair = si;
}

static jp_code pair_by_key(matcher *m) {
    strtab keys;
    if (!strtab_init(&keys, m->src.mods.len, &m->tmp)) return oom(m);
    for (size_t i = m->src.mods.len; i-- > 0;)
        if (!strtab_add(&keys, MOD(&m->src, i)->key, (int64_t)i)) return oom(m);
    for (size_t ti = 0; ti < m->dst.mods.len; ti++) {
        module *t = MOD(&m->dst, ti);
        size_t h = (size_t)jp_hash_str(t->key) & (keys.cap - 1);
        for (int64_t si = keys.head[h]; si >= 0; si = keys.next[si]) {
            module *s = MOD(&m->src, si);
            if (s->pair >= 0 || strcmp(s->key, t->key) != 0) continue;
            if (fits(m, s, t)) {
                pair(m, si, (int64_t)ti);
                break;
            }
        }
    }
    return JP_OK;
}

/* ---- pairing by signature and order */

static int cmp_u64(uint64_t a, uint64_t b) { return a < b ? -1 : a > b; }

/* Words that make a source module with a 2-d weight an embedding table. */
static const char *const embedding_words[] = {"emb", "wte", "wpe", "tok", "vocab", "lookup", NULL};

/* What kind of layer a module is, where its leaves say: "E" an embedding
 * table (a Flax "embedding" is not transposed), "K" a Linear or conv
 * weight, "" anything else. Equinox spells both "weight", so it has none. */
static const char *kind_of(matcher *m, const module *md) {
    if (m->o->lib == JP_LIB_EQUINOX) return "";
    for (uint32_t k = 0; k < md->nleaves; k++) {
        if (md->source) {
            const sleaf *l = SL(m, md->leaves[k]);
            if (l->role == JP_ROLE_WEIGHT && l->ndim >= 2)
                return l->ndim == 2 && jp_name_has_word(md->last, embedding_words) ? "E" : "K";
        } else {
            const tleaf *l = TL(m, md->leaves[k]);
            if (l->spelling == JP_SPELL_EMBEDDING) return "E";
            if (l->spelling == JP_SPELL_KERNEL ||
                (m->o->lib == JP_LIB_HAIKU && l->role == JP_ROLE_WEIGHT && m->specs[l->spec].ndim >= 2))
                return "K";
        }
    }
    return "";
}

/* "weight:589824,bias:768" sorted, COUNT left out; OTHER leaves by name;
 * with_kind puts the layer kind in front. */
static char *signature(matcher *m, const module *md, bool source, bool with_kind) {
    char items[64][96];
    int n = 0;
    for (uint32_t k = 0; k < md->nleaves && n < 64; k++) {
        jp_role role;
        const char *lk;
        uint64_t numel = 1;
        if (source) {
            const sleaf *l = SL(m, md->leaves[k]);
            role = l->role, lk = l->leafkey, numel = l->numel;
        } else {
            const tleaf *l = TL(m, md->leaves[k]);
            const jp_leaf_spec *sp = &m->specs[l->spec];
            role = l->role, lk = l->leafkey;
            for (int d = 0; d < sp->ndim; d++) numel *= (uint64_t)sp->shape[d];
        }
        if (role == JP_ROLE_COUNTER) continue;
        snprintf(items[n++], sizeof items[0], "%s:%.48s:%llu", jp_role_name(role),
                 role == JP_ROLE_OTHER ? lk : "", (unsigned long long)numel);
    }
    for (int i = 1; i < n; i++) /* insertion sort: modules have few leaves */
        for (int j = i; j > 0 && strcmp(items[j - 1], items[j]) > 0; j--) {
            char tmp[96];
            memcpy(tmp, items[j], sizeof tmp);
            memcpy(items[j], items[j - 1], sizeof tmp);
            memcpy(items[j - 1], tmp, sizeof tmp);
        }
    const char *kind = with_kind ? kind_of(m, md) : "";
    size_t len = 2 + strlen(kind);
    for (int i = 0; i < n; i++) len += strlen(items[i]) + 1;
    char *s = jp_arena_alloc(&m->tmp, len);
    if (!s) return NULL;
    strcpy(s, kind);
    strcat(s, "|");
    for (int i = 0; i < n; i++) {
        strcat(s, items[i]);
        strcat(s, ",");
    }
    return s;
}

/* A module and the key it is sorted by, so comparators need no context. */
typedef struct ranked {
    uint64_t rank;
    int64_t module;
} ranked;

static int cmp_ranked(const void *a, const void *b) {
    return cmp_u64(((const ranked *)a)->rank, ((const ranked *)b)->rank);
}

typedef struct named {
    const char *last;
    size_t pos;        /* place in its list, which keeps runs in order */
    int64_t module;
} named;

static int cmp_named(const void *a, const void *b) {
    const named *x = a, *y = b;
    int c = strcmp(x->last, y->last);
    return c ? c : cmp_u64(x->pos, y->pos);
}

static int cmp_module_natural(const void *a, const void *b) {
    const module *x = *(module *const *)a, *y = *(module *const *)b;
    int c = jp_name_natural_cmp(x->path, y->path);
    return c ? c : cmp_u64(x->order, y->order);
}

/* Sort module indices L of a side by rank (order for sources and Equinox
 * targets, natural name order for Flax-like targets; see set_ranks). */
static jp_code sort_by_rank(matcher *m, side *sd, int64_t *L, size_t n) {
    ranked *r = malloc((n + 1) * sizeof *r);
    if (!r) return oom(m);
    for (size_t i = 0; i < n; i++) r[i] = (ranked){MOD(sd, L[i])->rank, L[i]};
    qsort(r, n, sizeof *r, cmp_ranked);
    for (size_t i = 0; i < n; i++) L[i] = r[i].module;
    free(r);
    return JP_OK;
}

/* Each module's place in its side's sequence. */
static jp_code set_ranks(matcher *m) {
    for (size_t i = 0; i < m->src.mods.len; i++) MOD(&m->src, i)->rank = MOD(&m->src, i)->order;
    size_t nt = m->dst.mods.len;
    module **v = malloc((nt + 1) * sizeof *v);
    if (!v) return oom(m);
    for (size_t i = 0; i < nt; i++) v[i] = MOD(&m->dst, i);
    if (m->o->lib != JP_LIB_EQUINOX) qsort(v, nt, sizeof *v, cmp_module_natural);
    for (size_t i = 0; i < nt; i++) v[i]->rank = i;
    free(v);
    return JP_OK;
}

static int cmp_sig(const void *a, const void *b) {
    const module *x = *(module *const *)a, *y = *(module *const *)b;
    return strcmp(x->sig, y->sig);
}

/* Align one signature group: S source modules, T target modules, both in
 * their order. Monotone alignment maximising pairs, then name similarity;
 * a target whose partner differs between best alignments is ambiguous. */
/* Whether the order of these targets means something: Equinox keeps field
 * order, and Flax's sorted names keep creation order only among names that
 * differ in their numbers (Dense_0, Dense_1; layers_0, layers_1). */
static bool order_means_something(matcher *m, const int64_t *T, size_t nt) {
    if (m->o->lib == JP_LIB_EQUINOX || nt < 2) return true;
    for (size_t j = 1; j < nt; j++)
        if (strcmp(MOD(&m->dst, T[j])->stem, MOD(&m->dst, T[0])->stem) != 0) return false;
    return true;
}

/* Pair S[i] with T[i] when the counts agree, the order can be trusted and
 * every pair fits. */
static bool pair_in_order(matcher *m, const int64_t *S, size_t ns, const int64_t *T, size_t nt) {
    if (ns != nt || !ns || !order_means_something(m, T, nt)) return false;
    for (size_t i = 0; i < ns; i++)
        if (!fits(m, MOD(&m->src, S[i]), MOD(&m->dst, T[i]))) return false;
    for (size_t i = 0; i < ns; i++) pair(m, S[i], T[i]);
    return true;
}

/* Drop the paired modules from a list. */
static size_t unpaired(matcher *m, side *sd, int64_t *L, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (MOD(sd, L[i])->pair < 0) L[k++] = L[i];
    (void)m;
    return k;
}

static void mark_ambiguous(matcher *m, const int64_t *S, size_t ns, int64_t t, const char *what) {
    module *tm = MOD(&m->dst, t);
    char cands[200] = "";
    for (size_t i = 0; i < ns; i++) {
        module *s = MOD(&m->src, S[i]);
        if (s->pair >= 0 || !fits(m, s, tm)) continue;
        size_t cl = strlen(cands);
        if (cl < sizeof cands - 4) snprintf(cands + cl, sizeof cands - cl, "%s%s", cl ? ", " : "", s->path);
    }
    tm->ambiguous = true;
    tm->why = jp_arena_printf(m->arena, "%s: %s (pass a hint SRC=%s)", what, cands, tm->path);
}

/* Where the targets' order means nothing (Flax sorts explicit names), pair
 * by name alone: the most similar fitting pairs first, a level at a time.
 * Pairs at the same level that contend for a module are ambiguous; a last
 * source and target left with nothing better pair with each other. */
static jp_code pair_by_names(matcher *m, const int64_t *S, size_t ns, const int64_t *T, size_t nt) {
    int32_t *sc = malloc(ns * nt * sizeof *sc);
    if (!sc) return oom(m);
    for (size_t i = 0; i < ns; i++)
        for (size_t j = 0; j < nt; j++) {
            module *s = MOD(&m->src, S[i]), *t = MOD(&m->dst, T[j]);
            sc[i * nt + j] = fits(m, s, t) ? jp_name_similarity(after_components(s->path, m->src.strip),
                                                                 after_components(t->path, m->dst.strip))
                                           : -1;
        }
    for (;;) {
        int32_t top = -1;
        size_t live_s = 0, live_t = 0;
        for (size_t i = 0; i < ns; i++) live_s += MOD(&m->src, S[i])->pair < 0;
        for (size_t j = 0; j < nt; j++) live_t += MOD(&m->dst, T[j])->pair < 0 && !MOD(&m->dst, T[j])->ambiguous;
        for (size_t i = 0; i < ns; i++)
            for (size_t j = 0; j < nt; j++)
                if (MOD(&m->src, S[i])->pair < 0 && MOD(&m->dst, T[j])->pair < 0 && !MOD(&m->dst, T[j])->ambiguous &&
                    sc[i * nt + j] > top)
                    top = sc[i * nt + j];
        if (top < 0) break;
        if (top == 0 && (live_s > 1 || live_t > 1)) { /* nothing in the names to go by */
            for (size_t j = 0; j < nt; j++)
                if (MOD(&m->dst, T[j])->pair < 0 && !MOD(&m->dst, T[j])->ambiguous)
                    mark_ambiguous(m, S, ns, T[j], "look-alike sources whose names say nothing");
            break;
        }
        bool progress = false;
        for (size_t j = 0; j < nt; j++) {
            if (MOD(&m->dst, T[j])->pair >= 0 || MOD(&m->dst, T[j])->ambiguous) continue;
            size_t hits = 0, at = 0;
            for (size_t i = 0; i < ns; i++)
                if (MOD(&m->src, S[i])->pair < 0 && sc[i * nt + j] == top) hits++, at = i;
            if (!hits) continue;
            size_t rivals = 0; /* other targets wanting that source as much */
            for (size_t q = 0; q < nt; q++)
                if (q != j && MOD(&m->dst, T[q])->pair < 0 && !MOD(&m->dst, T[q])->ambiguous &&
                    sc[at * nt + q] == top)
                    rivals++;
            if (hits == 1 && !rivals) {
                pair(m, S[at], T[j]);
            } else {
                mark_ambiguous(m, S, ns, T[j], "equally good sources");
            }
            progress = true;
        }
        if (!progress) break;
    }
    free(sc);
    return JP_OK;
}

static jp_code align_group(matcher *m, int64_t *S, size_t ns, int64_t *T, size_t nt) {
    if (!ns || !nt) return JP_OK;
    /* Modules whose last names agree (query and query_proj) first, in order:
     * both lists sorted by last name (stably, so each run keeps its order),
     * then the runs with the same name paired. */
    named *a = malloc((ns + nt) * sizeof *a), *b = a ? a + ns : NULL;
    int64_t *run = malloc((ns + nt + 1) * sizeof *run);
    if (!a || !run) {
        free(a), free(run);
        return oom(m);
    }
    for (size_t i = 0; i < ns; i++) a[i] = (named){MOD(&m->src, S[i])->last, i, S[i]};
    for (size_t j = 0; j < nt; j++) b[j] = (named){MOD(&m->dst, T[j])->last, j, T[j]};
    qsort(a, ns, sizeof *a, cmp_named);
    qsort(b, nt, sizeof *b, cmp_named);
    for (size_t i = 0, j = 0; i < ns && j < nt;) {
        int c = strcmp(a[i].last, b[j].last);
        if (c < 0) {
            i++;
        } else if (c > 0) {
            j++;
        } else {
            size_t i2 = i, j2 = j;
            while (i2 < ns && strcmp(a[i2].last, a[i].last) == 0) i2++;
            while (j2 < nt && strcmp(b[j2].last, b[j].last) == 0) j2++;
            if (*a[i].last) {
                for (size_t k = i; k < i2; k++) run[k - i] = a[k].module;
                for (size_t k = j; k < j2; k++) run[(i2 - i) + (k - j)] = b[k].module;
                pair_in_order(m, run, i2 - i, run + (i2 - i), j2 - j);
            }
            i = i2, j = j2;
        }
    }
    free(run);
    free(a);
    ns = unpaired(m, &m->src, S, ns);
    nt = unpaired(m, &m->dst, T, nt);
    if (!ns || !nt || pair_in_order(m, S, ns, T, nt)) return JP_OK;
    if (!order_means_something(m, T, nt)) return pair_by_names(m, S, ns, T, nt);
    if ((uint64_t)(ns + 1) * (nt + 1) > DP_MAX_CELLS) {
        for (size_t j = 0; j < nt; j++) {
            MOD(&m->dst, T[j])->ambiguous = true;
            MOD(&m->dst, T[j])->why = "too many look-alike modules to align (use --hint or rename rules)";
        }
        return JP_OK;
    }
    size_t w = nt + 1;
    int64_t *F = malloc((ns + 1) * w * sizeof *F);
    int64_t *B = malloc((ns + 2) * (w + 1) * sizeof *B);
    int32_t *sc = malloc(ns * nt * sizeof *sc);
    if (!F || !B || !sc) {
        free(F), free(B), free(sc);
        return oom(m);
    }
    for (size_t i = 0; i < ns; i++)
        for (size_t j = 0; j < nt; j++) {
            module *s = MOD(&m->src, S[i]), *t = MOD(&m->dst, T[j]);
            sc[i * nt + j] = fits(m, s, t) ? 1 + jp_name_similarity(s->path, t->path) : -1;
        }
#define SC(i, j) (sc[(i) * nt + (j)] < 0 ? INT64_MIN / 4 : (int64_t)MATCH_SCORE + sc[(i) * nt + (j)])
    for (size_t i = 0; i <= ns; i++)
        for (size_t j = 0; j <= nt; j++) {
            int64_t v = 0;
            if (i && F[(i - 1) * w + j] > v) v = F[(i - 1) * w + j];
            if (j && F[i * w + j - 1] > v) v = F[i * w + j - 1];
            if (i && j && F[(i - 1) * w + j - 1] + SC(i - 1, j - 1) > v) v = F[(i - 1) * w + j - 1] + SC(i - 1, j - 1);
            F[i * w + j] = v;
        }
    /* B[i][j]: best over S[i..], T[j..] */
    size_t bw = nt + 1;
    for (size_t i = ns + 1; i-- > 0;)
        for (size_t j = nt + 1; j-- > 0;) {
            int64_t v = 0;
            if (i < ns && B[(i + 1) * bw + j] > v) v = B[(i + 1) * bw + j];
            if (j < nt && B[i * bw + j + 1] > v) v = B[i * bw + j + 1];
            if (i < ns && j < nt && B[(i + 1) * bw + j + 1] + SC(i, j) > v) v = B[(i + 1) * bw + j + 1] + SC(i, j);
            B[i * bw + j] = v;
        }
    int64_t best = F[ns * w + nt];
    for (size_t j = 0; j < nt; j++) {
        int64_t only = -1;
        int count = 0;
        char cands[200] = "";
        for (size_t i = 0; i < ns; i++) {
            if (sc[i * nt + j] < 0) continue;
            if (F[i * w + j] + SC(i, j) + B[(i + 1) * bw + j + 1] != best) continue;
            if (count++ == 0) only = (int64_t)i;
            size_t cl = strlen(cands);
            if (cl < sizeof cands - 4)
                snprintf(cands + cl, sizeof cands - cl, "%s%s", cl ? ", " : "", MOD(&m->src, S[i])->path);
        }
        module *t = MOD(&m->dst, T[j]);
        if (count == 1) {
            pair(m, S[only], T[j]);
        } else if (count > 1) {
            t->ambiguous = true;
            t->why = jp_arena_printf(m->arena, "equally good sources: %s (pass a hint SRC=%s)", cands, t->path);
        }
    }
#undef SC
    free(F), free(B), free(sc);
    return JP_OK;
}

static jp_code pair_by_signature(matcher *m, bool with_kind) {
    size_t ns = m->src.mods.len, nt = m->dst.mods.len;
    module **all = jp_arena_alloc_array(&m->tmp, ns + nt + 1, sizeof *all);
    int64_t *S = jp_arena_alloc_array(&m->tmp, ns + 1, sizeof *S);
    int64_t *T = jp_arena_alloc_array(&m->tmp, nt + 1, sizeof *T);
    if (!all || !S || !T) return oom(m);
    size_t n = 0;
    for (size_t i = 0; i < ns; i++) {
        module *md = MOD(&m->src, i);
        if (md->pair >= 0 || md->alias || !md->nleaves) continue;
        if (!(md->sig = signature(m, md, true, with_kind))) return oom(m);
        all[n++] = md;
    }
    for (size_t i = 0; i < nt; i++) {
        module *md = MOD(&m->dst, i);
        if (md->pair >= 0 || md->ambiguous) continue;
        if (!(md->sig = signature(m, md, false, with_kind))) return oom(m);
        all[n++] = md;
    }
    qsort(all, n, sizeof *all, cmp_sig);
    module *src0 = ns ? MOD(&m->src, 0) : NULL, *dst0 = nt ? MOD(&m->dst, 0) : NULL;
    for (size_t a = 0; a < n;) {
        size_t b = a;
        size_t cs = 0, ct = 0;
        while (b < n && strcmp(all[b]->sig, all[a]->sig) == 0) {
            module *md = all[b];
            if (md->source) S[cs++] = md - src0;
            else T[ct++] = md - dst0;
            b++;
        }
        jp_code rc = sort_by_rank(m, &m->src, S, cs);
        if (!rc) rc = sort_by_rank(m, &m->dst, T, ct);
        if (!rc) rc = align_group(m, S, cs, T, ct);
        if (rc) return rc;
        a = b;
    }
    return JP_OK;
}

/* ---- stacked layers */

/* A source module under a path with one numeric component replaced by "*"
 * ("layers.*.attn"), and that component's value. */
typedef struct column {
    char *key;
    int64_t value;
    int64_t module;
} column;

static int cmp_column(const void *a, const void *b) {
    const column *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c) return c;
    return x->value < y->value ? -1 : x->value > y->value;
}

/* Whether source modules a and b hold the same leaves: roles, names,
 * shapes, slices and addends alike. */
static bool same_layer(matcher *m, const module *a, const module *b) {
    if (a->nleaves != b->nleaves) return false;
    for (uint32_t k = 0; k < a->nleaves; k++) {
        const sleaf *x = SL(m, a->leaves[k]), *y = SL(m, b->leaves[k]);
        if (x->role != y->role || strcmp(x->leafkey, y->leafkey) != 0 || x->ndim != y->ndim ||
            x->ndim >= JP_MAX_DIMS || memcmp(x->shape, y->shape, (size_t)x->ndim * sizeof x->shape[0]) != 0 ||
            x->slice_axis != y->slice_axis || x->has_plus != y->has_plus || x->then >= 0 || y->then >= 0 ||
            x->stack || y->stack)
            return false;
        if (x->slice_axis >= 0 && (x->slice_start != y->slice_start || x->slice_len != y->slice_len))
            return false;
    }
    return true;
}

/* The stack of members[0..n) (consecutive layers alike) as a new source
 * module: each leaf one more axis in front, its parts the layers' own. */
static jp_code add_stack(matcher *m, const char *path, const int64_t *members, size_t n) {
    int64_t si = push_module(m, &m->src, path, MOD(&m->src, members[0])->order);
    if (si < 0) return oom(m);
    const module *first = MOD(&m->src, members[0]);
    module *md = MOD(&m->src, si);
    md->rank = first->rank;
    md->key = key_of(&m->tmp, path, m->src.strip);
    jp_code rc = module_keys(m, md);
    for (uint32_t k = 0; k < first->nleaves && !rc; k++) {
        int64_t head = -1, prev = -1;
        for (size_t i = 0; i < n; i++) {
            sleaf copy = *SL(m, MOD(&m->src, members[i])->leaves[k]);
            sleaf *l = jp_vec_push(&m->sl);
            if (!l) return oom(m);
            *l = copy;
            int64_t li = (int64_t)m->sl.len - 1;
            if (prev >= 0) SL(m, prev)->then = li;
            else head = li;
            prev = li;
        }
        sleaf *h = SL(m, head);
        memmove(h->shape + 1, h->shape, sizeof h->shape - sizeof h->shape[0]);
        h->shape[0] = (int64_t)n;
        h->ndim++;
        h->numel *= n;
        h->stack = (int32_t)n;
        if (!module_add_leaf(m, md, (uint32_t)head)) rc = oom(m);
    }
    return rc;
}

/* Offers, for unpaired source modules that repeat under one numeric path
 * component (layers.0.attn, layers.1.attn, ...), their stack: what Flax's
 * nn.scan and nnx.vmap, and Equinox's filter_vmap, keep as one module with
 * a leading layer axis. */
static jp_code add_stacks(matcher *m) {
    size_t ns = m->src.mods.len;
    jp_vec cols;
    jp_vec_init(&cols, sizeof(column));
    jp_code rc = JP_OK;
    for (size_t i = 0; i < ns && !rc; i++) {
        const module *md = MOD(&m->src, i);
        if (md->pair >= 0 || md->alias || !md->nleaves) continue;
        for (const char *p = md->path; *p && !rc;) {
            const char *e = p;
            while (*e && !is_sep(*e)) e++;
            bool digits = e > p && e - p < 10;
            for (const char *q = p; q < e && digits; q++) digits = *q >= '0' && *q <= '9';
            if (digits) {
                column *c = jp_vec_push(&cols);
                if (!c) {
                    rc = oom(m);
                    break;
                }
                c->key = jp_arena_printf(&m->tmp, "%.*s*%s", (int)(p - md->path), md->path, e);
                c->value = strtoll(p, NULL, 10);
                c->module = (int64_t)i;
                if (!c->key) rc = oom(m);
            }
            p = e;
            while (*p && is_sep(*p)) p++;
        }
    }
    column *c = cols.items;
    if (!rc && cols.len) qsort(c, cols.len, sizeof *c, cmp_column);
    int64_t *members = rc ? NULL : malloc((cols.len + 1) * sizeof *members);
    if (!rc && !members) rc = oom(m);
    for (size_t a = 0, b; a < cols.len && !rc; a = b) {
        size_t n = 1;
        members[0] = c[a].module;
        bool alike = true;
        for (b = a + 1; b < cols.len && strcmp(c[b].key, c[a].key) == 0; b++) {
            alike = alike && c[b].value == c[b - 1].value + 1 &&
                    same_layer(m, MOD(&m->src, c[a].module), MOD(&m->src, c[b].module));
            members[n++] = c[b].module;
        }
        if (n >= 2 && alike) rc = add_stack(m, c[a].key, members, n);
    }
    free(members);
    jp_vec_free(&cols);
    return rc;
}

/* Whether a target module is left without a source and not for ambiguity. */
static bool any_unpaired_target(matcher *m) {
    for (size_t i = 0; i < m->dst.mods.len; i++)
        if (MOD(&m->dst, i)->pair < 0 && !MOD(&m->dst, i)->ambiguous && MOD(&m->dst, i)->nleaves) return true;
    return false;
}

/* ---- the plan */

static jp_dtype leaf_dtype(const matcher *m, const jp_leaf_spec *sp) {
    if (m->o->dtype != JP_DTYPE_INVALID && jp_dtype_is_castable_float(sp->dtype)) return m->o->dtype;
    return sp->dtype;
}

static void leaf_from_spec(const matcher *m, jp_plan_leaf *pl, const jp_leaf_spec *sp) {
    pl->name = sp->path;
    pl->dtype = leaf_dtype(m, sp);
    pl->ndim = sp->ndim;
    memcpy(pl->shape, sp->shape, sizeof pl->shape);
    for (int d = 0; d < JP_MAX_DIMS; d++) pl->perm[d] = d;
}

/* A part of Haiku's LSTM kernel: its tensor (weight_ih or weight_hh, G = 4
 * gates of H rows) as (2, 2, H, columns), the gate index split in two bits. */
static void lstm_gate_shape(const matcher *m, jp_plan_part *part, const sleaf *q) {
    const jp_tensor *t = jp_index_at(m->ix, q->tensor);
    part->ndim = 4;
    part->shape[0] = part->shape[1] = 2;
    part->shape[2] = t->shape[0] / 4;
    part->shape[3] = t->shape[1];
}

/* The leaf's parts: sl and the leaves joined after it along axis 0. */
static jp_code set_parts(matcher *m, jp_plan_leaf *pl, const sleaf *sl, const jp_xform *x) {
    uint32_t n = 1;
    for (const sleaf *q = sl; q->then >= 0; q = SL(m, q->then)) n++;
    jp_plan_part *parts = jp_arena_alloc_array(m->arena, n, sizeof *parts);
    if (!parts) return oom(m);
    memset(parts, 0, n * sizeof *parts);
    bool summed = false, added = false;
    const sleaf *q = sl;
    for (uint32_t k = 0; k < n; k++) {
        jp_plan_part *part = &parts[k];
        part->from = (jp_plan_ref){q->tensor, q->slice_axis, q->slice_start, q->slice_len};
        part->has_plus = q->has_plus;
        part->plus = part->from; /* the same slice of another tensor */
        part->plus.source = q->plus_tensor;
        part->add = q->add;
        part->ndim = x->ndim;
        memcpy(part->shape, x->shape, sizeof part->shape);
        if (sl->stack > 0) part->shape[0] = 1; /* one layer of the stack */
        else if (sl->lstm_gates) lstm_gate_shape(m, part, q);
        else if (n > 1) part->shape[0] = q->slice_len; /* joined leaves are slices along axis 0 */
        if (q->slice_axis < 0) m->used[q->tensor]++; /* q, k and v slicing one tensor are not tied */
        summed = summed || q->has_plus;
        added = added || q->add != 0.0;
        if (q->then >= 0) q = SL(m, q->then);
    }
    pl->parts = parts;
    pl->nparts = n;
    pl->cat_axis = 0;
    memcpy(pl->perm, x->perm, sizeof pl->perm);
    for (int d = x->ndim; d < JP_MAX_DIMS; d++) pl->perm[d] = d;
    pl->flip = x->flip;
    pl->rule = summed ? "the two biases summed (b_ih + b_hh)" : x->rule;
    if (sl->lstm_gates) {
        /* (2, 2, H, in + H) joined along axis 3, permuted to (in + H, 2, 2, H):
         * gate 2 * b1 + b0 of torch lands at 2 * b0 + b1, i f g o as i g f o */
        static const int32_t swap[4] = {3, 1, 0, 2};
        pl->cat_axis = 3;
        memcpy(pl->perm, swap, sizeof swap);
        pl->rule = "Haiku LSTM kernel: [weight_ih | weight_hh] transposed, gates i, g, f, o";
    } else if (added) {
        pl->rule = "Haiku LSTM bias: b_ih + b_hh, gates i, g, f, o, forget gate - 1 (Haiku adds 1)";
    }
    if (sl->stack > 0 && !(pl->rule = jp_arena_printf(m->arena, "%s; %d layers stacked", pl->rule, sl->stack)))
        return oom(m);
    return JP_OK;
}

static void shape_str(char *out, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(out, cap, "(");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(out + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < cap) snprintf(out + n, cap - n, "%s)", ndim == 1 ? "," : "");
}

/* A module's leaves, "weight (10,), bias (10,)", as far as they fit. */
static void leaves_str(matcher *m, const module *md, char *out, size_t cap) {
    char *p = out;
    *out = '\0';
    for (uint32_t k = 0; k < md->nleaves && p < out + cap - 40; k++) {
        const char *name;
        int ndim;
        const int64_t *shape;
        if (md->source) {
            const sleaf *l = SL(m, md->leaves[k]);
            name = l->name, ndim = l->ndim, shape = l->shape;
        } else {
            const jp_leaf_spec *sp = &m->specs[TL(m, md->leaves[k])->spec];
            name = sp->path, ndim = sp->ndim, shape = sp->shape;
        }
        size_t ls, ll = jp_name_leaf(name, &ls);
        p += snprintf(p, (size_t)(out + cap - p), "%s%.*s ", k ? ", " : "", (int)ll, name + ls);
        shape_str(p, (size_t)(out + cap - p), ndim, shape);
        p += strlen(p);
    }
}

/* Whether target module t is Haiku's GRU: w_i, w_h (H, 3H) and b. Its
 * leaf names alone do not tell the library apart from Flax's, so any
 * library is asked. */
static bool haiku_gru(matcher *m, const module *t) {
    if (t->nleaves != 3) return false;
    int seen = 0;
    for (uint32_t k = 0; k < t->nleaves; k++) {
        const tleaf *tl = TL(m, t->leaves[k]);
        const jp_leaf_spec *sp = &m->specs[tl->spec];
        if (strcmp(tl->leafkey, "wh") == 0 && sp->ndim == 2 && sp->shape[1] == 3 * sp->shape[0]) seen |= 1;
        seen |= strcmp(tl->leafkey, "wi") == 0 ? 2 : strcmp(tl->leafkey, "b") == 0 ? 4 : 0;
    }
    return seen == 7;
}

/* Why a target module found no source: the closest source by name. */
static const char *missing_why(matcher *m, const module *t) {
    /* Names are compared with modules of the same last name first; a few
     * hundred others at most, so a template for another model (every leaf
     * missing) does not cost sources x targets comparisons. */
    int best = -1;
    const module *bs = NULL;
    for (int pass = 0; pass < 2 && !bs; pass++) {
        size_t looked = 0;
        for (size_t i = 0; i < m->src.mods.len && (pass == 0 || looked < 256); i++) {
            const module *s = MOD(&m->src, i);
            if (!s->nleaves || (pass == 0 && strcmp(s->last, t->last) != 0)) continue;
            looked++;
            int sim = jp_name_similarity(s->key, t->key);
            if (sim > best) best = sim, bs = s;
        }
    }
    if (!bs) return "the source has no tensors";
    char ss[160], ts[160];
    leaves_str(m, bs, ss, sizeof ss);
    leaves_str(m, t, ts, sizeof ts);
    return jp_arena_printf(m->arena, "no source module fits [%s]; the closest by name is %s [%s]%s%s", ts,
                           *bs->path ? bs->path : "the top level", ss, bs->pair >= 0 ? ", already taken" : "",
                           haiku_gru(m, t) ? "; Haiku's GRU applies the reset gate before its hidden matmul "
                                             "((r * h) w_h), PyTorch's after it (r * (W_hn h + b_hn)), so no "
                                             "weights make one compute what the other does"
                                           : "");
}

static jp_code emit(matcher *m, jp_plan *p) {
    for (size_t ti = 0; ti < m->dst.mods.len; ti++) {
        module *t = MOD(&m->dst, ti);
        const char *why = NULL;
        if (t->pair < 0) why = t->ambiguous ? t->why : missing_why(m, t);
        for (uint32_t k = 0; k < t->nleaves; k++) {
            const tleaf *tl = TL(m, t->leaves[k]);
            jp_plan_leaf *pl = &p->leaves[tl->spec];
            leaf_from_spec(m, pl, &m->specs[tl->spec]);
            if (t->pair < 0) {
                pl->flags = t->ambiguous ? JP_LEAF_AMBIGUOUS : JP_LEAF_MISSING;
                pl->rule = why ? why : "no source";
                continue;
            }
            jp_xform x;
            int64_t li = fit_leaf(m, MOD(&m->src, t->pair), t, tl, &x);
            if (li < 0) { /* fits() said yes; cannot happen */
                pl->flags = JP_LEAF_MISSING;
                pl->rule = "no source";
                continue;
            }
            jp_code rc = set_parts(m, pl, SL(m, li), &x);
            if (rc) return rc;
        }
    }
    return JP_OK;
}

static jp_code emit_ordered(matcher *m, jp_plan *p) {
    size_t n = jp_index_count(m->ix), si = 0;
    for (size_t i = 0; i < m->nspecs; i++) {
        const tleaf *tl = TL(m, i);
        jp_plan_leaf *pl = &p->leaves[i];
        leaf_from_spec(m, pl, &m->specs[i]);
        while (si < n && (SL(m, si)->role == JP_ROLE_COUNTER || m->alias_of[si] >= 0)) si++;
        if (si >= n) {
            pl->flags = JP_LEAF_MISSING;
            pl->rule = "ordered: the source has no tensors left";
            continue;
        }
        const sleaf *sl = SL(m, si);
        const jp_leaf_spec *sp = &m->specs[i];
        jp_xform x;
        jp_layout_names nm = {sl->name, sp->path, sp->kind};
        if (!jp_layout_solve(m->o->lib, tl->role, tl->spelling, sl->ndim, sl->shape, sp->ndim, sp->shape, &nm,
                             m->o->flatten.c > 0 ? &m->o->flatten : NULL, &x)) {
            char a[96], b[96];
            shape_str(a, sizeof a, sl->ndim, sl->shape);
            shape_str(b, sizeof b, sp->ndim, sp->shape);
            pl->flags = JP_LEAF_MISSING;
            pl->rule = jp_arena_printf(m->arena, "ordered: the next source, %s %s, cannot become %s", sl->name, a, b);
            continue;
        }
        jp_code rc = set_parts(m, pl, sl, &x);
        if (rc) return rc;
        si++;
    }
    return JP_OK;
}

jp_code jp_match(jp_plan **out, const jp_index *src, const jp_leaf_spec *targets, size_t n,
                 const jp_match_opts *opts, jp_err *err) {
    jp_err_clear(err);
    *out = NULL;
    jp_match_opts defaults = {0};
    if (!opts) opts = &defaults;
    if (opts->nrules && !opts->rules)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "rename rules given without patterns");
    for (size_t i = 0; i < n; i++)
        if (!targets[i].path || targets[i].ndim < 0 || targets[i].ndim > JP_MAX_DIMS)
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "target leaf %zu has no path or %d dimensions",
                              i, (int)targets[i].ndim);
    jp_plan *p = calloc(1, sizeof *p);
    if (!p) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory while matching");
    jp_arena_init(&p->arena);
    matcher m = {.ix = src, .specs = targets, .nspecs = n, .o = opts, .arena = &p->arena, .single_bias = -1,
                 .err = err};
    jp_arena_init(&m.tmp);
    jp_vec_init(&m.sl, sizeof(sleaf));
    jp_vec_init(&m.tl, sizeof(tleaf));
    jp_vec_init(&m.src.mods, sizeof(module));
    jp_vec_init(&m.dst.mods, sizeof(module));
    size_t ns = jp_index_count(src);
    m.alias_of = jp_arena_alloc_array(&m.tmp, ns + 1, sizeof *m.alias_of);
    m.used = jp_arena_alloc_array(&m.tmp, ns + 1, sizeof *m.used);
    p->n = n;
    p->leaves = jp_arena_alloc_array(&p->arena, n ? n : 1, sizeof *p->leaves);
    jp_code rc = (!m.alias_of || !m.used || !p->leaves) ? oom(&m) : JP_OK;
    if (!rc) {
        memset(m.used, 0, (ns + 1) * sizeof *m.used);
        rc = jp_index_aliases(src, m.alias_of, &m.tmp) ? JP_OK : oom(&m);
        if (!rc) rc = build_source(&m);
    }
    if (!rc) rc = build_target(&m);
    if (!rc && opts->ordered) {
        rc = emit_ordered(&m, p);
    } else if (!rc) {
        rc = check_hints(&m);
        if (!rc) rc = make_keys(&m);
        if (!rc) rc = set_ranks(&m);
        if (!rc) rc = pair_by_key(&m);
        if (!rc) rc = pair_by_signature(&m, true);
        if (!rc) rc = pair_by_signature(&m, false);
        if (!rc && any_unpaired_target(&m)) { /* stacked layers, offered only when needed */
            size_t before = m.src.mods.len;
            rc = add_stacks(&m);
            if (!rc && m.src.mods.len > before) rc = pair_by_signature(&m, true);
            if (!rc && m.src.mods.len > before) rc = pair_by_signature(&m, false);
        }
        if (!rc) rc = emit(&m, p);
    }
    for (size_t i = 0; !rc && i < n; i++) /* one tensor feeding several leaves */
        for (uint32_t k = 0; k < p->leaves[i].nparts; k++)
            if (p->leaves[i].parts[k].from.axis < 0 && m.used[p->leaves[i].parts[k].from.source] > 1)
                p->leaves[i].flags |= JP_LEAF_TIED;
    if (!rc) rc = jp_plan_list_unused(p, src, err);
    jp_vec_free(&m.sl);
    jp_vec_free(&m.tl);
    jp_vec_free(&m.src.mods);
    jp_vec_free(&m.dst.mods);
    jp_arena_free(&m.tmp);
    if (rc) {
        jp_plan_free(p);
        return rc;
    }
    *out = p;
    return JP_OK;
}

jp_code jp_plan_check(const jp_plan *p, const jp_index *src, bool allow_unused, jp_err *err) {
    for (size_t i = 0; i < p->n; i++) {
        const jp_plan_leaf *l = &p->leaves[i];
        if (l->flags & JP_LEAF_AMBIGUOUS)
            return jp_err_set(err, JP_AMBIGUOUS, JP_NO_OFFSET, l->name, "%s", l->rule);
        if (l->flags & JP_LEAF_MISSING)
            return jp_err_set(err, JP_MATCH, JP_NO_OFFSET, l->name, "%s", l->rule);
    }
    size_t lost = 0;
    const char *first = NULL;
    for (size_t i = 0; i < p->nunused; i++)
        if (!p->unused[i].harmless && lost++ == 0) first = jp_index_at(src, p->unused[i].source)->name;
    char more[64] = "";
    if (lost > 1) snprintf(more, sizeof more, ", nor %zu more source tensors", lost - 1);
    if (lost && !allow_unused)
        return jp_err_set(err, JP_MATCH, JP_NO_OFFSET, first,
                          "no leaf of the target takes it%s: its weights would be lost (allow unused "
                          "tensors to drop them)",
                          more);
    return JP_OK;
}
