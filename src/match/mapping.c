/* The plan as JSON (layout drawn in mapping.h), through jansson. */
#include "mapping.h"

#include <jansson.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLAN_VERSION 1
#define PLAN_TEXT_MAX (1u << 30)

static uint64_t mix(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static uint64_t mix_leaf(uint64_t h, const char *name, jp_dtype dt, int ndim, const int64_t *shape) {
    h = mix(h, name, strlen(name) + 1);
    uint8_t d[2] = {(uint8_t)dt, (uint8_t)ndim};
    h = mix(h, d, 2);
    for (int i = 0; i < ndim; i++) {
        uint8_t b[8];
        jp_store_le(b, (uint64_t)shape[i], 8);
        h = mix(h, b, 8);
    }
    return h;
}

uint64_t jp_fingerprint_index(const jp_index *ix) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < jp_index_count(ix); i++) {
        const jp_tensor *t = jp_index_at(ix, i);
        h = mix_leaf(h, t->name, t->dtype, t->ndim, t->shape);
    }
    return h;
}

uint64_t jp_fingerprint_leaves(const jp_leaf_spec *leaves, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = mix_leaf(h, leaves[i].path, leaves[i].dtype, leaves[i].ndim, leaves[i].shape);
    return h;
}

static json_t *int_array(int n, const int64_t *v) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static bool perm_is_identity(const jp_plan_leaf *l, int n) {
    for (int d = 0; d < n; d++)
        if (l->perm[d] != d) return false;
    return true;
}

/* A source tensor, or a slice of one: {"tensor": name, "slice": [axis, start, length]}. */
static void put_ref(json_t *o, const jp_index *src, const jp_plan_ref *ref) {
    json_object_set_new(o, "tensor", json_string(jp_index_at(src, ref->source)->name));
    if (ref->axis >= 0) {
        int64_t s[3] = {ref->axis, ref->start, ref->len};
        json_object_set_new(o, "slice", int_array(3, s));
    }
}

static json_t *leaf_json(const jp_plan_leaf *l, const jp_index *src) {
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "leaf", json_string(l->name));
    json_object_set_new(o, "shape", int_array(l->ndim, l->shape));
    json_object_set_new(o, "dtype", json_string(jp_dtype_name(l->dtype)));
    if (l->flags & (JP_LEAF_MISSING | JP_LEAF_AMBIGUOUS)) {
        json_object_set_new(o, (l->flags & JP_LEAF_AMBIGUOUS) ? "ambiguous" : "missing",
                            json_string(l->rule ? l->rule : ""));
        return o;
    }
    json_t *from = json_array();
    int jn = 0;
    for (uint32_t k = 0; k < l->nparts; k++) {
        const jp_plan_part *p = &l->parts[k];
        json_t *po = json_object();
        put_ref(po, src, &p->from);
        if (p->has_plus) {
            json_t *plus = json_object();
            put_ref(plus, src, &p->plus);
            json_object_set_new(po, "plus", plus);
        }
        if (p->add != 0.0) json_object_set_new(po, "add", json_real(p->add));
        json_object_set_new(po, "shape", int_array(p->ndim, p->shape));
        json_array_append_new(from, po);
        jn = p->ndim;
    }
    json_object_set_new(o, "from", from);
    if (l->nparts > 1) json_object_set_new(o, "concat", json_integer(l->cat_axis));
    if (!perm_is_identity(l, jn)) {
        int64_t pv[JP_MAX_DIMS];
        for (int d = 0; d < jn; d++) pv[d] = l->perm[d];
        json_object_set_new(o, "permute", int_array(jn, pv));
    }
    if (l->flip) {
        json_t *f = json_array();
        for (int d = 0; d < JP_MAX_DIMS; d++)
            if (l->flip & (1u << d)) json_array_append_new(f, json_integer(d));
        json_object_set_new(o, "flip", f);
    }
    if (l->rule) json_object_set_new(o, "rule", json_string(l->rule));
    return o;
}

