/* jaxport inspect FILE [--json]: what a checkpoint holds. */
#include <string.h>

#include "cli.h"

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: jaxport inspect FILE\n");
            return 0;
        }
        path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "usage: jaxport inspect FILE\n");
        return 2;
    }
    jp_err err;
    jp_index *ix;
    if (jp_index_open(&ix, path, NULL, &err)) return cli_fail(&err);
    for (size_t i = 0; i < jp_index_count(ix); i++) {
        const jp_tensor *t = jp_index_at(ix, i);
        printf("%s %s\n", t->name, jp_dtype_name(t->dtype));
    }
    jp_index_close(ix);
    return 0;
}
