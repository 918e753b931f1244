/* jaxport match SRC --like TEMPLATE: pair a checkpoint with a JAX model's
 * leaves and show (or save) the plan. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "match/mapping.h"
#include "target.h"

static const char *usage_text =
    "usage: jaxport match SRC --like TEMPLATE [options]\n"
    "\n"
    "  SRC                 the PyTorch checkpoint (any file jaxport reads)\n" CLI_MATCH_USAGE
    "  -o FILE             save the plan (editable JSON; give it back with --mapping)\n"
    "  --json              print the plan as JSON instead of the table\n"
    "  --allow-unsafe      read a checkpoint that would run code under torch.load\n"
    "  --allow-unused      source tensors no leaf takes are not an error\n"
    "\n"
    "Exit status: 0 every leaf paired and every weight taken, 1 some leaf missing or\n"
    "ambiguous or some weight left over (the table says which and why), 2 usage.\n";

int cmd_match(int argc, char **argv) {
    const char *src = NULL, *out = NULL;
    bool json = false, unsafe = false, allow_unused = false;
    cli_match_args ma = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int took = cli_match_option(&ma, argc, argv, &i);
        if (took < 0) return 2;
        if (took) continue;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--allow-unsafe") == 0) {
            unsafe = true;
        } else if (strcmp(a, "--allow-unused") == 0) {
            allow_unused = true;
        } else if (a[0] == '-' || src) {
            fprintf(stderr, "jaxport match: unexpected argument '%s'\n%s", a, usage_text);
            return 2;
        } else {
            src = a;
        }
    }
    if (!src || !ma.like) {
        fprintf(stderr, "jaxport match: SRC and --like TEMPLATE are needed\n%s", usage_text);
        return 2;
    }
    jp_err err;
    jp_index *ix = NULL;
    jp_plan *plan = NULL;
    char *text = NULL, *table = NULL;
    jp_open_opts oo = {unsafe ? JP_OPEN_ALLOW_UNSAFE : 0};
    int status = 1;
    if (jp_index_open(&ix, src, &oo, &err)) {
        status = cli_fail(&err);
        goto done;
    }
    if ((status = cli_match_plan(&ma, ix, JP_DTYPE_INVALID, &plan, &err))) goto done;
    status = 1;
    jp_code rc = jp_plan_to_json(plan, ix, ma.target.leaves, ma.target.n, ma.lib, &text, &err);
    if (!rc && !json) rc = jp_plan_json_table(text, strlen(text), &table, &err);
    if (rc) {
        status = cli_fail(&err);
        goto done;
    }
    fputs(json ? text : table, stdout);
    if (json) fputc('\n', stdout);
    if (out) {
        FILE *f = fopen(out, "wb");
        if (!f || fputs(text, f) < 0 || fputc('\n', f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "jaxport match: cannot write %s\n", out);
            goto done;
        }
    }
    status = jp_plan_check(plan, ix, allow_unused, &err) ? cli_fail(&err) : 0;
done:
    jp_plan_free(plan);
    free(text);
    free(table);
    cli_match_free(&ma);
    jp_index_close(ix);
    return status;
}
