/* The executor: each leaf of a plan as views of its source tensors, then
 * tile by tile through the kernels into the sink (see exec.h for the bound
 * on memory and the one case that goes past it). */
#define _GNU_SOURCE
#include "exec.h"

#include <sys/mman.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../kernels/kernels.h"

/* Where source tensors come from: an index, or an array the caller keeps. */
typedef struct source {
    const jp_index *ix;
    const jp_tensor *arr;
    size_t n;
} source;

static const jp_tensor *source_at(const source *s, size_t i) {
    return s->ix ? jp_index_at(s->ix, i) : &s->arr[i];
}

/* One leaf made ready: its parts as views in the joined tensor's axes. */
typedef struct leaf_job {
    const jp_plan_leaf *leaf;
    int nd;                       /* axes of the joined tensor */
    int64_t joined[JP_MAX_DIMS];  /* its shape */
    int64_t dst[JP_MAX_DIMS];     /* the permuted (destination) shape */
    int perm[JP_MAX_DIMS];
    int cat, dst_cat;             /* the concat axis, in joined and destination axes */
    uint64_t bytes;               /* dense leaf bytes */
    uint64_t in;                  /* bytes its parts read */
    bool direct;                  /* the source bytes are the leaf bytes */
} leaf_job;

/* A small leaf done in a batch: its one part's view, made on a thread of
 * the pool into its own place in the tile buffer, or in the sink's memory
 * when the sink keeps tensors there. */
typedef struct batch_item {
    const jp_plan_leaf *leaf;
    size_t tensor;                /* the sink's index */
    jp_view v;
    int nd, perm[JP_MAX_DIMS];
    uint64_t bytes, in, off;      /* off: its place in the tile buffer */
    unsigned char *dst;           /* where it is made */
    bool mapped;
    jp_code rc;
    jp_err err;
} batch_item;

typedef struct runner {
    const jp_plan *plan;
    source src;
    jp_sink *sink;
    jp_exec_opts o;
    jp_err *err;
    size_t *leaf_of;              /* sink tensor -> plan leaf */
    jp_view *parts;               /* the current leaf's parts (capacity cap) */
    int64_t *cat_off;             /* where each part starts along the concat axis */
    jp_view *tile;                /* the parts a tile reads */
    uint32_t *tile_part;          /* which part each of those is */
    size_t cap;
    bool *mapped;                 /* part k views the file's mapping (its pages may be dropped) */
    void **owned;                 /* parts made dense because a reshape needed a copy */
    size_t nowned;
    unsigned char *buf;           /* the tile buffer, reused for every leaf */
    size_t bufcap;
    unsigned char *stage;         /* aligned copies of misaligned source tiles */
    size_t stagecap;
    batch_item *batch;            /* BATCH_MAX items, made on first use */
    uint64_t done, total;
    struct timespec last;
    jp_exec_stats stats;
} runner;

/* ---------------------------------------------------------------- messages */

static const char *part_source_name(const runner *r, const jp_plan_leaf *l, size_t k) {
    if (k >= l->nparts || l->parts[k].from.source >= r->src.n) return "?";
    return source_at(&r->src, l->parts[k].from.source)->name;
}

/* Rewrite a filled error as "<leaf> (from <source>): <what>", member = leaf. */
static jp_code leaf_error(const runner *r, const jp_plan_leaf *l, size_t part, jp_code rc) {
    jp_err *err = r->err;
    if (!err) return rc;
    char body[JP_ERR_MSG_MAX];
    memcpy(body, err->msg, sizeof body);
    const char *what = body;
    /* A writer's message may already start with the leaf's name. */
    size_t n = strlen(l->name);
    if (n && strncmp(what, l->name, n) == 0 && what[n] == ':' && what[n + 1] == ' ') what += n + 2;
    snprintf(err->member, sizeof err->member, "%s", l->name);
    if (l->nparts == 0)
        snprintf(err->msg, sizeof err->msg, "%s: %s", l->name, what);
    else if (l->nparts == 1 || part < l->nparts)
        snprintf(err->msg, sizeof err->msg, "%s (from %s): %s", l->name,
                 part_source_name(r, l, part < l->nparts ? part : 0), what);
    /* An error of the whole leaf or of a concat: every source counts. */
    else
        snprintf(err->msg, sizeof err->msg, "%s (from %s and %u more): %s", l->name,
                 part_source_name(r, l, 0), l->nparts - 1, what);
    err->code = rc;
    return rc;
}

static jp_code leaf_fail(const runner *r, const jp_plan_leaf *l, size_t part, jp_code code,
                         const char *fmt, ...) JP_PRINTF(5, 6);
static jp_code leaf_fail(const runner *r, const jp_plan_leaf *l, size_t part, jp_code code,
                         const char *fmt, ...) {
    if (!r->err) return code;
    char body[JP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    jp_err_set(r->err, code, JP_NO_OFFSET, NULL, "%s", body);
    return leaf_error(r, l, part, code);
}

/* ---------------------------------------------------------------- progress */

static double seconds_since(const struct timespec *a, const struct timespec *b) {
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) * 1e-9;
}

