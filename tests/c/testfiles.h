/* Scratch files for the C tests: one temporary folder a run (tmpdir_make,
 * tmpdir_remove), paths in it, reading a file back, and copying an index
 * through a writer in pieces. Static inline so that a test that uses only
 * some of these is not warned about the rest. */
#ifndef JP_TESTFILES_H
#define JP_TESTFILES_H

#include <dirent.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "formats/sink.h"

static char tmpdir[64];

/* Make /tmp/jp-test-SUITE-XXXXXX; false when it cannot be made. */
static inline bool tmpdir_make(const char *suite) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/jp-test-%s-XXXXXX", suite);
    return mkdtemp(tmpdir) != NULL;
}

/* tmpdir/name. Four buffers take turns, so a call may take two paths. */
static inline const char *tmp_path(const char *name) {
    static char buf[4][160];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

/* Up to cap bytes of the file; 0 when it cannot be opened. */
static inline size_t read_file(const char *path, uint8_t *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* Files in tmpdir, a writer's temporaries included. */
static inline size_t count_files(void) {
    DIR *d = opendir(tmpdir);
    size_t n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

static inline void clear_dir(void) {
    DIR *d = opendir(tmpdir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') unlink(tmp_path(e->d_name));
    if (d) closedir(d);
}

/* Empty tmpdir and remove it: the end of every run. */
static inline void tmpdir_remove(void) {
    clear_dir();
    rmdir(tmpdir);
}

/* Copy every tensor of ix into a new file `out`, in the order the writer
 * asks for them, each in pieces of `piece` bytes. Tensor i of the list is
 * ix's given[i] (given NULL: ix's i-th). */
static inline jp_code copy_index(const jp_index *ix, const size_t *given, const char *out,
                                 const jp_sink_opts *opts, size_t piece, jp_err *err) {
    size_t n = jp_index_count(ix);
    jp_sink_tensor *ts = calloc(n ? n : 1, sizeof *ts);
    if (!ts) return JP_NO_MEMORY;
    for (size_t i = 0; i < n; i++) {
        const jp_tensor *t = jp_index_at(ix, given ? given[i] : i);
        if (!(t->flags & JP_TENSOR_CONTIGUOUS)) {
            free(ts);
            return jp_err_set(err, JP_UNSUPPORTED, JP_NO_OFFSET, t->name, "not contiguous");
        }
        ts[i].name = t->name;
        ts[i].dtype = t->dtype;
        ts[i].ndim = t->ndim;
        memcpy(ts[i].shape, t->shape, sizeof ts[i].shape);
        ts[i].nbytes = t->nbytes;
    }
    jp_sink *s;
    jp_code rc = jp_sink_open(&s, out, JP_FORMAT_UNKNOWN, ts, n, opts, err);
    free(ts);
    for (size_t i; !rc && (i = jp_sink_expected(s)) < n;) {
        const jp_tensor *t = jp_index_at(ix, given ? given[i] : i);
        for (uint64_t o = 0; o < t->nbytes && !rc; o += piece) {
            size_t len = (size_t)(t->nbytes - o < piece ? t->nbytes - o : piece);
            rc = jp_sink_write(s, i, t->data + o, len, err);
        }
    }
    if (rc) {
        jp_sink_abort(s);
        return rc;
    }
    return jp_sink_commit(s, err);
}

#endif
