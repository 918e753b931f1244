/* The thread pool: workers wait for a job's generation number to change,
 * claim tasks from an atomic counter, and check out; jp_pool_for returns
 * when every worker has checked out of the job.
 *
 * Waiting spins for a short while before it sleeps on a condition
 * variable: a sleeping thread takes tens of microseconds to wake on a
 * virtual machine, as long as a whole mid-sized transpose, while the
 * executor hands out jobs back to back. */
#define _POSIX_C_SOURCE 200809L
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define SPIN_NS 50000 /* how long a waiter spins before it sleeps */

struct jp_pool {
    int threads; /* including the caller */
    pthread_t *workers;
    int started; /* workers created */
    pthread_mutex_t turn; /* one jp_pool_for at a time */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_uint_fast64_t generation; /* bumped for each job, under mu */
    atomic_int busy;                 /* workers that have not checked out of the job */
    atomic_bool stop;
    jp_pool_fn fn;
    void *ctx;
    size_t ntasks;
    atomic_size_t next; /* the next unclaimed task */
};

typedef struct worker_arg {
    jp_pool *pool;
    int id;
} worker_arg;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Spins until done(p) holds or SPIN_NS have passed; whether it holds. It
 * yields the processor between rounds: the thread it waits for may have
 * been woken on this same processor. */
static bool spin_until(jp_pool *p, bool (*done)(jp_pool *, uint64_t), uint64_t arg) {
    int64_t end = now_ns() + SPIN_NS;
    for (;;) {
        for (int k = 0; k < 64; k++) {
            if (done(p, arg)) return true;
            CPU_RELAX();
        }
        if (now_ns() > end) return false;
        sched_yield();
    }
}

static bool new_job(jp_pool *p, uint64_t seen) {
    return atomic_load_explicit(&p->stop, memory_order_acquire) ||
           atomic_load_explicit(&p->generation, memory_order_acquire) != seen;
}

static bool all_out(jp_pool *p, uint64_t unused) {
    (void)unused;
    return atomic_load_explicit(&p->busy, memory_order_acquire) == 0;
}

/* Waits until done(p, arg) holds: spinning first, then asleep on cv, which
 * whoever makes it hold signals under mu. */
static void wait_until(jp_pool *p, bool (*done)(jp_pool *, uint64_t), uint64_t arg,
                       pthread_cond_t *cv) {
    if (spin_until(p, done, arg)) return;
    pthread_mutex_lock(&p->mu);
    while (!done(p, arg)) pthread_cond_wait(cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

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
    for (;;) {
        wait_until(p, new_job, seen, &p->wake);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        run_tasks(p, id);
        if (atomic_fetch_sub_explicit(&p->busy, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
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
    atomic_init(&p->generation, 0);
    atomic_init(&p->busy, 0);
    atomic_init(&p->stop, false);
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
    atomic_store_explicit(&p->stop, true, memory_order_release);
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
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->busy, p->threads - 1, memory_order_relaxed);
    /* The job is published by the generation's release; the lock pairs
     * with a worker's check before it sleeps, so no wake-up is lost. */
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, 0);
    wait_until(p, all_out, 0, &p->done);
    pthread_mutex_unlock(&p->turn);
}
