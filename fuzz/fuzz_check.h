/* Properties every reader's accepted output must have, shared by the fuzz
 * targets: open the input from memory and, if it is accepted, check that
 * each tensor's bytes lie inside the input (or in a buffer the index owns)
 * and are all readable, that names are unique and that byte counts equal
 * shape times item size, and judge each as the list of unused tensors does
 * (match/constants.h reads its values through its strides). A refusal must
 * come with a code and a message. */
#ifndef JP_FUZZ_CHECK_H
#define JP_FUZZ_CHECK_H

#include <assert.h>
#include <stddef.h>
#include <string.h>

#include "jaxport.h"
#include "match/constants.h"

static inline void fuzz_open_and_check(const uint8_t *data, size_t size, const char *name) {
    jp_index *ix;
    jp_err err;
    if (jp_index_open_memory(&ix, data, size, name, NULL, &err) != JP_OK) {
        assert(err.code != JP_OK && err.msg[0]);
        return;
    }
    volatile unsigned sum = 0;
    jp_arena tmp;
    jp_arena_init(&tmp);
    for (size_t i = 0; i < jp_index_count(ix); i++) {
        const jp_tensor *t = jp_index_at(ix, i);
        assert(jp_index_find(ix, t->name) == t);
        uint64_t n = jp_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
        assert(n == t->nbytes);
        if (!t->nbytes) continue;
        if (!(t->flags & JP_TENSOR_OWNED))
            assert(t->data >= data && t->nbytes <= size &&
                   (size_t)(t->data - data) <= size - t->nbytes);
        for (uint64_t b = 0; b < t->nbytes; b++) sum += t->data[b];
        const char *kind = jp_constant_kind(t, &tmp);
        sum += kind ? (unsigned)strlen(kind) : 0;
    }
    jp_arena_free(&tmp);
    for (size_t i = 0; i < jp_index_meta_count(ix); i++)
        sum += (unsigned)strlen(jp_index_meta_at(ix, i)->value);
    jp_index_close(ix);
}

#endif /* JP_FUZZ_CHECK_H */
