/* The alignment page's requests (align_api.h). */
#include "align_api.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "align_page.h"
#include "match/names.h"

/* The plan for the command line's options plus the page's hints. */
static jp_code rematch(align_session *s, jp_err *err) {
    cli_match_args *a = s->ma;
    const char *hints[2 * CLI_MAX_HINTS];
    size_t n = 0;
    for (size_t i = 0; i < a->nhints; i++) hints[n++] = a->hints[i];
    for (size_t i = 0; i < s->nhints; i++) hints[n++] = s->hints[i];
    jp_match_opts o = {.lib = a->lib, .hints = hints, .nhints = n, .rules = (const char *const *)a->rules,
                       .nrules = a->nrules, .ordered = a->ordered, .flatten = a->flatten,
                       .dtype = JP_DTYPE_INVALID};
    jp_plan *plan = NULL;
    jp_code rc = jp_match(&plan, s->ix, a->target.leaves, a->target.n, &o, err);
    if (rc) return rc;
    jp_plan_free(s->plan);
    s->plan = plan;
    return JP_OK;
}

jp_code align_session_init(align_session *s, const jp_index *ix, cli_match_args *ma, const char *out,
                           const char *token, jp_err *err) {
    memset(s, 0, sizeof *s);
    atomic_init(&s->quit, false);
    s->ix = ix;
    s->ma = ma;
    s->out = out;
    snprintf(s->token, sizeof s->token, "%s", token);
    return rematch(s, err);
}

static void clear_hints(align_session *s) {
    for (size_t i = 0; i < s->nhints; i++) free(s->hints[i]);
    s->nhints = 0;
}

void align_session_free(align_session *s) {
    clear_hints(s);
    jp_plan_free(s->plan);
    s->plan = NULL;
}

/* ---- responses */

static void reply(align_response *r, int status, const char *type, char *body) {
    r->status = status;
    r->type = type;
    r->body = body;
    r->len = body ? strlen(body) : 0;
}

/* {"error": msg}; a body that cannot be made is left empty. */
static void reply_error(align_response *r, int status, const char *msg) {
    json_t *o = json_pack("{s:s}", "error", msg);
    reply(r, status, "application/json", o ? json_dumps(o, JSON_COMPACT) : NULL);
    json_decref(o);
}

static void reply_json(align_response *r, json_t *o) {
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text) reply(r, 200, "application/json", text);
    else reply_error(r, 500, "out of memory");
}

/* ---- /state */

typedef struct scored {
    const char *path;
    size_t len;
    size_t first;                 /* the module's first tensor, in the checkpoint's order */
    bool free;                    /* a weight of it no leaf takes */
    char key[256];                /* jp_name_key of the path */
    int score;
} scored;

