/* Strided permute + cast: every element of a strided source is read once,
 * cast, and written once to its place in the destination.
 *
 * The axes are put in destination order, size-1 axes dropped, and
 * neighbours that are contiguous in both source and destination merged: a
 * contiguous copy becomes one run (a memcpy), a Linear weight a 2-d transpose,
 * an (O,I,kh,kw) -> (kh,kw,I,O) conv kernel a transpose of the (kh*kw) x O
 * plane for each I. Then one of three walks:
 *   rows    the innermost axis is contiguous in both: cast runs of it;
 *   tiles   another axis is contiguous in the source: transpose blocks of
 *           that plane (SIMD), casting through a block-sized scratch; when
 *           blocks are staged and that axis is short (kh*kw), blocks run
 *           across it and the axis that continues it in the source (I);
 *   gather  neither: gather strided runs, cast, scatter.
 * The work is cut into items (a run chunk or a block, each with its own
 * destination bytes) and items into tasks for the pool, so the output is the
 * same whatever the thread count. */
#include "kernels.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "cast.h"
#include "transpose.h"

#define RUN 256                   /* elements per gather pass */
#define SUB 32                    /* rows of a block made in scratch at a time */
#define ROW_BYTES 256             /* most destination bytes per row of a block */
#define TILE_BYTES (256 * 1024)   /* source bytes per cached block, about */
#define STREAM_ROWS 64            /* destination rows per streamed block */
#define STREAM_MIN (8u << 20)     /* destinations this large bypass the cache */
#define CHUNK_BYTES (256 * 1024)  /* source + destination bytes per run chunk */
#define TASK_BYTES (512 * 1024)   /* bytes moved per pool task, about */
#define PARALLEL_MIN (1u << 20)   /* tensors moving fewer bytes stay on one thread (a job
                                     handed to threads already spinning costs about a
                                     microsecond; a 64x64x7x7 conv kernel, 1.6 MB moved,
                                     runs 1.7 times as fast on two) */

typedef enum { WALK_ROWS, WALK_TILES, WALK_GATHER } walk;

/* The problem after normalisation: nd axes in destination order, strides in
 * bytes; the innermost is nd - 1. */
typedef struct plan {
    int nd;
    int64_t n[JP_MAX_DIMS], ss[JP_MAX_DIMS], ds[JP_MAX_DIMS];
    const unsigned char *src;
    unsigned char *dst;
    jp_cast cast;
    walk walk;
    int a;              /* tiles: the axis contiguous in the source */
    int g;              /* tiles: an axis that continues a in the source (grouped), or -1 */
    int64_t na;         /* tiles: rows along a, times n[g] when grouped */
    int64_t ba, bi;     /* elements per block (tiles) or chunk along a and the inner axis */
    int64_t nba, nbi;   /* blocks or chunks along a and the inner axis */
    uint64_t items;
    jp_transpose_fn tr; /* tiles: the block transpose, in the size it moves */
    bool fused;         /* tr casts as it goes (float32 -> bfloat16) */
    bool cast_first;    /* tiles with a narrowing cast: cast source runs, then transpose */
    bool stream;        /* tiles: write whole lines around the cache */
    bool stage;         /* tiles: make blocks in scratch, then write them out by rows */
    int64_t step;       /* staged tiles: source rows made in scratch at a time */
    int64_t ahead;      /* staged tiles: how many source rows ahead to prefetch */
    int64_t shift;      /* streamed: destination elements before its first 64-byte boundary */
    int64_t shift_a;    /* streamed tiles: the same for the source along a */
} plan;

/* One item's place: its source and destination, and its extent along a
 * (ra, tiles only; from row a0 of the na) and the inner axis (ci). */
typedef struct place {
    const unsigned char *s;
    unsigned char *d;
    int64_t a0, ra, ci;
} place;

/* Casts the run of n elements at s (source stride ss bytes) to d (stride ds);
 * false when a value does not fit. */
