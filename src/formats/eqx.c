/* Equinox .eqx: what eqx.tree_serialise_leaves writes and
 * tree_deserialise_leaves reads.
 *
 *   record 0   93 'NUMPY' ver hlen header data     one .npy record (npyhdr.c)
 *   record 1   93 'NUMPY' ...
 *   ...        up to the end of the file: no count, no names, no index
 *
 * One record per leaf, in jax.tree_util flatten order, for every leaf that is
 * an array or a Python bool, int, float or complex (numpy.save of it: 0-d
 * '|b1', '<i8', '<f8', '<c16'); other leaves (functions, strings, None) write
 * nothing. bfloat16 arrays are '<V2' (jnp.save), read back as bfloat16. A
 * model saved with its eqx.nn.State is the tuple (model, state): the model's
 * records, then the state's in its flatten order.
 *
 * Records carry no names, so tensors are named by position: "0", "1", ...;
 * the Python side pairs them with the array leaves of the `like` tree.
 * Data are views into the file; Fortran-order records get column-major
 * strides. A file of one record is an ordinary .npy and is read as one. */
#include <stdio.h>
#include <string.h>

#include "index_impl.h"
#include "npyhdr.h"
#include "sink.h"

bool jp_eqx_sniff(const uint8_t *data, size_t len) {
    jp_cur c = jp_cur_make(data, len, 0);
    jp_npy_header h;
    return jp_npy_header_parse(&c, &h, NULL, NULL) == JP_OK && h.nbytes < jp_cur_left(&c);
}

jp_code jp_read_eqx(jp_index *ix, const uint8_t *data, size_t len, jp_err *err) {
    jp_cur c = jp_cur_make(data, len, 0);
    for (size_t i = 0; jp_cur_left(&c) > 0; i++) {
        char name[24];
        int name_len = snprintf(name, sizeof name, "%zu", i);
        jp_npy_header h;
        jp_code rc = jp_npy_header_parse(&c, &h, name, err);
        if (rc) return rc;
        uint64_t at = jp_cur_fileoff(&c);
        if (h.big_endian)
            return jp_err_set(err, JP_UNSUPPORTED, at, name,
                              "big-endian data (equinox writes little-endian records)");
        if (h.nbytes > jp_cur_left(&c))
            return jp_err_set(err, JP_TRUNCATED, at, name,
                              "the record needs %llu data bytes, but only %zu remain",
                              (unsigned long long)h.nbytes, jp_cur_left(&c));
        const uint8_t *span = jp_cur_take(&c, (size_t)h.nbytes);
        if ((rc = jp_npy_add_tensor(ix, &h, name, (size_t)name_len, span, at, false, name, err)))
            return rc;
    }
    return JP_OK;
}

/* ---------------------------------------------------------------- writing */

/* Each tensor is an npy record: numpy.save's header, then its bytes. */
static jp_code eqx_begin(jp_sink *s, jp_err *err) {
    uint8_t hdr[JP_NPY_HEADER_CAP];
    for (size_t i = 0; i < s->n; i++) {
        const jp_sink_tensor *t = &s->tensors[i];
        if (!jp_npy_header_format(hdr, t->dtype, t->ndim, t->shape))
            return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, t->name,
                              "dtype %s has no npy descr that equinox reads back",
                              jp_dtype_name(t->dtype));
    }
    return JP_OK;
}

static jp_code eqx_tensor_begin(jp_sink *s, jp_err *err) {
    uint8_t hdr[JP_NPY_HEADER_CAP];
    const jp_sink_tensor *t = &s->tensors[s->cur];
    size_t n = jp_npy_header_format(hdr, t->dtype, t->ndim, t->shape);
    return jp_outfile_write(&s->out, hdr, n, err);
}

static jp_code eqx_write(jp_sink *s, const void *data, size_t len, jp_err *err) {
    return jp_outfile_write(&s->out, data, len, err);
}

const struct jp_sink_ops jp_sink_eqx = {
    .extension = ".eqx",
    .format = JP_FORMAT_EQX,
    .begin = eqx_begin,
    .tensor_begin = eqx_tensor_begin,
    .write = eqx_write,
};
