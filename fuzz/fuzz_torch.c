/* Fuzz target for the torch reader (zip, legacy and torch.export, through the whole
 * index): whatever opens must give tensors whose every byte lies inside the
 * input or inside a buffer the index owns; touching the first and last byte
 * of each tensor's span lets AddressSanitizer check that. */
#include <stdlib.h>

#include "jaxport.h"

/* Checked in release builds too: a broken property is a crash to report. */
#define CHECK(c)                  \
    do {                          \
        if (!(c)) abort();        \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t touch(const jp_tensor *t, const uint8_t *data, size_t size) {
    if (t->numel == 0) return 0;
    size_t isz = jp_dtype_size(t->dtype);
    uint64_t last = 0;
    for (int d = 0; d < t->ndim; d++) last += (uint64_t)(t->shape[d] - 1) * (uint64_t)t->strides[d];
    const uint8_t *first = t->data, *end = t->data + last * isz + isz - 1;
    if (!(t->flags & JP_TENSOR_OWNED)) CHECK(first >= data && end < data + size);
    return (uint8_t)(*first ^ *end);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (uint32_t flags = 0; flags <= JP_OPEN_ALLOW_UNSAFE; flags += JP_OPEN_ALLOW_UNSAFE) {
        jp_open_opts opts = {flags};
        jp_index *ix = NULL;
        jp_err err;
        if (jp_index_open_memory(&ix, data, size, "fuzz", &opts, &err) != JP_OK) {
            CHECK(ix == NULL && err.code != JP_OK && err.msg[0]);
            continue;
        }
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < jp_index_count(ix); i++) {
            const jp_tensor *t = jp_index_at(ix, i);
            CHECK(jp_index_find(ix, t->name) == t);
            CHECK(t->nbytes == t->numel * jp_dtype_size(t->dtype));
            sink ^= touch(t, data, size);
        }
        for (size_t i = 0; i < jp_index_meta_count(ix); i++)
            sink ^= (uint8_t)jp_index_meta_at(ix, i)->value[0];
        for (size_t i = 0; i < jp_index_finding_count(ix); i++)
            sink ^= (uint8_t)jp_index_finding_at(ix, i)->global[0];
        (void)sink;
        jp_index_close(ix);
    }
    return 0;
}