static bool run_cast(const plan *p, unsigned char *d, int64_t ds, const unsigned char *s, int64_t ss,
                     int64_t n) {
    const jp_cast *c = &p->cast;
    int64_t ssz = (int64_t)c->src_size, dsz = (int64_t)c->dst_size;
    if (ss == ssz && ds == dsz) return jp_cast_run(c, d, s, (size_t)n) == (size_t)n;
    _Alignas(64) unsigned char in[RUN * 16], out[RUN * 16];
    for (int64_t done = 0; done < n;) {
        int64_t k = n - done < RUN ? n - done : RUN;
        for (int64_t i = 0; i < k; i++) memcpy(in + i * ssz, s + (done + i) * ss, (size_t)ssz);
        if (jp_cast_run(c, out, in, (size_t)k) != (size_t)k) return false;
        for (int64_t i = 0; i < k; i++) memcpy(d + (done + i) * ds, out + i * dsz, (size_t)dsz);
        done += k;
    }
    return true;
}

/* Writes the staged rows of a block (width bytes each) to their places.
 * Grouped rows run along a within each index of g: a run of rows the same
 * distance apart for each. */
static void put_block(const plan *p, const place *at, const unsigned char *stage, int64_t width) {
    int64_t ds = p->ds[p->a];
    if (p->g < 0) {
        jp_put_rows(at->d, ds, stage, width, (int)at->ra, (size_t)width, p->stream);
        return;
    }
    int64_t n = p->n[p->a], k = at->a0 % n;
    unsigned char *d = at->d;
    for (int64_t r = 0; r < at->ra;) {
        int64_t run = n - k < at->ra - r ? n - k : at->ra - r;
        jp_put_rows(d, ds, stage + r * width, width, (int)run, (size_t)width, p->stream);
        r += run;
        d += p->ds[p->g] - k * ds; /* row 0 along a of the next index of g */
        k = 0;
    }
}

/* One block of the tiles walk: ra rows along a by ci columns along the
 * inner axis (at most ROW_BYTES of destination), at s and d.
 *
 * Without a cast (or with the fused one) the block is made in scratch (16
 * KiB, in L1) when staged, a few source rows at a time while the next few
 * (in this block or the next) are prefetched, and then written out by rows (around
 * the cache when streamed): each destination row gets ROW_BYTES (four whole
 * lines) in a row and only a few source rows are read at once, the two
 * things the memory system wants (one line per row, or 32 rows read at
 * once, run at half the speed). Otherwise the block transpose writes the
 * destination directly.
 *
 * With another cast, each group of SUB rows is made in scratch (transposed
 * and cast), then written out a row at a time. */
