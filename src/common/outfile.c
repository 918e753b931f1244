/* Output files written to a temporary name and renamed only when complete. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#define OUT_BUF (4u << 20)
#define MAX_LIVE 64
#define SYNC_AFTER (1u << 20) /* writes at least this big start their writeback at once */

/* Temporary names of the files being written, so an interrupted process can
 * remove them. Written only outside signal handlers; read by the handler. */
static char *volatile live[MAX_LIVE];

static void live_add(char *tmp) {
    for (int i = 0; i < MAX_LIVE; i++)
        if (!live[i]) {
            live[i] = tmp;
            return;
        }
}

static void live_remove(const char *tmp) {
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] == tmp) live[i] = NULL;
}

void jp_outfile_cleanup_all(void) {
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i]) unlink(live[i]);
}

static jp_code io_err(jp_err *err, const char *what, const char *path) {
    return jp_err_set(err, JP_IO, JP_NO_OFFSET, NULL, "%s: cannot %s: %s", path, what,
                      strerror(errno));
}

jp_code jp_outfile_open(jp_outfile *f, const char *path, jp_err *err) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    size_t n = strlen(path);
    f->path = malloc(n + 1);
    f->tmp = malloc(n + 32);
    f->buf = malloc(OUT_BUF);
    if (!f->path || !f->tmp || !f->buf) {
        jp_outfile_abort(f);
        return jp_err_set(err, JP_NO_MEMORY, JP_NO_OFFSET, NULL, "out of memory");
    }
    memcpy(f->path, path, n + 1);
    snprintf(f->tmp, n + 32, "%s.jaxport-XXXXXX", path);
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        jp_code rc = io_err(err, "create a temporary file beside", path);
        jp_outfile_abort(f);
        return rc;
    }
    f->created = true;
    f->bufcap = OUT_BUF;
    live_add(f->tmp);
    return JP_OK;
}

static jp_code write_all(jp_outfile *f, const unsigned char *p, size_t len, jp_err *err) {
    size_t total = len;
    while (len) {
        ssize_t w = write(f->fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return io_err(err, "write", f->path);
        }
        p += w;
        len -= (size_t)w;
    }
#ifdef SYNC_FILE_RANGE_WRITE
    /* Start writing big pieces to disk now, so the disk works while the next
     * ones are made and the fsync of commit has little left to wait for
     * (cheap: it only queues the pages; failures show at fsync). */
    off_t end = total >= SYNC_AFTER ? lseek(f->fd, 0, SEEK_CUR) : -1;
    if (end >= (off_t)total) (void)sync_file_range(f->fd, end - (off_t)total, (off_t)total, SYNC_FILE_RANGE_WRITE);
#else
    (void)total;
#endif
    return JP_OK;
}

static jp_code flush(jp_outfile *f, jp_err *err) {
    jp_code rc = write_all(f, f->buf, f->buflen, err);
    f->buflen = 0;
    return rc;
}

jp_code jp_outfile_write(jp_outfile *f, const void *data, size_t len, jp_err *err) {
    const unsigned char *p = data;
    f->written += len;
    if (len >= f->bufcap) {
        jp_code rc = flush(f, err);
        return rc ? rc : write_all(f, p, len, err);
    }
    if (f->bufcap - f->buflen < len) {
        jp_code rc = flush(f, err);
        if (rc) return rc;
    }
    memcpy(f->buf + f->buflen, p, len);
    f->buflen += len;
    return JP_OK;
}

jp_code jp_outfile_pwrite(jp_outfile *f, const void *data, size_t len, uint64_t offset, jp_err *err) {
    jp_code rc = flush(f, err);
    if (rc) return rc;
    const unsigned char *p = data;
    while (len) {
        ssize_t w = pwrite(f->fd, p, len, (off_t)offset);
        if (w < 0) {
            if (errno == EINTR) continue;
            return io_err(err, "write", f->path);
        }
        p += w;
        len -= (size_t)w;
        offset += (uint64_t)w;
    }
    return JP_OK;
}

jp_code jp_outfile_finish(jp_outfile *f, jp_err *err) {
    if (f->fd < 0) return JP_OK; /* finished already */
    jp_code rc = flush(f, err);
    if (!rc && fsync(f->fd) != 0) rc = io_err(err, "sync", f->path);
    /* mkstemp creates 0600; give the result the usual permissions. */
    if (!rc) {
        mode_t mask = umask(0);
        umask(mask);
        if (fchmod(f->fd, 0666 & ~mask) != 0) rc = io_err(err, "set permissions of", f->path);
    }
    if (!rc && close(f->fd) != 0) rc = io_err(err, "close", f->path);
    if (!rc) f->fd = -1;
    if (rc) {
        jp_outfile_abort(f);
        return rc;
    }
    free(f->buf);
    f->buf = NULL;
    f->buflen = f->bufcap = 0;
    return JP_OK;
}

jp_code jp_outfile_commit(jp_outfile *f, jp_err *err) {
    if (!f->tmp) return jp_err_set(err, JP_ARGUMENT, JP_NO_OFFSET, NULL, "no open file to commit");
    jp_code rc = jp_outfile_finish(f, err);
    if (rc) return rc;
    if (rename(f->tmp, f->path) == 0) {
        f->created = false;
    } else {
        rc = io_err(err, "rename the finished file to", f->path);
        jp_outfile_abort(f);
        return rc;
    }
    live_remove(f->tmp);
    free(f->tmp);
    free(f->path);
    free(f->buf);
    memset(f, 0, sizeof *f);
    f->fd = -1;
    return JP_OK;
}

void jp_outfile_abort(jp_outfile *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) {
        live_remove(f->tmp);
        if (f->created) unlink(f->tmp);
    }
    free(f->tmp);
    free(f->path);
    free(f->buf);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}
