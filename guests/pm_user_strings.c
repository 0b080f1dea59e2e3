/* pm_user_strings: REP strings at ring 3 over fresh pages
 * (nestmon: guest-only).
 * With paging on (the identity map of pm.h, every page P|W|U), a ring-3
 * `rep stosl` clears 64 pages nothing touched before, page after page,
 * and a ring-3 `rep movsl` copies them to 64 more; then a ring-3 `rep
 * movsb` of 40 bytes runs 1,000 times within one page.  Under nestmon the
 * two long strings take a host fault on each fresh page until they become
 * adaptive (16 faults: a user REP string that keeps faulting goes to the
 * software TLB), and the short copy runs in the window: tests/shadow_mmu.rs
 * counts the host faults with adaptive strings on and off.  What the guest
 * prints is the same everywhere: the bytes, read back at ring 0. */
#include "pm.h"

#define FILL_AT 0x00800000u /* 8 MiB: untouched until now */
#define COPY_AT 0x00900000u /* 9 MiB: the same */
#define PAGES 64
#define WORDS (PAGES * 1024)
#define SHORT_COPIES 1000

/* Operands of the ring-3 bodies (globals: a body sees memory only). */
uint32_t us_dst, us_src, us_count, us_value;
static uint8_t short_src[64] __attribute__((aligned(64)));
static uint8_t short_dst[64] __attribute__((aligned(64)));

static void user_fill(void)
{
    us_dst = FILL_AT;
    us_count = WORDS;
    us_value = 0x5a5a0000u;
    PM_USER_TRY("movl us_dst, %edi\n\tmovl us_count, %ecx\n\tmovl us_value, %eax\n\t"
                "cld\n\trep stosl");
}

static void user_copy(uint32_t dst, uint32_t src, uint32_t count)
{
    us_dst = dst;
    us_src = src;
    us_count = count;
    PM_USER_TRY("movl us_dst, %edi\n\tmovl us_src, %esi\n\tmovl us_count, %ecx\n\t"
                "cld\n\trep movsl");
}

static void user_short_copies(void)
{
    us_dst = (uint32_t)short_dst;
    us_src = (uint32_t)short_src;
    us_count = SHORT_COPIES;
    PM_USER_TRY("movl us_count, %edx\n"
                "1:\n\tmovl us_dst, %edi\n\tmovl us_src, %esi\n\tmovl $40, %ecx\n\t"
                "cld\n\trep movsb\n\tdecl %edx\n\tjnz 1b");
}

int main(void)
{
    const volatile uint32_t *fill = (const volatile uint32_t *)FILL_AT;
    const volatile uint32_t *copy = (const volatile uint32_t *)COPY_AT;
    uint32_t i, ok;

    pm_init();
    rt_puts("pm_user_strings: ring-3 rep strings over fresh pages\n");
    pm_paging_on();

    user_fill();
    pm_expect("the ring-3 rep stosl ran", PM_NONE, 0);
    ok = 1;
    for (i = 0; i < WORDS; i += 1023)
        ok &= fill[i] == 0x5a5a0000u;
    pm_check_val("every page holds what rep stosl wrote", ok, 1);

    user_copy(COPY_AT, FILL_AT, WORDS);
    pm_expect("the ring-3 rep movsl ran", PM_NONE, 0);
    ok = 1;
    for (i = 0; i < WORDS; i += 1023)
        ok &= copy[i] == 0x5a5a0000u;
    pm_check_val("every page holds what rep movsl copied", ok, 1);

    for (i = 0; i < sizeof short_src; i++)
        short_src[i] = (uint8_t)(i * 7 + 1);
    user_short_copies();
    pm_expect("the ring-3 short copies ran", PM_NONE, 0);
    ok = 1;
    for (i = 0; i < sizeof short_dst; i++)
        ok &= short_dst[i] == (i < 40 ? (uint8_t)(i * 7 + 1) : 0);
    pm_check_val("the short copy moved 40 bytes and no more", ok, 1);
    rt_finish("pm_user_strings");
}