static bool block(const plan *p, const place *at, const place *next) {
    const jp_cast *c = &p->cast;
    int64_t ssz = (int64_t)c->src_size, dsz = (int64_t)c->dst_size, ds = p->ds[p->a],
            ss = p->ss[p->nd - 1], ra = at->ra, ci = at->ci;
    const unsigned char *s = at->s;
    unsigned char *d = at->d;
    if (c->copy || p->fused) {
        if (!p->stage) {
            p->tr(d, ds, s, ss, (int)ra, (int)ci);
            return true;
        }
        _Alignas(64) unsigned char stage[STREAM_ROWS * ROW_BYTES];
        int64_t step = p->step;
        for (int64_t c0 = 0; c0 < ci; c0 += step) {
            /* The rows `ahead` further on, in this block or the next. */
            int64_t f = c0 + p->ahead;
            const place *pf = f < ci ? at : next;
            if (pf && f >= ci) f -= ci;
            if (pf && f < pf->ci)
                jp_prefetch_rows(pf->s + f * ss, ss, (int)(pf->ci - f < step ? pf->ci - f : step),
                                 (size_t)(pf->ra * ssz));
            int64_t cn = ci - c0 < step ? ci - c0 : step;
            p->tr(stage + c0 * dsz, ci * dsz, s + c0 * ss, ss, (int)ra, (int)cn);
        }
        put_block(p, at, stage, ci * dsz);
        return true;
    }
    _Alignas(64) unsigned char out[SUB * ROW_BYTES], mid[SUB * ROW_BYTES]; /* mid: the other dtype, same count */
    for (int64_t r0 = 0; r0 < ra; r0 += SUB) {
        int64_t rn = ra - r0 < SUB ? ra - r0 : SUB;
        const unsigned char *sr = s + r0 * ssz;
        if (p->cast_first) {
            for (int64_t k = 0; k < ci; k++)
                if (jp_cast_run(c, mid + k * rn * dsz, sr + k * ss, (size_t)rn) != (size_t)rn)
                    return false;
            p->tr(out, ROW_BYTES, mid, rn * dsz, (int)rn, (int)ci);
        } else {
            p->tr(mid, ci * ssz, sr, ss, (int)rn, (int)ci);
            for (int64_t r = 0; r < rn; r++)
                if (jp_cast_run(c, out + r * ROW_BYTES, mid + r * ci * ssz, (size_t)ci) != (size_t)ci)
                    return false;
        }
        jp_put_rows(d + r0 * ds, ds, out, ROW_BYTES, (int)rn, (size_t)(ci * dsz), p->stream);
    }
    return true;
}

/* Where item number `it` is: its place on every axis, then its block or run.
 * Consecutive staged blocks go along a, so each of a block's source rows
 * goes on where the last block's left off; other blocks go along the inner
 * axis. */
static place locate(const plan *p, uint64_t it) {
    int inner = p->nd - 1;
    int64_t ki, ka;
    if (p->stage) {
        ka = (int64_t)(it % (uint64_t)p->nba);
        it /= (uint64_t)p->nba;
        ki = (int64_t)(it % (uint64_t)p->nbi);
        it /= (uint64_t)p->nbi;
    } else {
        ki = (int64_t)(it % (uint64_t)p->nbi);
        it /= (uint64_t)p->nbi;
        ka = (int64_t)(it % (uint64_t)p->nba);
        it /= (uint64_t)p->nba;
    }
    int64_t so = 0, dof = 0;
    for (int x = inner - 1; x >= 0; x--) {
        if (p->walk == WALK_TILES && (x == p->a || x == p->g)) continue;
        int64_t k = (int64_t)(it % (uint64_t)p->n[x]);
        it /= (uint64_t)p->n[x];
        so += k * p->ss[x];
        dof += k * p->ds[x];
    }
    int64_t first = p->shift ? p->shift : p->bi, i0 = ki ? first + (ki - 1) * p->bi : 0;
    place at;
    at.ci = ki ? p->bi : first;
    if (at.ci > p->n[inner] - i0) at.ci = p->n[inner] - i0;
    so += i0 * p->ss[inner];
    dof += i0 * p->ds[inner];
    at.ra = 1;
    at.a0 = 0;
    if (p->walk == WALK_TILES) {
        int64_t first_a = p->shift_a ? p->shift_a : p->ba,
                a0 = ka ? first_a + (ka - 1) * p->ba : 0;
        at.a0 = a0;
        at.ra = ka ? p->ba : first_a;
        if (at.ra > p->na - a0) at.ra = p->na - a0;
        so += a0 * p->ss[p->a]; /* grouped rows too: g continues a in the source */
        if (p->g >= 0)
            dof += a0 / p->n[p->a] * p->ds[p->g] + a0 % p->n[p->a] * p->ds[p->a];
        else
            dof += a0 * p->ds[p->a];
    }
    at.s = p->src + so;
    at.d = p->dst + dof;
    return at;
}

typedef struct job {
    const plan *p;
    uint64_t per; /* items per task */
    atomic_bool failed;
} job;