jp_code jp_plan_to_json(const jp_plan *p, const jp_index *src, const jp_leaf_spec *targets, size_t n,
                        jp_lib lib, char **out, jp_err *err) {
    *out = NULL;
    char fs[17], ft[17];
    snprintf(fs, sizeof fs, "%016llx", (unsigned long long)jp_fingerprint_index(src));
    snprintf(ft, sizeof ft, "%016llx", (unsigned long long)jp_fingerprint_leaves(targets, n));
    json_t *root = json_object(), *leaves = json_array(), *unused = json_array();
    if (!root || !leaves || !unused) {
        json_decref(root), json_decref(leaves), json_decref(unused);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory writing a plan");
    }
    json_object_set_new(root, "jaxport_plan", json_integer(PLAN_VERSION));
    json_object_set_new(root, "library", json_string(jp_lib_name(lib)));
    json_object_set_new(root, "source", json_pack("{s:I,s:s}", "tensors", (json_int_t)jp_index_count(src),
                                                  "fingerprint", fs));
    json_object_set_new(root, "target", json_pack("{s:I,s:s}", "leaves", (json_int_t)n, "fingerprint", ft));
    for (size_t i = 0; i < p->n; i++) json_array_append_new(leaves, leaf_json(&p->leaves[i], src));
    for (size_t i = 0; i < p->nunused; i++)
        json_array_append_new(unused, json_pack("{s:s,s:s,s:b}", "tensor",
                                                jp_index_at(src, p->unused[i].source)->name, "why",
                                                p->unused[i].why, "harmless", p->unused[i].harmless));
    json_object_set_new(root, "leaves", leaves);
    json_object_set_new(root, "unused", unused);
    *out = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!*out) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory writing a plan");
    return JP_OK;
}

/* ---- reading */

static jp_code bad(jp_err *err, const char *leaf, const char *what) {
    return jp_err_set(err, JP_CORRUPT, JP_NO_OFFSET, leaf, "plan: %s%s%s", leaf ? leaf : "", leaf ? ": " : "", what);
}

/* An array of at most JP_MAX_DIMS integers in [lo, hi]. */
static bool read_ints(json_t *a, int64_t *out, int *n, int64_t lo, int64_t hi) {
    if (!json_is_array(a) || json_array_size(a) > JP_MAX_DIMS) return false;
    *n = (int)json_array_size(a);
    for (int i = 0; i < *n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_integer(v)) return false;
        json_int_t x = json_integer_value(v);
        if (x < lo || x > hi) return false;
        out[i] = x;
    }
    return true;
}

/* A part's tensor and slice, or its addend's. */
static jp_code read_ref(json_t *o, const jp_index *src, const char *name, jp_plan_ref *ref,
                        jp_err *err) {
    const char *tn = json_string_value(json_object_get(o, "tensor"));
    size_t pos = tn ? jp_index_position(src, tn) : SIZE_MAX;
    if (pos == SIZE_MAX) {
        jp_err_set(err, JP_NOT_FOUND, JP_NO_OFFSET, name, "plan: %s: the source has no tensor '%s'", name,
                   tn ? tn : "(none given)");
        return JP_NOT_FOUND;
    }
    ref->source = (uint32_t)pos;
    ref->axis = -1;
    json_t *sl = json_object_get(o, "slice");
    if (sl) {
        int64_t s[JP_MAX_DIMS];
        int sn;
        if (!read_ints(sl, s, &sn, 0, INT64_MAX) || sn != 3) return bad(err, name, "\"slice\" must be [axis, start, length]");
        ref->axis = (int32_t)(s[0] < JP_MAX_DIMS ? s[0] : JP_MAX_DIMS);
        ref->start = s[1];
        ref->len = s[2];
    }
    return JP_OK;
}

