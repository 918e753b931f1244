/* Sinks: order and size checks shared by every writer, and the choice of
 * writer from the output's extension. */
#include <stdlib.h>
#include <string.h>

#include "sink.h"

/* Writers register here; each is a `const struct jp_sink_ops` in its file. */
static const struct jp_sink_ops *const writers[] = {
    NULL, /* placeholder so the table is never empty */
    &jp_sink_msgpack,
    &jp_sink_eqx,
    &jp_sink_npz,
    &jp_sink_safetensors,
};

static const struct jp_sink_ops *find_writer(const char *path, jp_format format) {
    size_t plen = strlen(path);
    for (size_t i = 0; i < sizeof writers / sizeof writers[0]; i++) {
        const struct jp_sink_ops *w = writers[i];
        if (!w) continue;
        if (format != JP_FORMAT_UNKNOWN) {
            if (w->format == format) return w;
            continue;
        }
        size_t elen = strlen(w->extension);
        if (plen >= elen && strcmp(path + plen - elen, w->extension) == 0) return w;
    }
    return NULL;
}

/* Begin the tensor at position s->next; one of no bytes is done at once, and
 * so on until a tensor waits for its bytes or none are left. */
static jp_code start_next(jp_sink *s, jp_err *err) {
    jp_code rc;
    for (; s->next < s->n; s->next++) {
        s->cur = s->order ? s->order[s->next] : s->next;
        if (s->ops->tensor_begin && (rc = s->ops->tensor_begin(s, err))) return rc;
        s->left = s->tensors[s->cur].nbytes;
        if (s->left) return JP_OK;
        if (s->ops->tensor_done && (rc = s->ops->tensor_done(s, err))) return rc;
    }
    return JP_OK;
}

/* A tensor's byte count must be its shape times its item size. */
static jp_code check_tensor(const jp_sink_tensor *t, jp_err *err) {
    if (!jp_dtype_size(t->dtype) || t->ndim < 0 || t->ndim > JP_MAX_DIMS)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, t->name, "no dtype, or %d dimensions",
                          (int)t->ndim);
    uint64_t want = jp_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0 || jp_mul_overflow(want, (uint64_t)t->shape[d], &want))
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, t->name, "a negative or overflowing shape");
    if (want != t->nbytes)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, t->name,
                          "%llu bytes announced; the shape and dtype need %llu",
                          (unsigned long long)t->nbytes, (unsigned long long)want);
    return JP_OK;
}

void jp_sink_abort(jp_sink *s) {
    if (!s) return;
    if (s->ops->abort) s->ops->abort(s);
    jp_outfile_abort(&s->out);
    jp_arena_free(&s->arena);
    free(s);
}

/* A sink of ops over the tensors; path NULL for one that writes no file. */
static jp_code sink_new(jp_sink **out, const struct jp_sink_ops *ops, const char *path,
                        const jp_sink_tensor *tensors, size_t n, const jp_sink_opts *opts, void *state,
                        jp_err *err) {
    jp_sink *s = calloc(1, sizeof *s);
    if (!s) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    s->out.fd = -1;
    jp_arena_init(&s->arena);
    s->ops = ops;
    s->n = n;
    s->state = state;
    if (opts) s->opts = *opts;
    s->path = jp_arena_strdup(&s->arena, path ? path : "(memory)");
    s->tensors = jp_arena_alloc_array(&s->arena, n ? n : 1, sizeof *s->tensors);
    if (!s->path || !s->tensors) {
        jp_sink_abort(s);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        jp_code rc = check_tensor(&tensors[i], err);
        if (rc) {
            jp_sink_abort(s);
            return rc;
        }
        s->tensors[i] = tensors[i];
        s->tensors[i].name = jp_arena_strdup(&s->arena, tensors[i].name);
        if (!s->tensors[i].name) {
            jp_sink_abort(s);
            return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
        }
    }
    jp_code rc = path ? jp_outfile_open(&s->out, path, err) : JP_OK;
    if (!rc && ops->begin) rc = ops->begin(s, err);
    if (!rc) rc = start_next(s, err);
    if (rc) {
        jp_sink_abort(s);
        return rc;
    }
    *out = s;
    return JP_OK;
}

