/* The header of one .npy record: read (at a cursor) and written (as
 * numpy.save writes it). Shared by .npy, .npz and Equinox .eqx files. */
#ifndef JP_NPYHDR_H
#define JP_NPYHDR_H

#include "../common/common.h"

#define JP_NPY_MAGIC "\x93NUMPY"
#define JP_NPY_MAGIC_LEN 6
#define JP_NPY_MAX_HEADER 65536   /* bytes of the header dict we agree to parse */
#define JP_NPY_HEADER_CAP 1024    /* enough for any header jp_npy_header_format writes */

typedef struct jp_npy_header {
    jp_dtype dtype;
    bool fortran_order;   /* data are column-major */
    bool big_endian;      /* data are byte-swapped for this (little-endian) host */
    int32_t ndim;
    int64_t shape[JP_MAX_DIMS];
    uint64_t nbytes;      /* shape x item size: the data that follow the header */
} jp_npy_header;

/* Parse the header at the cursor: magic, version (1.0, 2.0, 3.0), length
 * and the Python dict {'descr': ..., 'fortran_order': ..., 'shape': ...}.
 * On success the cursor stands at the first data byte; the data are not
 * checked. "<V2" is read as bfloat16, as jnp.load does; npyhdr.c lists
 * the other ml_dtypes descrs and which are refused. Object arrays ("|O")
 * are JP_UNSUPPORTED, other dtypes JP_DTYPE. `member` names the record in
 * messages. */
jp_code jp_npy_header_parse(jp_cur *c, jp_npy_header *h, const char *member, jp_err *err);

/* The header numpy.save writes for a C-order array of this dtype and shape,
 * byte for byte, into `out` (JP_NPY_HEADER_CAP bytes); returns its length,
 * or 0 if numpy has no descr that reads back as this dtype. */
size_t jp_npy_header_format(uint8_t *out, jp_dtype dtype, int32_t ndim, const int64_t *shape);

#endif /* JP_NPYHDR_H */