static jp_code read_leaf(jp_plan *p, json_t *o, const jp_index *src, const jp_leaf_spec *spec,
                         jp_plan_leaf *l, jp_err *err) {
    const char *name = spec->path;
    l->name = spec->path;
    l->ndim = spec->ndim;
    memcpy(l->shape, spec->shape, sizeof l->shape);
    for (int d = 0; d < JP_MAX_DIMS; d++) l->perm[d] = d;
    json_t *dt = json_object_get(o, "dtype");
    l->dtype = json_is_string(dt) ? jp_dtype_from_name(json_string_value(dt)) : spec->dtype;
    if (l->dtype == JP_DTYPE_INVALID) return bad(err, name, "unknown dtype");
    json_t *shape = json_object_get(o, "shape");
    if (shape) {
        int64_t sh[JP_MAX_DIMS];
        int sn;
        if (!read_ints(shape, sh, &sn, 0, INT64_MAX) || sn != spec->ndim ||
            memcmp(sh, spec->shape, sizeof(int64_t) * (size_t)sn) != 0)
            return bad(err, name, "\"shape\" differs from the target leaf's");
    }
    json_t *miss = json_object_get(o, "missing"), *amb = json_object_get(o, "ambiguous");
    if (miss || amb) {
        l->flags = miss ? JP_LEAF_MISSING : JP_LEAF_AMBIGUOUS;
        json_t *w = miss ? miss : amb;
        l->rule = jp_arena_strdup(&p->arena, json_is_string(w) ? json_string_value(w) : "no source");
        return l->rule ? JP_OK : jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    }
    json_t *from = json_object_get(o, "from");
    if (!json_is_array(from) || json_array_size(from) == 0 || json_array_size(from) > 1024)
        return bad(err, name, "\"from\" must list 1 to 1024 parts");
    l->nparts = (uint32_t)json_array_size(from);
    l->parts = jp_arena_alloc_array(&p->arena, l->nparts, sizeof *l->parts);
    if (!l->parts) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    for (uint32_t k = 0; k < l->nparts; k++) {
        json_t *po = json_array_get(from, k);
        jp_plan_part *part = &l->parts[k];
        memset(part, 0, sizeof *part);
        jp_code rc = read_ref(po, src, name, &part->from, err);
        if (rc) return rc;
        json_t *plus = json_object_get(po, "plus");
        if (plus) {
            if (!json_is_object(plus)) return bad(err, name, "\"plus\" must be {\"tensor\": ..., \"slice\": ...}");
            part->has_plus = true;
            rc = read_ref(plus, src, name, &part->plus, err);
            if (rc) return rc;
        }
        json_t *add = json_object_get(po, "add");
        if (add) {
            if (!json_is_number(add) || !isfinite(json_number_value(add)))
                return bad(err, name, "\"add\" must be a finite number");
            part->add = json_number_value(add);
        }
        int sn;
        json_t *ps = json_object_get(po, "shape");
        if (ps) {
            if (!read_ints(ps, part->shape, &sn, 0, INT64_MAX)) return bad(err, name, "bad part \"shape\"");
            part->ndim = sn;
        } else {
            part->ndim = -1; /* the sliced source's own shape, filled by validate */
        }
    }
    json_t *cat = json_object_get(o, "concat");
    l->cat_axis = 0;
    if (cat) {
        if (!json_is_integer(cat) || json_integer_value(cat) < 0 || json_integer_value(cat) >= JP_MAX_DIMS)
            return bad(err, name, "bad \"concat\" axis");
        l->cat_axis = (int32_t)json_integer_value(cat);
    }
    json_t *perm = json_object_get(o, "permute");
    if (perm) {
        int64_t pv[JP_MAX_DIMS];
        int pn;
        if (!read_ints(perm, pv, &pn, 0, JP_MAX_DIMS - 1)) return bad(err, name, "bad \"permute\"");
        for (int d = 0; d < pn; d++) l->perm[d] = (int32_t)pv[d];
        for (int d = pn; d < JP_MAX_DIMS; d++) l->perm[d] = d;
    }
    json_t *flip = json_object_get(o, "flip");
    if (flip) {
        int64_t fv[JP_MAX_DIMS];
        int fn;
        if (!read_ints(flip, fv, &fn, 0, JP_MAX_DIMS - 1)) return bad(err, name, "bad \"flip\"");
        for (int d = 0; d < fn; d++) l->flip |= 1u << fv[d];
    }
    json_t *rule = json_object_get(o, "rule");
    l->rule = jp_arena_strdup(&p->arena, json_is_string(rule) ? json_string_value(rule) : "from the mapping file");
    if (!l->rule) return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    return JP_OK;
}

static jp_code stale(jp_err *err, json_t *root, const char *side, uint64_t want) {
    const char *have = json_string_value(json_object_get(json_object_get(root, side), "fingerprint"));
    char w[17];
    snprintf(w, sizeof w, "%016llx", (unsigned long long)want);
    if (have && strcmp(have, w) == 0) return JP_OK;
    return jp_err_set(err, JP_STALE, JP_NO_OFFSET, NULL,
                      "plan: made for another %s (fingerprint %s, these files give %s); match again",
                      strcmp(side, "source") == 0 ? "source checkpoint" : "target model", have ? have : "none", w);
}

