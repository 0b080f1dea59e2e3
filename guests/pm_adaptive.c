/* pm_adaptive: one store instruction that first touches fresh pages, then
 * runs hot on pages already mapped (nestmon: guest-only).
 * With paging on (the identity map of pm.h), `store_loop` writes one word
 * into each of 64 pages nothing touched before, then loops over a single
 * page for 1.5 s while the PIT interrupts at 1 kHz.  Under nestmon the
 * store takes a host fault on each fresh page, becomes adaptive (its
 * operand goes through the software TLB) and, once timer interrupts keep
 * finding it in hot code with no more misses, goes back to the window:
 * tests/shadow_mmu.rs checks both in --stats.  What the guest prints is
 * the same everywhere: what it stored, read back. */
#include "pm.h"

#define FRESH ((uint32_t *)0x00800000u) /* 8 MiB: untouched until now */
#define FRESH_PAGES 64
#define HOT_TICKS 1500
#define TICK_COUNT 1193 /* 1 kHz */

static volatile uint32_t ticks;
static uint32_t hot[1024] __attribute__((aligned(4096)));

static int tick_hook(struct pm_frame *f)
{
    (void)f;
    ticks++;
    outb(0x20, 0x20);
    return PM_RESUME;
}

#ifndef PM_ADAPTIVE_NAME
#define PM_ADAPTIVE_NAME "pm_adaptive"
#define PM_ADAPTIVE_WHAT "a store"
#endif

#ifdef PM_ADAPTIVE_STORE_IN_CALL
/* The one store of the guest, alone in its function (pm_adaptive_call). */
__attribute__((noinline)) static void store_one(uint32_t *at, uint32_t value)
{
    *at = value;
}
#define STORE(at, value) store_one(at, value)
#else
#define STORE(at, value) (*(at) = (value))
#endif

/* The one store of this guest (`mask` + 1 is a power of two): it writes
 * word (i & mask) * stride of `base`, at least `count` times and on until
 * `*until_tick` ticks have passed. */
__attribute__((noinline)) static uint32_t store_loop(uint32_t *base, uint32_t stride,
                                                     uint32_t mask, uint32_t count,
                                                     uint32_t until_tick)
{
    uint32_t i = 0;
    do {
        STORE(&base[(i & mask) * stride], i);
        i++;
    } while (i < count || ticks < until_tick);
    return i;
}

static void timer_on(void)
{
    outb(0x20, 0x11);
    outb(0x21, 0x20);
    outb(0x21, 0x04);
    outb(0x21, 0x01);
    outb(0xa0, 0x11);
    outb(0xa1, 0x28);
    outb(0xa1, 0x02);
    outb(0xa1, 0x01);
    outb(0xa1, 0xff);
    outb(0x43, 0x34);
    outb(0x40, TICK_COUNT & 0xff);
    outb(0x40, TICK_COUNT >> 8);
    outb(0x21, 0xfe);
    __asm__ __volatile__("sti");
}

int main(void)
{
    uint32_t i, ok, sum;

    pm_init();
    pm_set_hook(0x20, tick_hook);
    rt_puts(PM_ADAPTIVE_NAME ": " PM_ADAPTIVE_WHAT " on fresh pages, then hot on mapped ones\n");
    pm_paging_on();
    store_loop(FRESH, 1024, FRESH_PAGES - 1, FRESH_PAGES, 0);
    ok = 1;
    for (i = 0; i < FRESH_PAGES; i++)
        ok &= FRESH[i * 1024] == i;
    pm_check_val("each fresh page holds what the store wrote", ok, 1);

    timer_on();
    i = store_loop(hot, 1, 1023, 1024, HOT_TICKS);
    __asm__ __volatile__("cli");
    outb(0x21, 0xff);
    pm_check_val("the hot loop ran until " PM_STR(HOT_TICKS) " ticks", ticks >= HOT_TICKS, 1);
    rt_printf("# %u stores in the hot loop\n", i);

    /* A last pass whose result does not depend on the timing. */
    store_loop(hot, 1, 1023, 1024, 0);
    sum = 0;
    for (i = 0; i < 1024; i++)
        sum += hot[i] * (i + 1);
    pm_check_val("the hot page holds what the last pass wrote", sum, 357913600u);
    rt_finish(PM_ADAPTIVE_NAME);
}
