/* Per-event cost benchmarks (guest-only): the timing and reporting shared
 * by benches/events/events.c and benches/mmu/mmu.c, run by
 * benches/run-events.sh and benches/run-mmu.sh (benches/per-event.sh).
 *
 * Header-only: include it in exactly one file of a program (it defines the
 * variables the BENCH_TIMED assembly names).
 *
 * An event is timed by a batch function that runs n iterations of a loop,
 * each doing the event per_iter times, reads the TSC before and after the
 * loop, and returns the ticks between (or 0 after printing
 * "NAME FAIL why").  An "empty" batch runs the same loop without the
 * event.  After a warm-up (which also lets a binary translator translate
 * the loop and the handlers), n is chosen so that one batch takes about
 * bench_budget TSC ticks, whatever the event costs on the machine at hand
 * (at least BENCH_MIN_ITERS, at most the event's max_iters); of
 * bench_batches batches the fastest is kept, for the event and for the
 * empty loop, and
 *
 *     cycles per event = (best event batch - best empty batch) / (n * per_iter)
 *
 * is printed as "NAME CYCLES" with two decimals, followed by an
 * informational line "# NAME: n x per_iter events, best batch T ticks,
 * empty loop E ticks".  Cycles are TSC ticks (nestmon and QEMU TCG both
 * return the host's TSC from RDTSC: see docs/guests.md).
 *
 * The Multiboot command line may hold "quick" (tiny batches, for the tests
 * that check the guests run; the numbers are then not meaningful) and
 * "only=NAME" (measure one event, to profile it); bench_args() reads
 * "quick", bench_skipped() "only=". */
#ifndef NESTMON_BENCH_H
#define NESTMON_BENCH_H
#include "pm.h"

#define BENCH_MIN_ITERS 16u
#define BENCH_MAX_ITERS (1u << 20)

/* shared with BENCH_TIMED: iterations of the next batch, the TSC before
 * and after it */
uint32_t bench_n;
uint32_t bench_t0[2], bench_t1[2];

/* A timed batch in assembly: SETUP, then bench_n iterations of UNROLL
 * copies of BODY, the TSC read before and after the loop.  ESI counts; a
 * body may clobber EAX, EBX, ECX, EDX, EDI (EBX, ECX, EDI only if SETUP
 * does not need them; SETUP cannot pass values in EAX or EDX, which RDTSC
 * overwrites) and must not use the labels 1 or 7770-7779.  Basic asm
 * (inside PM_TRY or PM_USER_TRY), so registers take one '%'. */
#define BENCH_TIMED(unroll, setup, body)                                    \
    setup "\n\t"                                                            \
    "movl bench_n, %esi\n\t"                                                \
    "rdtsc\n\tmovl %eax, bench_t0\n\tmovl %edx, bench_t0+4\n\t"             \
    ".p2align 4\n"                                                          \
    "1:\n\t"                                                                \
    ".rept " PM_STR(unroll) "\n\t" body "\n\t.endr\n\t"                     \
    "decl %esi\n\tjnz 1b\n\t"                                               \
    "rdtsc\n\tmovl %eax, bench_t1\n\tmovl %edx, bench_t1+4"

/* parameters (bench_args() sets the "quick" ones) */
static uint32_t bench_budget = 1u << 25; /* TSC ticks per batch (~10 ms at 3 GHz) */
static int bench_batches = 5;
static uint32_t bench_warm_iters = 256;
static int bench_failures;

struct bench_event {
    const char *name;
    uint64_t (*batch)(uint32_t n); /* the event */
    uint64_t (*empty)(uint32_t n); /* the loop without it */
    uint32_t per_iter;             /* events per loop iteration */
    uint32_t max_iters;            /* 0: BENCH_MAX_ITERS */
};

static uint64_t bench_tsc_of(const uint32_t t[2]) { return (uint64_t)t[1] << 32 | t[0]; }

