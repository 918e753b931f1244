/* jaxport: port PyTorch checkpoints to JAX.
 *
 * The one public header of the C engine. Handles are opaque; every call that
 * can fail returns a jp_code (JP_OK is 0) and, when `err` is not NULL, fills it
 * with the code, the byte offset in the file, the zip member or tensor name,
 * and a sentence saying what was found and what was expected. Nothing here
 * aborts or exits because of a file's contents, and no call keeps global state.
 *
 * Lifetimes: tensor data returned by an index are borrowed views into the
 * file's mapping (or into buffers owned by the index); they stay valid until
 * jp_index_close(). Every destructor accepts NULL.
 */
#ifndef JAXPORT_H
#define JAXPORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define JP_VERSION_STRING "0.1.0"

/* ---------------------------------------------------------------- errors */

/* Every error code with its one-line meaning. The enum, jp_code_name() and
 * jp_code_message() are generated from this list, so they never drift. */
#define JP_ERRORS(X)                                                                  \
    X(OK, "no error")                                                                 \
    X(ARGUMENT, "invalid argument")                                                   \
    X(NO_MEMORY, "out of memory")                                                     \
    X(IO, "the file could not be read or written")                                    \
    X(FORMAT, "not a file of a format jaxport reads")                                 \
    X(TRUNCATED, "the file ends before the data it announces")                        \
    X(CORRUPT, "the file's structure is inconsistent")                                \
    X(LIMIT, "a size or count is beyond a safety limit")                              \
    X(UNSUPPORTED, "a valid feature this version does not handle")                    \
    X(UNSAFE, "the file would run code when loaded by its usual reader")              \
    X(NOT_FOUND, "no such tensor or entry")                                           \
    X(DTYPE, "a dtype that cannot be used here")                                      \
    X(SHAPE, "shapes do not agree")                                                   \
    X(RANGE, "a value does not fit the target type")                                  \
    X(MATCH, "source and target could not be paired")                                 \
    X(AMBIGUOUS, "more than one pairing is equally good")                             \
    X(STALE, "a saved mapping does not belong to these files")                        \
    X(INTERRUPTED, "the operation was interrupted")

typedef enum jp_code {
#define JP_ERR_ENUM_(name, msg) JP_##name,
    JP_ERRORS(JP_ERR_ENUM_)
#undef JP_ERR_ENUM_
    JP_CODE_COUNT
} jp_code;

#define JP_ERR_MSG_MAX 256
#define JP_ERR_MEMBER_MAX 256

typedef struct jp_err {
    jp_code code;
    uint64_t offset;                 /* byte position in the file; UINT64_MAX if none */
    char member[JP_ERR_MEMBER_MAX];  /* zip entry, tensor or leaf name; "" if none */
    char msg[JP_ERR_MSG_MAX];        /* a full sentence, prefixed by file and member */
} jp_err;

#define JP_NO_OFFSET UINT64_MAX

const char *jp_code_name(jp_code code);    /* "TRUNCATED" */
const char *jp_code_message(jp_code code); /* "the file ends before ..." */

/* ---------------------------------------------------------------- dtypes */

/* name, item size in bytes, safetensors name, numpy/ml_dtypes name.
 * Sub-byte packed kinds are stored whole bytes (torch packs two fp4 in a byte
 * and calls it float4_e2m1fn_x2, one element). */
#define JP_DTYPES(X)                                                                  \
    X(BOOL, 1, "BOOL", "bool")                                                        \
    X(U8, 1, "U8", "uint8")                                                           \
    X(I8, 1, "I8", "int8")                                                            \
    X(U16, 2, "U16", "uint16")                                                        \
    X(I16, 2, "I16", "int16")                                                         \
    X(U32, 4, "U32", "uint32")                                                        \
    X(I32, 4, "I32", "int32")                                                         \
    X(U64, 8, "U64", "uint64")                                                        \
    X(I64, 8, "I64", "int64")                                                         \
    X(F16, 2, "F16", "float16")                                                       \
    X(BF16, 2, "BF16", "bfloat16")                                                    \
    X(F32, 4, "F32", "float32")                                                       \
    X(F64, 8, "F64", "float64")                                                       \
    X(C32, 4, "C32", "complex32")                                                     \
    X(C64, 8, "C64", "complex64")                                                     \
    X(C128, 16, "C128", "complex128")                                                 \
    X(F8_E4M3FN, 1, "F8_E4M3", "float8_e4m3fn")                                       \
    X(F8_E5M2, 1, "F8_E5M2", "float8_e5m2")                                           \
    X(F8_E4M3FNUZ, 1, "F8_E4M3FNUZ", "float8_e4m3fnuz")                               \
    X(F8_E5M2FNUZ, 1, "F8_E5M2FNUZ", "float8_e5m2fnuz")                               \
    X(F8_E8M0FNU, 1, "F8_E8M0", "float8_e8m0fnu")                                     \
    X(F4_E2M1FN_X2, 1, "F4_X2", "float4_e2m1fn_x2")

typedef enum jp_dtype {
    JP_DTYPE_INVALID = 0,
#define JP_DT_ENUM_(name, size, st, np) JP_##name,
    JP_DTYPES(JP_DT_ENUM_)
#undef JP_DT_ENUM_
    JP_DTYPE_COUNT
} jp_dtype;

