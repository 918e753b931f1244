/* Fuzz target for the pickle machine: whatever it accepts must be a tree whose
 * strings are NUL-terminated at their length, whose big integers need more
 * than 8 bytes, whose globals carry their own verdict, whose containers hold
 * non-NULL values, and which a bounded walk can visit; a refusal must carry a code,
 * an offset inside the input and a message. */
#include <stdlib.h>

#include "formats/pickle.h"

#define CHECK(c)           \
    do {                   \
        if (!(c)) abort(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t budget;

static void walk(const jp_pv *v, int depth) {
    CHECK(v != NULL);
    if (depth > 64 || budget == 0) return;
    budget--;
    switch (v->kind) {
    case JP_PV_STR: case JP_PV_BYTES: case JP_PV_BIGINT:
        CHECK(v->u.str.s[v->u.str.len] == '\0');
        CHECK(v->kind != JP_PV_BIGINT || v->u.str.len > 8); /* else it is an INT */
        break;
    case JP_PV_TUPLE: case JP_PV_LIST: case JP_PV_SET:
        for (size_t i = 0; i < v->u.seq.len; i++) walk(v->u.seq.items[i], depth + 1);
        break;
    case JP_PV_DICT:
        for (size_t i = 0; i < v->u.dict.len; i++) {
            walk(v->u.dict.keys[i], depth + 1);
            walk(v->u.dict.vals[i], depth + 1);
        }
        break;
    case JP_PV_GLOBAL:
        CHECK(v->u.global.module && v->u.global.name);
        CHECK(v->u.global.verdict == jp_pickle_judge(v->u.global.module, v->u.global.name));
        break;
    case JP_PV_CALL: case JP_PV_OBJECT:
        walk(v->u.obj.callable, depth + 1);
        if (v->u.obj.args) walk(v->u.obj.args, depth + 1);
        if (v->u.obj.state) walk(v->u.obj.state, depth + 1);
        for (size_t i = 0; i < v->u.obj.items.len; i++) walk(v->u.obj.items.items[i], depth + 1);
        for (size_t i = 0; i < v->u.obj.entries.len; i++) walk(v->u.obj.entries.vals[i], depth + 1);
        break;
    case JP_PV_PERSID:
        walk(v->u.persid, depth + 1);
        break;
    default:
        CHECK(v->kind >= JP_PV_NONE && v->kind <= JP_PV_PERSID);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    jp_arena a;
    jp_arena_init(&a);
    jp_pv *v;
    jp_err err;
    size_t used = 0;
    jp_pickle_opts o = {"fuzz.pkl", 0, NULL, NULL};
    if (jp_pickle_load(&a, data, size, &o, &v, &used, &err) == JP_OK) {
        CHECK(used <= size && used > 0);
        budget = 100000;
        walk(v, 0);
    } else {
        CHECK(err.code != JP_OK && err.msg[0] && err.offset <= size);
    }
    jp_arena_free(&a);
    return 0;
}
