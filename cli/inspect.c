/* jaxport inspect FILE [--json] [--allow-unsafe]: what a checkpoint holds:
 * every tensor with dtype, shape, bytes and whether it is a strided view,
 * shares its storage or had to be copied; totals; plain values (epoch, lr);
 * and what the file would import or run under its usual reader. */
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *usage_text =
    "usage: jaxport inspect FILE [--json] [--allow-unsafe]\n"
    "\n"
    "  --json          one JSON object instead of the table\n"
    "  --allow-unsafe  list a file that would run code under torch.load (nothing\n"
    "                  runs either way); without it such a file is an error\n";

static const char *kind_name(jp_finding_kind k) {
    return k == JP_FIND_CALL ? "call" : k == JP_FIND_DENIED ? "denied" : "import";
}

static const char *kind_text(jp_finding_kind k) {
    return k == JP_FIND_CALL     ? "would call"
           : k == JP_FIND_DENIED ? "would run (never allowed)"
                                 : "would import";
}

/* "[3, 4]" into buf. */
static void shape_text(const jp_tensor *t, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static void flags_text(const jp_tensor *t, char *buf, size_t cap) {
    snprintf(buf, cap, "%s%s%s", (t->flags & JP_TENSOR_CONTIGUOUS) ? "" : "view ",
             (t->flags & JP_TENSOR_SHARED) ? "shared " : "",
             (t->flags & JP_TENSOR_OWNED) ? "copied " : "");
    size_t n = strlen(buf);
    if (n) buf[n - 1] = '\0';
}

typedef struct totals {
    size_t tensors, storages;
    uint64_t bytes;
} totals;

static int count_totals(const jp_index *ix, totals *tot) {
    memset(tot, 0, sizeof *tot);
    tot->tensors = jp_index_count(ix);
    uint32_t max = 0;
    for (size_t i = 0; i < tot->tensors; i++) {
        const jp_tensor *t = jp_index_at(ix, i);
        tot->bytes += t->nbytes;
        if (t->storage > max) max = t->storage;
    }
    if (!tot->tensors) return 0;
    unsigned char *seen = calloc((size_t)max + 1, 1);
    if (!seen) return -1;
    for (size_t i = 0; i < tot->tensors; i++) {
        const jp_tensor *t = jp_index_at(ix, i);
        tot->storages += !seen[t->storage];
        seen[t->storage] = 1;
    }
    free(seen);
    return 0;
}

static void print_table(const char *path, const jp_index *ix, const totals *tot) {
    size_t wname = 4, wdtype = 5, wshape = 5;
    char shape[JP_MAX_DIMS * 22 + 3], flags[32];
    for (size_t i = 0; i < tot->tensors; i++) {
        const jp_tensor *t = jp_index_at(ix, i);
        shape_text(t, shape, sizeof shape);
        size_t n = strlen(t->name), d = strlen(jp_dtype_numpy_name(t->dtype)), s = strlen(shape);
        if (n > wname) wname = n;
        if (d > wdtype) wdtype = d;
        if (s > wshape) wshape = s;
    }
    printf("%s: %s\n\n", path, jp_format_name(jp_index_format(ix)));
    printf("%-*s  %-*s  %-*s  %14s  %s\n", (int)wname, "name", (int)wdtype, "dtype", (int)wshape,
           "shape", "bytes", "flags");
    for (size_t i = 0; i < tot->tensors; i++) {
        const jp_tensor *t = jp_index_at(ix, i);
        shape_text(t, shape, sizeof shape);
        flags_text(t, flags, sizeof flags);
        printf("%-*s  %-*s  %-*s  %14llu%s%s\n", (int)wname, t->name, (int)wdtype,
               jp_dtype_numpy_name(t->dtype), (int)wshape, shape, (unsigned long long)t->nbytes,
               flags[0] ? "  " : "", flags);
    }
    printf("\n%zu tensors, %llu bytes (%.1f MiB), %zu storages\n", tot->tensors,
           (unsigned long long)tot->bytes, (double)tot->bytes / (1024.0 * 1024.0), tot->storages);
    size_t nmeta = jp_index_meta_count(ix);
    if (nmeta) {
        printf("\nvalues:\n");
        for (size_t i = 0; i < nmeta; i++) {
            const jp_meta *m = jp_index_meta_at(ix, i);
            printf("  %s = %s\n", m->key, m->value);
        }
    }
    size_t nfind = jp_index_finding_count(ix);
    if (nfind) {
        printf("\nunder torch.load this file %s:\n",
               nfind == 1 ? "would do one thing jaxport did not" : "would do things jaxport did not");
        for (size_t i = 0; i < nfind; i++) {
            const jp_finding *f = jp_index_finding_at(ix, i);
            printf("  %-26s %s  (%s @ 0x%llx)\n", kind_text(f->kind), f->global, f->member,
                   (unsigned long long)f->offset);
        }
    }
}

static json_t *tensor_json(const jp_tensor *t) {
    json_t *shape = json_array(), *strides = json_array(), *flags = json_array();
    for (int d = 0; d < t->ndim; d++) {
        json_array_append_new(shape, json_integer(t->shape[d]));
        json_array_append_new(strides, json_integer(t->strides[d]));
    }
    if (!(t->flags & JP_TENSOR_CONTIGUOUS)) json_array_append_new(flags, json_string("view"));
    if (t->flags & JP_TENSOR_SHARED) json_array_append_new(flags, json_string("shared"));
    if (t->flags & JP_TENSOR_OWNED) json_array_append_new(flags, json_string("copied"));
    json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:I, s:i, s:o}", "name", t->name, "dtype",
                          jp_dtype_numpy_name(t->dtype), "shape", shape, "strides", strides,
                          "bytes", (json_int_t)t->nbytes, "storage", (int)t->storage, "flags",
                          flags);
    if (o && t->file_offset != JP_NO_OFFSET)
        json_object_set_new(o, "file_offset", json_integer((json_int_t)t->file_offset));
    return o;
}

