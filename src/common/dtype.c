/* The dtype table, generated from JP_DTYPES. */
#include <string.h>

#include "common.h"

static const struct {
    const char *name, *st, *np;
    size_t size;
} table[JP_DTYPE_COUNT] = {
    [JP_DTYPE_INVALID] = {"INVALID", "INVALID", "invalid", 0},
#define X(name, size, st, np) [JP_##name] = {#name, st, np, size},
    JP_DTYPES(X)
#undef X
};

size_t jp_dtype_size(jp_dtype dt) {
    return (unsigned)dt < JP_DTYPE_COUNT ? table[dt].size : 0;
}

const char *jp_dtype_name(jp_dtype dt) {
    return (unsigned)dt < JP_DTYPE_COUNT ? table[dt].name : "INVALID";
}

const char *jp_dtype_numpy_name(jp_dtype dt) {
    return (unsigned)dt < JP_DTYPE_COUNT ? table[dt].np : "invalid";
}

jp_dtype jp_dtype_from_name(const char *name) {
    if (!name) return JP_DTYPE_INVALID;
    for (int i = 1; i < JP_DTYPE_COUNT; i++)
        if (strcmp(name, table[i].name) == 0 || strcmp(name, table[i].st) == 0 ||
            strcmp(name, table[i].np) == 0)
            return (jp_dtype)i;
    return JP_DTYPE_INVALID;
}
