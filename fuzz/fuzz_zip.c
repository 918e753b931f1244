/* Fuzz target for the zip reader: whatever opens must describe members that
 * lie inside the input, be found by name, and read back (stored members as
 * views into the input, deflated ones with their declared size). */
#include <stdlib.h>

#include "formats/zip.h"

/* Checked in release builds too: a broken property is a crash to report. */
#define CHECK(c)                  \
    do {                          \
        if (!(c)) abort();        \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    jp_arena a;
    jp_arena_init(&a);
    jp_zip z;
    if (jp_zip_open(&z, &a, data, size, NULL) == JP_OK) {
        for (size_t i = 0; i < z.count; i++) {
            const jp_zip_entry *e = &z.entries[i];
            CHECK(e->data_offset <= size && e->csize <= size - e->data_offset);
            CHECK(jp_zip_find(&z, e->name) == e);
            /* Keep the fuzzer's memory bounded; the limit itself is tested. */
            if (e->usize > (1u << 24)) continue;
            const uint8_t *p;
            uint64_t n;
            if (jp_zip_read(&z, e, &a, &p, &n, NULL) != JP_OK) continue;
            CHECK(n == e->usize);
            if (e->method == 0) CHECK(p == data + e->data_offset);
            volatile uint8_t sink = 0;
            if (n) sink ^= (uint8_t)(p[0] ^ p[n - 1]);
            (void)sink;
        }
    }
    jp_arena_free(&a);
    return 0;
}