jp_code jp_sink_open(jp_sink **out, const char *path, jp_format format, const jp_sink_tensor *tensors,
                     size_t n, const jp_sink_opts *opts, jp_err *err) {
    jp_err_clear(err);
    *out = NULL;
    const struct jp_sink_ops *ops = find_writer(path, format);
    if (!ops)
        return jp_err_set(err, JP_UNSUPPORTED, JP_NO_OFFSET, NULL,
                          "%s: no writer for this output (known: .safetensors .npz .msgpack .eqx)",
                          path);
    return sink_new(out, ops, path, tensors, n, opts, NULL, err);
}

/* ---- into memory: tensor i's bytes go to the caller's buffer i */

static void *memory_place(const jp_sink *s, size_t i) {
    uint8_t *const *bufs = s->state;
    bool started = s->next < s->n && i == s->cur;
    return bufs[i] + (started ? s->tensors[i].nbytes - s->left : 0);
}

static jp_code memory_write(jp_sink *s, const void *data, size_t len, jp_err *err) {
    (void)err;
    void *to = memory_place(s, s->cur);
    if (to != data) memcpy(to, data, len); /* made in place: nothing to copy */
    return JP_OK;
}

static const struct jp_sink_ops memory_ops = {
    .extension = "", .format = JP_FORMAT_UNKNOWN, .place = memory_place, .write = memory_write,
};

jp_code jp_sink_open_memory(jp_sink **out, const jp_sink_tensor *tensors, size_t n, void *const *bufs,
                            jp_err *err) {
    jp_err_clear(err);
    *out = NULL;
    return sink_new(out, &memory_ops, NULL, tensors, n, NULL, (void *)bufs, err);
}

void *jp_sink_place(const jp_sink *s, size_t i) {
    return i < s->n && s->ops->place ? s->ops->place(s, i) : NULL;
}

size_t jp_sink_expected(const jp_sink *s) { return s->next < s->n ? s->cur : s->n; }

size_t jp_sink_upcoming(const jp_sink *s, size_t *out, size_t max) {
    size_t k = 0;
    if (s->next < s->n && k < max) out[k++] = s->cur;
    for (size_t at = s->next + 1; at < s->n && k < max; at++) {
        size_t i = s->order ? s->order[at] : at;
        if (s->tensors[i].nbytes) out[k++] = i;
    }
    return k;
}

jp_code jp_sink_write(jp_sink *s, size_t i, const void *data, size_t len, jp_err *err) {
    if (s->next >= s->n || i != s->cur)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, i < s->n ? s->tensors[i].name : NULL,
                          "tensor %zu written out of order (expected %zu)", i, jp_sink_expected(s));
    if (len > s->left)
        return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, s->tensors[i].name,
                          "%zu bytes given but only %llu remain", len, (unsigned long long)s->left);
    jp_code rc = s->ops->write(s, data, len, err);
    if (rc) return rc;
    s->left -= len;
    if (s->left == 0) {
        if (s->ops->tensor_done && (rc = s->ops->tensor_done(s, err))) return rc;
        s->next++;
        if ((rc = start_next(s, err))) return rc;
    }
    return JP_OK;
}

jp_code jp_sink_commit(jp_sink *s, jp_err *err) {
    jp_code rc = JP_OK;
    if (s->next < s->n)
        rc = jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, s->tensors[s->cur].name,
                        "commit before every tensor was written");
    if (!rc && s->ops->finish) rc = s->ops->finish(s, err);
    /* A writer of several files may have committed them all itself. */
    if (!rc && s->out.tmp) rc = jp_outfile_commit(&s->out, err);
    jp_sink_abort(s); /* frees; the committed file stays */
    return rc;
}