/* the ticks of the last BENCH_TIMED batch (at least 1) */
static uint64_t bench_ticks(void)
{
    uint64_t t = bench_tsc_of(bench_t1) - bench_tsc_of(bench_t0);
    return t ? t : 1;
}

/* hundredths of a cycle, printed as "123.45" */
static void bench_print_centi(uint64_t c)
{
    rt_printf("%llu.%02u", c / 100, (uint32_t)(c % 100));
}

/* Measures one event and prints its line (or, when a batch failed and
 * printed its FAIL line, counts a failure). */
static void bench_measure(const struct bench_event *e)
{
    uint64_t t, best = ~0ull, best_empty = ~0ull, per_iter;
    uint32_t n, max = e->max_iters ? e->max_iters : BENCH_MAX_ITERS;
    uint32_t warm = bench_warm_iters < max ? bench_warm_iters : max;
    int i;

    /* warm-up: twice, the second one estimates the cost */
    if (!e->batch(warm) || !(t = e->batch(warm)) || !e->empty(warm))
        goto failed;
    per_iter = t / warm;
    if (per_iter == 0)
        per_iter = 1;
    n = bench_budget / per_iter > max ? max : (uint32_t)(bench_budget / per_iter);
    if (n < BENCH_MIN_ITERS)
        n = BENCH_MIN_ITERS;
    for (i = 0; i < bench_batches; i++) {
        if (!(t = e->batch(n)))
            goto failed;
        if (t < best)
            best = t;
        if (!(t = e->empty(n)))
            goto failed;
        if (t < best_empty)
            best_empty = t;
    }
    /* a negative difference (an event cheaper than the noise) prints 0 */
    t = best > best_empty ? (best - best_empty) * 100 / ((uint64_t)n * e->per_iter) : 0;
    rt_printf("%s ", e->name);
    bench_print_centi(t);
    rt_putc('\n');
    rt_printf("# %s: %u x %u events, best batch %llu ticks, empty loop %llu ticks\n", e->name,
              n, e->per_iter, best, best_empty);
    return;
failed:
    bench_failures++;
}

/* The word of the Multiboot command line that is WORD or starts with
 * WORD (QEMU and nestmon both put the kernel's file name first), with its
 * length in *len; 0 if there is none. */
static const char *bench_cmdline_word(const char *word, uint32_t *len)
{
    const uint32_t *info = (const uint32_t *)rt_mb_info;
    const char *s, *w;
    uint32_t n = strlen(word);
    if (rt_mb_magic != 0x2BADB002 || !info || !(info[0] & (1u << 2)) || !info[4])
        return 0;
    for (s = (const char *)info[4]; *s;) {
        while (*s == ' ')
            s++;
        w = s;
        while (*s && *s != ' ')
            s++;
        if ((uint32_t)(s - w) >= n && !memcmp(w, word, n)) {
            *len = s - w;
            return w;
        }
    }
    return 0;
}

/* 1 when the command line holds WORD itself */
static int bench_flag(const char *word)
{
    uint32_t len;
    const char *w = bench_cmdline_word(word, &len);
    return w && len == strlen(word);
}

/* "only=NAME" on the command line names another event */
static int bench_skipped(const char *name)
{
    uint32_t len;
    const char *w = bench_cmdline_word("only=", &len);
    return w && (len - 5 != strlen(name) || memcmp(w + 5, name, len - 5));
}

/* "quick": tiny batches; three of them, so that a host preemption in one
 * cannot make an event look free */
static void bench_args(void)
{
    if (bench_flag("quick")) {
        bench_budget = 1u << 15;
        bench_batches = 3;
        bench_warm_iters = 4;
    }
}

/* for the scripts: the TSC at the start and at the end of the
 * measurements, to compare the guest's TSC rate with the host's */
static void bench_tsc_mark(void)
{
    rt_printf("# tsc-mark %llu\n", rt_rdtsc());
}

#endif
