/* recursion: deep and call-heavy recursion.  A 100,000-frame deep linear
 * recursion (not tail-call optimisable), recursive fib, Ackermann(2,n) and
 * (3,n), mutual recursion, and a recursive quicksort.  Needs a big stack:
 * defines __stack_size (8 MiB). */
#include "rt.h"

__asm__(".globl __stack_size\n.set __stack_size, 0x800000");

static volatile uint32_t sink;

__attribute__((noinline)) static uint32_t deep(uint32_t n, uint32_t acc)
{
    uint32_t r;
    if (n == 0)
        return acc;
    r = deep(n - 1, acc * 33 + n);
    __asm__ __volatile__("" : "+r"(r)); /* keep the frame: no tail call */
    return r ^ (n & 0xff);
}

__attribute__((noinline)) static uint32_t fib(uint32_t n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

static uint32_t ack_calls;
__attribute__((noinline)) static uint32_t ack(uint32_t m, uint32_t n)
{
    ack_calls++;
    if (m == 0)
        return n + 1;
    if (n == 0)
        return ack(m - 1, 1);
    return ack(m - 1, ack(m, n - 1));
}

__attribute__((noinline)) static int is_odd(uint32_t n);
__attribute__((noinline)) static int is_even(uint32_t n)
{
    int r;
    if (n == 0)
        return 1;
    r = is_odd(n - 1);
    __asm__ __volatile__("" : "+r"(r));
    return r;
}
__attribute__((noinline)) static int is_odd(uint32_t n)
{
    int r;
    if (n == 0)
        return 0;
    r = is_even(n - 1);
    __asm__ __volatile__("" : "+r"(r));
    return r;
}

static uint32_t arr[20000];
__attribute__((noinline)) static void qsort_r(uint32_t *a, int lo, int hi)
{
    while (lo < hi) {
        uint32_t p = a[(lo + hi) / 2], t;
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] < p)
                i++;
            while (a[j] > p)
                j--;
            if (i <= j) {
                t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        qsort_r(a, lo, j);
        lo = i;
    }
}

/* stack depth measured with the frame address */
static uint32_t min_sp;
__attribute__((noinline)) static uint32_t depth_probe(uint32_t n)
{
    uint32_t sp = (uint32_t)__builtin_frame_address(0), r;
    if (sp < min_sp)
        min_sp = sp;
    if (n == 0)
        return 0;
    r = depth_probe(n - 1) + 1;
    __asm__ __volatile__("" : "+r"(r));
    return r;
}

int main(void)
{
    uint32_t v, i, x = 12345, top;
    rt_puts("recursion: deep and call-heavy recursion\n");
    v = deep(100000, 1);
    rt_printf("deep(100000) = %08x\n", v);
    top = (uint32_t)__builtin_frame_address(0);
    min_sp = top;
    v = depth_probe(100000);
    RT_CHECK(v == 100000, "depth_probe");
    rt_printf("depth_probe(100000): %u frames, %u bytes of stack\n", v, top - min_sp);
    v = fib(25);
    RT_CHECK(v == 75025, "fib(25) = %u", v);
    rt_printf("fib(25) = %u\n", v);
    ack_calls = 0;
    v = ack(2, 300);
    RT_CHECK(v == 603, "ack(2,300) = %u", v);
    rt_printf("ack(2,300) = %u (%u calls)\n", v, ack_calls);
    ack_calls = 0;
    v = ack(3, 7);
    RT_CHECK(v == 1021, "ack(3,7) = %u", v);
    rt_printf("ack(3,7) = %u (%u calls)\n", v, ack_calls);
    RT_CHECK(is_even(50000) == 1 && is_odd(50001) == 1 && is_even(49999) == 0, "mutual recursion");
    for (i = 0; i < 20000; i++) {
        x = x * 1103515245 + 12345;
        arr[i] = x >> 8;
    }
    qsort_r(arr, 0, 19999);
    v = 0;
    for (i = 1; i < 20000; i++) {
        if (arr[i - 1] > arr[i])
            v++;
    }
    RT_CHECK(v == 0, "quicksort order");
    rt_printf("qsort: first=%08x last=%08x mid=%08x\n", arr[0], arr[19999], arr[10000]);
    sink = v;
    rt_finish("recursion");
}