size_t jp_dtype_size(jp_dtype dt);               /* 0 for INVALID */
const char *jp_dtype_name(jp_dtype dt);          /* "BF16"; "INVALID" */
const char *jp_dtype_numpy_name(jp_dtype dt);    /* "bfloat16" */
jp_dtype jp_dtype_from_name(const char *name);   /* either spelling; INVALID if unknown */

/* ---------------------------------------------------------------- index */

#define JP_MAX_DIMS 16

typedef enum jp_format {
    JP_FORMAT_UNKNOWN = 0,
    JP_FORMAT_TORCH_ZIP,     /* torch.save, default since 1.6 */
    JP_FORMAT_TORCH_LEGACY,  /* torch.save(..., _use_new_zipfile_serialization=False) */
    JP_FORMAT_SAFETENSORS,
    JP_FORMAT_NPY,
    JP_FORMAT_NPZ,
    JP_FORMAT_MSGPACK,       /* flax.serialization.to_bytes */
    JP_FORMAT_EQX,           /* eqx.tree_serialise_leaves */
    JP_FORMAT_SHARDED,       /* a Hugging Face *.index.json over shards */
    JP_FORMAT_TORCH_EXPORT,  /* torch.export.save: the PT2 archive's raw weights */
    JP_FORMAT_COUNT
} jp_format;

const char *jp_format_name(jp_format f);

enum {
    JP_TENSOR_SHARED = 1u << 0,    /* another tensor views the same storage */
    JP_TENSOR_CONTIGUOUS = 1u << 1, /* row-major dense: strides are the default */
    JP_TENSOR_OWNED = 1u << 2,      /* data lives in a buffer of the index, not the mapping
                                       (inflated zip entry, byte-swapped storage) */
    JP_TENSOR_MAPPED = 1u << 3,     /* data lies in a read-only mapping of a file the index
                                       opened: its pages can be dropped and read again */
};

typedef struct jp_tensor {
    const char *name;
    jp_dtype dtype;
    int32_t ndim;
    int64_t shape[JP_MAX_DIMS];
    int64_t strides[JP_MAX_DIMS];  /* in elements, as torch reports them */
    const uint8_t *data;           /* element [0,...,0]; NULL when numel is 0 */
    uint64_t numel;
    uint64_t nbytes;               /* numel * item size (what a dense copy needs) */
    uint32_t storage;              /* tensors with the same storage share bytes */
    uint32_t flags;                /* JP_TENSOR_* */
    uint64_t file_offset;          /* where element 0 sits in the file, for messages */
} jp_tensor;

/* A value that is not a tensor (epoch, learning rate, a config string). */
typedef struct jp_meta {
    const char *key;   /* dotted path, as tensors are named */
    const char *value; /* a short Python-like repr */
} jp_meta;

/* Something the file would do under its usual reader that jaxport did not:
 * a pickle GLOBAL outside the allow-list. */
typedef enum jp_finding_kind {
    JP_FIND_CALL = 1,   /* would be called (REDUCE): code execution */
    JP_FIND_IMPORT,     /* would be imported as a class (NEWOBJ/BUILD): usually a
                           pickled nn.Module; imports run module top-level code */
    JP_FIND_DENIED,     /* a known code-execution entry point, however used */
} jp_finding_kind;

typedef struct jp_finding {
    jp_finding_kind kind;
    const char *global;  /* "posix.system" */
    const char *member;  /* "archive/data.pkl" */
    uint64_t offset;     /* byte offset of the opcode in the member */
} jp_finding;

enum {
    /* Extract tensors even when the file would run code under torch.load.
     * Nothing runs either way; without this flag open fails with JP_UNSAFE. */
    JP_OPEN_ALLOW_UNSAFE = 1u << 0,
};

typedef struct jp_open_opts {
    uint32_t flags;
} jp_open_opts;

typedef struct jp_index jp_index;

/* Open any file jaxport reads; the format is told from its bytes, never from
 * its name (a *.index.json is read as a shard index). `opts` may be NULL. */
jp_code jp_index_open(jp_index **out, const char *path, const jp_open_opts *opts, jp_err *err);

/* The same from memory the caller keeps alive until close (fuzzing, tests).
 * `name` is used in messages only. Shard indexes cannot be opened this way. */
jp_code jp_index_open_memory(jp_index **out, const void *data, size_t len, const char *name,
                             const jp_open_opts *opts, jp_err *err);

/* An index over tensors the caller describes (a state dict in memory):
 * names are copied, data are borrowed and must outlive the index. Tensors
 * starting at the same address are marked as sharing a storage. */
jp_code jp_index_open_tensors(jp_index **out, const jp_tensor *tensors, size_t n, const char *name,
                              jp_err *err);

void jp_index_close(jp_index *ix);

jp_format jp_index_format(const jp_index *ix);
size_t jp_index_count(const jp_index *ix);
const jp_tensor *jp_index_at(const jp_index *ix, size_t i);
const jp_tensor *jp_index_find(const jp_index *ix, const char *name);
/* The position of the tensor called name (for jp_index_at), SIZE_MAX if none. */
size_t jp_index_position(const jp_index *ix, const char *name);
size_t jp_index_meta_count(const jp_index *ix);
const jp_meta *jp_index_meta_at(const jp_index *ix, size_t i);
size_t jp_index_finding_count(const jp_index *ix);
const jp_finding *jp_index_finding_at(const jp_index *ix, size_t i);

#ifdef __cplusplus
}
#endif
#endif /* JAXPORT_H */
