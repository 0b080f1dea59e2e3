/* pm_fxsave_pages: one FXSAVE and one FXRSTOR over fresh pages, then
 * misaligned and across a page boundary (nestmon: guest-only).
 * With paging on (the identity map of pm.h), `fx_save` and `fx_restore`
 * (one instruction each, called with the area in EAX) save and restore
 * the FPU state in 64 pages nothing touched before.  Under nestmon each
 * takes a host fault per fresh page until it becomes adaptive (its 512
 * bytes probed as one software-TLB access); then the same two
 * instructions must still raise #GP(0) for an area that is not 16-byte
 * aligned, and work on an area that crosses into the next page (the probe
 * misses; the monitor runs the instruction through the window).  What the
 * guest prints is the same everywhere. */
#include "pm.h"

#define FRESH 0x00800000u /* 8 MiB: untouched until now */
#define PAGES 64
#define CROSSING 0x00a00f00u /* its 512 bytes end 256 bytes into the next page */

uint16_t fcw_in = 0x027f, fcw_out;

__asm__(".text\n"
        ".globl fx_save\nfx_save:\n\tfxsave (%eax)\n\tret\n"
        ".globl fx_restore\nfx_restore:\n\tfxrstor (%eax)\n\tret\n");

static void save_at(uint32_t at)
{
    __asm__ __volatile__("call fx_save" : : "a"(at) : "memory");
}

static void restore_at(uint32_t at)
{
    __asm__ __volatile__("call fx_restore" : : "a"(at) : "memory");
}

/* FCW as FXSAVE stored it at `at`. */
static uint16_t saved_fcw(uint32_t at)
{
    return *(volatile uint16_t *)at;
}

int main(void)
{
    uint32_t i, ok;

    pm_init();
    rt_puts("pm_fxsave_pages: FXSAVE/FXRSTOR over fresh pages, misaligned, across pages\n");
    pm_paging_on();
    __asm__ __volatile__("fninit\n\tfldcw fcw_in");

    for (i = 0; i < PAGES; i++)
        save_at(FRESH + i * 4096 + 0x100);
    ok = 1;
    for (i = 0; i < PAGES; i++)
        ok &= saved_fcw(FRESH + i * 4096 + 0x100) == 0x027f;
    pm_check_val("each fresh page holds the saved control word", ok, 1);

    __asm__ __volatile__("fninit");
    for (i = 0; i < PAGES; i++)
        restore_at(FRESH + i * 4096 + 0x100);
    __asm__ __volatile__("fnstcw fcw_out");
    pm_check_val("the control word restored", fcw_out, 0x027f);

    EXPECT_FAULT("fxsave to an area 8 bytes off 16", PM_GP, 0,
                 "movl $0x00800108, %eax\n\tcall fx_save");
    EXPECT_FAULT("fxrstor from an area 8 bytes off 16", PM_GP, 0,
                 "movl $0x00800108, %eax\n\tcall fx_restore");

    save_at(CROSSING);
    pm_check_val("fxsave across a page boundary: the control word", saved_fcw(CROSSING),
                 0x027f);
    __asm__ __volatile__("fninit");
    restore_at(CROSSING);
    __asm__ __volatile__("fnstcw fcw_out");
    pm_check_val("fxrstor across a page boundary: the control word", fcw_out, 0x027f);
    rt_finish("pm_fxsave_pages");
}
