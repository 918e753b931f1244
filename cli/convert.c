/* jaxport convert IN -o OUT: every tensor of IN, as it is (or with floats
 * cast by --dtype), into OUT in the format its extension names. The output
 * appears whole or not at all; IN is only read. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "target.h"
#include "exec/exec.h"

static const char *usage_text =
    "usage: jaxport convert IN -o OUT [--dtype bf16|f16|f32|f64] [--shard-size SIZE]\n"
    "                       [--format FMT] [--threads N] [--allow-unsafe] [--json] [--quiet]\n"
    "                       [--like TEMPLATE [matching options]]\n"
    "\n"
    "  -o OUT          the file to write; its extension names the format\n"
    "                  (.msgpack .eqx .safetensors .npz) unless --format is given\n"
    "  --dtype T       cast float16/bfloat16/float32/float64 tensors to T; integer,\n"
    "                  bool, complex and float8 tensors are written as they are\n"
    "  --shard-size S  safetensors: split into shards of at most S (500MB, 5GB, 2GiB)\n"
    "  --format FMT    msgpack, eqx, safetensors or npz, whatever OUT's extension\n"
    "  --threads N     threads for casts and permutes (default: one per core)\n"
    "  --allow-unsafe  convert a file that would run code under torch.load (nothing\n"
    "                  runs either way); without it such a file is an error\n"
    "  --json          print the summary as one JSON object\n"
    "  --quiet         no progress bar and no summary\n"
    "\n"
    "With --like, the tensors are first paired with the template's leaves and laid\n"
    "out as its library wants (kernels transposed, attention split, ...), as\n"
    "`jaxport match` shows; any unpaired leaf, or source weight no leaf takes, stops\n"
    "the conversion. Options:\n" CLI_MATCH_USAGE
    "  --allow-unused      drop source tensors no leaf takes instead of refusing\n"
    "\n"
    "Ctrl-C stops the conversion and removes what was written (exit status 130).\n";

/* Set by SIGINT/SIGTERM; the executor checks it between tiles. */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    (void)sig;
    if (interrupted) {
        /* A second signal: the run is stuck in a long write; leave now. */
        jp_outfile_cleanup_all();
        _exit(130);
    }
    interrupted = 1;
}

