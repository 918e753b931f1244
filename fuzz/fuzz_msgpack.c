/* Fuzz the Flax msgpack reader (seeds: maps of arrays, chunked arrays,
 * scalars and strings as written by flax.serialization.to_bytes). */
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_open_and_check(data, size, "fuzz.msgpack");
    return 0;
}
