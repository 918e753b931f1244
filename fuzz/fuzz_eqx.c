/* Fuzz the Equinox reader and the npy header parser (seeds: files written
 * by eqx.tree_serialise_leaves, with Fortran-order and bfloat16 records). */
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_open_and_check(data, size, "fuzz.eqx");
    return 0;
}
