/* Layouts: the transform solver (conventions drawn in layouts.h). */
#include "layouts.h"

#include <string.h>

static const char *const lib_names[JP_LIB_COUNT] = {"flax", "nnx", "haiku", "equinox"};

const char *jp_lib_name(jp_lib lib) { return (unsigned)lib < JP_LIB_COUNT ? lib_names[lib] : "?"; }

bool jp_lib_from_name(const char *name, jp_lib *out) {
    for (int i = 0; i < JP_LIB_COUNT; i++)
        if (strcmp(name, lib_names[i]) == 0) {
            *out = (jp_lib)i;
            return true;
        }
    if (strcmp(name, "linen") == 0) {
        *out = JP_LIB_FLAX;
        return true;
    }
    if (strcmp(name, "eqx") == 0) {
        *out = JP_LIB_EQUINOX;
        return true;
    }
    return false;
}

jp_lib jp_lib_of_paths(const char *const *paths, size_t n) {
    bool haiku = false;
    for (size_t i = 0; i < n; i++) {
        size_t ls, ll = jp_name_leaf(paths[i], &ls);
        const char *leaf = paths[i] + ls;
        if (ll == 6 && strncmp(leaf, "kernel", 6) == 0) return JP_LIB_FLAX;
        haiku |= (ll == 1 && leaf[0] == 'w') || (ll == 6 && strncmp(leaf, "offset", 6) == 0);
    }
    return haiku ? JP_LIB_HAIKU : JP_LIB_FLAX;
}

/* Words that mark a transposed convolution in either path. */
static const char *const transpose_words[] = {"transpose", "deconv", "convt", "tconv", "upconv", NULL};

static void xf_init(jp_xform *x, int ndim, const int64_t *shape, const char *rule) {
    memset(x, 0, sizeof *x);
    x->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        x->shape[d] = shape[d];
        x->perm[d] = d;
    }
    x->rule = rule;
}

/* s permuted by perm; flipped: the spatial axes (2 on, in s's order)
 * reversed as well, as a transposed convolution's kernel needs. */
static void xf_perm(jp_xform *x, int ndim, const int64_t *s, const int32_t *perm, bool flipped,
                    const char *rule) {
    xf_init(x, ndim, s, rule);
    memcpy(x->perm, perm, sizeof(int32_t) * (size_t)ndim);
    if (flipped)
        for (int d = 2; d < ndim; d++) x->flip |= 1u << d;
}

/* Whether permuting s by perm gives t. */
static bool perm_fits(int n, const int64_t *s, const int32_t *perm, const int64_t *t) {
    for (int d = 0; d < n; d++)
        if (t[d] != s[perm[d]]) return false;
    return true;
}

static bool same_shape(int sn, const int64_t *s, int tn, const int64_t *t) {
    if (sn != tn) return false;
    for (int d = 0; d < sn; d++)
        if (s[d] != t[d]) return false;
    return true;
}

/* Whether a and b list the same elements in the same order, only grouped
 * differently: once size-1 axes are dropped, each axis of one is the product
 * of consecutive axes of the other ((H*D,) and (H, D); (O,) and (O, 1, 1)).
 * A transposition is never a regrouping unless the sizes make it one. */
static bool regrouping(int an, const int64_t *a, int bn, const int64_t *b) {
    /* Prefix products (size-1 axes dropped): one side's must all be the
     * other's, so every axis is a run of the finer side's axes. */
    int64_t pa[JP_MAX_DIMS], pb[JP_MAX_DIMS], x = 1, y = 1;
    int na = 0, nb = 0;
    for (int d = 0; d < an; d++)
        if (a[d] != 1) pa[na++] = x *= a[d];
    for (int d = 0; d < bn; d++)
        if (b[d] != 1) pb[nb++] = y *= b[d];
    if (x != y) return false;
    const int64_t *small = na <= nb ? pa : pb, *big = na <= nb ? pb : pa;
    int ns = na <= nb ? na : nb, nbig = na <= nb ? nb : na;
    for (int i = 0, j = 0; i < ns; i++) {
        while (j < nbig && big[j] < small[i]) j++;
        if (j == nbig || big[j] != small[i]) return false;
    }
    return true;
}

/* The rules for a Flax/Haiku kernel. */
static bool transposed_by_name(const jp_layout_names *nm) {
    return jp_name_has_word(nm->tpath, transpose_words) || jp_name_has_word(nm->spath, transpose_words) ||
           (nm->tkind && jp_name_has_word(nm->tkind, transpose_words));
}

