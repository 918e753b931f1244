/* Fuzz the .npy and .npz readers (seeds: numpy.save files of several dtypes,
 * big-endian, Fortran order and a version 3.0 header; numpy.savez and
 * savez_compressed archives). jp_index_open_memory tells the two apart by
 * their bytes, as it does for files. */
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_open_and_check(data, size, "fuzz.npz");
    return 0;
}