jp_code jp_plan_from_json(jp_plan **out, const char *text, size_t len, const jp_index *src,
                          const jp_leaf_spec *targets, size_t n, jp_err *err) {
    jp_err_clear(err);
    *out = NULL;
    if (len > PLAN_TEXT_MAX) return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "plan: over 1 GiB of JSON");
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return jp_err_set(err, JP_FORMAT, (uint64_t)je.position, NULL, "plan: not JSON (%s, line %d)", je.text, je.line);
    jp_code rc = JP_OK;
    jp_plan *p = NULL;
    json_t *ver = json_object_get(root, "jaxport_plan");
    json_t *leaves = json_object_get(root, "leaves");
    if (!json_is_object(root) || !json_is_integer(ver) || !json_is_array(leaves))
        rc = jp_err_set(err, JP_FORMAT, JP_NO_OFFSET, NULL, "plan: not a jaxport plan (no \"jaxport_plan\" or \"leaves\")");
    else if (json_integer_value(ver) != PLAN_VERSION)
        rc = jp_err_set(err, JP_UNSUPPORTED, JP_NO_OFFSET, NULL, "plan: version %lld; this jaxport reads version %d",
                        (long long)json_integer_value(ver), PLAN_VERSION);
    if (!rc) rc = stale(err, root, "source", jp_fingerprint_index(src));
    if (!rc) rc = stale(err, root, "target", jp_fingerprint_leaves(targets, n));
    if (!rc && json_array_size(leaves) != n)
        rc = jp_err_set(err, JP_CORRUPT, JP_NO_OFFSET, NULL, "plan: %zu leaves listed, the target has %zu",
                        json_array_size(leaves), n);
    if (!rc && !(p = calloc(1, sizeof *p))) rc = jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    if (!rc) {
        jp_arena_init(&p->arena);
        p->n = n;
        p->leaves = jp_arena_alloc_array(&p->arena, n ? n : 1, sizeof *p->leaves);
        if (!p->leaves) rc = jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    }
    /* The fingerprint fixed the targets' order; entries follow it. */
    for (size_t i = 0; !rc && i < n; i++) {
        json_t *o = json_array_get(leaves, i);
        const char *ln = json_string_value(json_object_get(o, "leaf"));
        if (!json_is_object(o) || !ln || strcmp(ln, targets[i].path) != 0)
            rc = jp_err_set(err, JP_CORRUPT, JP_NO_OFFSET, targets[i].path,
                            "plan: entry %zu should be the leaf %s", i, targets[i].path);
        else
            rc = read_leaf(p, o, src, &targets[i], &p->leaves[i], err);
    }
    json_decref(root);
    if (!rc) rc = jp_plan_validate(p, src, err);
    if (!rc) rc = jp_plan_list_unused(p, src, err);
    if (rc) {
        jp_plan_free(p);
        return rc;
    }
    *out = p;
    return JP_OK;
}

static bool mul_ok(uint64_t *acc, int64_t v) { return v >= 0 && !jp_mul_overflow(*acc, (uint64_t)v, acc); }

/* A tensor or slice a part names: in range, its shape (sh) and element count. */
static jp_code check_ref(const jp_index *src, const char *name, const jp_plan_ref *ref, int64_t *sh,
                         uint64_t *numel, jp_err *err) {
    if (ref->source >= jp_index_count(src)) return bad(err, name, "part names no source tensor");
    const jp_tensor *t = jp_index_at(src, ref->source);
    int32_t a = ref->axis;
    memcpy(sh, t->shape, sizeof(int64_t) * JP_MAX_DIMS);
    if (a >= 0) {
        if (a >= t->ndim || ref->start < 0 || ref->len < 0 || ref->start > t->shape[a] ||
            ref->len > t->shape[a] - ref->start)
            return bad(err, name, "a slice outside its source tensor");
        sh[a] = ref->len;
    }
    *numel = 1;
    for (int d = 0; d < t->ndim; d++) mul_ok(numel, sh[d]);
    return JP_OK;
}

