/* safetensors writer: the bytes the `safetensors` package writes
 * (safetensors.numpy.save_file, safetensors.torch.save_file) for the same
 * tensors and metadata; safetensors.c draws the layout.
 *
 * The reference (tensor.rs, `prepare`) sorts tensors by dtype, in the
 * reverse order of its Dtype enum (U64 I64 F64 C64 F32 ... BOOL: larger
 * items first, so each stays aligned after a header padded to 8 bytes), then
 * by name (bytewise), and writes their bytes back to back in that order;
 * the sink asks for the tensors in it. The header is compact JSON as
 * serde_json writes it:
 *   {"__metadata__":{"k":"v",...},"name":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},...}
 * with "__metadata__" only when there are metadata (the reference writes
 * them in the random order of a Rust HashMap; here they keep their order,
 * so one key, or a file copied from a safetensors file, is byte-identical),
 * padded with spaces to a multiple of 8 bytes. A float4_e2m1fn_x2 tensor of
 * shape [..., k] is "F4" of shape [..., 2k], as safetensors.torch writes it.
 *
 * With opts->shard_bytes, tensors are split as huggingface_hub's
 * split_torch_state_dict_into_shards does, greedily in the order given: a
 * tensor larger than the limit gets a shard of its own at once, the others
 * fill the current shard until the next would overflow it. One shard is an
 * ordinary file at the path; several are written as save_torch_state_dict
 * names them, beside the path:
 *   model-00001-of-0000N.safetensors ...  each with opts->meta as __metadata__
 *   model.safetensors.index.json          json.dump(index, indent=2):
 *   {"metadata": {"total_size": bytes}, "weight_map": {"name": "model-00001-of-0000N.safetensors", ...}}
 * Every file is written to a temporary name; they are renamed only when all
 * are complete, the index last, and removed again if any rename fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "sink.h"

#define SUFFIX ".safetensors"

/* ---------------------------------------------------------------- text */

typedef struct strbuf {
    char *p;
    size_t len, cap;
    bool failed;
} strbuf;

