/* jaxport align SRC --like TEMPLATE -o PLAN: match, then serve a page on
 * 127.0.0.1 where a person pairs what the matcher could not decide, and
 * save the plan (libmicrohttpd carries the requests; align_api.c answers
 * them). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "align_api.h"
#include "cli.h"

static const char *usage_text =
    "usage: jaxport align SRC --like TEMPLATE -o PLAN [options]\n"
    "\n"
    "Matches as jaxport match does, then serves a page at http://127.0.0.1:PORT/ that\n"
    "lists the leaves left missing or ambiguous with the source modules closest to\n"
    "each; pairing one there matches again with that hint. The page saves the plan\n"
    "to PLAN (give it back with --mapping) and stops the server.\n"
    "\n"
    "  SRC                 the PyTorch checkpoint (any file jaxport reads)\n" CLI_MATCH_USAGE
    "  -o PLAN             where the page saves the plan (needed)\n"
    "  --port N            the port to serve on (default 8765; 0: any free one)\n"
    "  --allow-unsafe      read a checkpoint that would run code under torch.load\n"
    "\n"
    "Exit status: 0 the plan was saved with every leaf paired and every weight taken,\n"
    "1 otherwise (not saved, or leaves still open), 2 usage.\n";

typedef struct server {
    align_session *s;
    unsigned short port;
} server;

typedef struct upload {
    char *buf;
    size_t len;
    bool too_big;
} upload;

static volatile sig_atomic_t interrupted = 0;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

/* Host must be this server's own address: a page of another site that
 * resolves its name to 127.0.0.1 (DNS rebinding) sends its own. */
static bool host_ok(struct MHD_Connection *c, unsigned short port) {
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    char a[64], b[64];
    snprintf(a, sizeof a, "127.0.0.1:%u", port);
    snprintf(b, sizeof b, "localhost:%u", port);
    return host && (strcmp(host, a) == 0 || strcmp(host, b) == 0);
}

static enum MHD_Result respond(struct MHD_Connection *c, const align_response *r) {
    static char empty[] = "";
    struct MHD_Response *resp = MHD_create_response_from_buffer(r->len, r->body ? r->body : empty,
                                                                MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->type ? r->type : "text/plain");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *data_size, void **con_cls) {
    (void)version;
    server *sv = cls;
    upload *u = *con_cls;
    if (!u) { /* the first call: headers only */
        if (!(u = calloc(1, sizeof *u))) return MHD_NO;
        *con_cls = u;
        return MHD_YES;
    }
    if (*data_size) { /* a piece of the body */
        if (!u->too_big && u->len + *data_size <= ALIGN_BODY_MAX) {
            char *nb = realloc(u->buf, u->len + *data_size + 1);
            if (!nb) return MHD_NO;
            memcpy(nb + u->len, data, *data_size);
            u->buf = nb;
            u->len += *data_size;
        } else {
            u->too_big = true;
        }
        *data_size = 0;
        return MHD_YES;
    }
    align_response r;
    if (!host_ok(c, sv->port)) {
        static char refused[] = "this server answers http://127.0.0.1 only";
        r = (align_response){403, "text/plain", refused, sizeof refused - 1};
        return respond(c, &r);
    }
    const char *token = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Jaxport-Token");
    align_handle(sv->s, method, url, token, u->buf ? u->buf : "", u->too_big ? ALIGN_BODY_MAX + 1 : u->len, &r);
    enum MHD_Result ok = respond(c, &r);
    free(r.body);
    return ok;
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode code) {
    (void)cls, (void)c, (void)code;
    upload *u = *con_cls;
    if (u) free(u->buf);
    free(u);
    *con_cls = NULL;
}