/* Count bytes done; report when progress_ms has passed, and at the end. */
static jp_code advance(runner *r, const jp_plan_leaf *l, uint64_t bytes) {
    r->done += bytes;
    if (r->o.progress) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int32_t ms = r->o.progress_ms ? r->o.progress_ms : JP_EXEC_PROGRESS_MS;
        if (ms < 0 || seconds_since(&r->last, &now) * 1000.0 >= ms || r->done == r->total) {
            r->last = now;
            r->o.progress(r->o.progress_ctx, r->done, r->total, l->name);
        }
    }
    return JP_OK;
}

static jp_code check_interrupt(const runner *r, const jp_plan_leaf *l) {
    if (r->o.interrupt && *r->o.interrupt)
        return leaf_fail(r, l, (size_t)-1, JP_INTERRUPTED, "interrupted; no file was written");
    return JP_OK;
}

/* ---------------------------------------------------------------- one leaf */

/* Plain copies go to the sink in pieces of this size: measured faster than
 * bigger ones, which write() takes from cold mapped pages more slowly. */
#define DIRECT_BYTES (1u << 20)

/* The whole pages inside [p, p + n). */
static bool page_span(const void *p, size_t n, void **start, size_t *len) {
    static long page;
    if (!page) page = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~((uintptr_t)page - 1);
    if (b <= a) return false;
    *start = (void *)a;
    *len = b - a;
    return true;
}

/* Map in, or drop from this process, the pages a view of the file's mapping
 * reaches. Dropped pages stay in the page cache, and a later read maps them
 * again: this only keeps resident memory from growing to the file's size. */
static void advise_view(const jp_view *v, int advice) {
    uint64_t numel;
    int64_t lo, hi;
    if (!v->data || jp_strided_extent(v->ndim, v->shape, v->strides, &numel, &lo, &hi, NULL) || !numel) return;
    int64_t isz = (int64_t)jp_dtype_size(v->dtype);
    void *span;
    size_t len;
    if (page_span((const unsigned char *)v->data + lo * isz, (size_t)((hi - lo + 1) * isz), &span, &len))
        (void)madvise(span, len, advice);
}


static bool grow_parts(runner *r, size_t n) {
    if (n <= r->cap) return true;
    size_t cap = r->cap ? r->cap : 4;
    while (cap < n) cap *= 2;
    jp_view *p = realloc(r->parts, cap * sizeof *p);
    if (p) r->parts = p;
    int64_t *o = realloc(r->cat_off, cap * sizeof *o);
    if (o) r->cat_off = o;
    jp_view *t = realloc(r->tile, cap * sizeof *t);
    if (t) r->tile = t;
    uint32_t *tp = realloc(r->tile_part, cap * sizeof *tp);
    if (tp) r->tile_part = tp;
    void **ow = realloc(r->owned, cap * sizeof *ow);
    if (ow) r->owned = ow;
    bool *mp = realloc(r->mapped, cap * sizeof *mp);
    if (mp) r->mapped = mp;
    if (!p || !o || !t || !tp || !ow || !mp) return false;
    r->cap = cap;
    return true;
}

static void free_owned(runner *r) {
    for (size_t i = 0; i < r->nowned; i++) free(r->owned[i]);
    r->nowned = 0;
}

static bool same_shape(int n, const int64_t *a, int m, const int64_t *b) {
    if (n != m) return false;
    for (int d = 0; d < n; d++)
        if (a[d] != b[d]) return false;
    return true;
}

/* Dense row-major, axes of size 1 aside. */
static bool is_dense(const jp_view *v) {
    int64_t want = 1;
    for (int d = v->ndim - 1; d >= 0; d--) {
        if (v->shape[d] == 0) return true;
        if (v->shape[d] == 1) continue;
        if (v->strides[d] != want) return false;
        want *= v->shape[d];
    }
    return true;
}

static uint64_t view_numel(const jp_view *v) {
    uint64_t n = 1;
    for (int d = 0; d < v->ndim; d++) n *= (uint64_t)v->shape[d];
    return n;
}

/* v with a dense row-major copy of its elements at data. */
static jp_view dense_view(const jp_view *v, void *data) {
    jp_view d = *v;
    d.data = data;
    int64_t numel = 1;
    for (int a = v->ndim - 1; a >= 0; a--) {
        d.strides[a] = numel;
        numel *= v->shape[a];
    }
    return d;
}

/* A source tensor, or a slice of one, as a view. */
static jp_code ref_view(runner *r, const jp_plan_leaf *l, size_t k, const jp_plan_ref *ref,
                        jp_view *out) {
    if (ref->source >= r->src.n)
        return leaf_fail(r, l, (size_t)-1, JP_ARGUMENT, "part %zu names source %u of %zu", k,
                         ref->source, r->src.n);
    *out = jp_view_of_tensor(source_at(&r->src, ref->source));
    if (ref->axis < 0) return JP_OK;
    jp_view v = *out;
    jp_code rc = jp_view_slice(out, &v, ref->axis, ref->start, ref->len, r->err);
    return rc ? leaf_error(r, l, k, rc) : JP_OK;
}