static bool solve_kernel(jp_lib lib, int sn, const int64_t *s, int tn, const int64_t *t,
                         const jp_layout_names *nm, const jp_flatten_rule *fl, jp_xform *x) {
    if (sn == 2 && tn == 2) {
        if (fl && fl->c > 0 && t[0] == s[1] && t[1] == s[0] && s[1] == fl->c * fl->h * fl->w) {
            int64_t v[4] = {s[0], fl->c, fl->h, fl->w};
            xf_init(x, 4, v, "linear kernel after an NCHW flatten (transposed, input reordered to HWC)");
            x->perm[0] = 2, x->perm[1] = 3, x->perm[2] = 1, x->perm[3] = 0;
            return true;
        }
        if (t[0] == s[1] && t[1] == s[0]) {
            xf_init(x, 2, s, "linear kernel (transposed)");
            x->perm[0] = 1, x->perm[1] = 0;
            return true;
        }
        return false;
    }
    if (sn == tn && sn >= 3) {
        int32_t conv[JP_MAX_DIMS], convt[JP_MAX_DIMS];
        for (int d = 0; d < sn - 2; d++) conv[d] = convt[d] = d + 2;
        conv[sn - 2] = 1, conv[sn - 1] = 0;
        convt[sn - 2] = 0, convt[sn - 1] = 1;
        bool fits_conv = perm_fits(sn, s, conv, t);
        bool fits_convt = perm_fits(sn, s, convt, t);
        bool named_t = transposed_by_name(nm);
        /* Haiku's ConvNDTranspose keeps (*k, O, I) and lax does not flip it */
        if (lib == JP_LIB_HAIKU && named_t && fits_conv) {
            xf_perm(x, sn, s, conv, true, "transposed conv kernel (I,O,*k) to (*k,O,I), spatially flipped");
            return true;
        }
        /* A square kernel fits both; the layer may say which (NNX's does) */
        bool lax_flips = nm->tkind && strstr(nm->tkind, "transpose_kernel=True");
        if (fits_convt && (!fits_conv || (named_t && !lax_flips))) {
            xf_perm(x, sn, s, convt, true,
                    fits_conv && !nm->tkind
                        ? "transposed conv kernel (I,O,*k) to (*k,I,O), spatially flipped; square, so "
                          "transpose_kernel=False is assumed (Flax's default)"
                        : "transposed conv kernel (I,O,*k) to (*k,I,O), spatially flipped");
            return true;
        }
        if (fits_conv) {
            xf_perm(x, sn, s, conv, false,
                    named_t ? "transposed conv kernel, transpose_kernel=True (*k,O,I)"
                            : "conv kernel (O,I,*k) to (*k,I,O)");
            return true;
        }
        return false;
    }
    if (sn == 2 && tn == 3) {
        if (t[1] * t[2] == s[0] && t[0] == s[1]) { /* q/k/v: (H*D, E) -> (E, H, D) */
            int64_t v[3] = {t[1], t[2], s[1]};
            xf_init(x, 3, v, "attention q/k/v kernel (H*D,E) to (E,H,D)");
            x->perm[0] = 2, x->perm[1] = 0, x->perm[2] = 1;
            return true;
        }
        if (t[0] * t[1] == s[1] && t[2] == s[0]) { /* out: (E, H*D) -> (H, D, E) */
            int64_t v[3] = {s[0], t[0], t[1]};
            xf_init(x, 3, v, "attention out kernel (E,H*D) to (H,D,E)");
            x->perm[0] = 1, x->perm[1] = 2, x->perm[2] = 0;
            return true;
        }
    }
    return false;
}

/* Equinox keeps torch's layouts except a transposed conv's weight. */
static bool solve_equinox_weight(int sn, const int64_t *s, int tn, const int64_t *t,
                                 const jp_layout_names *nm, jp_xform *x) {
    if (sn == tn && sn >= 3) {
        int32_t swap[JP_MAX_DIMS];
        for (int d = 0; d < sn; d++) swap[d] = d;
        swap[0] = 1, swap[1] = 0;
        bool fits_swap = perm_fits(sn, s, swap, t);
        bool same = same_shape(sn, s, tn, t);
        bool named_t = transposed_by_name(nm);
        if (fits_swap && (!same || named_t)) {
            xf_perm(x, sn, s, swap, true, "transposed conv weight (I,O,*k) to (O,I,*k), spatially flipped");
            return true;
        }
    }
    return false;
}

bool jp_layout_solve(jp_lib lib, jp_role role, jp_spelling spelling, int sn, const int64_t *s, int tn,
                     const int64_t *t, const jp_layout_names *names, const jp_flatten_rule *flatten,
                     jp_xform *out) {
    bool kernel = spelling == JP_SPELL_KERNEL ||
                  (lib == JP_LIB_HAIKU && role == JP_ROLE_WEIGHT && spelling == JP_SPELL_PLAIN && tn >= 2);
    if (kernel && lib != JP_LIB_EQUINOX) return solve_kernel(lib, sn, s, tn, t, names, flatten, out);
    if (lib == JP_LIB_EQUINOX && role == JP_ROLE_WEIGHT &&
        solve_equinox_weight(sn, s, tn, t, names, out))
        return true;
    if (same_shape(sn, s, tn, t)) {
        xf_init(out, sn, s, "as is");
        return true;
    }
    if (regrouping(sn, s, tn, t)) {
        xf_init(out, sn, s, "reshaped");
        return true;
    }
    return false;
}