jp_code jp_plan_validate(const jp_plan *p, const jp_index *src, jp_err *err) {
    for (size_t i = 0; i < p->n; i++) {
        jp_plan_leaf *l = &p->leaves[i];
        const char *name = l->name;
        if (l->flags & (JP_LEAF_MISSING | JP_LEAF_AMBIGUOUS)) continue;
        if (!l->nparts) return bad(err, name, "no parts");
        uint64_t leaf_numel = 1;
        for (int d = 0; d < l->ndim; d++)
            if (!mul_ok(&leaf_numel, l->shape[d])) return bad(err, name, "leaf shape overflows");
        int jn = -1;
        uint64_t joined = 0;
        for (uint32_t k = 0; k < l->nparts; k++) {
            jp_plan_part *part = &l->parts[k];
            int64_t sh[JP_MAX_DIMS];
            uint64_t sn, pn = 1;
            jp_code rc = check_ref(src, name, &part->from, sh, &sn, err);
            if (rc) return rc;
            const jp_tensor *t = jp_index_at(src, part->from.source);
            if (part->has_plus) {
                int64_t psh[JP_MAX_DIMS];
                uint64_t psn;
                if ((rc = check_ref(src, name, &part->plus, psh, &psn, err)))
                    return rc;
                if (psn != sn) return bad(err, name, "a part's \"plus\" holds another number of elements");
                if (!jp_dtype_is_castable_float(t->dtype) ||
                    !jp_dtype_is_castable_float(jp_index_at(src, part->plus.source)->dtype))
                    return bad(err, name, "\"plus\" adds tensors that are not both float16, bfloat16, float32 or float64");
            }
            if (part->add != 0.0 && !jp_dtype_is_castable_float(t->dtype))
                return bad(err, name, "\"add\" is given for a tensor that is not float16, bfloat16, float32 or float64");
            if (part->ndim < 0) {
                part->ndim = t->ndim;
                memcpy(part->shape, sh, sizeof part->shape);
            }
            for (int d = 0; d < part->ndim; d++)
                if (!mul_ok(&pn, part->shape[d])) return bad(err, name, "part shape overflows");
            if (pn != sn) return bad(err, name, "a part's shape does not hold its source's elements");
            if (jn < 0) jn = part->ndim;
            if (part->ndim != jn) return bad(err, name, "parts of different ranks");
            for (int d = 0; d < jn; d++)
                if (d != l->cat_axis && part->shape[d] != l->parts[0].shape[d])
                    return bad(err, name, "parts differ off the concat axis");
            joined += pn;
        }
        if (l->nparts > 1 && l->cat_axis >= jn) return bad(err, name, "concat axis beyond the parts' rank");
        uint32_t seen = 0;
        for (int d = 0; d < jn; d++) {
            if (l->perm[d] < 0 || l->perm[d] >= jn || (seen & (1u << l->perm[d])))
                return bad(err, name, "\"permute\" is not a permutation of the parts' axes");
            seen |= 1u << l->perm[d];
        }
        if (l->flip >> jn) return bad(err, name, "\"flip\" names an axis beyond the parts' rank");
        if (joined != leaf_numel) return bad(err, name, "the parts do not hold the leaf's element count");
    }
    return JP_OK;
}

/* ---- the table */

typedef struct text {
    char *s;
    size_t len, cap;
    bool failed;
} text;

static void put(text *t, const char *fmt, ...) JP_PRINTF(2, 3);
static void put(text *t, const char *fmt, ...) {
    if (t->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if (t->s && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap <= t->len + (size_t)n) cap *= 2;
        char *ns = realloc(t->s, cap);
        if (!ns) {
            t->failed = true;
            return;
        }
        t->s = ns;
        t->cap = cap;
    }
}

static void shape_cell(json_t *shape, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = '\0';
    for (size_t d = 0; d < json_array_size(shape) && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? "x" : "",
                              (long long)json_integer_value(json_array_get(shape, d)));
    if (!json_array_size(shape)) snprintf(buf, cap, "scalar");
}

/* "name" or "name[start:end]" at buf + n; the new length. */
static size_t ref_cell(json_t *ref, char *buf, size_t n, size_t cap) {
    json_t *sl = json_object_get(ref, "slice");
    if (n < cap) n += (size_t)snprintf(buf + n, cap - n, "%s", json_string_value(json_object_get(ref, "tensor")));
    if (sl && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "[%lld:%lld]", (long long)json_integer_value(json_array_get(sl, 1)),
                              (long long)(json_integer_value(json_array_get(sl, 1)) +
                                          json_integer_value(json_array_get(sl, 2))));
    return n;
}