static int by_path(const void *a, const void *b) {
    const scored *x = a, *y = b;
    int c = strncmp(x->path, y->path, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int by_score(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return (x->first > y->first) - (x->first < y->first);
}

/* The source modules (distinct module paths of the checkpoint's tensors),
 * as spans into the tensors' names, each with its key, its first tensor and
 * whether the plan leaves a weight of it unused. */
static scored *source_modules(const jp_index *ix, const jp_plan *plan, size_t *count) {
    size_t n = jp_index_count(ix), k = 0;
    scored *mods = calloc(n + 1, sizeof *mods);
    bool *unused = calloc(n + 1, sizeof *unused);
    if (!mods || !unused) {
        free(mods);
        free(unused);
        return NULL;
    }
    for (size_t u = 0; u < plan->nunused; u++)
        if (!plan->unused[u].harmless && plan->unused[u].source < n) unused[plan->unused[u].source] = true;
    for (size_t i = 0; i < n; i++) {
        size_t start;
        mods[i].len = jp_match_module_span(jp_index_at(ix, i)->name, false, &start);
        mods[i].path = jp_index_at(ix, i)->name + start;
        mods[i].first = i;
        mods[i].free = unused[i];
    }
    free(unused);
    qsort(mods, n, sizeof *mods, by_path); /* so that a module's spans meet */
    for (size_t i = 0; i < n; i++) {
        if (k && by_path(&mods[k - 1], &mods[i]) == 0) {
            mods[k - 1].free |= mods[i].free;
            if (mods[i].first < mods[k - 1].first) mods[k - 1].first = mods[i].first;
            continue;
        }
        mods[k] = mods[i];
        jp_name_key(mods[k].path, mods[k].len, mods[k].key, sizeof mods[k].key);
        k++;
    }
    *count = k;
    return mods;
}

/* For each target module with a leaf left unpaired (the first
 * ALIGN_MODULES of them; *unlisted counts the open leaves of the others):
 * those leaves, and the source modules likeliest to be its, best first: those
 * with a weight no leaf takes before the others, then the closest by name,
 * then in the checkpoint's order. */
static json_t *candidates(const align_session *s, size_t *unlisted) {
    json_t *out = json_object();
    size_t nmods = 0;
    scored *mods = source_modules(s->ix, s->plan, &nmods);
    *unlisted = 0;
    if (!out || !mods) {
        free(mods);
        json_decref(out);
        return NULL;
    }
    for (size_t i = 0; i < s->plan->n; i++) {
        const jp_plan_leaf *l = &s->plan->leaves[i];
        if (!(l->flags & (JP_LEAF_MISSING | JP_LEAF_AMBIGUOUS))) continue;
        size_t start, len = jp_match_module_span(l->name, true, &start);
        json_t *key = json_stringn(l->name + start, len), *seen = key ? json_object_get(out, json_string_value(key)) : NULL;
        if (seen) json_array_append_new(json_object_get(seen, "leaves"), json_string(l->name));
        else if (key && json_object_size(out) >= ALIGN_MODULES) ++*unlisted;
        if (!key || seen || json_object_size(out) >= ALIGN_MODULES) {
            json_decref(key);
            continue;
        }
        char tkey[256];
        jp_name_key(l->name + start, len, tkey, sizeof tkey);
        for (size_t q = 0; q < nmods; q++) /* similarity is 0 to 1000 */
            mods[q].score = jp_name_similarity(mods[q].key, tkey) + (mods[q].free ? 1001 : 0);
        qsort(mods, nmods, sizeof *mods, by_score);
        json_t *list = json_array(), *entry = json_object(), *names = json_array();
        for (size_t q = 0; list && q < nmods && q < ALIGN_CANDIDATES; q++)
            json_array_append_new(list, json_stringn(mods[q].path, mods[q].len));
        json_array_append_new(names, json_string(l->name));
        json_object_set_new(entry, "sources", list);
        json_object_set_new(entry, "leaves", names);
        json_object_set_new(out, json_string_value(key), entry);
        json_decref(key);
    }
    free(mods);
    return out;
}

static void state(align_session *s, align_response *r) {
    jp_err err;
    char *text = NULL;
    cli_match_args *a = s->ma;
    if (jp_plan_to_json(s->plan, s->ix, a->target.leaves, a->target.n, a->lib, &text, &err)) {
        reply_error(r, 500, err.msg);
        return;
    }
    json_t *plan = json_loads(text, 0, NULL);
    free(text);
    json_t *page = json_array(), *fixed = json_array();
    for (size_t i = 0; page && i < s->nhints; i++) json_array_append_new(page, json_string(s->hints[i]));
    for (size_t i = 0; fixed && i < a->nhints; i++) json_array_append_new(fixed, json_string(a->hints[i]));
    bool ok = !jp_plan_check(s->plan, s->ix, false, &err);
    size_t unlisted;
    json_t *o = json_object(), *cands = candidates(s, &unlisted);
    /* each set_new takes its value, also when it fails */
    bool made = o && plan && page && fixed && cands;
    json_object_set_new(o, "plan", plan);
    json_object_set_new(o, "hints", page);
    json_object_set_new(o, "fixed_hints", fixed);
    json_object_set_new(o, "candidates", cands);
    json_object_set_new(o, "out", json_string(s->out));
    json_object_set_new(o, "saved", json_boolean(s->saved));
    json_object_set_new(o, "check", json_string(ok ? "" : err.msg));
    json_object_set_new(o, "ok", json_boolean(ok));
    json_object_set_new(o, "unlisted", json_integer((json_int_t)unlisted));
    if (!made || json_object_size(o) != 9) {
        json_decref(o);
        o = NULL;
    }
    reply_json(r, o);
}

/* ---- POST bodies */

/* The page's hints from {"hints": [...]}: each "SRC=DST" with both sides
 * set; NULL with why on anything else. */
static const char *read_hints(const char *body, size_t len, char **hints, size_t *n) {
    *n = 0;
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    json_t *list = json_is_object(o) ? json_object_get(o, "hints") : NULL;
    const char *why = NULL;
    if (!json_is_array(list)) why = "the body must be {\"hints\": [\"SRC=DST\", ...]}";
    else if (json_array_size(list) > CLI_MAX_HINTS) why = "too many hints";
    for (size_t i = 0; !why && i < json_array_size(list); i++) {
        const char *h = json_string_value(json_array_get(list, i));
        const char *eq = h ? strchr(h, '=') : NULL;
        if (!eq || eq == h || !eq[1] || strlen(h) > 1024) why = "each hint must be \"SRC=DST\" (a source and a target module)";
        else if (!(hints[*n] = strdup(h))) why = "out of memory";
        else ++*n;
    }
    json_decref(o);
    if (why)
        while (*n) free(hints[--*n]);
    return why;
}

static void post_hints(align_session *s, const char *body, size_t len, align_response *r) {
    char *hints[CLI_MAX_HINTS];
    size_t n;
    const char *why = read_hints(body, len, hints, &n);
    if (why) {
        reply_error(r, 400, why);
        return;
    }
    char *old[CLI_MAX_HINTS];
    size_t nold = s->nhints;
    memcpy(old, s->hints, nold * sizeof *old);
    memcpy(s->hints, hints, n * sizeof *hints);
    s->nhints = n;
    jp_err err;
    if (rematch(s, &err)) { /* keep the hints that worked */
        memcpy(s->hints, old, nold * sizeof *old);
        s->nhints = nold;
        while (n) free(hints[--n]);
        reply_error(r, 400, err.msg);
        return;
    }
    for (size_t i = 0; i < nold; i++) free(old[i]);
    s->saved = false;
    state(s, r);
}

static void save(align_session *s, align_response *r) {
    jp_err err;
    char *text = NULL;
    cli_match_args *a = s->ma;
    jp_outfile f;
    jp_code rc = jp_plan_to_json(s->plan, s->ix, a->target.leaves, a->target.n, a->lib, &text, &err);
    if (!rc && !(rc = jp_outfile_open(&f, s->out, &err))) {
        if ((rc = jp_outfile_write(&f, text, strlen(text), &err)) || (rc = jp_outfile_write(&f, "\n", 1, &err)) ||
            (rc = jp_outfile_commit(&f, &err)))
            jp_outfile_abort(&f);
    }
    free(text);
    if (rc) {
        reply_error(r, 500, err.msg);
        return;
    }
    s->saved = true;
    state(s, r);
}

/* The page with the session's token in place of its placeholder. */
static void page(const align_session *s, align_response *r) {
    static const char mark[] = "@TOKEN@";
    const char *at = strstr(align_page_html, mark);
    size_t n = strlen(align_page_html), head = at ? (size_t)(at - align_page_html) : n;
    char *out = malloc(n + sizeof s->token);
    if (!out) {
        reply_error(r, 500, "out of memory");
        return;
    }
    memcpy(out, align_page_html, head);
    size_t k = head;
    if (at) {
        size_t tl = strlen(s->token), tail = n - head - (sizeof mark - 1);
        memcpy(out + k, s->token, tl);
        memcpy(out + k + tl, at + sizeof mark - 1, tail);
        k += tl + tail;
    }
    out[k] = '\0';
    reply(r, 200, "text/html; charset=utf-8", out);
}

void align_handle(align_session *s, const char *method, const char *path, const char *token,
                  const char *body, size_t len, align_response *r) {
    memset(r, 0, sizeof *r);
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    bool is_page = strcmp(path, "/") == 0, is_state = strcmp(path, "/state") == 0;
    bool known = is_page || is_state || strcmp(path, "/hints") == 0 || strcmp(path, "/save") == 0 ||
                 strcmp(path, "/quit") == 0;
    bool wants_post = !is_page && !is_state;
    if (!known)
        reply_error(r, 404, "no such page");
    else if (wants_post ? !post : !get)
        reply_error(r, 405, wants_post ? "use POST" : "use GET");
    else if (post && (!token || strcmp(token, s->token) != 0))
        reply_error(r, 403, "missing or wrong X-Jaxport-Token (reload the page)");
    else if (len > ALIGN_BODY_MAX)
        reply_error(r, 413, "the request body is too large");
    else if (is_page)
        page(s, r);
    else if (is_state)
        state(s, r);
    else if (strcmp(path, "/hints") == 0)
        post_hints(s, body, len, r);
    else if (strcmp(path, "/save") == 0)
        save(s, r);
    else {
        atomic_store(&s->quit, true);
        reply_json(r, json_pack("{s:b}", "saved", s->saved));
    }
}