/* Part k's view v plus its addend and its constant, into a buffer of
 * r->owned: each cast to float64 in row-major order, added, and rounded
 * once to v's dtype (a recurrent gate's two biases, Haiku's forget gate). */
static jp_code add_plus(runner *r, const jp_plan_leaf *l, size_t k, jp_view *v) {
    const jp_plan_part *p = &l->parts[k];
    jp_view b = *v;
    jp_code rc = p->has_plus ? ref_view(r, l, k, &p->plus, &b) : JP_OK;
    if (rc) return rc;
    uint64_t n = view_numel(v);
    if (view_numel(&b) != n)
        return leaf_fail(r, l, k, JP_SHAPE, "part %zu's addend holds %llu elements, the part %llu", k,
                         (unsigned long long)view_numel(&b), (unsigned long long)n);
    if (!jp_dtype_is_castable_float(v->dtype) || !jp_dtype_is_castable_float(b.dtype))
        return leaf_fail(r, l, k, JP_DTYPE, "part %zu adds %s to %s; only floats add", k,
                         p->has_plus ? jp_dtype_numpy_name(b.dtype) : "a constant",
                         jp_dtype_numpy_name(v->dtype));
    size_t isz = jp_dtype_size(v->dtype) > jp_dtype_size(b.dtype) ? jp_dtype_size(v->dtype)
                                                                  : jp_dtype_size(b.dtype);
    double *sum = malloc((size_t)n * 2 * sizeof *sum + 1);
    unsigned char *tmp = malloc((size_t)n * isz + 1), *out = malloc((size_t)n * jp_dtype_size(v->dtype) + 1);
    if (!sum || !tmp || !out) rc = JP_NO_MEMORY;
    const jp_view *in[2] = {v, &b};
    int64_t len = (int64_t)n;
    for (int t = 0; t < 1 + p->has_plus && !rc; t++) {
        jp_view d = dense_view(in[t], tmp);
        if (!(rc = jp_view_copy_dense(tmp, in[t], r->o.pool, r->err)))
            rc = jp_permute_cast_strided(sum + t * n, JP_F64, NULL, d.data, d.dtype, 1, &len, NULL, NULL,
                                         r->o.pool, r->err);
    }
    for (uint64_t i = 0; i < n && !rc; i++) {
        if (p->has_plus) sum[i] += sum[n + i];
        sum[i] += p->add;
    }
    if (!rc)
        rc = jp_permute_cast_strided(out, v->dtype, NULL, sum, JP_F64, 1, &len, NULL, NULL, r->o.pool,
                                     r->err);
    free(sum);
    free(tmp);
    if (rc) {
        free(out);
        return rc == JP_NO_MEMORY ? leaf_fail(r, l, k, rc, "cannot add part %zu's addend", k)
                                  : leaf_error(r, l, k, rc);
    }
    r->owned[r->nowned++] = out;
    *v = dense_view(v, out);
    return JP_OK;
}

/* Part k of leaf l as a view: its source, sliced, plus its addend, reshaped. */
static jp_code part_view(runner *r, const jp_plan_leaf *l, size_t k, jp_view *out) {
    const jp_plan_part *p = &l->parts[k];
    jp_err *err = r->err;
    jp_view v;
    jp_code rc = ref_view(r, l, k, &p->from, &v);
    if (rc) return rc;
    /* never memory a caller lent, nor a sum of ours */
    bool sum = p->has_plus || p->add != 0.0;
    r->mapped[k] = r->src.ix && (source_at(&r->src, p->from.source)->flags & JP_TENSOR_MAPPED) && !sum;
    if (sum && (rc = add_plus(r, l, k, &v))) return rc;
    if (p->ndim < 0 || p->ndim > JP_MAX_DIMS)
        return leaf_fail(r, l, k, JP_ARGUMENT, "part %zu has %d dimensions", k, (int)p->ndim);
    if (same_shape(v.ndim, v.shape, p->ndim, p->shape)) {
        *out = v;
        return JP_OK;
    }
    int64_t shape[JP_MAX_DIMS];
    memcpy(shape, p->shape, sizeof shape);
    rc = jp_view_reshape(out, &v, p->ndim, shape, err);
    if (rc != JP_UNSUPPORTED) return rc ? leaf_error(r, l, k, rc) : JP_OK;
    /* The strides cannot take the new shape: make the slice dense first. */
    void *dense = malloc(view_numel(&v) * jp_dtype_size(v.dtype) + 1);
    if (!dense) return leaf_fail(r, l, k, JP_NO_MEMORY, "cannot copy a view to reshape it");
    r->owned[r->nowned++] = dense;
    r->mapped[k] = false;
    if ((rc = jp_view_copy_dense(dense, &v, r->o.pool, err))) return leaf_error(r, l, k, rc);
    jp_view d = dense_view(&v, dense);
    memcpy(shape, p->shape, sizeof shape);
    rc = jp_view_reshape(out, &d, p->ndim, shape, err);
    return rc ? leaf_error(r, l, k, rc) : JP_OK;
}

