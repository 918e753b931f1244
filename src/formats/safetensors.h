/* What the safetensors reader and writer share: the format's dtype names,
 * their rank (the order of the Rust `Dtype` enum, which the writer sorts by)
 * and the header limit. */
#ifndef JP_SAFETENSORS_H
#define JP_SAFETENSORS_H

#include "../common/common.h"

/* The reference implementation refuses larger headers (MAX_HEADER_SIZE). */
#define JP_ST_MAX_HEADER 100000000u
#define JP_ST_LEN_BYTES 8

/* The safetensors name of dt ("F8_E4M3" for JP_F8_E4M3FN, "F4" for
 * JP_F4_E2M1FN_X2) and its rank; NULL and -1 for dtypes safetensors has no
 * name for (complex32, complex128). */
const char *jp_st_dtype_name(jp_dtype dt);
int jp_st_dtype_rank(jp_dtype dt);

/* Whether s[0..n) is valid UTF-8 as Rust's str::from_utf8 defines it (no
 * overlong forms, no surrogates, nothing above U+10FFFF); the offset of the
 * first bad byte in *bad. */
bool jp_st_utf8_valid(const uint8_t *s, size_t n, size_t *bad);

#endif /* JP_SAFETENSORS_H */
