/* Read-only file mapping. Tensor data are views into this mapping. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

jp_code jp_map_open(jp_map *m, const char *path, jp_err *err) {
    m->data = NULL;
    m->len = 0;
    m->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return jp_err_set(err, JP_IO, JP_NO_OFFSET, NULL, "%s: cannot open: %s", path,
                          strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return jp_err_set(err, JP_IO, JP_NO_OFFSET, NULL, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return jp_err_set(err, JP_IO, JP_NO_OFFSET, NULL, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return jp_err_set(err, JP_LIMIT, JP_NO_OFFSET, NULL, "%s: too large to map", path);
    }
    m->fd = fd;
    m->len = (size_t)st.st_size;
    if (m->len == 0) return JP_OK;  /* mmap refuses length 0; readers see an empty span */
    void *p = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        m->fd = -1;
        return jp_err_set(err, JP_IO, JP_NO_OFFSET, NULL, "%s: cannot map: %s", path, strerror(e));
    }
    m->data = p;
    return JP_OK;
}

void jp_map_close(jp_map *m) {
    if (!m) return;
    if (m->data) munmap((void *)m->data, m->len);
    if (m->fd >= 0) close(m->fd);
    m->data = NULL;
    m->len = 0;
    m->fd = -1;
}