/* Views of every part, the joined and destination shapes, and the checks
 * that they add up to the leaf. */
static jp_code prepare(runner *r, const jp_plan_leaf *l, leaf_job *j) {
    memset(j, 0, sizeof *j);
    j->leaf = l;
    free_owned(r);
    if (l->nparts == 0 || !l->parts)
        return leaf_fail(r, l, (size_t)-1, JP_MATCH, "no source tensor was paired with this leaf");
    if (!grow_parts(r, l->nparts))
        return leaf_fail(r, l, (size_t)-1, JP_NO_MEMORY, "out of memory");
    jp_code rc;
    uint64_t in = 0;
    for (size_t k = 0; k < l->nparts; k++) {
        if ((rc = part_view(r, l, k, &r->parts[k]))) return rc;
        uint64_t numel = 1;
        for (int d = 0; d < r->parts[k].ndim; d++) numel *= (uint64_t)r->parts[k].shape[d];
        in += numel * jp_dtype_size(r->parts[k].dtype);
    }
    int nd = j->nd = r->parts[0].ndim;
    j->cat = l->nparts > 1 ? l->cat_axis : 0;
    if (l->nparts > 1 && (j->cat < 0 || j->cat >= nd))
        return leaf_fail(r, l, (size_t)-1, JP_ARGUMENT, "concat axis %d of parts with %d dimensions",
                         (int)l->cat_axis, nd);
    /* A flipped axis is the same view walked backwards: start at its last
     * element with the stride negated (a transposed conv's taps). */
    if (l->flip >> nd || (l->nparts > 1 && (l->flip >> j->cat & 1u)))
        return leaf_fail(r, l, (size_t)-1, JP_ARGUMENT, "flip names an axis beyond the parts or their concat axis");
    for (size_t k = 0; l->flip && k < l->nparts; k++) {
        jp_view *v = &r->parts[k];
        for (int d = 0; d < nd; d++) {
            if (!(l->flip >> d & 1u) || v->shape[d] == 0) continue;
            v->data = (const uint8_t *)v->data +
                      (v->shape[d] - 1) * v->strides[d] * (int64_t)jp_dtype_size(v->dtype);
            v->strides[d] = -v->strides[d];
        }
    }
    memcpy(j->joined, r->parts[0].shape, sizeof j->joined);
    int64_t at = 0;
    for (size_t k = 0; k < l->nparts; k++) {
        const jp_view *v = &r->parts[k];
        bool ok = v->ndim == nd;
        for (int d = 0; ok && d < nd; d++) ok = d == j->cat || v->shape[d] == j->joined[d];
        if (!ok)
            return leaf_fail(r, l, k, JP_SHAPE,
                             "part %zu's shape does not match part 0's except along axis %d", k, j->cat);
        r->cat_off[k] = at;
        if (nd) at += v->shape[j->cat];
    }
    if (nd) j->joined[j->cat] = at;
    /* perm must be a permutation of the joined axes. */
    unsigned seen = 0;
    for (int d = 0; d < nd; d++) {
        int a = l->perm[d];
        if (a < 0 || a >= nd || (seen >> a & 1u))
            return leaf_fail(r, l, (size_t)-1, JP_ARGUMENT, "perm is not a permutation of %d axes", nd);
        seen |= 1u << a;
        j->perm[d] = a;
        j->dst[d] = j->joined[a];
        if (a == j->cat) j->dst_cat = d;
    }
    uint64_t numel = 1, leaf_numel = 1;
    for (int d = 0; d < nd; d++) numel *= (uint64_t)j->dst[d];
    bool bad = l->ndim < 0 || l->ndim > JP_MAX_DIMS;
    for (int d = 0; !bad && d < l->ndim; d++)
        bad = l->shape[d] < 0 || jp_mul_overflow(leaf_numel, (uint64_t)l->shape[d], &leaf_numel);
    if (bad || numel != leaf_numel)
        return leaf_fail(r, l, (size_t)-1, JP_SHAPE,
                         "the parts hold %llu elements but the leaf's shape needs %llu",
                         (unsigned long long)numel, (unsigned long long)leaf_numel);
    size_t dsize = jp_dtype_size(l->dtype);
    if (!dsize) return leaf_fail(r, l, (size_t)-1, JP_DTYPE, "the leaf has no dtype");
    j->bytes = numel * dsize;
    j->in = in;
    /* Direct: one part of the leaf's dtype whose permuted view is dense. */
    if (l->nparts == 1 && r->parts[0].dtype == l->dtype) {
        jp_view pv = r->parts[0];
        for (int d = 0; d < nd; d++) {
            pv.shape[d] = r->parts[0].shape[j->perm[d]];
            pv.strides[d] = r->parts[0].strides[j->perm[d]];
        }
        j->direct = is_dense(&pv);
    }
    return JP_OK;
}

