/* Writers: where converted tensors go. A sink is told every tensor up front
 * (safetensors and msgpack put sizes in a header before any data), then
 * receives each tensor's dense bytes in that order, possibly in several
 * pieces, then commits. The file appears only on commit (jp_outfile). */
#ifndef JP_SINK_H
#define JP_SINK_H

#include "../common/common.h"
#include "../common/pool.h"

typedef struct jp_sink_tensor {
    const char *name;   /* path with '.' or '/' separators as the format wants */
    jp_dtype dtype;
    int32_t ndim;
    int64_t shape[JP_MAX_DIMS];
    uint64_t nbytes;
} jp_sink_tensor;

typedef struct jp_sink_opts {
    const jp_meta *meta;     /* safetensors __metadata__; may be NULL */
    size_t nmeta;
    uint64_t shard_bytes;    /* safetensors: split into shards above this size; 0 = one file */
    uint64_t chunk_bytes;    /* msgpack: chunk arrays above this size, as flax does; 0 = 2**30 */
    jp_pool *pool;           /* npz: checksums of big pieces spread over its threads; may be NULL */
} jp_sink_opts;

typedef struct jp_sink jp_sink;

/* The sink's format is told from the output path's extension
 * (.safetensors .npz .msgpack .eqx) unless `format` is given. */
jp_code jp_sink_open(jp_sink **out, const char *path, jp_format format, const jp_sink_tensor *tensors,
                     size_t n, const jp_sink_opts *opts, jp_err *err);
/* A sink that writes no file: tensor i's bytes go to bufs[i] (nbytes
 * each, kept alive by the caller). Commit only checks every tensor came. */
jp_code jp_sink_open_memory(jp_sink **out, const jp_sink_tensor *tensors, size_t n, void *const *bufs,
                            jp_err *err);

/* The tensor the sink wants next: writers may want them in another order
 * than the list (safetensors sorts by alignment and name). n when all are
 * written. Feed each whole before the next. */
size_t jp_sink_expected(const jp_sink *s);
/* Up to max tensors the sink will want from now on, in order, the one it
 * wants next first (tensors of no bytes, which take no write, left out);
 * how many. */
size_t jp_sink_upcoming(const jp_sink *s, size_t *out, size_t max);
/* Where the sink keeps the next bytes of tensor i (jp_sink_expected(s) or
 * one the sink wants after it), when it keeps tensors in memory; NULL when
 * it writes them elsewhere. A caller may make the bytes there and then pass
 * that pointer to jp_sink_write, which copies nothing. */
void *jp_sink_place(const jp_sink *s, size_t i);
/* The next bytes of tensor i, which must be jp_sink_expected(s). */
jp_code jp_sink_write(jp_sink *s, size_t i, const void *data, size_t len, jp_err *err);
jp_code jp_sink_commit(jp_sink *s, jp_err *err);  /* frees the sink */
void jp_sink_abort(jp_sink *s);                    /* frees the sink; NULL allowed */

/* ---- for writers: each format implements these operations. */

struct jp_sink {
    const struct jp_sink_ops *ops;
    jp_outfile out;              /* the file (a writer of several files keeps its own) */
    const char *path;
    jp_sink_tensor *tensors;     /* copy of the caller's list, names in the arena */
    size_t n;
    size_t *order;               /* the writer's order, set by begin (NULL = as given) */
    size_t next;                 /* position in that order */
    size_t cur;                  /* the tensor being written: order[next] */
    uint64_t left;               /* its bytes still to come */
    jp_sink_opts opts;
    jp_arena arena;              /* freed with the sink */
    void *state;                 /* the writer's own, from the arena */
};

struct jp_sink_ops {
    const char *extension;       /* ".safetensors" */
    jp_format format;
    /* After the list is known and s->out is open: write headers. May be NULL. */
    jp_code (*begin)(jp_sink *s, jp_err *err);
    /* Before the first bytes of tensor s->cur, in order, also for a tensor of
     * no bytes (per-tensor headers). May be NULL. */
    jp_code (*tensor_begin)(jp_sink *s, jp_err *err);
    /* Where the next bytes of tensor i go, for a writer that keeps
     * tensors in memory. May be NULL. */
    void *(*place)(const jp_sink *s, size_t i);
    /* Bytes of tensor s->cur (sink.c checks order and sizes first). */
    jp_code (*write)(jp_sink *s, const void *data, size_t len, jp_err *err);
    /* Called when tensor s->cur has all its bytes (at once after tensor_begin
     * for a tensor of no bytes). May be NULL. */
    jp_code (*tensor_done)(jp_sink *s, jp_err *err);
    /* After the last tensor, before s->out is committed: trailers. May be NULL. */
    jp_code (*finish)(jp_sink *s, jp_err *err);
    /* When the sink is freed, committed or not: remove files of the writer's
     * own that are not committed. May be NULL. */
    void (*abort)(jp_sink *s);
};

/* The writers, each in its format's file. */
extern const struct jp_sink_ops jp_sink_msgpack;
extern const struct jp_sink_ops jp_sink_eqx;
extern const struct jp_sink_ops jp_sink_npz;
extern const struct jp_sink_ops jp_sink_safetensors;

#endif /* JP_SINK_H */
