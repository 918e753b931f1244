/* The alignment page's requests, without the network: a session holds the
 * checkpoint's index, the target's leaves, the matching options and the
 * hints a person adds on the page, and answers each request with a status,
 * a content type and a body. The HTTP server (align.c) only carries them;
 * the fuzz target calls align_handle directly.
 *
 *   GET  /          the page
 *   GET  /state     the plan (as jaxport match -o writes it), the page's
 *                   hints, and for each target module left unpaired (the
 *                   first ALIGN_MODULES) the source modules closest by name
 *   POST /hints     {"hints": ["SRC=DST", ...]}: match again with them
 *   POST /save      write the plan to the output file (whole or not at all)
 *   POST /quit      stop serving
 *
 * A POST must carry the session's token in the X-Jaxport-Token header (the
 * page has it; another site's script does not). */
#ifndef JP_CLI_ALIGN_API_H
#define JP_CLI_ALIGN_API_H

#include <stdatomic.h>

#include "target.h"

#define ALIGN_BODY_MAX (1u << 20) /* the most bytes a request body may hold */
#define ALIGN_CANDIDATES 12       /* source modules offered per unpaired target module */
#define ALIGN_MODULES 100         /* unpaired target modules listed at once (a template for
                                     another model leaves every one open) */

typedef struct align_session {
    const jp_index *ix;
    cli_match_args *ma;           /* the command line's options; its target loaded */
    const char *out;              /* where /save writes the plan */
    char token[33];
    char *hints[CLI_MAX_HINTS];   /* the page's, heap copies */
    size_t nhints;
    jp_plan *plan;
    bool saved;
    atomic_bool quit;             /* set by the server's thread, read by the one waiting */
} align_session;

typedef struct align_response {
    int status;                   /* 200, 400, 403, 404, 405, 413, 500 */
    const char *type;             /* content type */
    char *body;                   /* heap; NULL when empty */
    size_t len;
} align_response;

/* Match once with the command line's options. token: 32 characters. */
jp_code align_session_init(align_session *s, const jp_index *ix, cli_match_args *ma, const char *out,
                           const char *token, jp_err *err);
void align_session_free(align_session *s);

/* Answer one request; token is the X-Jaxport-Token header (or NULL). */
void align_handle(align_session *s, const char *method, const char *path, const char *token,
                  const char *body, size_t len, align_response *r);

#endif