static jp_code sink_write(runner *r, const jp_plan_leaf *l, size_t i, const void *p, size_t n) {
    jp_code rc = jp_sink_write(r->sink, i, p, n, r->err);
    return rc ? leaf_error(r, l, (size_t)-1, rc) : advance(r, l, n);
}

static jp_code run_direct(runner *r, const leaf_job *j, size_t i) {
    const unsigned char *p = r->parts[0].data;
    uint64_t chunk = r->o.tile_bytes && r->o.tile_bytes < DIRECT_BYTES ? r->o.tile_bytes : DIRECT_BYTES;
    bool mapped = r->mapped[0]; /* not a buffer of the index, the caller or ours */
    for (uint64_t o = 0; o < j->bytes; o += chunk) {
        jp_code rc = check_interrupt(r, j->leaf);
        if (rc) return rc;
        size_t n = (size_t)(j->bytes - o < chunk ? j->bytes - o : chunk);
        void *span;
        size_t span_len;
        bool whole = mapped && page_span(p + o, n, &span, &span_len);
        /* Map the chunk's pages in one call rather than one fault at a time. */
        if (whole) (void)madvise(span, span_len, MADV_POPULATE_READ);
        if ((rc = sink_write(r, j->leaf, i, p + o, n))) return rc;
        /* Written: drop the pages from this process (they stay in the page
         * cache), so resident memory does not grow to the file's size. */
        if (whole) (void)madvise(span, span_len, MADV_DONTNEED);
    }
    r->stats.bytes_direct += j->bytes;
    return JP_OK;
}

/* Narrow every part to joined axis a, elements [s, s + len), into r->tile
 * (the first call of a tile starts from the parts themselves). */
static jp_code narrow(runner *r, const leaf_job *j, size_t *count, bool first, int a, int64_t s,
                      int64_t len) {
    size_t kept = 0;
    size_t n = first ? j->leaf->nparts : *count;
    for (size_t q = 0; q < n; q++) {
        size_t k = first ? q : r->tile_part[q];
        jp_view v = first ? r->parts[k] : r->tile[q];
        int64_t lo = s, hi = s + len;
        if (a == j->cat) {
            int64_t plo = r->cat_off[k], phi = plo + r->parts[k].shape[a];
            lo = lo > plo ? lo : plo;
            hi = hi < phi ? hi : phi;
            if (lo >= hi) continue;
            lo -= plo;
            hi -= plo;
        }
        jp_code rc = jp_view_slice(&r->tile[kept], &v, a, lo, hi - lo, r->err);
        if (rc) return leaf_error(r, j->leaf, k, rc);
        r->tile_part[kept++] = (uint32_t)k;
    }
    *count = kept;
    return JP_OK;
}

/* The bytes a dense copy of v takes in r->stage: copies start 16 bytes apart. */
static size_t staged_bytes(const jp_view *v) {
    return ((size_t)view_numel(v) * jp_dtype_size(v->dtype) + 15) & ~(size_t)15;
}

/* Make every misaligned view of the tile a dense aligned copy in r->stage. */
static jp_code stage_tile(runner *r, const leaf_job *j, size_t count) {
    size_t need = 0;
    for (size_t q = 0; q < count; q++)
        if (jp_view_misaligned(&r->tile[q])) need += staged_bytes(&r->tile[q]);
    if (!need) return JP_OK;
    if (need > r->stagecap) {
        free(r->stage);
        r->stage = malloc(need);
        r->stagecap = r->stage ? need : 0;
        if (!r->stage) return leaf_fail(r, j->leaf, (size_t)-1, JP_NO_MEMORY, "cannot allocate a staging buffer");
    }
    unsigned char *at = r->stage;
    for (size_t q = 0; q < count; q++) {
        jp_view *v = &r->tile[q];
        if (!jp_view_misaligned(v)) continue;
        jp_code rc = jp_view_copy_dense(at, v, r->o.pool, r->err);
        if (rc) return leaf_error(r, j->leaf, r->tile_part[q], rc);
        *v = dense_view(v, at);
        at += staged_bytes(v);
    }
    return JP_OK;
}

/* Tiles and batched leaves start on 64-byte lines: a kernel whose
 * destination rows share their first and last lines with the next does
 * more work for them (a 64x64x7x7 float32 conv kernel, whose rows are 256
 * bytes, was made 10 to 15% slower 16 bytes off a line). */
#define LINE 64
static size_t line_up(size_t n) { return (n + LINE - 1) & ~(size_t)(LINE - 1); }

/* r->buf holding at least want bytes (its contents are not kept), on a line. */
static jp_code grow_buf(runner *r, const jp_plan_leaf *l, size_t want) {
    if (want <= r->bufcap) return JP_OK;
    free(r->buf);
    r->buf = aligned_alloc(LINE, line_up(want ? want : 1));
    r->bufcap = r->buf ? want : 0;
    return r->buf ? JP_OK : leaf_fail(r, l, (size_t)-1, JP_NO_MEMORY, "cannot allocate a tile buffer");
}

