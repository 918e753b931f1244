/* Names: roles, keys, similarity and natural order of tensor paths. */
#include "names.h"

#include <string.h>

static const char *const role_names[JP_ROLE_COUNT] = {
#define JP_ROLE_NAME_(name, s) s,
    JP_ROLES(JP_ROLE_NAME_)
#undef JP_ROLE_NAME_
};

const char *jp_role_name(jp_role r) { return (unsigned)r < JP_ROLE_COUNT ? role_names[r] : "?"; }

static bool is_sep(char c) {
    return c == '.' || c == '/' || c == '[' || c == ']' || c == '\'' || c == '"';
}
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

static const struct {
    const char *word;
    jp_role role;
    jp_spelling spelling;
} roles[] = {
    {"weight", JP_ROLE_WEIGHT, JP_SPELL_PLAIN},
    {"w", JP_ROLE_WEIGHT, JP_SPELL_PLAIN},
    {"kernel", JP_ROLE_WEIGHT, JP_SPELL_KERNEL},
    {"embedding", JP_ROLE_WEIGHT, JP_SPELL_EMBEDDING},
    {"embeddings", JP_ROLE_WEIGHT, JP_SPELL_EMBEDDING},
    {"scale", JP_ROLE_WEIGHT, JP_SPELL_SCALE},
    {"gamma", JP_ROLE_WEIGHT, JP_SPELL_SCALE},
    {"negative_slope", JP_ROLE_WEIGHT, JP_SPELL_PLAIN}, /* PReLU's weight in Flax and Equinox */
    {"bias", JP_ROLE_BIAS, JP_SPELL_PLAIN},
    {"b", JP_ROLE_BIAS, JP_SPELL_PLAIN},
    {"offset", JP_ROLE_BIAS, JP_SPELL_PLAIN},
    {"beta", JP_ROLE_BIAS, JP_SPELL_PLAIN},
    {"running_mean", JP_ROLE_MEAN, JP_SPELL_PLAIN},
    {"mean", JP_ROLE_MEAN, JP_SPELL_PLAIN},
    {"mean_ema", JP_ROLE_MEAN, JP_SPELL_PLAIN},
    {"moving_mean", JP_ROLE_MEAN, JP_SPELL_PLAIN},
    {"running_var", JP_ROLE_VAR, JP_SPELL_PLAIN},
    {"var", JP_ROLE_VAR, JP_SPELL_PLAIN},
    {"var_ema", JP_ROLE_VAR, JP_SPELL_PLAIN},
    {"moving_variance", JP_ROLE_VAR, JP_SPELL_PLAIN},
    {"num_batches_tracked", JP_ROLE_COUNTER, JP_SPELL_PLAIN},
};

jp_role jp_role_of(const char *leaf, size_t len, jp_spelling *spelling) {
    *spelling = JP_SPELL_PLAIN;
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strlen(roles[i].word) == len && memcmp(roles[i].word, leaf, len) == 0) {
            *spelling = roles[i].spelling;
            return roles[i].role;
        }
    return JP_ROLE_OTHER;
}

size_t jp_name_leaf(const char *path, size_t *start) {
    size_t end = strlen(path);
    while (end > 0 && is_sep(path[end - 1])) end--;
    size_t s = end;
    while (s > 0 && !is_sep(path[s - 1])) s--;
    *start = s;
    return end - s;
}

size_t jp_name_key(const char *path, size_t len, char *out, size_t cap) {
    size_t n = 0;
    bool last_digit = false, split = false;
    for (size_t i = 0; i < len && n + 2 < cap; i++) {
        char c = path[i];
        if (is_digit(c)) {
            if (last_digit && split) out[n++] = '.';
            out[n++] = c;
            last_digit = true;
            split = false;
        } else if (is_alpha(c)) {
            out[n++] = lower(c);
            last_digit = false;
            split = false;
        } else {
            split = true;
        }
    }
    if (cap) out[n] = '\0';
    return n;
}

/* Tokens: runs of lowercase letters or of digits, case changes splitting
 * words ("LayerNorm" is "layer", "norm"). */
#define MAX_TOKENS 64
typedef struct tokens {
    const char *s[MAX_TOKENS];
    uint8_t len[MAX_TOKENS];
    int n;
} tokens;

