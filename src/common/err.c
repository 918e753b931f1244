/* Error codes and messages, generated from JP_ERRORS so they never drift. */
#include <stdio.h>
#include <string.h>

#include "common.h"

static const char *const code_names[] = {
#define X(name, msg) #name,
    JP_ERRORS(X)
#undef X
};

static const char *const code_messages[] = {
#define X(name, msg) msg,
    JP_ERRORS(X)
#undef X
};

const char *jp_code_name(jp_code code) {
    if ((unsigned)code >= JP_CODE_COUNT) return "UNKNOWN";
    return code_names[code];
}

const char *jp_code_message(jp_code code) {
    if ((unsigned)code >= JP_CODE_COUNT) return "unknown error code";
    return code_messages[code];
}

void jp_err_clear(jp_err *err) {
    if (!err) return;
    err->code = JP_OK;
    err->offset = JP_NO_OFFSET;
    err->member[0] = '\0';
    err->msg[0] = '\0';
}

jp_code jp_err_set(jp_err *err, jp_code code, uint64_t offset, const char *member,
                   const char *fmt, ...) {
    if (!err) return code;
    err->code = code;
    err->offset = offset;
    snprintf(err->member, sizeof err->member, "%s", member ? member : "");
    char body[JP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (member && *member && offset != JP_NO_OFFSET)
        snprintf(err->msg, sizeof err->msg, "%s @ 0x%llx: %s", member, (unsigned long long)offset,
                 body);
    else if (member && *member)
        snprintf(err->msg, sizeof err->msg, "%s: %s", member, body);
    else if (offset != JP_NO_OFFSET)
        snprintf(err->msg, sizeof err->msg, "@ 0x%llx: %s", (unsigned long long)offset, body);
    else
        snprintf(err->msg, sizeof err->msg, "%s", body);
    return code;
}

void jp_err_prefix(jp_err *err, const char *name) {
    if (!err || !name || !*name || err->code == JP_OK) return;
    size_t n = strlen(name);
    if (strncmp(err->msg, name, n) == 0 && err->msg[n] == ':') return;
    char tmp[JP_ERR_MSG_MAX];
    snprintf(tmp, sizeof tmp, "%s: %s", name, err->msg);
    memcpy(err->msg, tmp, sizeof tmp);
}
