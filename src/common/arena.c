/* Arena allocation: one per open file or plan, freed at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define CHUNK_MIN (64 * 1024)

struct jp_arena_chunk {
    jp_arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void jp_arena_init(jp_arena *a) {
    a->head = NULL;
    a->total = 0;
}

void jp_arena_free(jp_arena *a) {
    if (!a) return;
    jp_arena_chunk *c = a->head;
    while (c) {
        jp_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->total = 0;
}

void *jp_arena_alloc(jp_arena *a, size_t size) {
    size_t need = (size + 15u) & ~(size_t)15u;
    if (need < size) return NULL;
    jp_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < need) {
        size_t cap = need > CHUNK_MIN ? need : CHUNK_MIN;
        if (cap > SIZE_MAX - sizeof *c) return NULL;
        jp_arena_chunk *n = malloc(sizeof *n + cap);
        if (!n) return NULL;
        n->used = 0;
        n->cap = cap;
        /* A large one-off block goes behind the current chunk so the
         * current chunk's free space is not abandoned. */
        if (c && need > CHUNK_MIN) {
            n->next = c->next;
            c->next = n;
        } else {
            n->next = c;
            a->head = n;
        }
        c = n;
    }
    void *p = c->data + c->used;
    c->used += need;
    a->total += need;
    memset(p, 0, size);
    return p;
}

void *jp_arena_alloc_array(jp_arena *a, size_t n, size_t size) {
    uint64_t total;
    if (jp_mul_overflow(n, size, &total) || total > SIZE_MAX) return NULL;
    return jp_arena_alloc(a, (size_t)total);
}

char *jp_arena_strndup(jp_arena *a, const char *s, size_t n) {
    if (n == SIZE_MAX) return NULL;
    char *d = jp_arena_alloc(a, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *jp_arena_strdup(jp_arena *a, const char *s) { return jp_arena_strndup(a, s, strlen(s)); }

char *jp_arena_printf(jp_arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *d = jp_arena_alloc(a, (size_t)n + 1);
    if (!d) return NULL;
    va_start(ap, fmt);
    vsnprintf(d, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return d;
}

void jp_vec_init(jp_vec *v, size_t item_size) {
    v->items = NULL;
    v->len = v->cap = 0;
    v->size = item_size;
}

void *jp_vec_push(jp_vec *v) {
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        uint64_t bytes;
        if (cap < v->cap || jp_mul_overflow(cap, v->size, &bytes) || bytes > SIZE_MAX) return NULL;
        void *n = realloc(v->items, (size_t)bytes);
        if (!n) return NULL;
        v->items = n;
        v->cap = cap;
    }
    void *slot = (unsigned char *)v->items + v->len * v->size;
    memset(slot, 0, v->size);
    v->len++;
    return slot;
}

void jp_vec_free(jp_vec *v) {
    if (!v) return;
    free(v->items);
    v->items = NULL;
    v->len = v->cap = 0;
}