static void tokenize(const char *p, tokens *t) {
    t->n = 0;
    size_t i = 0;
    while (p[i] && t->n < MAX_TOKENS) {
        if (!is_alpha(p[i]) && !is_digit(p[i])) {
            i++;
            continue;
        }
        size_t s = i;
        if (is_digit(p[i])) {
            while (is_digit(p[i])) i++;
        } else {
            i++;
            while (is_alpha(p[i]) && !(p[i] >= 'A' && p[i] <= 'Z' && p[i - 1] >= 'a' && p[i - 1] <= 'z'))
                i++;
        }
        t->s[t->n] = p + s;
        t->len[t->n] = (uint8_t)(i - s > 255 ? 255 : i - s);
        t->n++;
    }
}

static bool token_eq(const char *a, size_t al, const char *b, size_t bl) {
    if (al != bl) return false;
    for (size_t i = 0; i < al; i++)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

/* Words that name the same thing in both frameworks: torch's reversed
 * recurrent layers (lstm.weight_ih_l0_reverse) are Flax's backward_rnn. */
static const char *const synonyms[][4] = {
    {"reverse", "backward", "bwd", NULL},
};

static bool same_word(const char *a, size_t al, const char *b, size_t bl) {
    if (token_eq(a, al, b, bl)) return true;
    for (size_t g = 0; g < sizeof synonyms / sizeof synonyms[0]; g++) {
        bool in_a = false, in_b = false;
        for (const char *const *w = synonyms[g]; *w; w++) {
            in_a = in_a || token_eq(a, al, *w, strlen(*w));
            in_b = in_b || token_eq(b, bl, *w, strlen(*w));
        }
        if (in_a && in_b) return true;
    }
    return false;
}

/* Tokens of a (not yet matched) that spell the initials of consecutive
 * unmatched word tokens of b; counts the tokens covered on both sides. */
static int initials(const tokens *a, bool *used_a, const tokens *b, bool *used_b) {
    int covered = 0;
    for (int i = 0; i < a->n; i++) {
        if (used_a[i] || a->len[i] < 2 || !is_alpha(a->s[i][0])) continue;
        for (int j = 0; j + a->len[i] <= b->n; j++) {
            int k = 0;
            while (k < a->len[i] && !used_b[j + k] && is_alpha(b->s[j + k][0]) &&
                   lower(b->s[j + k][0]) == lower(a->s[i][k]))
                k++;
            if (k < a->len[i]) continue;
            used_a[i] = true;
            for (k = 0; k < a->len[i]; k++) used_b[j + k] = true;
            covered += 1 + a->len[i];
            break;
        }
    }
    return covered;
}

int jp_name_similarity(const char *a, const char *b) {
    tokens ta, tb;
    tokenize(a, &ta);
    tokenize(b, &tb);
    if (ta.n + tb.n == 0) return 1000;
    bool used_a[MAX_TOKENS] = {false}, used_b[MAX_TOKENS] = {false};
    int common = 0;
    for (int i = 0; i < ta.n; i++)
        for (int j = 0; j < tb.n; j++)
            if (!used_b[j] && same_word(ta.s[i], ta.len[i], tb.s[j], tb.len[j])) {
                used_a[i] = used_b[j] = true;
                common += 2;
                break;
            }
    /* An abbreviation: "gn" is the initials of "Group", "Norm". */
    common += initials(&ta, used_a, &tb, used_b) + initials(&tb, used_b, &ta, used_a);
    return 1000 * common / (ta.n + tb.n);
}

int jp_name_natural_cmp(const char *a, const char *b) {
    while (*a && *b) {
        if (is_digit(*a) && is_digit(*b)) {
            while (*a == '0' && is_digit(a[1])) a++;
            while (*b == '0' && is_digit(b[1])) b++;
            size_t la = 0, lb = 0;
            while (is_digit(a[la])) la++;
            while (is_digit(b[lb])) lb++;
            if (la != lb) return la < lb ? -1 : 1;
            int c = memcmp(a, b, la);
            if (c) return c;
            a += la;
            b += lb;
            continue;
        }
        if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        a++;
        b++;
    }
    return *a ? 1 : *b ? -1 : 0;
}

bool jp_name_has_word(const char *path, const char *const *words) {
    const char *p = path;
    while (*p) {
        while (*p && is_sep(*p)) p++;
        const char *s = p;
        while (*p && !is_sep(*p)) p++;
        char key[64];
        jp_name_key(s, (size_t)(p - s), key, sizeof key);
        for (const char *const *w = words; *w; w++)
            if (strstr(key, *w)) return true;
    }
    return false;
}
