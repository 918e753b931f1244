/* PyTorch checkpoints: placeholder until the zip and pickle readers land. */
#include "index_impl.h"

jp_code jp_read_torch_zip(jp_index *ix, const uint8_t *data, size_t len, jp_err *err) {
    (void)ix, (void)data, (void)len;
    return jp_err_set(err, JP_UNSUPPORTED, 0, NULL, "zip checkpoints are not read yet");
}

jp_code jp_read_torch_legacy(jp_index *ix, const uint8_t *data, size_t len, jp_err *err) {
    (void)ix, (void)data, (void)len;
    return jp_err_set(err, JP_UNSUPPORTED, 0, NULL, "legacy checkpoints are not read yet");
}
