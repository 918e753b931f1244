/* A fixed pool of worker threads and a parallel-for over numbered tasks.
 *
 * The caller of jp_pool_for works too, so a pool of n threads starts n - 1
 * workers. Tasks are claimed in any order by any thread; a caller that wants
 * the same bytes whatever the thread count gives each task its own output
 * (the kernels make each output byte belong to exactly one task). A NULL pool
 * runs every task on the calling thread, in order. */
#ifndef JP_POOL_H
#define JP_POOL_H

#include "common.h"

#define JP_POOL_MAX_THREADS 256

typedef struct jp_pool jp_pool;

/* Runs task number `task` (0 <= task < ntasks). `worker` is 0 for the caller
 * and 1..threads-1 for the pool's threads: an index into per-thread scratch. */
typedef void (*jp_pool_fn)(void *ctx, size_t task, int worker);

/* threads: 0 = one per online core; at most JP_POOL_MAX_THREADS. */
jp_code jp_pool_create(jp_pool **out, int threads, jp_err *err);
void jp_pool_destroy(jp_pool *pool); /* NULL is fine */
int jp_pool_threads(const jp_pool *pool); /* 1 for NULL */

/* Runs fn for every task and returns when all are done. Calls from several
 * threads on one pool take turns; fn must not call jp_pool_for on the same
 * pool. */
void jp_pool_for(jp_pool *pool, size_t ntasks, jp_pool_fn fn, void *ctx);

#endif /* JP_POOL_H */
