/* qsort: recursive quicksort (median of three, insertion sort for short
 * ranges) of pseudo-random 32-bit integers, repeated. */
#include "rt.h"
#define N 200000
#define ROUNDS 84
static uint32_t a[N];
static void isort(uint32_t *v, int n)
{
    int i, j;
    for (i = 1; i < n; i++) {
        uint32_t x = v[i];
        for (j = i; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}
static void qs(uint32_t *v, int n)
{
    while (n > 16) {
        uint32_t p, t;
        int i = 0, j = n - 1;
        uint32_t x = v[0], y = v[n / 2], z = v[n - 1];
        p = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        for (;;) {
            while (v[i] < p)
                i++;
            while (v[j] > p)
                j--;
            if (i >= j)
                break;
            t = v[i];
            v[i] = v[j];
            v[j] = t;
            i++;
            j--;
        }
        if (j + 1 < n - j - 1) {
            qs(v, j + 1);
            v += j + 1;
            n -= j + 1;
        } else {
            qs(v + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    isort(v, n);
}
int main(void)
{
    uint32_t r, i, x = 2463534242u, sum = 0, bad = 0;
    for (r = 0; r < ROUNDS; r++) {
        for (i = 0; i < N; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            a[i] = x;
        }
        qs(a, N);
        for (i = 1; i < N; i++)
            bad += a[i - 1] > a[i];
        sum = sum * 31 + a[N / 2] + a[7];
    }
    rt_printf("qsort: %u x %u ints, checksum %08x, %u out of order\n", ROUNDS, N, sum, bad);
    return bad != 0;
}
