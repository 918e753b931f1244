/* A minimal check harness: CHECK records a failure and goes on, so one run
 * reports every broken case; check_done() prints the closing line. */
#ifndef JP_CHECK_H
#define JP_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int check_failed, check_run;

#define CHECK(cond)                                                               \
    do {                                                                          \
        check_run++;                                                              \
        if (!(cond)) {                                                            \
            check_failed++;                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                         \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                           \
    do {                                                                             \
        uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                              \
        check_run++;                                                                 \
        if (a_ != b_) {                                                              \
            check_failed++;                                                          \
            fprintf(stderr, "%s:%d: %s == %" PRIu64 ", expected %" PRIu64 "\n", __FILE__, \
                    __LINE__, #a, a_, b_);                                            \
        }                                                                            \
    } while (0)

#define CHECK_STR(a, b)                                                                     \
    do {                                                                                    \
        const char *a_ = (a), *b_ = (b);                                                    \
        check_run++;                                                                        \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                            \
            check_failed++;                                                                 \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                 \
        }                                                                                   \
    } while (0)

static int check_done(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, check_run - check_failed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