/* The bytes a tile (or a batch) may hold. */
static uint64_t tile_budget(const runner *r) {
    return r->o.tile_bytes ? r->o.tile_bytes : JP_EXEC_TILE_BYTES;
}

static jp_code run_tiled(runner *r, const leaf_job *j, size_t i) {
    const jp_plan_leaf *l = j->leaf;
    int nd = j->nd;
    uint64_t budget = tile_budget(r);
    uint64_t dsize = jp_dtype_size(l->dtype), esize = dsize;
    /* The budget holds a tile of the leaf and of its sources (staged when
     * misaligned), whichever item is bigger. */
    for (size_t k = 0; k < l->nparts; k++)
        if (jp_dtype_size(r->parts[k].dtype) > esize) esize = jp_dtype_size(r->parts[k].dtype);
    if (budget < esize) budget = esize; /* at least one element a tile */
    /* The tiling axis t: the first whose single index fits the budget. */
    int t = 0;
    uint64_t inner = 1; /* elements of one index of axis t */
    if (nd > 0) {
        for (t = 0; t < nd; t++) {
            inner = 1;
            for (int d = t + 1; d < nd; d++) inner *= (uint64_t)j->dst[d];
            if (inner * esize <= budget) break;
        }
    }
    int64_t rows = nd ? (int64_t)(budget / (inner * esize) ? budget / (inner * esize) : 1) : 1;
    if (nd && rows > j->dst[t]) rows = j->dst[t];
    inner *= dsize; /* from here: bytes of the leaf */
    /* Tiles are made in r->buf, or in place when the sink keeps the leaf in memory. */
    bool in_place = jp_sink_place(r->sink, i) != NULL;
    jp_code grown = in_place ? JP_OK : grow_buf(r, l, (size_t)(inner * (uint64_t)rows));
    if (grown) return grown;
    int64_t idx[JP_MAX_DIMS] = {0};
    for (;;) {
        for (int64_t r0 = 0; r0 < (nd ? j->dst[t] : 1); r0 += rows) {
            jp_code rc = check_interrupt(r, l);
            if (rc) return rc;
            int64_t rl = nd ? (j->dst[t] - r0 < rows ? j->dst[t] - r0 : rows) : 1;
            size_t count = 0;
            bool first = true;
            for (int d = 0; d < t && !rc; d++, first = false)
                rc = narrow(r, j, &count, first, j->perm[d], idx[d], 1);
            if (!rc && nd) rc = narrow(r, j, &count, first, j->perm[t], r0, rl);
            else if (!rc) {
                r->tile[0] = r->parts[0];
                r->tile_part[0] = 0;
                count = 1;
            }
            if (rc || (rc = stage_tile(r, j, count))) return rc;
            unsigned char *out = in_place ? jp_sink_place(r->sink, i) : r->buf;
            if (count == 1) {
                const jp_view *v = &r->tile[0];
                /* A dense piece of the file: its pages in one call, dropped after. */
                bool span = r->mapped[r->tile_part[0]] && is_dense(v);
                if (span) advise_view(v, MADV_POPULATE_READ);
                rc = jp_permute_cast_strided(out, l->dtype, NULL, v->data, v->dtype, nd, v->shape,
                                             v->strides, j->perm, r->o.pool, r->err);
                if (rc) return leaf_error(r, l, r->tile_part[0], rc);
                if (span) advise_view(v, MADV_DONTNEED);
            } else {
                rc = jp_concat_cast(out, l->dtype, j->dst_cat, count, r->tile, j->perm, r->o.pool, r->err);
                if (rc) return leaf_error(r, l, (size_t)-1, rc);
            }
            if ((rc = sink_write(r, l, i, out, (size_t)(inner * (uint64_t)rl)))) return rc;
        }
        /* The next index of the axes before t, odometer style. */
        int d = t - 1;
        while (d >= 0 && ++idx[d] == j->dst[d]) idx[d--] = 0;
        if (d < 0) return JP_OK;
    }
}

/* ---------------------------------------------------------------- batches */

/* Leaves of one part this small that need a transpose or a cast are made
 * several at a time, one per thread of the pool, then written in order:
 * each alone is too small to split, and one after another they would leave
 * the other threads idle (a model's biases, norms and small kernels). */
#define BATCH_MAX 64
#define BATCH_LEAF_BYTES (1u << 20)

static bool batchable(const runner *r, const leaf_job *j) {
    return !j->direct && j->leaf->nparts == 1 && r->nowned == 0 && !jp_view_misaligned(&r->parts[0]) &&
           j->bytes <= BATCH_LEAF_BYTES && j->bytes <= tile_budget(r);
}

static void batch_task(void *ctx, size_t k, int worker) {
    (void)worker;
    batch_item *it = &((batch_item *)ctx)[k];
    bool span = it->mapped && is_dense(&it->v);
    if (span) advise_view(&it->v, MADV_POPULATE_READ);
    it->rc = jp_permute_cast_strided(it->dst, it->leaf->dtype, NULL, it->v.data, it->v.dtype,
                                     it->nd, it->v.shape, it->v.strides, it->perm, NULL, &it->err);
}

