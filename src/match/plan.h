/* The plan: for every target leaf, which source tensor(s) and which
 * transforms produce it. Plain data, made by the matcher (or by
 * jp_plan_identity for a plain format conversion), printed, saved as a
 * mapping file, and run by the executor.
 *
 * One leaf is computed as
 *
 *   parts[k]  = reshape(slice(source[k], axis, start, len)
 *                       [+ slice(plus[k], axis, start, len)] [+ add[k]], shape)
 *   joined    = concat(parts, along cat_axis)          (one part: itself)
 *   flipped   = reverse(joined, the axes in flip)      (a transposed conv's taps)
 *   permuted  = permute(flipped, perm)                 (perm[d] = source axis)
 *   leaf      = cast(reshape(permuted, leaf shape), leaf dtype)
 *
 * which covers a Linear kernel (perm 1,0), a conv kernel (perm 2,3,1,0), a
 * fused qkv (three leaves, each a slice of one source, reshaped to
 * (heads, head_dim, in) and permuted), an Equinox conv bias (a reshape), and
 * the conv-then-Linear flatten order (reshape (out,C,H,W), perm 2,3,1,0),
 * and a recurrent cell's gate bias where Flax and Equinox keep one and
 * PyTorch two (b_ih + b_hh: a part with an addend, the same number of
 * elements of another floating tensor, summed in float64 and rounded once
 * to the part's dtype), and Haiku's LSTM, which adds 1 to the forget gate as
 * it runs (b_ih + b_hh - 1 there: a part with a constant added, in the same
 * float64 sum; the joined (2, 2, H, in + H) weight swaps the two middle
 * gates by its permute, i f g o becoming i g f o). */
#ifndef JP_PLAN_H
#define JP_PLAN_H

#include "../common/common.h"

/* A source tensor, or a slice of one. */
typedef struct jp_plan_ref {
    uint32_t source;              /* tensor index in the source jp_index */
    int32_t axis;                 /* the slice's axis; -1: the whole tensor */
    int64_t start, len;
} jp_plan_ref;

typedef struct jp_plan_part {
    jp_plan_ref from;
    bool has_plus;                /* add plus (the same element count, row-major) */
    jp_plan_ref plus;
    double add;                   /* a constant added to every element (floats only); 0: none */
    int32_t ndim;                 /* the part's shape after the slice and reshape */
    int64_t shape[JP_MAX_DIMS];
} jp_plan_part;

enum {
    JP_LEAF_TIED = 1u << 0,       /* its source also feeds another leaf */
    JP_LEAF_MISSING = 1u << 1,    /* no source: left unmatched (nparts is 0) */
    JP_LEAF_AMBIGUOUS = 1u << 2,  /* more than one source fits equally well */
};

typedef struct jp_plan_leaf {
    const char *name;             /* target path, '/'-separated as JAX keys print */
    jp_dtype dtype;               /* the leaf's dtype (after any --dtype override) */
    int32_t ndim;
    int64_t shape[JP_MAX_DIMS];
    uint32_t nparts;
    jp_plan_part *parts;
    int32_t cat_axis;             /* axis of the parts' shape they are joined along */
    int32_t perm[JP_MAX_DIMS];    /* over the joined shape; identity when no permute */
    uint32_t flip;                /* bit d: reverse axis d of the joined shape */
    uint32_t flags;               /* JP_LEAF_* */
    const char *rule;             /* why: "linear kernel", "as is", a user rule */
} jp_plan_leaf;

/* A source tensor no leaf takes, and why that is fine or not. */
typedef struct jp_plan_unused {
    uint32_t source;
    bool harmless;                /* a buffer JAX models do not keep, or a tied copy */
    const char *why;
} jp_plan_unused;

typedef struct jp_plan {
    jp_plan_leaf *leaves;
    size_t n;
    jp_plan_unused *unused;
    size_t nunused;
    jp_arena arena;               /* every name and array of the plan */
} jp_plan;

void jp_plan_free(jp_plan *p);    /* NULL allowed */

/* Every tensor of ix as it is, in index order, cast to dtype unless dtype is
 * JP_DTYPE_INVALID: the plan of a plain format conversion. Leaf names borrow
 * the index's, so the plan must be freed before the index is closed. */
jp_code jp_plan_identity(jp_plan **out, const jp_index *ix, jp_dtype dtype, jp_err *err);

/* For each tensor of ix, the first earlier tensor viewing the same bytes
 * the same way (a tied weight), or -1. alias_of has one slot per tensor;
 * scratch comes from a. False when out of memory. */
bool jp_index_aliases(const jp_index *ix, int64_t *alias_of, jp_arena *a);

/* Fill p->unused with the tensors of src no leaf takes, each with why: a
 * BatchNorm step counter, a tensor the model makes from its shape
 * (constants.h) or a tied copy of a taken tensor (harmless), or nothing
 * takes it. */
jp_code jp_plan_list_unused(jp_plan *p, const jp_index *src, jp_err *err);
/* The same over n tensors the caller describes (arrays in memory: the Python
 * binding's jaxport.save). Names and tensors are borrowed. */
jp_code jp_plan_identity_tensors(jp_plan **out, const jp_tensor *tensors, size_t n, jp_dtype dtype,
                                 jp_err *err);

/* The floating kinds a --dtype override changes: float16, bfloat16, float32,
 * float64. Integers and bools keep their values' meaning only in their own
 * type; complex would lose its imaginary part; float8 and float4 tensors are
 * quantized weights that go with scales, so they are left as they are too. */
bool jp_dtype_is_castable_float(jp_dtype dt);
/* Whether dt is one of the integer types, uint8 to int64 (bool is not). */
bool jp_dtype_is_integer(jp_dtype dt);

/* Set every leaf whose dtype is such a float to dtype (a plain conversion's
 * --dtype); other leaves keep theirs. JP_ARGUMENT unless dtype is one too. */
jp_code jp_plan_cast_floats(jp_plan *p, jp_dtype dtype, jp_err *err);

#endif /* JP_PLAN_H */