static void task(void *ctx, size_t t, int worker) {
    (void)worker;
    job *j = ctx;
    const plan *p = j->p;
    uint64_t lo = (uint64_t)t * j->per, hi = lo + j->per < p->items ? lo + j->per : p->items;
    bool ok = true;
    if (p->walk != WALK_TILES) {
        int inner = p->nd - 1;
        for (uint64_t it = lo; it < hi && ok; it++) {
            place at = locate(p, it);
            ok = run_cast(p, at.d, p->ds[inner], at.s, p->ss[inner], at.ci);
        }
    } else {
        place at = locate(p, lo);
        for (uint64_t it = lo; it < hi && ok; it++) {
            place next;
            bool more = it + 1 < hi;
            if (more) next = locate(p, it + 1);
            ok = block(p, &at, more ? &next : NULL);
            if (more) at = next;
        }
    }
    if (!ok) atomic_store(&j->failed, true);
    if (p->stream) jp_stream_fence();
}

/* How many elements of size esize along axis `along` (of n elements, with
 * the axis `with` when that continues it, else -1) of one side (base and
 * its byte strides st) come before the first 64-byte line boundary, when
 * every line of elements along it starts at the same place in a cache
 * line; 0 when they do not, or when there is no such boundary inside. */
static int64_t line_shift(const unsigned char *base, int64_t esize, const int64_t *st,
                          const plan *p, int along, int with, int64_t n) {
    uintptr_t mis = (uintptr_t)base & 63;
    if (!mis || mis % (uintptr_t)esize) return 0;
    for (int x = 0; x < p->nd; x++)
        if (x != along && x != with && st[x] % 64) return 0;
    int64_t shift = (int64_t)(64 - mis) / esize;
    return shift < n ? shift : 0;
}

/* Chooses the walk and its blocks. */
static void choose_walk(plan *p, uint64_t numel) {
    int inner = p->nd - 1;
    int64_t ssz = (int64_t)p->cast.src_size, dsz = (int64_t)p->cast.dst_size;
    p->walk = WALK_GATHER;
    p->stream = false;
    p->g = -1;
    if (p->ds[inner] == dsz && p->ss[inner] == ssz) p->walk = WALK_ROWS;
    for (int x = 0; x < inner && p->walk == WALK_GATHER && p->ds[inner] == dsz; x++)
        if (p->ss[x] == ssz) {
            p->a = x;
            p->walk = WALK_TILES;
        }
    p->nba = 1;
    p->ba = 1;
    if (p->walk != WALK_TILES) {
        p->bi = CHUNK_BYTES / (ssz + dsz);
    } else {
        p->fused = !p->cast.copy && p->cast.src == JP_F32 && p->cast.dst == JP_BF16;
        /* A block is ROW_BYTES of destination wide; a staged one is
         * STREAM_ROWS long, another long enough along a to read about
         * TILE_BYTES. Streamed blocks are staged, and so are cached ones
         * whose source rows are a multiple of 512 bytes apart: the block
         * transpose reads all its rows at once, and 64 such rows fall in 8
         * or fewer sets of the L1 cache, which holds 8 lines a set, so
         * they would evict each other (a 1024 x 1024 float32 transpose ran
         * at half the speed). */
        p->stream = numel * (uint64_t)dsz >= STREAM_MIN;
        p->stage = p->stream || p->ss[inner] % 512 == 0;
        p->na = p->n[p->a];
        /* Staged rows along a too short for whole blocks (a 3x3 conv
         * kernel's nine) are grouped with the axis that continues them in
         * the source: blocks then run across both, each staged row going
         * to its own place (a 512x512x3x3 float32 kernel went 2.5 times as
         * fast). Blocks made in place are better left as they are: there
         * the extra pass through the stage costs more than it saves. */
        if (p->stage && (p->cast.copy || p->fused) && p->n[p->a] < STREAM_ROWS)
            for (int x = 0; x < inner && p->g < 0; x++)
                if (x != p->a && p->ss[x] == p->n[p->a] * ssz) {
                    p->g = x;
                    p->na *= p->n[x];
                }
        p->bi = ROW_BYTES / dsz;
        p->ba = p->stage ? STREAM_ROWS : TILE_BYTES / (p->bi * ssz);
        /* A streamed source's blocks along a start on its 64-byte lines
         * (numpy's large arrays start 16 bytes into one): otherwise each
         * row of a block reads five lines for four lines' worth. */
        p->shift_a = p->stream ? line_shift(p->src, ssz, p->ss, p, p->a, p->g, p->na) : 0;
        p->nba = (p->shift_a > 0) + (p->na - p->shift_a + p->ba - 1) / p->ba;
        p->cast_first = !p->cast.copy && !p->fused && dsz < ssz;
        p->tr = p->fused ? jp_transpose_f32_bf16()
                         : jp_transpose_for((size_t)(p->cast_first || p->cast.copy ? dsz : ssz));
        /* A staged block is made as many source rows at a time as the
         * micro-tile reads: 8 (16 for the 16-bit copy). */
        p->step = p->cast.copy && dsz == 2 ? 16 : 8;
        /* While one step is made, the rows `ahead` further on are
         * prefetched: the next step's, or for the 16-bit copy (whose blocks
         * read 128 source rows of 128 bytes) the same step's of the next
         * block. Measured, each is the faster for its kind; prefetching
         * farther ahead than needed loses lines to eviction, rows a multiple
         * of 4 KiB apart sharing a few sets of the L2 cache. */
        p->ahead = p->cast.copy && dsz == 2 ? p->bi : p->step;
    }
    /* A streamed destination's blocks along the inner axis start on its
     * 64-byte lines. */
    p->shift = p->stream ? line_shift(p->dst, dsz, p->ds, p, inner, -1, p->n[inner]) : 0;
    p->nbi = (p->shift > 0) + (p->n[inner] - p->shift + p->bi - 1) / p->bi;
    p->items = (uint64_t)p->nba * (uint64_t)p->nbi;
    for (int x = 0; x < inner; x++)
        if (!(p->walk == WALK_TILES && (x == p->a || x == p->g))) p->items *= (uint64_t)p->n[x];
}