static void source_cell(json_t *leaf, char *buf, size_t cap) {
    json_t *from = json_object_get(leaf, "from");
    size_t n = 0;
    buf[0] = '\0';
    if (!from) {
        snprintf(buf, cap, "%s", json_object_get(leaf, "ambiguous") ? "AMBIGUOUS" : "MISSING");
        return;
    }
    /* Many parts (a stack of layers): the first two, "...", the last. */
    size_t np = json_array_size(from);
    bool elide = np > 4;
    for (size_t k = 0; k < np && n < cap; k++) {
        if (elide && k == 2) {
            n += (size_t)snprintf(buf + n, cap - n, ", ...");
            k = np - 2;
            continue;
        }
        json_t *p = json_array_get(from, k), *plus = json_object_get(p, "plus");
        if (k && n < cap) n += (size_t)snprintf(buf + n, cap - n, ", ");
        n = ref_cell(p, buf, n, cap);
        if (plus && n < cap) {
            n += (size_t)snprintf(buf + n, cap - n, " + ");
            n = ref_cell(plus, buf, n, cap);
        }
        double add = json_number_value(json_object_get(p, "add"));
        if (add != 0.0 && n < cap) n += (size_t)snprintf(buf + n, cap - n, " %c %g", add < 0 ? '-' : '+', fabs(add));
    }
    if (elide && n < cap) snprintf(buf + n, cap - n, " (%zu parts)", np);
}

static const char *leaf_note(json_t *leaf) {
    const char *keys[] = {"rule", "missing", "ambiguous"};
    for (int i = 0; i < 3; i++) {
        const char *v = json_string_value(json_object_get(leaf, keys[i]));
        if (v) return v;
    }
    return "";
}

jp_code jp_plan_json_table(const char *json, size_t len, char **out, jp_err *err) {
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    json_t *leaves = json_object_get(root, "leaves"), *unused = json_object_get(root, "unused");
    if (!json_is_array(leaves)) {
        json_decref(root);
        return jp_err_set(err, JP_FORMAT, JP_NO_OFFSET, NULL, "plan: not a jaxport plan");
    }
    size_t w[3] = {4, 5, 6}, paired = 0;
    char shape[128], src[512];
    for (size_t i = 0; i < json_array_size(leaves); i++) {
        json_t *l = json_array_get(leaves, i);
        shape_cell(json_object_get(l, "shape"), shape, sizeof shape);
        source_cell(l, src, sizeof src);
        size_t lw = strlen(json_string_value(json_object_get(l, "leaf")) ? json_string_value(json_object_get(l, "leaf")) : "");
        if (lw > w[0]) w[0] = lw;
        if (strlen(shape) > w[1]) w[1] = strlen(shape);
        if (strlen(src) > w[2]) w[2] = strlen(src);
        paired += json_object_get(l, "from") != NULL;
    }
    text t = {0};
    put(&t, "%-*s  %-*s  %-*s  rule\n", (int)w[0], "leaf", (int)w[1], "shape", (int)w[2], "source");
    for (size_t i = 0; i < json_array_size(leaves); i++) {
        json_t *l = json_array_get(leaves, i);
        const char *name = json_string_value(json_object_get(l, "leaf"));
        shape_cell(json_object_get(l, "shape"), shape, sizeof shape);
        source_cell(l, src, sizeof src);
        put(&t, "%-*s  %-*s  %-*s  %s\n", (int)w[0], name ? name : "", (int)w[1], shape, (int)w[2], src, leaf_note(l));
    }
    for (size_t i = 0; i < json_array_size(unused); i++) {
        json_t *u = json_array_get(unused, i);
        put(&t, "unused: %s: %s\n", json_string_value(json_object_get(u, "tensor")),
            json_string_value(json_object_get(u, "why")));
    }
    put(&t, "%zu/%zu leaves paired, %zu source tensors unused\n", paired, json_array_size(leaves),
        json_array_size(unused));
    json_decref(root);
    if (t.failed) {
        free(t.s);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory printing a plan");
    }
    *out = t.s;
    return JP_OK;
}