static void sb_put(strbuf *b, const void *s, size_t n) {
    if (b->failed) return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > ((size_t)JP_ST_MAX_HEADER << 2)) {
                b->failed = true;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_str(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(strbuf *b, uint64_t v) {
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    sb_put(b, buf, (size_t)n);
}

/* A JSON string as serde_json writes it: control characters escaped (short
 * forms where JSON has them, else \u00xx), everything else as is. */
static void sb_json_serde(strbuf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *esc = NULL;
        switch (*p) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default: break;
        }
        if (esc) {
            sb_str(b, esc);
        } else if (*p < 0x20) {
            char u[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            sb_put(b, u, 6);
        } else {
            sb_put(b, p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* A JSON string as Python's json.dump writes it (ensure_ascii): printable
 * ASCII as is, short escapes, everything else \uxxxx (UTF-16 pairs above
 * U+FFFF). `s` is valid UTF-8. */
static void sb_json_python(strbuf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp = *p;
        size_t k = cp < 0x80 ? 0 : cp < 0xe0 ? 1 : cp < 0xf0 ? 2 : 3;
        if (k) cp &= 0x3fu >> k;
        for (size_t j = 1; j <= k; j++) cp = (cp << 6) | (p[j] & 0x3fu);
        p += k + 1;
        const char *esc = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '\b' ? "\\b"
                        : cp == '\f' ? "\\f" : cp == '\n' ? "\\n" : cp == '\r' ? "\\r"
                        : cp == '\t' ? "\\t" : NULL;
        if (esc) {
            sb_str(b, esc);
            continue;
        }
        if (cp >= 0x20 && cp < 0x7f) {
            char ch = (char)cp;
            sb_put(b, &ch, 1);
            continue;
        }
        uint32_t units[2] = {cp, 0};
        int nu = 1;
        if (cp > 0xffff) {
            units[0] = 0xd800 + ((cp - 0x10000) >> 10);
            units[1] = 0xdc00 + ((cp - 0x10000) & 0x3ff);
            nu = 2;
        }
        for (int u = 0; u < nu; u++) {
            char e[6] = {'\\', 'u', hex[units[u] >> 12], hex[(units[u] >> 8) & 15],
                         hex[(units[u] >> 4) & 15], hex[units[u] & 15]};
            sb_put(b, e, 6);
        }
    }
    sb_put(b, "\"", 1);
}

/* ---------------------------------------------------------------- planning */

typedef struct shard {
    jp_outfile out;
    size_t first, count;   /* its tensors: s->order[first .. first+count) */
    uint64_t bytes;
    const char *path;      /* in the arena */
    bool committed;        /* renamed into place (undone if a later one fails) */
} shard;

typedef struct state {
    uint64_t *begin;       /* each tensor's data offset in its file */
    uint32_t *shard_of;    /* each tensor's shard */
    shard *shards;
    size_t nshards;        /* 0 or 1: a plain file in s->out */
    uint64_t total;
} state;

typedef struct sort_key {
    size_t idx;
    uint32_t shard;
    int rank;
    const char *name;
} sort_key;

static int by_name(const void *pa, const void *pb) {
    return strcmp(((const sort_key *)pa)->name, ((const sort_key *)pb)->name);
}

/* The reference's order within a file: dtype rank descending, then name. */
static int by_file_order(const void *pa, const void *pb) {
    const sort_key *a = pa, *b = pb;
    if (a->shard != b->shard) return a->shard < b->shard ? -1 : 1;
    if (a->rank != b->rank) return a->rank > b->rank ? -1 : 1;
    return strcmp(a->name, b->name);
}

static bool utf8(const char *s) { return jp_st_utf8_valid((const uint8_t *)s, strlen(s), NULL); }

static jp_code check_input(jp_sink *s, sort_key *keys, jp_err *err) {
    for (size_t i = 0; i < s->n; i++) {
        const jp_sink_tensor *t = &s->tensors[i];
        keys[i].idx = i;
        keys[i].rank = jp_st_dtype_rank(t->dtype);
        keys[i].name = t->name;
        if (keys[i].rank < 0)
            return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, t->name, "safetensors has no dtype for %s",
                              jp_dtype_name(t->dtype));
        if (t->dtype == JP_F4_E2M1FN_X2 && t->ndim == 0)
            return jp_err_set(err, JP_DTYPE, JP_NO_OFFSET, t->name,
                              "a 0-d float4_e2m1fn_x2 is half a byte short of a whole F4 pair in safetensors");
        if (strcmp(t->name, "__metadata__") == 0 || !utf8(t->name))
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, t->name,
                              "a tensor name must be UTF-8 and not __metadata__");
    }
    for (size_t m = 0; m < s->opts.nmeta; m++) {
        const jp_meta *me = &s->opts.meta[m];
        if (!me->key || !me->value || !utf8(me->key) || !utf8(me->value))
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "metadata must be UTF-8 strings");
        for (size_t j = 0; j < m; j++)
            if (strcmp(s->opts.meta[j].key, me->key) == 0)
                return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "metadata key %s given twice",
                                  me->key);
    }
    qsort(keys, s->n, sizeof *keys, by_name);
    for (size_t i = 1; i < s->n; i++)
        if (strcmp(keys[i - 1].name, keys[i].name) == 0)
            return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, keys[i].name, "the name %s is given twice",
                              keys[i].name);
    return JP_OK;
}

/* huggingface_hub's greedy split in the order given; shards are numbered
 * in the order they are closed (an oversized tensor's at once). */
static size_t split(jp_sink *s, state *st, uint32_t *group_of, uint32_t *closed_as) {
    uint64_t max = s->opts.shard_bytes;
    const uint32_t none = UINT32_MAX;
    uint32_t cur = none, ngroups = 0, nclosed = 0;
    uint64_t cur_size = 0;
    for (size_t i = 0; i < s->n; i++) {
        uint64_t size = s->tensors[i].nbytes;
        if (size > max) {
            group_of[i] = ngroups;
            closed_as[ngroups++] = nclosed++;
            continue;
        }
        if (cur != none && cur_size + size > max) {
            closed_as[cur] = nclosed++;
            cur = none;
        }
        if (cur == none) {
            cur = ngroups++;
            cur_size = 0;
        }
        group_of[i] = cur;
        cur_size += size;
    }
    if (cur != none) closed_as[cur] = nclosed++;
    for (size_t i = 0; i < s->n; i++) st->shard_of[i] = closed_as[group_of[i]];
    return nclosed;
}