static int print_json(const char *path, const jp_index *ix, const totals *tot) {
    json_t *tensors = json_array(), *meta = json_object(), *findings = json_array();
    for (size_t i = 0; i < tot->tensors; i++)
        json_array_append_new(tensors, tensor_json(jp_index_at(ix, i)));
    for (size_t i = 0; i < jp_index_meta_count(ix); i++) {
        const jp_meta *m = jp_index_meta_at(ix, i);
        json_object_set_new(meta, m->key, json_string(m->value));
    }
    for (size_t i = 0; i < jp_index_finding_count(ix); i++) {
        const jp_finding *f = jp_index_finding_at(ix, i);
        json_array_append_new(findings, json_pack("{s:s, s:s, s:s, s:I}", "kind",
                                                  kind_name(f->kind), "global", f->global,
                                                  "member", f->member, "offset",
                                                  (json_int_t)f->offset));
    }
    json_t *root = json_pack("{s:s, s:s, s:o, s:{s:I, s:I, s:I}, s:o, s:o}", "file", path,
                             "format", jp_format_name(jp_index_format(ix)), "tensors", tensors,
                             "totals", "tensors", (json_int_t)tot->tensors, "bytes",
                             (json_int_t)tot->bytes, "storages", (json_int_t)tot->storages,
                             "meta", meta, "findings", findings);
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_ENSURE_ASCII) : NULL;
    json_decref(root);
    if (!text) {
        fprintf(stderr, "jaxport: out of memory writing JSON\n");
        return 1;
    }
    puts(text);
    free(text);
    return 0;
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool json = false;
    jp_open_opts opts = {0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--allow-unsafe") == 0) {
            opts.flags |= JP_OPEN_ALLOW_UNSAFE;
        } else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "jaxport inspect: unexpected argument '%s'\n%s", argv[i], usage_text);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fputs(usage_text, stderr);
        return 2;
    }
    jp_err err;
    jp_index *ix;
    if (jp_index_open(&ix, path, &opts, &err)) {
        cli_fail(&err);
        if (err.code == JP_UNSAFE)
            fprintf(stderr, "jaxport: nothing was run. 'jaxport inspect --allow-unsafe %s' lists "
                    "its tensors and everything it would run.\n", path);
        return 1;
    }
    totals tot;
    int rc = 0;
    if (count_totals(ix, &tot) != 0) {
        fprintf(stderr, "jaxport: out of memory\n");
        rc = 1;
    } else if (json) {
        rc = print_json(path, ix, &tot);
    } else {
        print_table(path, ix, &tot);
    }
    jp_index_close(ix);
    return rc;
}