/* 32 hexadecimal characters from the system's random source. */
static bool make_token(char out[33]) {
    unsigned char raw[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && read(fd, raw, sizeof raw) == (ssize_t)sizeof raw;
    if (fd >= 0) close(fd);
    for (size_t i = 0; ok && i < sizeof raw; i++) snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return ok;
}

int cmd_align(int argc, char **argv) {
    const char *src = NULL, *out = NULL;
    bool unsafe = false;
    long port = 8765;
    cli_match_args ma = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int took = cli_match_option(&ma, argc, argv, &i);
        if (took < 0) return 2;
        if (took) continue;
        char *end;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(a, "--port") == 0 && i + 1 < argc) {
            port = strtol(argv[++i], &end, 10);
            if (*end || port < 0 || port > 65535) {
                fprintf(stderr, "jaxport align: --port wants 0 to 65535\n");
                return 2;
            }
        } else if (strcmp(a, "--allow-unsafe") == 0) {
            unsafe = true;
        } else if (a[0] == '-' || src) {
            fprintf(stderr, "jaxport align: unexpected argument '%s'\n%s", a, usage_text);
            return 2;
        } else {
            src = a;
        }
    }
    if (!src || !ma.like || !out || ma.mapping) {
        fprintf(stderr, "jaxport align: SRC, --like TEMPLATE and -o PLAN are needed (and no --mapping)\n%s",
                usage_text);
        return 2;
    }
    jp_err err;
    jp_index *ix = NULL;
    jp_plan *first = NULL;
    align_session s;
    bool have_session = false;
    struct MHD_Daemon *d = NULL;
    jp_open_opts oo = {unsafe ? JP_OPEN_ALLOW_UNSAFE : 0};
    int status = 1;
    char token[33];
    if (jp_index_open(&ix, src, &oo, &err)) {
        status = cli_fail(&err);
        goto done;
    }
    /* loads the target, reads the rules and says what is wrong with them */
    if ((status = cli_match_plan(&ma, ix, JP_DTYPE_INVALID, &first, &err))) goto done;
    status = 1;
    if (!make_token(token)) {
        fprintf(stderr, "jaxport align: cannot read /dev/urandom\n");
        goto done;
    }
    if (align_session_init(&s, ix, &ma, out, token, &err)) {
        status = cli_fail(&err);
        goto done;
    }
    have_session = true;
    server sv = {&s, 0};
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* one thread answers every request, so the session needs no lock */
    d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (unsigned short)port, NULL, NULL,
                         &on_request, &sv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                         MHD_OPTION_NOTIFY_COMPLETED, &on_done, NULL, MHD_OPTION_CONNECTION_LIMIT, 16u,
                         MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    const union MHD_DaemonInfo *info = d ? MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    if (!info) {
        fprintf(stderr, "jaxport align: cannot serve on 127.0.0.1:%ld (in use?)\n", port);
        goto done;
    }
    sv.port = info->port;
    size_t undecided = 0;
    for (size_t i = 0; i < s.plan->n; i++)
        undecided += (s.plan->leaves[i].flags & (JP_LEAF_MISSING | JP_LEAF_AMBIGUOUS)) != 0;
    /* Ctrl-C is ours before the address is out: a caller that reads it
     * may stop the server at once. */
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("jaxport align: %zu of %zu leaves to decide; open http://127.0.0.1:%u/ (Ctrl-C to stop)\n", undecided,
           s.plan->n, sv.port);
    fflush(stdout);
    struct timespec nap = {0, 50 * 1000 * 1000};
    while (!atomic_load(&s.quit) && !interrupted) nanosleep(&nap, NULL);
    MHD_stop_daemon(d);
    d = NULL;
    if (!s.saved) {
        fprintf(stderr, "jaxport align: stopped without saving %s\n", out);
    } else {
        printf("jaxport align: saved %s\n", out);
        status = jp_plan_check(s.plan, ix, false, &err) ? cli_fail(&err) : 0;
    }
done:
    if (d) MHD_stop_daemon(d);
    if (have_session) align_session_free(&s);
    jp_plan_free(first);
    cli_match_free(&ma);
    jp_index_close(ix);
    return status;
}