/* The header of the tensors at order positions [first, first+count). */
static jp_code header(jp_sink *s, size_t first, size_t count, strbuf *b, jp_err *err) {
    state *st = s->state;
    sb_put(b, "{", 1);
    if (s->opts.nmeta) {
        sb_str(b, "\"__metadata__\":{");
        for (size_t m = 0; m < s->opts.nmeta; m++) {
            if (m) sb_put(b, ",", 1);
            sb_json_serde(b, s->opts.meta[m].key);
            sb_put(b, ":", 1);
            sb_json_serde(b, s->opts.meta[m].value);
        }
        sb_put(b, "}", 1);
    }
    for (size_t k = first; k < first + count; k++) {
        size_t i = s->order[k];
        const jp_sink_tensor *t = &s->tensors[i];
        if (k > first || s->opts.nmeta) sb_put(b, ",", 1);
        sb_json_serde(b, t->name);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, jp_st_dtype_name(t->dtype));
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_put(b, ",", 1);
            uint64_t dim = (uint64_t)t->shape[d];
            if (t->dtype == JP_F4_E2M1FN_X2 && d == t->ndim - 1) dim *= 2;
            sb_u64(b, dim);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_u64(b, st->begin[i]);
        sb_put(b, ",", 1);
        sb_u64(b, st->begin[i] + t->nbytes);
        sb_str(b, "]}");
    }
    sb_put(b, "}", 1);
    while (!b->failed && b->len % JP_ST_LEN_BYTES) sb_put(b, " ", 1);
    if (b->failed || b->len > JP_ST_MAX_HEADER)
        return jp_err_set(err, b->failed ? JP_NO_MEMORY : JP_LIMIT, JP_NO_OFFSET, NULL,
                          "the header would exceed the %u bytes safetensors reads", JP_ST_MAX_HEADER);
    return JP_OK;
}

static jp_code write_header(jp_sink *s, jp_outfile *out, size_t first, size_t count, jp_err *err) {
    strbuf b = {0};
    jp_code rc = header(s, first, count, &b, err);
    uint8_t len[JP_ST_LEN_BYTES];
    jp_store_le(len, b.len, JP_ST_LEN_BYTES);
    if (!rc) rc = jp_outfile_write(out, len, sizeof len, err);
    if (!rc) rc = jp_outfile_write(out, b.p, b.len, err);
    free(b.p);
    return rc;
}

/* model.safetensors -> model-00001-of-00003.safetensors */
static const char *shard_path(jp_sink *s, size_t k, size_t n) {
    size_t plen = strlen(s->path), slen = strlen(SUFFIX);
    int stem = (int)(plen >= slen && strcmp(s->path + plen - slen, SUFFIX) == 0 ? plen - slen : plen);
    return jp_arena_printf(&s->arena, "%.*s-%05zu-of-%05zu%s", stem, s->path, k + 1, n, SUFFIX);
}

static jp_code st_begin(jp_sink *s, jp_err *err) {
    state *st = jp_arena_alloc(&s->arena, sizeof *st);
    size_t n1 = s->n ? s->n : 1;
    sort_key *keys = calloc(n1, sizeof *keys);
    uint32_t *scratch = calloc(2 * n1, sizeof *scratch);
    if (st) {
        st->begin = jp_arena_alloc_array(&s->arena, n1, sizeof *st->begin);
        st->shard_of = jp_arena_alloc_array(&s->arena, n1, sizeof *st->shard_of);
    }
    s->order = jp_arena_alloc_array(&s->arena, n1, sizeof *s->order);
    jp_code rc = JP_OK;
    if (!st || !keys || !scratch || !st->begin || !st->shard_of || !s->order) {
        rc = jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
        goto done;
    }
    s->state = st;
    if ((rc = check_input(s, keys, err))) goto done;
    if (s->opts.shard_bytes) st->nshards = split(s, st, scratch, scratch + n1);
    if (st->nshards > 1) {
        st->shards = jp_arena_alloc_array(&s->arena, st->nshards, sizeof *st->shards);
        if (!st->shards) {
            rc = jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
            goto done;
        }
        for (size_t k = 0; k < st->nshards; k++) st->shards[k].out.fd = -1;
    } else {
        memset(st->shard_of, 0, n1 * sizeof *st->shard_of);
    }
    for (size_t i = 0; i < s->n; i++) keys[i].shard = st->shard_of[keys[i].idx];
    qsort(keys, s->n, sizeof *keys, by_file_order);
    uint64_t offset = 0;
    for (size_t k = 0; k < s->n; k++) {
        size_t i = keys[k].idx;
        s->order[k] = i;
        if (k && keys[k - 1].shard != keys[k].shard) offset = 0;
        st->begin[i] = offset;
        offset += s->tensors[i].nbytes;
        st->total += s->tensors[i].nbytes;
        if (st->nshards > 1) {
            shard *sh = &st->shards[keys[k].shard];
            if (!sh->count) sh->first = k;
            sh->count++;
            sh->bytes += s->tensors[i].nbytes;
        }
    }
    if (st->nshards <= 1) {
        rc = write_header(s, &s->out, 0, s->n, err);
        goto done;
    }
    /* Several files: s->out becomes the index beside them, which names them. */
    if (!utf8(s->path)) {
        rc = jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "the output path is not UTF-8");
        goto done;
    }
    for (size_t k = 0; k < st->nshards; k++)
        if (!(st->shards[k].path = shard_path(s, k, st->nshards))) {
            rc = jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
            goto done;
        }
    const char *index = jp_arena_printf(&s->arena, "%s.index.json", s->path);
    jp_outfile_abort(&s->out);
    rc = index ? jp_outfile_open(&s->out, index, err)
               : jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
