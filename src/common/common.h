/* Internal helpers shared by every module: error filling, checked arithmetic,
 * the bounds-checked cursor, the arena and the file mapping. */
#ifndef JP_COMMON_H
#define JP_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jaxport.h"

#if defined(__GNUC__) || defined(__clang__)
#define JP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define JP_UNUSED __attribute__((unused))
#else
#define JP_PRINTF(a, b)
#define JP_UNUSED
#endif

/* ---- errors */

/* Fill `err` (which may be NULL) and return `code`. `where` is the file or
 * member the message starts with; `member` goes to err->member. */
jp_code jp_err_set(jp_err *err, jp_code code, uint64_t offset, const char *member,
                   const char *fmt, ...) JP_PRINTF(5, 6);
void jp_err_clear(jp_err *err);
/* Prefix an already-filled message with "name: " (the file), once. */
void jp_err_prefix(jp_err *err, const char *name);

/* ---- checked arithmetic: true on overflow, like C23 ckd_* */

static inline bool jp_add_overflow(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_add_overflow(a, b, out);
}
static inline bool jp_mul_overflow(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_mul_overflow(a, b, out);
}

/* FNV-1a over a NUL-terminated string, for the name tables of indexes and archives. */
static inline uint64_t jp_hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* ---- bounds-checked cursor over untrusted bytes.
 * Every read compares the length it wants with what remains; failure is
 * sticky and reads after it return zeros, so a parser can check once after a
 * group of reads. `pos` is relative to `base`; `origin` is added for messages
 * so offsets are file offsets. */

typedef struct jp_cur {
    const uint8_t *base;
    size_t len;
    size_t pos;
    uint64_t origin;
    bool failed;
} jp_cur;

static inline jp_cur jp_cur_make(const void *base, size_t len, uint64_t origin) {
    jp_cur c = {(const uint8_t *)base, len, 0, origin, false};
    return c;
}
static inline size_t jp_cur_left(const jp_cur *c) { return c->failed ? 0 : c->len - c->pos; }
static inline uint64_t jp_cur_fileoff(const jp_cur *c) { return c->origin + c->pos; }
static inline bool jp_cur_need(jp_cur *c, size_t n) {
    if (c->failed || n > c->len - c->pos) {
        c->failed = true;
        return false;
    }
    return true;
}
static inline const uint8_t *jp_cur_take(jp_cur *c, size_t n) {
    if (!jp_cur_need(c, n)) return NULL;
    const uint8_t *p = c->base + c->pos;
    c->pos += n;
    return p;
}
static inline bool jp_cur_seek(jp_cur *c, uint64_t pos) {
    if (c->failed || pos > c->len) {
        c->failed = true;
        return false;
    }
    c->pos = (size_t)pos;
    return true;
}
static inline uint8_t jp_cur_u8(jp_cur *c) {
    const uint8_t *p = jp_cur_take(c, 1);
    return p ? p[0] : 0;
}
static inline uint64_t jp_load_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | (uint64_t)p[i];
    return v;
}
static inline uint64_t jp_load_be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | (uint64_t)p[i];
    return v;
}
static inline uint64_t jp_cur_le(jp_cur *c, int n) {
    const uint8_t *p = jp_cur_take(c, (size_t)n);
    return p ? jp_load_le(p, n) : 0;
}
static inline uint64_t jp_cur_be(jp_cur *c, int n) {
    const uint8_t *p = jp_cur_take(c, (size_t)n);
    return p ? jp_load_be(p, n) : 0;
}
static inline void jp_store_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void jp_store_be(uint8_t *p, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

/* ---- arena: one per open file or plan; freeing it frees everything */

typedef struct jp_arena_chunk jp_arena_chunk;
typedef struct jp_arena {
    jp_arena_chunk *head;
    uint64_t total;  /* bytes handed out, for limits and reports */
} jp_arena;

void jp_arena_init(jp_arena *a);
void jp_arena_free(jp_arena *a);
/* 16-byte aligned; NULL on failure or size overflow. Zeroed. */
void *jp_arena_alloc(jp_arena *a, size_t size);
void *jp_arena_alloc_array(jp_arena *a, size_t n, size_t size);
char *jp_arena_strndup(jp_arena *a, const char *s, size_t n);
char *jp_arena_strdup(jp_arena *a, const char *s);
char *jp_arena_printf(jp_arena *a, const char *fmt, ...) JP_PRINTF(2, 3);

/* A growable array whose storage comes from the heap (not the arena), for
 * building lists of unknown length. */
typedef struct jp_vec {
    void *items;
    size_t len, cap, size;
} jp_vec;

void jp_vec_init(jp_vec *v, size_t item_size);
void *jp_vec_push(jp_vec *v);  /* zeroed slot, NULL on failure */
void jp_vec_free(jp_vec *v);
#define JP_VEC_AT(v, type, i) (((type *)(v)->items)[i])

/* ---- read-only file mapping */

typedef struct jp_map {
    const uint8_t *data;
    size_t len;
    int fd;
} jp_map;

jp_code jp_map_open(jp_map *m, const char *path, jp_err *err);
void jp_map_close(jp_map *m);

/* ---- output files that appear whole or not at all.
 * Data go to a temporary file beside the target (same folder, so the rename
 * is atomic); commit flushes, fsyncs and renames it over the target; abort
 * (or a failed commit) removes it. The target is never opened for writing,
 * so a failure leaves no partial file and never touches an existing one. */

typedef struct jp_outfile {
    int fd;
    char *path, *tmp;   /* heap copies */
    unsigned char *buf; /* write buffer */
    size_t buflen, bufcap;
    uint64_t written;   /* bytes accepted so far: the current file offset */
    bool created;       /* the temporary file exists */
} jp_outfile;

jp_code jp_outfile_open(jp_outfile *f, const char *path, jp_err *err);
jp_code jp_outfile_write(jp_outfile *f, const void *data, size_t len, jp_err *err);
/* Write at an absolute offset already passed (patching a header); flushes first. */
jp_code jp_outfile_pwrite(jp_outfile *f, const void *data, size_t len, uint64_t offset, jp_err *err);
/* Flush, sync and close now, keeping the temporary name for a later commit
 * (which then only renames) or abort: a writer of many files holds one
 * buffer and descriptor at a time. */
jp_code jp_outfile_finish(jp_outfile *f, jp_err *err);
jp_code jp_outfile_commit(jp_outfile *f, jp_err *err);
void jp_outfile_abort(jp_outfile *f);
/* Temporary files still open, removed by jp_outfile_cleanup_all(); a signal
 * handler of the caller (the CLI on SIGINT) may call it: it only unlinks. */
void jp_outfile_cleanup_all(void);

#endif /* JP_COMMON_H */
