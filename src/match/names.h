/* Names: how the matcher reads tensor paths from either side.
 *
 * A path is cut on its separators ('.', '/', '[', ']', quotes) into components;
 * the last is the leaf's role ("weight", "kernel", "running_mean"), the rest
 * name its module. Two names are compared through a key that ignores case and
 * punctuation but keeps numbers apart: "layers_0/LayerNorm" and
 * "layers.0.layer_norm" share the key "layers.0.layernorm". */
#ifndef JP_NAMES_H
#define JP_NAMES_H

#include "../common/common.h"

/* What a leaf is to its module, once each library's spelling is undone. */
#define JP_ROLES(X)                                                            \
    X(OTHER, "other")     /* matched by its own name only */                   \
    X(WEIGHT, "weight")   /* weight, kernel, w, scale, embedding(s) */         \
    X(BIAS, "bias")       /* bias, b, offset */                                \
    X(MEAN, "mean")       /* running_mean, mean, mean_ema */                   \
    X(VAR, "var")         /* running_var, var, var_ema */                      \
    X(COUNTER, "counter") /* num_batches_tracked: a buffer no JAX model keeps */

typedef enum jp_role {
#define JP_ROLE_ENUM_(name, s) JP_ROLE_##name,
    JP_ROLES(JP_ROLE_ENUM_)
#undef JP_ROLE_ENUM_
    JP_ROLE_COUNT
} jp_role;

const char *jp_role_name(jp_role r);

/* How the target spells a weight: the spelling decides the transform (a
 * Flax "kernel" is transposed, an "embedding" is not). */
typedef enum jp_spelling {
    JP_SPELL_PLAIN = 0,   /* weight, bias, w, b, mean ... */
    JP_SPELL_KERNEL,      /* kernel */
    JP_SPELL_EMBEDDING,   /* embedding, embeddings */
    JP_SPELL_SCALE,       /* scale (a norm's weight) */
} jp_spelling;

jp_role jp_role_of(const char *leaf, size_t len, jp_spelling *spelling);

/* The last component of path (after its final separator) as [*start, len). */
size_t jp_name_leaf(const char *path, size_t *start);

/* The key of path[0..len): lowercase letters and digits; a '.' only between
 * two digit runs that a separator split ("1.10" stays apart from "11.0").
 * Writes at most cap-1 bytes and a NUL; returns the key's length. */
size_t jp_name_key(const char *path, size_t len, char *out, size_t cap);

/* How alike two keys are, 0..1000: shared tokens (letter and digit runs) over
 * all tokens, so "encoder.fc1" and "enc.fc1" share most. */
int jp_name_similarity(const char *a, const char *b);

/* strcmp that orders digit runs by value: "Dense_2" before "Dense_10". */
int jp_name_natural_cmp(const char *a, const char *b);

/* Whether a separator-cut component of path is one of the words. */
bool jp_name_has_word(const char *path, const char *const *words);

#endif /* JP_NAMES_H */
