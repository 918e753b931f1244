/* The thread pool: workers sleep on a condition variable until a job's
 * generation number changes, claim tasks from an atomic counter, and check
 * out; jp_pool_for returns when every worker has checked out of the job. */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct jp_pool {
    int threads; /* including the caller */
    pthread_t *workers;
    int started; /* workers created */
    pthread_mutex_t turn; /* one jp_pool_for at a time */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation; /* bumped for each job */
    int busy;            /* workers that have not checked out of the job */
    bool stop;
    jp_pool_fn fn;
    void *ctx;
    size_t ntasks;
    atomic_size_t next; /* the next unclaimed task */
};

typedef struct worker_arg {
    jp_pool *pool;
    int id;
} worker_arg;

static void run_tasks(jp_pool *p, int worker) {
    for (;;) {
        size_t t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= p->ntasks) return;
        p->fn(p->ctx, t, worker);
    }
}

static void *worker_main(void *arg) {
    jp_pool *p = ((worker_arg *)arg)->pool;
    int id = ((worker_arg *)arg)->id;
    free(arg);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_tasks(p, id);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

jp_code jp_pool_create(jp_pool **out, int threads, jp_err *err) {
    *out = NULL;
    if (threads < 0 || threads > JP_POOL_MAX_THREADS)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL,
                          "%d threads asked for (0 for one per core, at most %d)", threads,
                          JP_POOL_MAX_THREADS);
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n < 1 ? 1 : n > JP_POOL_MAX_THREADS ? JP_POOL_MAX_THREADS : (int)n;
    }
    jp_pool *p = calloc(1, sizeof *p);
    if (!p) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "no memory for a thread pool");
    p->threads = threads;
    atomic_init(&p->next, 0);
    pthread_mutex_init(&p->turn, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (threads > 1 && !(p->workers = calloc((size_t)threads - 1, sizeof *p->workers))) {
        jp_pool_destroy(p);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "no memory for a thread pool");
    }
    for (int i = 1; i < threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (a) *a = (worker_arg){p, i};
        if (!a || pthread_create(&p->workers[i - 1], NULL, worker_main, a) != 0) {
            free(a);
            jp_pool_destroy(p);
            return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL,
                              "could not start thread %d of %d", i + 1, threads);
        }
        p->started++;
    }
    *out = p;
    return JP_OK;
}

void jp_pool_destroy(jp_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++) pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->turn);
    free(p->workers);
    free(p);
}

int jp_pool_threads(const jp_pool *p) { return p ? p->threads : 1; }

void jp_pool_for(jp_pool *p, size_t ntasks, jp_pool_fn fn, void *ctx) {
    if (!p || p->threads == 1 || ntasks <= 1) {
        for (size_t t = 0; t < ntasks; t++) fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&p->turn);
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->busy = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->turn);
}