static void batch_add(runner *r, const leaf_job *j, size_t tensor, batch_item *it, uint64_t off) {
    it->leaf = j->leaf;
    it->tensor = tensor;
    it->v = r->parts[0];
    it->nd = j->nd;
    memcpy(it->perm, j->perm, sizeof it->perm);
    it->bytes = j->bytes;
    it->in = j->in;
    it->off = off;
    it->mapped = r->mapped[0];
}

/* Leaf j (sink tensor i, batchable) and the batchable leaves the sink wants
 * right after it, up to a tile's bytes: made over the pool, then written. */
static jp_code run_batch(runner *r, const leaf_job *j, size_t i) {
    if (!r->batch && !(r->batch = calloc(BATCH_MAX, sizeof *r->batch)))
        return leaf_fail(r, j->leaf, (size_t)-1, JP_NO_MEMORY, "out of memory");
    uint64_t budget = tile_budget(r);
    size_t up[BATCH_MAX], nup = jp_sink_upcoming(r->sink, up, BATCH_MAX), count = 1;
    uint64_t total = j->bytes;
    batch_add(r, j, i, &r->batch[0], 0);
    /* The next leaves, while they are batchable and fit. What the plan and
     * the sink tell (one part, the bytes) is checked before the views are
     * made; a leaf that fails a later check is prepared again in its turn
     * (an error in it is reported then). */
    for (size_t q = 1; q < nup; q++) {
        leaf_job next;
        const jp_plan_leaf *l = &r->plan->leaves[r->leaf_of[up[q]]];
        uint64_t bytes = r->sink->tensors[up[q]].nbytes, off = line_up((size_t)total);
        if (l->nparts != 1 || bytes > BATCH_LEAF_BYTES || off + bytes > budget) break;
        if (prepare(r, l, &next) || !batchable(r, &next) || next.bytes != bytes) {
            jp_err_clear(r->err);
            break;
        }
        batch_add(r, &next, up[q], &r->batch[count++], off);
        total = off + bytes;
    }
    free_owned(r);
    bool in_place = jp_sink_place(r->sink, i) != NULL;
    jp_code grown = in_place ? JP_OK : grow_buf(r, j->leaf, (size_t)total);
    if (grown) return grown;
    for (size_t k = 0; k < count; k++)
        r->batch[k].dst = in_place ? jp_sink_place(r->sink, r->batch[k].tensor) : r->buf + r->batch[k].off;
    jp_pool_for(r->o.pool, count, batch_task, r->batch);
    for (size_t k = 0; k < count; k++) {
        batch_item *it = &r->batch[k];
        if (it->rc) {
            if (r->err) *r->err = it->err;
            return leaf_error(r, it->leaf, 0, it->rc);
        }
        jp_code rc = sink_write(r, it->leaf, it->tensor, it->dst, (size_t)it->bytes);
        if (rc) return rc;
        if (it->mapped) advise_view(&it->v, MADV_DONTNEED);
        r->stats.tensors++;
        r->stats.bytes_in += it->in;
        r->stats.bytes_out += it->bytes;
        r->stats.batched++;
    }
    return JP_OK;
}

/* ---------------------------------------------------------------- runs */

jp_code jp_exec_sink_tensors(const jp_plan *plan, bool skip_missing, jp_sink_tensor **out,
                             size_t *n, jp_err *err) {
    *out = NULL;
    *n = 0;
    jp_sink_tensor *ts = calloc(plan->n ? plan->n : 1, sizeof *ts);
    if (!ts) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < plan->n; i++) {
        const jp_plan_leaf *l = &plan->leaves[i];
        if ((l->flags & JP_LEAF_MISSING) || l->nparts == 0) {
            if (skip_missing) continue;
            free(ts);
            return jp_err_set(err, JP_MATCH, JP_NO_OFFSET, l->name,
                              "no source tensor was paired with this leaf");
        }
        if (l->ndim < 0 || l->ndim > JP_MAX_DIMS) {
            free(ts);
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, l->name, "%d dimensions", (int)l->ndim);
        }
        jp_sink_tensor *t = &ts[m++];
        t->name = l->name;
        t->dtype = l->dtype;
        t->ndim = l->ndim;
        uint64_t bytes = jp_dtype_size(l->dtype);
        for (int d = 0; d < l->ndim; d++) {
            t->shape[d] = l->shape[d];
            if (l->shape[d] < 0 || jp_mul_overflow(bytes, (uint64_t)l->shape[d], &bytes)) {
                free(ts);
                return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, l->name, "a negative or overflowing shape");
            }
        }
        t->nbytes = bytes;
    }
    *out = ts;
    *n = m;
    return JP_OK;
}

