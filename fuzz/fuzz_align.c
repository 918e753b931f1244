/* Fuzz the alignment page's request handler (cli/align_api.c): any method,
 * path and body a client may send, with and without the session's token.
 * The first input byte picks the request, the rest is its body. Every
 * answer must carry a known status and, unless it is the page, a JSON body;
 * a refused request must leave the session's hints as they were. The source
 * is plan_source.h's small Flax msgpack, the target two Dense modules. */
#include <assert.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "align_api.h"
#include "plan_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static jp_leaf_spec leaves[] = {
    {"params/a/kernel", JP_F32, 2, {3, 4}, NULL},
    {"params/a/bias", JP_F32, 1, {4}, NULL},
    {"params/c/kernel", JP_F32, 2, {3, 4}, NULL},
    {"params/c/bias", JP_F32, 1, {4}, NULL},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const methods[] = {"GET", "POST", "PUT", ""};
    static const char *const paths[] = {"/", "/state", "/hints", "/quit", "/save/..", "", "/hints?x=1"};
    if (size < 1) return 0;
    jp_index *ix;
    jp_err err;
    if (jp_index_open_memory(&ix, plan_source, sizeof plan_source, "source.msgpack", NULL, &err)) abort();
    cli_match_args ma;
    memset(&ma, 0, sizeof ma);
    ma.target.leaves = leaves;
    ma.target.n = sizeof leaves / sizeof leaves[0];
    ma.lib = JP_LIB_FLAX;
    align_session s;
    const char *token = "0123456789abcdef0123456789abcdef";
    if (align_session_init(&s, ix, &ma, "/nonexistent/plan.json", token, &err)) abort();
    const char *method = methods[data[0] & 3], *path = paths[(data[0] >> 2) % 7];
    bool with_token = data[0] & 0x80;
    size_t before = s.nhints;
    align_response r;
    align_handle(&s, method, path, with_token ? token : "x", (const char *)data + 1, size - 1, &r);
    assert(r.status == 200 || r.status == 400 || r.status == 403 || r.status == 404 || r.status == 405 ||
           r.status == 413 || r.status == 500);
    assert(r.type && (r.body || r.len == 0));
    if (strcmp(r.type, "application/json") == 0) {
        json_t *o = json_loadb(r.body, r.len, 0, NULL);
        assert(o);
        assert(r.status == 200 || json_is_string(json_object_get(o, "error")));
        json_decref(o);
    }
    assert(r.status == 200 || s.nhints == before);
    (void)before;
    free(r.body);
    align_session_free(&s);
    jp_index_close(ix);
    return 0;
}
