/* Fuzz the safetensors reader (seeds: files written by safetensors.numpy and
 * safetensors.torch, and the malformed headers of tests/c/test_safetensors.c). */
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_open_and_check(data, size, "fuzz.safetensors");
    return 0;
}