static jp_code run(runner *r) {
    const jp_plan *plan = r->plan;
    jp_sink *sink = r->sink;
    jp_code rc = JP_OK;
    /* Sink tensor i is the i-th leaf that is not left out. */
    r->leaf_of = calloc(plan->n ? plan->n : 1, sizeof *r->leaf_of);
    if (!r->leaf_of) return jp_err_set(r->err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < plan->n; i++) {
        const jp_plan_leaf *l = &plan->leaves[i];
        if ((l->flags & JP_LEAF_MISSING) || l->nparts == 0) {
            if (r->o.skip_missing) continue;
            return jp_err_set(r->err, JP_MATCH, JP_NO_OFFSET, l->name,
                              "no source tensor was paired with this leaf");
        }
        r->leaf_of[m++] = i;
    }
    if (m != sink->n)
        return jp_err_set(r->err, JP_ARGUMENT, JP_NO_OFFSET, NULL,
                          "the sink was opened for %zu tensors but the plan has %zu leaves to write",
                          sink->n, m);
    for (size_t i = 0; i < m; i++) {
        const jp_plan_leaf *l = &plan->leaves[r->leaf_of[i]];
        const jp_sink_tensor *t = &sink->tensors[i];
        if (t->dtype != l->dtype || !same_shape(t->ndim, t->shape, l->ndim, l->shape))
            return jp_err_set(r->err, JP_ARGUMENT, JP_NO_OFFSET, l->name,
                              "the sink's tensor %zu (%s) differs from the leaf in dtype or shape", i,
                              t->name);
        r->total += t->nbytes;
    }
    clock_gettime(CLOCK_MONOTONIC, &r->last);
    for (size_t i; (i = jp_sink_expected(sink)) < m;) {
        const jp_plan_leaf *l = &plan->leaves[r->leaf_of[i]];
        leaf_job j;
        if ((rc = check_interrupt(r, l)) || (rc = prepare(r, l, &j))) return rc;
        if (j.bytes != sink->tensors[i].nbytes)
            return leaf_fail(r, l, (size_t)-1, JP_ARGUMENT, "%llu bytes computed, the sink expects %llu",
                             (unsigned long long)j.bytes, (unsigned long long)sink->tensors[i].nbytes);
        if (jp_pool_threads(r->o.pool) > 1 && batchable(r, &j)) {
            if ((rc = run_batch(r, &j, i))) return rc;
            continue;
        }
        r->stats.bytes_in += j.in;
        rc = j.direct ? run_direct(r, &j, i) : run_tiled(r, &j, i);
        if (rc) return rc;
        for (size_t k = 0; !j.direct && k < l->nparts; k++)
            if (r->mapped[k]) advise_view(&r->parts[k], MADV_DONTNEED);
        r->stats.tensors++;
        r->stats.bytes_out += j.bytes;
    }
    /* Tensors of no bytes are done by the sink without a write. */
    for (size_t i = 0; i < m; i++)
        if (sink->tensors[i].nbytes == 0) r->stats.tensors++;
    return JP_OK;
}

static jp_code run_and_finish(const jp_plan *plan, source src, jp_sink *sink,
                              const jp_exec_opts *opts, jp_err *err) {
    jp_err_clear(err);
    runner r;
    memset(&r, 0, sizeof r);
    r.plan = plan;
    r.src = src;
    r.sink = sink;
    r.err = err;
    if (opts) r.o = *opts;
    jp_code rc = run(&r);
    if (!rc) {
        if (r.o.progress && r.total == 0) r.o.progress(r.o.progress_ctx, 0, 0, "");
        rc = jp_sink_commit(sink, err);
    } else {
        jp_sink_abort(sink);
    }
    free_owned(&r);
    free(r.owned);
    free(r.mapped);
    free(r.parts);
    free(r.cat_off);
    free(r.tile);
    free(r.tile_part);
    free(r.leaf_of);
    free(r.buf);
    free(r.stage);
    free(r.batch);
    if (r.o.stats) *r.o.stats = r.stats;
    return rc;
}

jp_code jp_exec_run(const jp_plan *plan, const jp_index *src, jp_sink *sink,
                    const jp_exec_opts *opts, jp_err *err) {
    source s = {src, NULL, jp_index_count(src)};
    return run_and_finish(plan, s, sink, opts, err);
}

jp_code jp_exec_run_tensors(const jp_plan *plan, const jp_tensor *src, size_t n, jp_sink *sink,
                            const jp_exec_opts *opts, jp_err *err) {
    source s = {NULL, src, n};
    return run_and_finish(plan, s, sink, opts, err);
}

jp_code jp_exec_to_file(const jp_plan *plan, const jp_index *src, const char *path,
                        jp_format format, const jp_sink_opts *sink_opts,
                        const jp_exec_opts *opts, jp_err *err) {
    jp_sink_tensor *ts;
    size_t n;
    jp_code rc = jp_exec_sink_tensors(plan, opts && opts->skip_missing, &ts, &n, err);
    if (rc) return rc;
    jp_sink *sink;
    jp_sink_opts so = sink_opts ? *sink_opts : (jp_sink_opts){0};
    if (!so.pool && opts) so.pool = opts->pool; /* the executor's threads help the writer too */
    rc = jp_sink_open(&sink, path, format, ts, n, &so, err);
    free(ts);
    if (rc) return rc;
    return jp_exec_run(plan, src, sink, opts, err);
}
