/* jaxport diff A B: the tensors two files hold, compared by name: which are
 * on one side only, which differ in dtype or shape, and by how much their
 * values differ (kernels' jp_compare). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "exec/exec.h"
#include "kernels/kernels.h"
#include "target.h"

static const char *usage_text =
    "usage: jaxport diff A B [options]\n"
    "       jaxport diff SRC OUT --like TEMPLATE [matching options]\n"
    "\n"
    "Compares the tensors of two files jaxport reads (any pair of formats), by name.\n"
    "With --like, OUT is a conversion of the checkpoint SRC: each leaf of the plan\n"
    "(matched, or read with --mapping) is made again from SRC, one at a time, and\n"
    "compared with OUT's tensor of that name.\n"
    "Without a tolerance, tensors are the same when their dtypes, shapes and bytes are;\n"
    "with one, when every pair of values is close as numpy.isclose says\n"
    "(|a - b| <= atol + rtol * |b|, in float64; NaN matches only NaN).\n"
    "\n"
    "  --atol X            absolute tolerance\n"
    "  --rtol X            relative tolerance (to B's value)\n"
    "  --ignore-dtype      values within the tolerance are the same in any dtypes\n"
    "  --all               list the tensors that are the same too\n"
    "  --json              one JSON object instead of the table\n"
    "  --allow-unsafe      read a checkpoint that would run code under torch.load\n"
    CLI_MATCH_USAGE
    "\n"
    "Exit status: 0 the files hold the same tensors, 1 they differ (or one could not be\n"
    "read), 2 usage.\n";

typedef struct row {
    const char *name;
    const jp_tensor *a, *b;
    jp_tensor made;               /* --like: the leaf made from SRC (a points here) */
    const char *status;           /* "same", "only in A", "only in B", "dtype", "shape", "values", "bits";
                                     --like: "unpaired" (no source), "unmade" (the plan failed) */
    bool differs;
    jp_compare_stats st;
    char why[JP_ERR_MSG_MAX];     /* a comparison that could not be made */
} row;

static json_t *shape_json(const jp_tensor *t) {
    json_t *s = json_array();
    for (int d = 0; t && d < t->ndim; d++) json_array_append_new(s, json_integer(t->shape[d]));
    return s;
}

static void shape_text(const jp_tensor *t, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (int d = 0; t && d < t->ndim && n < cap; d++)
        n += (size_t)snprintf(out + n, cap - n, d ? "x%lld" : "%lld", (long long)t->shape[d]);
    if (t && t->ndim == 0) snprintf(out, cap, "scalar");
}

/* Compare one name present on both sides. */
static void compare(row *r, double atol, double rtol, bool ignore_dtype) {
    const jp_tensor *a = r->a, *b = r->b;
    bool dtype_differs = a->dtype != b->dtype, shape_differs = a->ndim != b->ndim;
    for (int d = 0; !shape_differs && d < a->ndim; d++) shape_differs = a->shape[d] != b->shape[d];
    if (shape_differs) {
        r->status = "shape";
        r->differs = true;
        return;
    }
    jp_view va = jp_view_of_tensor(a), vb = jp_view_of_tensor(b);
    jp_err err;
    if (jp_compare(&va, &vb, atol, rtol, &r->st, &err)) {
        snprintf(r->why, sizeof r->why, "%s", err.msg);
        r->status = dtype_differs ? "dtype" : "values";
        r->differs = true;
        return;
    }
    bool exact = atol == 0 && rtol == 0;
    if (dtype_differs && !ignore_dtype) {
        r->status = "dtype";
        r->differs = true;
    } else if (r->st.differing) {
        r->status = "values";
        r->differs = true;
    } else if (exact && !dtype_differs && !r->st.bits_equal) {
        r->status = "bits"; /* -0 against 0, or NaNs of other payloads */
        r->differs = true;
    } else {
        r->status = "same";
    }
}

/* --like: plan leaf i made from src into a buffer of its own, as the
 * tensor r->made; false with why when it could not be. */
