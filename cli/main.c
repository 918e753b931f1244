/* jaxport: the command-line face of the engine. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct verb {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} verbs[] = {
    {"inspect", cmd_inspect, "list every tensor, value and suspicious global of a file"},
    {"match", cmd_match, "pair a checkpoint's tensors with a JAX model's leaves"},
    {"align", cmd_align, "pair on a local web page what match could not decide, and save the plan"},
    {"diff", cmd_diff, "compare the tensors of two files by name: dtypes, shapes and values"},
    {"convert", cmd_convert, "write every tensor of a file in another format (--dtype casts floats)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: jaxport <verb> [options]\n\nverbs:\n");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        fprintf(f, "  %-10s %s\n", verbs[i].name, verbs[i].help);
    fprintf(f, "\n'jaxport <verb> --help' describes a verb.\n");
}

int cli_fail(const jp_err *err) {
    fprintf(stderr, "jaxport: %s\n", err->msg[0] ? err->msg : jp_code_message(err->code));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("jaxport %s\n", JP_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (strcmp(argv[1], verbs[i].name) == 0) return verbs[i].run(argc - 1, argv + 1);
    fprintf(stderr, "jaxport: unknown verb '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
