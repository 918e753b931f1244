/* Layouts: each JAX library's conventions for the weights of a layer, and
 * the transform that turns a PyTorch tensor into the leaf a library expects.
 *
 *   leaf                        torch            Flax / NNX / Haiku      Equinox
 *   Linear weight               (out, in)        kernel (in, out)        weight (out, in)
 *   Conv weight                 (O, I, *k)       kernel (*k, I, O)       weight (O, I, *k)
 *   Conv bias                   (O,)             bias (O,)               bias (O, 1, ..., 1)
 *   ConvTranspose weight        (I, O, *k)       kernel (*k, I, O) and   weight (O, I, *k),
 *                                                spatially flipped, or   spatially flipped
 *                                                (*k, O, I) with
 *                                                transpose_kernel=True;
 *                                                Haiku (*k, O, I),
 *                                                spatially flipped
 *   Embedding weight            (V, E)           embedding (V, E)        weight (V, E)
 *   Norm weight                 (C,)             scale (C,)              weight (C,)
 *   attention q/k/v weight      (H*D, E)         kernel (E, H, D)        weight (H*D, E)
 *   attention out weight        (E, H*D)         kernel (H, D, E)        weight (E, H*D)
 *   attention q/k/v bias        (H*D,)           bias (H, D)             bias (H*D,)
 *
 * The solver is told the target leaf's role and spelling ("kernel" is
 * transposed, "embedding" is not) and both shapes; shapes pick between the
 * rules, and where two rules fit (a square ConvTranspose) the words in the
 * paths do. */
#ifndef JP_LAYOUTS_H
#define JP_LAYOUTS_H

#include "names.h"

typedef enum jp_lib {
    JP_LIB_FLAX = 0,   /* linen: params / batch_stats collections */
    JP_LIB_NNX,
    JP_LIB_HAIKU,
    JP_LIB_EQUINOX,
    JP_LIB_COUNT
} jp_lib;

const char *jp_lib_name(jp_lib lib);
bool jp_lib_from_name(const char *name, jp_lib *out);
/* The library a plain dict of arrays (no object to ask) is written for,
 * from its leaf paths: Haiku's when a leaf is named w or offset and none
 * kernel, Flax linen's otherwise. */
jp_lib jp_lib_of_paths(const char *const *paths, size_t n);

/* The conv-then-Linear flatten order: a Linear whose input is a (C, H, W)
 * feature map flattened in PyTorch's NCHW order, targeted at a model that
 * flattens NHWC, needs its input axis permuted. Off unless c > 0. */
typedef struct jp_flatten_rule {
    int64_t c, h, w;
} jp_flatten_rule;

/* One source tensor (or slice of one) to one leaf. */
typedef struct jp_xform {
    int32_t ndim;                 /* the source reshaped to this before permuting */
    int64_t shape[JP_MAX_DIMS];
    int32_t perm[JP_MAX_DIMS];    /* leaf axis d takes axis perm[d] of that shape */
    uint32_t flip;                /* bit d: reverse axis d of that shape */
    const char *rule;             /* "linear kernel (transposed)" */
} jp_xform;

/* Where a leaf sits: the source's name, the target's path and, when the
 * caller knows it, the class of the target layer; their words decide
 * between layouts that both fit the shapes. */
typedef struct jp_layout_names {
    const char *spath, *tpath, *tkind;
} jp_layout_names;

/* Find the transform that makes a tensor of shape s into the leaf of shape
 * t. False when no convention of lib fits the two shapes. */
bool jp_layout_solve(jp_lib lib, jp_role role, jp_spelling spelling, int sndim, const int64_t *s,
                     int tndim, const int64_t *t, const jp_layout_names *names,
                     const jp_flatten_rule *flatten, jp_xform *out);

#endif /* JP_LAYOUTS_H */
