/* Tensors a checkpoint keeps that a model could make again from its shape
 * alone: position indexes, relative position indexes, sinusoidal position
 * tables, causal masks and masking constants. JAX models compute theirs, so
 * such a tensor left over by a conversion loses nothing. Each is told by its
 * values, every element checked, never by its name: a learned or edited
 * tensor of the same shape is not taken for one. */
#ifndef JP_MATCH_CONSTANTS_H
#define JP_MATCH_CONSTANTS_H

#include "../common/common.h"

/* What t is, as a sentence ("a causal mask (...); models make theirs"), or
 * NULL when it is none of these kinds (or reading it needs more memory than
 * tmp can give). */
const char *jp_constant_kind(const jp_tensor *t, jp_arena *tmp);

#endif /* JP_MATCH_CONSTANTS_H */