/* "5GB" (10^9), "2GiB" (2^30), "500MB", "123" (bytes); 0 on a bad size. */
static uint64_t parse_size(const char *s) {
    char *end;
    if (*s < '0' || *s > '9') return 0;
    double v = strtod(s, &end);
    static const struct {
        const char *unit;
        double mult;
    } units[] = {{"", 1},           {"b", 1},           {"kb", 1e3},         {"mb", 1e6},
                 {"gb", 1e9},       {"tb", 1e12},       {"k", 1e3},          {"m", 1e6},
                 {"g", 1e9},        {"t", 1e12},        {"kib", 1024.0},     {"mib", 1048576.0},
                 {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(end, units[i].unit) == 0) {
            double bytes = v * units[i].mult;
            return bytes >= 1 && bytes < 1.8e19 ? (uint64_t)bytes : 0;
        }
    return 0;
}

static jp_dtype parse_dtype(const char *s) {
    static const struct {
        const char *name;
        jp_dtype dt;
    } names[] = {{"bf16", JP_BF16}, {"bfloat16", JP_BF16}, {"f16", JP_F16}, {"float16", JP_F16},
                 {"fp16", JP_F16},  {"f32", JP_F32},       {"float32", JP_F32}, {"fp32", JP_F32},
                 {"f64", JP_F64},   {"float64", JP_F64}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(s, names[i].name) == 0) return names[i].dt;
    return JP_DTYPE_INVALID;
}

static jp_format parse_format(const char *s) {
    static const jp_format writable[] = {JP_FORMAT_MSGPACK, JP_FORMAT_EQX, JP_FORMAT_SAFETENSORS,
                                         JP_FORMAT_NPZ};
    for (size_t i = 0; i < sizeof writable / sizeof writable[0]; i++)
        if (strcasecmp(s, jp_format_name(writable[i])) == 0) return writable[i];
    return JP_FORMAT_UNKNOWN;
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The progress line on a terminal: bar, percent, speed, the current leaf. */
typedef struct bar {
    double start;
    int width;
    bool shown;
} bar;

static void draw_bar(void *ctx, uint64_t done, uint64_t total, const char *name) {
    bar *b = ctx;
    double pct = total ? 100.0 * (double)done / (double)total : 100.0;
    double dt = now_seconds() - b->start;
    double mbs = dt > 0 ? (double)done / 1e6 / dt : 0;
    enum { CELLS = 24 };
    char cells[CELLS + 1];
    int full = (int)(pct / 100.0 * CELLS);
    for (int i = 0; i < CELLS; i++) cells[i] = i < full ? '#' : '-';
    cells[CELLS] = '\0';
    char line[512];
    int n = snprintf(line, sizeof line, "[%s] %5.1f%%  %8.1f MB/s  %s", cells, pct, mbs, name);
    if (n < 0) return;
    if (n > b->width - 1) n = b->width - 1;
    fprintf(stderr, "\r%.*s\033[K", n, line);
    fflush(stderr);
    b->shown = true;
}

static int terminal_width(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    return 80;
}

/* IN and OUT are the same file: writing OUT would replace IN. */
static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static bool ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "jaxport convert: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage_text);
    return 2;
}

static void print_summary(const char *in, const char *out, const jp_index *ix,
                          const jp_exec_stats *st, double secs, bool json) {
    double mbs = secs > 0 ? (double)st->bytes_out / 1e6 / secs : 0;
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:f}", "input", in, "output",
                              out, "input_format", jp_format_name(jp_index_format(ix)), "tensors",
                              (json_int_t)st->tensors, "bytes_in", (json_int_t)st->bytes_in,
                              "bytes_out", (json_int_t)st->bytes_out, "bytes_direct",
                              (json_int_t)st->bytes_direct, "seconds", secs, "mb_per_s", mbs);
        char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_ENSURE_ASCII) : NULL;
        if (text) puts(text);
        free(text);
        json_decref(o);
        return;
    }
    printf("%s -> %s: %zu tensors, %.1f MB in, %.1f MB out, %.2f s, %.1f MB/s\n", in, out,
           st->tensors, (double)st->bytes_in / 1e6, (double)st->bytes_out / 1e6, secs, mbs);
}

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    jp_dtype dtype = JP_DTYPE_INVALID;
    jp_format format = JP_FORMAT_UNKNOWN;
    uint64_t shard = 0;
    int threads = 0;
    bool json = false, quiet = false, allow_unused = false;
    jp_open_opts open_opts = {0};
    cli_match_args ma = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        int took = cli_match_option(&ma, argc, argv, &i);
        if (took < 0) return 2;
        if (took) continue;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
            if (!has_value) return usage_error("%s needs a file", a);
            out = argv[++i];
        } else if (strcmp(a, "--dtype") == 0) {
            if (!has_value || !(dtype = parse_dtype(argv[++i])))
                return usage_error("--dtype takes bf16, f16, f32 or f64%s", "");
        } else if (strcmp(a, "--shard-size") == 0) {
            if (!has_value || !(shard = parse_size(argv[++i])))
                return usage_error("--shard-size takes a size such as 500MB, 5GB or 2GiB%s", "");
        } else if (strcmp(a, "--format") == 0) {
            if (!has_value || !(format = parse_format(argv[++i])))
                return usage_error("--format takes msgpack, eqx, safetensors or npz%s", "");
        } else if (strcmp(a, "--threads") == 0) {
            char *end;
            long n = has_value ? strtol(argv[++i], &end, 10) : -1;
            if (n < 0 || n > JP_POOL_MAX_THREADS || *end)
                return usage_error("--threads takes a number up to 256 (0: one per core)%s", "");
            threads = (int)n;
        } else if (strcmp(a, "--allow-unsafe") == 0) {
            open_opts.flags |= JP_OPEN_ALLOW_UNSAFE;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--allow-unused") == 0) {
            allow_unused = true;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            quiet = true;
        } else if (a[0] == '-' || in) {
            return usage_error("unexpected argument '%s'", a);
        } else {
            in = a;
        }
    }
    if (!in || !out) return usage_error("%s", !in ? "no input file" : "no output file (-o OUT)");
    if (shard && !(format == JP_FORMAT_SAFETENSORS ||
                   (format == JP_FORMAT_UNKNOWN && ends_with(out, ".safetensors"))))
        return usage_error("--shard-size applies to safetensors output only%s", "");
    if (same_file(in, out)) {
        fprintf(stderr, "jaxport: %s: the output is the input; write to another file\n", out);
        return 1;
    }

    jp_err err;
    jp_index *ix = NULL;
    jp_plan *plan = NULL;
    jp_pool *pool = NULL;
    jp_meta *meta = NULL;
    int status = 1;
    if (jp_index_open(&ix, in, &open_opts, &err)) {
        cli_fail(&err);
        if (err.code == JP_UNSAFE)
            fprintf(stderr, "jaxport: nothing was run. 'jaxport inspect --allow-unsafe %s' lists "
                    "what it would run; 'jaxport convert --allow-unsafe' converts it anyway.\n", in);
        return 1;
    }
    if (ma.like) {
        if ((status = cli_match_plan(&ma, ix, dtype, &plan, &err))) goto done;
        status = 1;
        if (jp_plan_check(plan, ix, allow_unused, &err)) {
            cli_fail(&err);
            fprintf(stderr, "jaxport: nothing was written; 'jaxport match %s --like %s' shows every leaf\n", in,
                    ma.like);
            goto done;
        }
    } else if (jp_plan_identity(&plan, ix, JP_DTYPE_INVALID, &err) ||
               (dtype && jp_plan_cast_floats(plan, dtype, &err))) {
        cli_fail(&err);
        goto done;
    }
    if (jp_pool_create(&pool, threads, &err)) {
        cli_fail(&err);
        goto done;
    }
    /* A safetensors file's own __metadata__ goes on to a safetensors output. */
    jp_sink_opts sink_opts = {.shard_bytes = shard};
    size_t nmeta = jp_index_format(ix) == JP_FORMAT_SAFETENSORS ? jp_index_meta_count(ix) : 0;
    if (nmeta) {
        meta = calloc(nmeta, sizeof *meta);
        if (!meta) {
            fprintf(stderr, "jaxport: out of memory\n");
            goto done;
        }
        for (size_t i = 0; i < nmeta; i++) meta[i] = *jp_index_meta_at(ix, i);
        sink_opts.meta = meta;
        sink_opts.nmeta = nmeta;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    bar b = {.start = now_seconds(), .width = terminal_width()};
    jp_exec_stats st;
    jp_exec_opts opts = {.pool = pool, .interrupt = &interrupted, .stats = &st};
    if (!quiet && !json && isatty(STDERR_FILENO)) {
        opts.progress = draw_bar;
        opts.progress_ctx = &b;
    }
    jp_code rc = jp_exec_to_file(plan, ix, out, format, &sink_opts, &opts, &err);
    double secs = now_seconds() - b.start;
    if (b.shown) fprintf(stderr, "\r\033[K");
    if (rc == JP_INTERRUPTED || (rc && interrupted)) {
        jp_outfile_cleanup_all();
        fprintf(stderr, "jaxport: interrupted; %s was not written\n", out);
        status = 130;
    } else if (rc) {
        cli_fail(&err);
    } else {
        if (!quiet) print_summary(in, out, ix, &st, secs, json);
        status = 0;
    }
done:
    cli_match_free(&ma);
    free(meta);
    jp_pool_destroy(pool);
    jp_plan_free(plan);
    jp_index_close(ix);
    return status;
}