/* Finds the first element, in the source's row-major order, that does not
 * fit, and says which and why. */
static jp_code range_error(const jp_cast *c, const unsigned char *src, int ndim,
                           const int64_t *shape, const int64_t *src_strides, jp_err *err) {
    int64_t idx[JP_MAX_DIMS] = {0};
    unsigned char out[16];
    for (;;) {
        const unsigned char *s = src;
        for (int a = 0; a < ndim; a++) s += idx[a] * src_strides[a] * (int64_t)c->src_size;
        if (jp_cast_run(c, out, s, 1) != 1) {
            char where[JP_MAX_DIMS * 22 + 3], value[48];
            size_t w = 0;
            where[w++] = '[';
            for (int a = 0; a < ndim; a++)
                w += (size_t)snprintf(where + w, sizeof where - w, a ? ", %lld" : "%lld",
                                      (long long)idx[a]);
            snprintf(where + w, sizeof where - w, "]");
            jp_cast_format(c->src, s, value, sizeof value);
            const char *range = jp_cast_range_text(c->dst);
            return jp_err_set(err, JP_RANGE, JP_NO_OFFSET, NULL,
                              "element %s is %s, which %s cannot hold%s%s%s", where, value,
                              jp_dtype_numpy_name(c->dst), *range ? " (" : "", range,
                              *range ? ")" : "");
        }
        int a = ndim - 1;
        for (; a >= 0; a--) {
            if (++idx[a] < shape[a]) break;
            idx[a] = 0;
        }
        if (a < 0) break;
    }
    /* The walk saw a failure, so the scan finds it; reaching here is a bug. */
    return jp_err_set(err, JP_RANGE, JP_NO_OFFSET, NULL, "a value does not fit %s",
                      jp_dtype_numpy_name(c->dst));
}

