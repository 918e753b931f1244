/* Tests for src/common: errors, cursor, arena, checked arithmetic, dtypes. */
#include "check.h"
#include "common/common.h"

static void test_errors(void) {
    jp_err err;
    jp_err_clear(&err);
    CHECK_EQ_U64(err.code, JP_OK);
    CHECK_EQ_U64(jp_err_set(&err, JP_TRUNCATED, 0x1a3, "archive/data.pkl", "ends after %d bytes", 7),
                 JP_TRUNCATED);
    CHECK_STR(err.msg, "archive/data.pkl @ 0x1a3: ends after 7 bytes");
    CHECK_STR(err.member, "archive/data.pkl");
    jp_err_prefix(&err, "model.pt");
    CHECK_STR(err.msg, "model.pt: archive/data.pkl @ 0x1a3: ends after 7 bytes");
    jp_err_prefix(&err, "model.pt"); /* once only */
    CHECK_STR(err.msg, "model.pt: archive/data.pkl @ 0x1a3: ends after 7 bytes");
    CHECK_EQ_U64(jp_err_set(NULL, JP_CORRUPT, 0, NULL, "x"), JP_CORRUPT); /* NULL err allowed */
    CHECK_STR(jp_code_name(JP_NOT_FOUND), "NOT_FOUND");
    CHECK_STR(jp_code_name((jp_code)999), "UNKNOWN");
    for (int c = 0; c < JP_CODE_COUNT; c++) CHECK(jp_code_message((jp_code)c)[0] != '\0');
}

static void test_cursor(void) {
    const uint8_t bytes[] = {0x01, 0x02, 0x03, 0x04, 0x05};
    jp_cur c = jp_cur_make(bytes, sizeof bytes, 100);
    CHECK_EQ_U64(jp_cur_le(&c, 2), 0x0201);
    CHECK_EQ_U64(jp_cur_be(&c, 2), 0x0304);
    CHECK_EQ_U64(jp_cur_fileoff(&c), 104);
    CHECK(!c.failed);
    CHECK_EQ_U64(jp_cur_le(&c, 4), 0); /* only one byte left */
    CHECK(c.failed);
    CHECK_EQ_U64(jp_cur_u8(&c), 0); /* sticky */
    CHECK(jp_cur_take(&c, 0) == NULL);
    jp_cur d = jp_cur_make(bytes, sizeof bytes, 0);
    CHECK(jp_cur_take(&d, SIZE_MAX) == NULL); /* no pointer overflow */
    CHECK(!jp_cur_seek(&d, 6));
}

static void test_checked(void) {
    uint64_t r;
    CHECK(!jp_mul_overflow(1u << 20, 1u << 20, &r) && r == (1ull << 40));
    CHECK(jp_mul_overflow(UINT64_MAX, 2, &r));
    CHECK(jp_add_overflow(UINT64_MAX, 1, &r));
}

static void test_arena(void) {
    jp_arena a;
    jp_arena_init(&a);
    char *s = jp_arena_strdup(&a, "conv1.weight");
    CHECK_STR(s, "conv1.weight");
    void *big = jp_arena_alloc(&a, 1 << 20); /* larger than a chunk */
    CHECK(big != NULL && ((uintptr_t)big & 15) == 0);
    char *t = jp_arena_printf(&a, "%s.%d", "layers", 3);
    CHECK_STR(t, "layers.3");
    CHECK(jp_arena_alloc_array(&a, SIZE_MAX / 2, 4) == NULL);
    jp_arena_free(&a);
    jp_arena_free(&a); /* twice is harmless */
}

static void test_dtypes(void) {
    CHECK_EQ_U64(jp_dtype_size(JP_BF16), 2);
    CHECK_EQ_U64(jp_dtype_size(JP_C128), 16);
    CHECK_EQ_U64(jp_dtype_size(JP_DTYPE_INVALID), 0);
    CHECK_EQ_U64(jp_dtype_from_name("bfloat16"), JP_BF16);
    CHECK_EQ_U64(jp_dtype_from_name("F8_E4M3"), JP_F8_E4M3FN);
    CHECK_EQ_U64(jp_dtype_from_name("nope"), JP_DTYPE_INVALID);
    for (int d = 1; d < JP_DTYPE_COUNT; d++)
        CHECK_EQ_U64(jp_dtype_from_name(jp_dtype_name((jp_dtype)d)), d);
}

int main(void) {
    test_errors();
    test_cursor();
    test_checked();
    test_arena();
    test_dtypes();
    return check_done("test_common");
}
