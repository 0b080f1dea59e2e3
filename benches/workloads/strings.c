/* strings: a string-processing loop — generate a text of words, split it
 * into words by hand-written byte loops (no library string functions),
 * count them in a chained hash table with string compares, and copy the
 * most frequent word back and forth with byte loops. */
#include "rt.h"
#define TEXT 262144
#define BUCKETS 4096
#define MAXWORDS 8192
#define ROUNDS 320
static char text[TEXT + 1];
struct entry {
    const char *word;
    uint32_t len, count;
    int next;
};
static struct entry entries[MAXWORDS];
static int buckets[BUCKETS];
static int nentries;
static const char *const syllables[8] = {"ka", "lo", "mi", "nest", "vor", "ex", "tu", "rb"};
static uint32_t slen(const char *s)
{
    const char *p = s;
    while (*p)
        p++;
    return (uint32_t)(p - s);
}
static int same_word(const char *a, const char *b, uint32_t n)
{
    while (n && *a == *b) {
        a++;
        b++;
        n--;
    }
    return n == 0;
}
static uint32_t make_text(uint32_t seed)
{
    uint32_t n = 0;
    while (n < TEXT - 40) {
        uint32_t k, parts;
        seed = seed * 1103515245u + 12345u;
        parts = 1 + ((seed >> 16) & 3);
        for (k = 0; k < parts; k++) {
            const char *s = syllables[(seed >> (4 + 3 * k)) & 7];
            while (*s)
                text[n++] = *s++;
        }
        text[n++] = (seed >> 29) == 0 ? '\n' : ' ';
    }
    text[n] = 0;
    return slen(text);
}
static void count(const char *w, uint32_t len)
{
    uint32_t h = 2166136261u, i;
    int e;
    for (i = 0; i < len; i++)
        h = (h ^ (uint8_t)w[i]) * 16777619u;
    for (e = buckets[h & (BUCKETS - 1)]; e >= 0; e = entries[e].next)
        if (entries[e].len == len && same_word(entries[e].word, w, len)) {
            entries[e].count++;
            return;
        }
    if (nentries == MAXWORDS)
        return;
    e = nentries++;
    entries[e].word = w;
    entries[e].len = len;
    entries[e].count = 1;
    entries[e].next = buckets[h & (BUCKETS - 1)];
    buckets[h & (BUCKETS - 1)] = e;
}
int main(void)
{
    static char copy[64];
    uint32_t r, i, sum = 0, total = 0;
    for (r = 0; r < ROUNDS; r++) {
        const char *p = text;
        uint32_t n = make_text(r + 1), best = 0;
        total += n;
        nentries = 0;
        for (i = 0; i < BUCKETS; i++)
            buckets[i] = -1;
        while (*p) {
            const char *start;
            while (*p == ' ' || *p == '\n')
                p++;
            start = p;
            while (*p && *p != ' ' && *p != '\n')
                p++;
            if (p > start)
                count(start, (uint32_t)(p - start));
        }
        for (i = 1; i < (uint32_t)nentries; i++)
            if (entries[i].count > entries[best].count)
                best = i;
        for (i = 0; i < entries[best].len; i++)
            copy[i] = entries[best].word[i];
        copy[i] = 0;
        sum = sum * 31 + nentries * 7 + entries[best].count + slen(copy);
    }
    rt_printf("strings: %u bytes, checksum %08x\n", total, sum);
    return 0;
}