done:
    free(keys);
    free(scratch);
    return rc;
}

/* ---------------------------------------------------------------- streaming */

static jp_outfile *current(jp_sink *s) {
    state *st = s->state;
    return st->nshards > 1 ? &st->shards[st->shard_of[s->cur]].out : &s->out;
}

static jp_code st_tensor_begin(jp_sink *s, jp_err *err) {
    state *st = s->state;
    if (st->nshards <= 1) return JP_OK;
    shard *sh = &st->shards[st->shard_of[s->cur]];
    if (s->next != sh->first) return JP_OK;
    jp_code rc = jp_outfile_open(&sh->out, sh->path, err);
    return rc ? rc : write_header(s, &sh->out, sh->first, sh->count, err);
}

static jp_code st_write(jp_sink *s, const void *data, size_t len, jp_err *err) {
    return jp_outfile_write(current(s), data, len, err);
}

/* A shard is closed once complete, so one buffer and descriptor are held. */
static jp_code st_tensor_done(jp_sink *s, jp_err *err) {
    state *st = s->state;
    if (st->nshards <= 1) return JP_OK;
    shard *sh = &st->shards[st->shard_of[s->cur]];
    return s->next + 1 == sh->first + sh->count ? jp_outfile_finish(&sh->out, err) : JP_OK;
}

static jp_code write_index(jp_sink *s, jp_err *err) {
    state *st = s->state;
    strbuf b = {0};
    sb_str(&b, "{\n  \"metadata\": {\n    \"total_size\": ");
    sb_u64(&b, st->total);
    sb_str(&b, "\n  },\n  \"weight_map\": {");
    /* Shard by shard, each shard's tensors in the order given: a stable
     * bucket sort by shard. */
    size_t *start = calloc(st->nshards + 1, sizeof *start), *by = malloc(s->n * sizeof *by);
    if (start && by) {
        for (size_t i = 0; i < s->n; i++) start[st->shard_of[i] + 1]++;
        for (size_t k = 0; k < st->nshards; k++) start[k + 1] += start[k];
        for (size_t i = 0; i < s->n; i++) by[start[st->shard_of[i]]++] = i;
        for (size_t j = 0; j < s->n; j++) {
            size_t i = by[j];
            const char *path = st->shards[st->shard_of[i]].path, *slash = strrchr(path, '/');
            sb_str(&b, j ? ",\n    " : "\n    ");
            sb_json_python(&b, s->tensors[i].name);
            sb_str(&b, ": ");
            sb_json_python(&b, slash ? slash + 1 : path);
        }
    }
    sb_str(&b, "\n  }\n}");
    jp_code rc = b.failed || !start || !by ? jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory")
                                           : jp_outfile_write(&s->out, b.p, b.len, err);
    free(start);
    free(by);
    free(b.p);
    return rc;
}

/* Rename every shard, then the index; undo the renames if any fails. */
static jp_code st_finish(jp_sink *s, jp_err *err) {
    state *st = s->state;
    if (st->nshards <= 1) return JP_OK;
    jp_code rc = write_index(s, err);
    for (size_t k = 0; k < st->nshards && !rc; k++)
        if (!(rc = jp_outfile_commit(&st->shards[k].out, err))) st->shards[k].committed = true;
    if (!rc) rc = jp_outfile_commit(&s->out, err);
    if (rc)
        for (size_t k = 0; k < st->nshards; k++)
            if (st->shards[k].committed) remove(st->shards[k].path);
    return rc;
}

static void st_abort(jp_sink *s) {
    state *st = s->state;
    if (!st || !st->shards) return;
    for (size_t k = 0; k < st->nshards; k++) jp_outfile_abort(&st->shards[k].out);
}

const struct jp_sink_ops jp_sink_safetensors = {
    .extension = SUFFIX,
    .format = JP_FORMAT_SAFETENSORS,
    .begin = st_begin,
    .tensor_begin = st_tensor_begin,
    .write = st_write,
    .tensor_done = st_tensor_done,
    .finish = st_finish,
    .abort = st_abort,
};
