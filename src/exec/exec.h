/* The executor: runs a plan (match/plan.h) against the source tensors and
 * streams every leaf into a sink (formats/sink.h).
 *
 * Memory stays bounded whatever the model's size: a leaf is produced in
 * tiles of at most tile_bytes, each a run of whole rows of the leaf's dense
 * bytes (consecutive indices of one destination axis, every index of the
 * axes after it, one index of the axes before it), computed by the kernels
 * into one reused buffer and handed to the sink. A leaf that is a plain
 * contiguous copy of source bytes (one part, no permutation that moves data,
 * no cast) goes from the source's mapping to the sink without a copy. The
 * one exception to the bound: a part whose reshape its strides cannot express
 * (a slice of a transposed view reshaped across the transposed axes) is first
 * made dense in a buffer of its own size.
 *
 * The sink is fed in the order it asks for (jp_sink_expected): sink tensor i
 * is the i-th leaf of the plan, leaving out missing leaves when
 * skip_missing is set. */
#ifndef JP_EXEC_H
#define JP_EXEC_H

#include <signal.h>

#include "../common/common.h"
#include "../common/pool.h"
#include "../formats/sink.h"
#include "../match/plan.h"

#define JP_EXEC_TILE_BYTES (16u << 20) /* default tile: 16 MiB */
#define JP_EXEC_PROGRESS_MS 100        /* default least time between progress calls */

/* done and total count leaf bytes (what the sink receives); name is the leaf
 * being written. Called at most once per progress_ms, and once at the end
 * with done == total. */
typedef void (*jp_exec_progress_fn)(void *ctx, uint64_t done, uint64_t total, const char *name);

/* What a run did, for reports. */
typedef struct jp_exec_stats {
    size_t tensors;         /* leaves written */
    uint64_t bytes_in;      /* source bytes the leaves read */
    uint64_t bytes_out;     /* leaf bytes handed to the sink */
    uint64_t bytes_direct;  /* of bytes_out, those passed from the source without a copy */
    size_t batched;         /* of tensors, those made several at a time over the pool */
} jp_exec_stats;

typedef struct jp_exec_opts {
    jp_pool *pool;                     /* kernels on big tiles, small leaves in batches;
                                          NULL = the calling thread */
    jp_exec_progress_fn progress;      /* may be NULL */
    void *progress_ctx;
    int32_t progress_ms;               /* 0 = JP_EXEC_PROGRESS_MS; negative: after every tile */
    volatile sig_atomic_t *interrupt;  /* nonzero stops the run (JP_INTERRUPTED); may be NULL */
    uint64_t tile_bytes;               /* 0 = JP_EXEC_TILE_BYTES */
    bool skip_missing;                 /* leave JP_LEAF_MISSING leaves out instead of JP_MATCH */
    jp_exec_stats *stats;              /* filled when not NULL */
} jp_exec_opts;

/* The sink's list for a plan: one entry per leaf (missing leaves left out
 * when skip_missing), names and shapes of the leaves. *out is malloc'd (free
 * it); names are borrowed from the plan. JP_MATCH for a missing leaf unless
 * skipped. */
jp_code jp_exec_sink_tensors(const jp_plan *plan, bool skip_missing, jp_sink_tensor **out,
                             size_t *n, jp_err *err);

/* Runs plan over the tensors of src into sink, then commits the sink. The
 * sink is always consumed: committed on success, aborted on any failure, so
 * a failed or interrupted run leaves no file. opts may be NULL. Errors name
 * the leaf in err->member and the source tensor in the message. */
jp_code jp_exec_run(const jp_plan *plan, const jp_index *src, jp_sink *sink,
                    const jp_exec_opts *opts, jp_err *err);

/* The same over n source tensors the caller describes (arrays in memory). */
jp_code jp_exec_run_tensors(const jp_plan *plan, const jp_tensor *src, size_t n, jp_sink *sink,
                            const jp_exec_opts *opts, jp_err *err);

/* jp_exec_sink_tensors, jp_sink_open on path, jp_exec_run: one call for
 * the CLI. format JP_FORMAT_UNKNOWN = from path's extension. */
jp_code jp_exec_to_file(const jp_plan *plan, const jp_index *src, const char *path,
                        jp_format format, const jp_sink_opts *sink_opts,
                        const jp_exec_opts *opts, jp_err *err);

#endif /* JP_EXEC_H */