jp_code jp_permute_cast_strided(void *dst, jp_dtype dst_dt, const int64_t *dst_strides,
                                const void *src, jp_dtype src_dt, int ndim, const int64_t *shape,
                                const int64_t *src_strides, const int *perm, jp_pool *pool,
                                jp_err *err) {
    plan p;
    memset(&p, 0, sizeof p);
    jp_code rc = jp_cast_plan(&p.cast, dst_dt, src_dt, err);
    if (rc) return rc;
    if (ndim < 0 || ndim > JP_MAX_DIMS)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "%d dimensions (at most %d)", ndim,
                          JP_MAX_DIMS);
    bool seen[JP_MAX_DIMS] = {false};
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "dimension %d has size %lld", d,
                              (long long)shape[d]);
        int a = perm ? perm[d] : d;
        if (a < 0 || a >= ndim || seen[a])
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL,
                              "perm is not a permutation of 0..%d", ndim - 1);
        seen[a] = true;
    }
    /* Element strides of both sides, the defaults being dense row-major. */
    int64_t sst[JP_MAX_DIMS], dst_st[JP_MAX_DIMS];
    uint64_t numel = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        sst[d] = src_strides ? src_strides[d] : (int64_t)numel;
        if (jp_mul_overflow(numel, (uint64_t)shape[d], &numel) || numel > (uint64_t)INT64_MAX / 16)
            return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "the element count overflows");
    }
    numel = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        dst_st[d] = dst_strides ? dst_strides[d] : (int64_t)numel;
        numel *= (uint64_t)shape[perm ? perm[d] : d];
    }
    if (numel == 0) return JP_OK;
    /* Destination order, bytes, size-1 axes dropped, mergeable neighbours merged. */
    int64_t ssz = (int64_t)p.cast.src_size, dsz = (int64_t)p.cast.dst_size;
    for (int d = 0; d < ndim; d++) {
        int a = perm ? perm[d] : d;
        int64_t n = shape[a], ss = sst[a] * ssz, ds = dst_st[d] * dsz;
        if (n == 1) continue;
        if (p.nd > 0 && p.ss[p.nd - 1] == ss * n && p.ds[p.nd - 1] == ds * n) {
            p.n[p.nd - 1] *= n;
            p.ss[p.nd - 1] = ss;
            p.ds[p.nd - 1] = ds;
            continue;
        }
        p.n[p.nd] = n;
        p.ss[p.nd] = ss;
        p.ds[p.nd] = ds;
        p.nd++;
    }
    if (p.nd == 0) { /* one element */
        p.n[0] = 1;
        p.ss[0] = ssz;
        p.ds[0] = dsz;
        p.nd = 1;
    }
    p.src = src;
    p.dst = dst;
    choose_walk(&p, numel);
    job j = {.p = &p, .per = p.items};
    atomic_init(&j.failed, false);
    uint64_t bytes = numel * (uint64_t)(ssz + dsz);
    size_t ntasks = 1;
    if (jp_pool_threads(pool) > 1 && bytes >= PARALLEL_MIN) {
        uint64_t want = bytes / TASK_BYTES, least = 4 * (uint64_t)jp_pool_threads(pool);
        want = want < least ? least : want;
        j.per = (p.items + want - 1) / want;
        ntasks = (size_t)((p.items + j.per - 1) / j.per);
    }
    jp_pool_for(pool, ntasks, task, &j);
    if (!atomic_load(&j.failed)) return JP_OK;
    return range_error(&p.cast, src, ndim, shape, sst, err);
}

jp_code jp_permute_cast(void *dst, jp_dtype dst_dt, const void *src, jp_dtype src_dt, int ndim,
                        const int64_t *shape, const int64_t *src_strides, const int *perm,
                        jp_err *err) {
    return jp_permute_cast_strided(dst, dst_dt, NULL, src, src_dt, ndim, shape, src_strides, perm,
                                   NULL, err);
}
