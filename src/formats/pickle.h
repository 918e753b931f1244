/* A data-only pickle machine. It builds a tree of inert values from protocols
 * 0 to 5 and never calls, imports or looks anything up: GLOBAL becomes a
 * record of its module and name, REDUCE a record of "this callable with these
 * arguments", NEWOBJ/OBJ/INST a record of "an instance of this class".
 * Whatever reads the tree (the torch layer) decides what the records mean. */
#ifndef JP_PICKLE_H
#define JP_PICKLE_H

#include "../common/common.h"

/* How a GLOBAL is judged. torch.load(weights_only=True) allows a fixed list;
 * jaxport reads more than that (whole pickled modules) but never runs any. */
typedef enum jp_pickle_verdict {
    JP_GLOBAL_ALLOWED = 0, /* torch rebuild functions, storages, dtypes, OrderedDict ... */
    JP_GLOBAL_CLASS,       /* an unknown class only instantiated (NEWOBJ/BUILD): inert */
    JP_GLOBAL_CALLED,      /* an unknown callable used by REDUCE: would run code */
    JP_GLOBAL_DENIED,      /* os.system, builtins.eval, subprocess.* ...: always reported */
} jp_pickle_verdict;

typedef enum jp_pv_kind {
    JP_PV_NONE = 1,
    JP_PV_BOOL,
    JP_PV_INT,      /* fits int64 */
    JP_PV_BIGINT,   /* LONG1/LONG4, INT/LONG text, beyond int64: u.str holds
                       the little-endian two's-complement bytes (shortest
                       for text, as written for LONG1/LONG4) */
    JP_PV_FLOAT,
    JP_PV_STR,      /* unicode, UTF-8 as in the file */
    JP_PV_BYTES,    /* BINBYTES, SHORT_BINBYTES, BYTEARRAY8, protocol-0 STRING */
    JP_PV_TUPLE,
    JP_PV_LIST,
    JP_PV_SET,      /* EMPTY_SET + ADDITEMS, FROZENSET */
    JP_PV_DICT,
    JP_PV_GLOBAL,   /* GLOBAL / STACK_GLOBAL / INST's class: u.global */
    JP_PV_CALL,     /* REDUCE: u.obj.callable(*u.obj.args) */
    JP_PV_OBJECT,   /* NEWOBJ, NEWOBJ_EX, OBJ, INST: an instance of u.obj.callable */
    JP_PV_PERSID,   /* PERSID / BINPERSID: u.persid is the id value */
} jp_pv_kind;

typedef struct jp_pv jp_pv;

typedef struct jp_pv_list {
    jp_pv **items;
    size_t len, cap;
} jp_pv_list;

typedef struct jp_pv_dict {
    jp_pv **keys, **vals;
    size_t len, cap;
} jp_pv_dict;

struct jp_pv {
    jp_pv_kind kind;
    uint64_t offset; /* file offset of the opcode that made it, for messages */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *s; /* NUL-terminated copy in the arena */
            size_t len;
        } str;             /* STR, BYTES, BIGINT */
        jp_pv_list seq;    /* TUPLE, LIST, SET */
        jp_pv_dict dict;   /* DICT: in insertion order; a key set twice
                              appears twice and the last one counts */
        struct {
            /* Python 3's names for it: below protocol 3, Python 2 names
             * (__builtin__, copy_reg ...) are mapped as pickle.loads maps
             * them. Either may be a static string rather than an arena one. */
            const char *module, *name;
            jp_pickle_verdict verdict; /* jp_pickle_judge(module, name) */
        } global;
        struct {
            jp_pv *callable;    /* usually a GLOBAL */
            jp_pv *args;        /* a TUPLE (NEWOBJ_EX: args; kwargs go to kwargs) */
            jp_pv *kwargs;      /* NEWOBJ_EX only, else NULL */
            jp_pv *state;       /* BUILD's argument, else NULL */
            jp_pv_list items;   /* APPEND/APPENDS applied to the object */
            jp_pv_dict entries; /* SETITEM/SETITEMS applied to the object */
        } obj;                  /* CALL, OBJECT */
        jp_pv *persid;
    } u;
};

/* Called once per GLOBAL use that is not ALLOWED, with the opcode's offset. */
typedef void (*jp_pickle_report_fn)(void *ctx, jp_pickle_verdict verdict, const char *module,
                                    const char *name, uint64_t offset);

typedef struct jp_pickle_opts {
    const char *member;          /* zip member or file name, for messages */
    uint64_t origin;             /* file offset of the pickle's first byte */
    jp_pickle_report_fn report;  /* may be NULL */
    void *report_ctx;
} jp_pickle_opts;

/* Limits, checked before allocating. */
#define JP_PICKLE_MAX_STACK 65536     /* values on the stack and mark stack */
#define JP_PICKLE_MAX_MEMO (1u << 22) /* memo keys are below this */
/* How far past its home slot a memo key may lie in the memo's hash map:
 * far beyond what honest keys need, short enough that keys chosen to
 * collide cannot make the pickle's PUTs and GETs quadratic. */
#define JP_PICKLE_MEMO_MAX_PROBE 128
/* Digits of a protocol-0 INT/LONG: Python's own limit on int(str), which
 * pickle.loads meets (sys.int_info.default_max_str_digits). */
#define JP_PICKLE_MAX_INT_DIGITS 4300
/* Bytes in a global's module or name; a longer one is refused (GLOBAL,
 * INST, STACK_GLOBAL) or, given to jp_pickle_judge, DENIED. */
#define JP_PICKLE_MAX_NAME 512
/* Links in a dotted global name (a getattr chain); more are DENIED. */
#define JP_PICKLE_MAX_NAME_PARTS 8
/* Values plus container entries: at most 65536 + 16 per input byte, and
 * never more than this. */
#define JP_PICKLE_MAX_VALUES (1u << 26)

/* Run one pickle from data[0..len) up to and including its STOP opcode.
 * *consumed (may be NULL) receives the bytes read, so pickles that follow one
 * another (the legacy torch format) can be read in turn. All values live in
 * `arena`. Truncated, malformed or hostile input gives an error naming the
 * opcode and its offset, never a crash. */
jp_code jp_pickle_load(jp_arena *arena, const uint8_t *data, size_t len,
                       const jp_pickle_opts *opts, jp_pv **out, size_t *consumed, jp_err *err);

/* The verdict for a global, by module and name. A Python 2 name is judged
 * as Python 3 maps it, and DENIED under either name; a dotted name is judged
 * along its whole getattr chain and never ALLOWED. */
jp_pickle_verdict jp_pickle_judge(const char *module, const char *name);

#endif /* JP_PICKLE_H */