static bool make_leaf(const jp_plan *plan, size_t i, const jp_index *src, row *r, void **buf) {
    jp_plan one;
    memset(&one, 0, sizeof one);
    one.leaves = &plan->leaves[i];
    one.n = 1;
    jp_err err;
    jp_sink_tensor *st = NULL;
    size_t n = 0;
    jp_sink *sink = NULL;
    jp_code rc = jp_exec_sink_tensors(&one, false, &st, &n, &err);
    if (!rc && !(*buf = malloc(st[0].nbytes + 1))) rc = jp_err_set(&err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    if (!rc) rc = jp_sink_open_memory(&sink, st, 1, buf, &err);
    if (!rc) rc = jp_exec_run(&one, src, sink, NULL, &err);
    if (rc) {
        snprintf(r->why, sizeof r->why, "%s", err.msg);
        free(st);
        return false;
    }
    jp_tensor *t = &r->made;
    const jp_plan_leaf *l = &plan->leaves[i];
    t->name = l->name;
    t->dtype = l->dtype;
    t->ndim = l->ndim;
    t->numel = 1;
    for (int d = l->ndim - 1; d >= 0; d--) {
        t->shape[d] = l->shape[d];
        t->strides[d] = (int64_t)t->numel;
        t->numel *= (uint64_t)l->shape[d];
    }
    t->nbytes = st[0].nbytes;
    t->data = *buf;
    free(st);
    return true;
}

static void print_table(const row *rows, size_t n, bool all, const char *pa, const char *pb) {
    size_t w = 4;
    for (size_t i = 0; i < n; i++)
        if ((all || rows[i].differs) && strlen(rows[i].name) > w) w = strlen(rows[i].name);
    if (w > 60) w = 60;
    printf("A: %s\nB: %s\n", pa, pb);
    printf("%-*s  %-9s  %s\n", (int)w, "name", "status", "detail");
    for (size_t i = 0; i < n; i++) {
        const row *r = &rows[i];
        if (!all && !r->differs) continue;
        char sa[96], sb[96], detail[JP_ERR_MSG_MAX + 200];
        shape_text(r->a, sa, sizeof sa);
        shape_text(r->b, sb, sizeof sb);
        if (r->why[0]) {
            snprintf(detail, sizeof detail, "%s", r->why);
        } else if (!r->a || !r->b) {
            const jp_tensor *t = r->a ? r->a : r->b;
            snprintf(detail, sizeof detail, "%s %s", jp_dtype_numpy_name(t->dtype), r->a ? sa : sb);
        } else if (strcmp(r->status, "shape") == 0) {
            snprintf(detail, sizeof detail, "%s against %s", sa, sb);
        } else {
            int k = 0;
            if (r->a->dtype != r->b->dtype)
                k = snprintf(detail, sizeof detail, "%s against %s; ", jp_dtype_numpy_name(r->a->dtype),
                             jp_dtype_numpy_name(r->b->dtype));
            if (!r->st.values)
                snprintf(detail + k, sizeof detail - (size_t)k, "%llu of %llu elements differ (compared by bytes)",
                         (unsigned long long)r->st.differing, (unsigned long long)r->st.numel);
            else
                snprintf(detail + k, sizeof detail - (size_t)k, "%llu of %llu elements differ, max |diff| %.3g, max rel %.3g%s",
                         (unsigned long long)r->st.differing, (unsigned long long)r->st.numel, r->st.max_abs,
                         r->st.max_rel, strcmp(r->status, "bits") == 0 ? " (same values, other bits)" : "");
        }
        printf("%-*s  %-9s  %s\n", (int)w, r->name, r->status, detail);
    }
}

static json_t *row_json(const row *r) {
    json_t *o = json_pack("{s:s,s:s,s:b}", "name", r->name, "status", r->status, "same", !r->differs);
    if (r->a) json_object_set_new(o, "a", json_pack("{s:s,s:o}", "dtype", jp_dtype_numpy_name(r->a->dtype), "shape",
                                                   shape_json(r->a)));
    if (r->b) json_object_set_new(o, "b", json_pack("{s:s,s:o}", "dtype", jp_dtype_numpy_name(r->b->dtype), "shape",
                                                   shape_json(r->b)));
    if (r->why[0]) json_object_set_new(o, "why", json_string(r->why));
    if (r->a && r->b && r->st.numel && !r->why[0]) {
        json_object_set_new(o, "differing", json_integer((json_int_t)r->st.differing));
        json_object_set_new(o, "first", json_integer((json_int_t)r->st.first));
        if (r->st.values) {
            json_object_set_new(o, "max_abs", isfinite(r->st.max_abs) ? json_real(r->st.max_abs) : json_null());
            json_object_set_new(o, "max_rel", isfinite(r->st.max_rel) ? json_real(r->st.max_rel) : json_null());
        }
    }
    return o;
}

static bool read_tol(const char *v, double *out) {
    char *end;
    *out = strtod(v, &end);
    return *v && !*end && isfinite(*out) && *out >= 0;
}

int cmd_diff(int argc, char **argv) {
    const char *pa = NULL, *pb = NULL;
    double atol = 0, rtol = 0;
    bool json = false, all = false, unsafe = false, ignore_dtype = false;
    cli_match_args ma = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int took = cli_match_option(&ma, argc, argv, &i);
        if (took < 0) return 2;
        if (took) continue;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if ((strcmp(a, "--atol") == 0 || strcmp(a, "--rtol") == 0) && i + 1 < argc) {
            if (!read_tol(argv[++i], a[2] == 'a' ? &atol : &rtol)) {
                fprintf(stderr, "jaxport diff: %s wants a number >= 0\n", a);
                return 2;
            }
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--all") == 0) {
            all = true;
        } else if (strcmp(a, "--ignore-dtype") == 0) {
            ignore_dtype = true;
        } else if (strcmp(a, "--allow-unsafe") == 0) {
            unsafe = true;
        } else if (a[0] == '-' || (pa && pb)) {
            fprintf(stderr, "jaxport diff: unexpected argument '%s'\n%s", a, usage_text);
            return 2;
        } else if (!pa) {
            pa = a;
        } else {
            pb = a;
        }
    }
    if (!pa || !pb) {
        fprintf(stderr, "jaxport diff: two files are needed\n%s", usage_text);
        return 2;
    }
    jp_err err;
    jp_index *ia = NULL, *ib = NULL;
    jp_open_opts oo = {unsafe ? JP_OPEN_ALLOW_UNSAFE : 0};
    int status = 1;
    row *rows = NULL;
    bool *taken = NULL;
    jp_plan *plan = NULL;
    if (jp_index_open(&ia, pa, &oo, &err) || jp_index_open(&ib, pb, &oo, &err)) {
        status = cli_fail(&err);
        goto done;
    }
    if (ma.like && (status = cli_match_plan(&ma, ia, JP_DTYPE_INVALID, &plan, &err))) goto done;
    status = 1;
    size_t na = plan ? plan->n : jp_index_count(ia), nb = jp_index_count(ib), n = 0;
    rows = calloc(na + nb + 1, sizeof *rows);
    taken = calloc(nb + 1, sizeof *taken); /* B's tensors some row of A's compared */
    if (!rows || !taken) {
        fprintf(stderr, "jaxport diff: out of memory\n");
        goto done;
    }
    for (size_t i = 0; i < na; i++) { /* A's order (the plan's), then what only B holds */
        row *r = &rows[n++];
        void *buf = NULL;
        if (plan) {
            r->name = plan->leaves[i].name;
            size_t at = jp_index_position(ib, r->name);
            if (at < nb) taken[at] = true; /* B's tensor is this leaf's, whatever becomes of it */
            r->differs = true;
            if ((plan->leaves[i].flags & (JP_LEAF_MISSING | JP_LEAF_AMBIGUOUS))) {
                snprintf(r->why, sizeof r->why, "no source: %s", plan->leaves[i].rule ? plan->leaves[i].rule : "");
                r->status = "unpaired";
                continue;
            }
            if (!make_leaf(plan, i, ia, r, &buf)) {
                r->status = "unmade";
                continue;
            }
            r->differs = false;
            r->a = &r->made;
        } else {
            r->a = jp_index_at(ia, i);
            r->name = r->a->name;
        }
        size_t at = jp_index_position(ib, r->name);
        r->b = at < nb ? jp_index_at(ib, at) : NULL;
        if (r->b) taken[at] = true;
        if (r->b) compare(r, atol, rtol, ignore_dtype);
        else r->status = "only in A", r->differs = true;
        free(buf); /* the comparison is all that is kept */
        r->made.data = NULL;
    }
    for (size_t i = 0; i < nb; i++) {
        const jp_tensor *t = jp_index_at(ib, i);
        if (taken[i]) continue;
        row *r = &rows[n++];
        r->b = t;
        r->name = t->name;
        r->status = "only in B";
        r->differs = true;
    }
    size_t differ = 0, one_side = 0;
    for (size_t i = 0; i < n; i++) {
        differ += rows[i].differs;
        one_side += strncmp(rows[i].status, "only in ", 8) == 0;
    }
    if (json) {
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(list, row_json(&rows[i]));
        json_t *o = json_pack("{s:s,s:s,s:f,s:f,s:b,s:I,s:I,s:I,s:o}", "a", pa, "b", pb, "atol", atol, "rtol", rtol,
                              "same", differ == 0, "count", (json_int_t)n, "differ", (json_int_t)differ,
                              "one_side", (json_int_t)one_side, "tensors", list);
        char *text = o ? json_dumps(o, JSON_INDENT(1)) : NULL;
        json_decref(o);
        if (!text) {
            fprintf(stderr, "jaxport diff: out of memory\n");
            goto done;
        }
        puts(text);
        free(text);
    } else {
        print_table(rows, n, all, pa, pb);
        printf("%zu tensors: %zu the same, %zu differ (%zu on one side only)\n", n, n - differ, differ, one_side);
    }
    status = differ ? 1 : 0;
done:
    free(rows);
    free(taken);
    jp_plan_free(plan);
    cli_match_free(&ma);
    jp_index_close(ia);
    jp_index_close(ib);
    return status;
}
