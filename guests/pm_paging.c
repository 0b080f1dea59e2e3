/* pm_paging: 32-bit paging (nestmon: guest-only).
 * 4 KiB and 4 MiB pages (CR4.PSE; PS ignored without it); the accessed and
 * dirty bits set by reads, writes and fetches; CR0.WP; U/S and R/W in the
 * PDE and the PTE combined; global pages (CR4.PGE) invalidated by INVLPG
 * and by toggling CR4.PGE; INVLPG of one page (also of a code page, and
 * of one address of a 4 MiB page); CR3 reloads; a page table mapped as
 * data (recursive PDE) and written through that mapping; offsets that
 * wrap around 4 GiB.  Only
 * what the SDM guarantees after an invalidation is printed, never what a
 * possibly stale TLB entry gives. */
#include "pm.h"

#define CR0_WP 0x10000
#define CR4_PSE 0x10
#define CR4_PGE 0x80
/* the test region: PDE 2 (8-12 MiB), page table pm_pt[2], nothing else
 * touches it */
#define F1 0x00800000u /* frames (identity-mapped too) */
#define F2 0x00801000u
#define F3 0x00802000u
#define V 0x00900000u  /* test pages, remapped at will */
#define V2 0x00901000u
#define BIG 0x40000000u  /* a 4 MiB page, PDE 256 */
#define NOPDE 0x80000000u /* PDE 512: not present */
#define SELF 0xffc00000u  /* PDE 1023 points at the page directory */

uint32_t r[8];

static volatile uint32_t *pte(uint32_t va) { return (volatile uint32_t *)pm_pte(va); }
static volatile uint32_t *pde(uint32_t va) { return (volatile uint32_t *)&pm_pd[va >> 22]; }
static uint32_t rd(uint32_t va) { return *(volatile uint32_t *)va; }
static void wr(uint32_t va, uint32_t v) { *(volatile uint32_t *)va = v; }
static void flush(void) { wr_cr3(rd_cr3()); }
static void map(uint32_t va, uint32_t frame, uint32_t flags) { *pte(va) = frame | flags; }

static void show_ad(const char *what, uint32_t va)
{
    uint32_t d = *pde(va), t = *pte(va);
    rt_printf("%s: PDE A=%u, PTE A=%u D=%u\n", what, (d >> 5) & 1, (t >> 5) & 1, (t >> 6) & 1);
}
static void check_ad(const char *what, uint32_t va, uint32_t pde_a, uint32_t a, uint32_t d)
{
    uint32_t pd = *pde(va), t = *pte(va);
    show_ad(what, va);
    rt_checks++;
    if (((pd >> 5) & 1) != pde_a || ((t >> 5) & 1) != a || ((t >> 6) & 1) != d) {
        rt_failures++;
        rt_printf("FAIL %s: want PDE A=%u, PTE A=%u D=%u\n", what, pde_a, a, d);
    }
}

static void expect_pf(const char *what, int err)
{
    pm_expect_begin(what, PM_PF, err);
    if (pm_last.vector == PM_PF)
        rt_printf(" cr2=%08x", pm_last.cr2);
    pm_end();
}

static void basics(void)
{
    rt_puts("-- 4 KiB pages (SDM vol. 3 '32-Bit Paging')\n");
    wr(F1, 0xf1f1f1f1);
    wr(F2, 0xf2f2f2f2);
    wr(F3, 0xf3f3f3f3);
    map(V, F1, PTE_P | PTE_W);
    pm_invlpg(V);
    pm_check_val("V -> F1: read V", rd(V), 0xf1f1f1f1);
    wr(V + 4, 0x12345678);
    pm_check_val("  write V+4, read F1+4 (identity)", rd(F1 + 4), 0x12345678);
    map(V, F2, PTE_P | PTE_W);
    pm_invlpg(V);
    pm_check_val("V -> F2, invlpg V: read V", rd(V), 0xf2f2f2f2);
    map(V, F3, PTE_P | PTE_W);
    flush();
    pm_check_val("V -> F3, CR3 reload: read V", rd(V), 0xf3f3f3f3);
    map(V, F1, PTE_P | PTE_W);
    map(V2, F2, PTE_P | PTE_W);
    flush();
    (void)rd(V);
    (void)rd(V2);
    map(V, F2, PTE_P | PTE_W);
    map(V2, F1, PTE_P | PTE_W);
    pm_invlpg(V);
    pm_check_val("V, V2 swapped, invlpg V only: read V (V2 not read: may be stale)", rd(V), 0xf2f2f2f2);
    flush();
    pm_check_val("  CR3 reload: read V2", rd(V2), 0xf1f1f1f1);
    map(V2, 0, 0);
    pm_invlpg(V2);
    PM_TRY(AT "movl 0x901000, %eax");
    expect_pf("read of V2, PTE not present", 0);
    PM_TRY(AT "movl %eax, 0x80000010");
    expect_pf("write to a VA whose PDE is not present", 2);
}

static void accessed_dirty(void)
{
    extern char ret_insn[];
    rt_puts("-- accessed and dirty bits (SDM 'Accessed and Dirty Flags')\n");
    map(V, F1, PTE_P | PTE_W);
    *pde(V) &= ~(PTE_A | PTE_D);
    flush();
    check_ad("mapped, nothing accessed", V, 0, 0, 0);
    (void)rd(V);
    check_ad("after a read of V", V, 1, 1, 0);
    wr(V, 0xf1f1f1f1);
    check_ad("after a write to V", V, 1, 1, 1);
    *pte(V) &= ~(PTE_A | PTE_D);
    pm_invlpg(V);
    check_ad("A and D cleared by software, invlpg", V, 1, 0, 0);
    wr(V + 8, 1);
    check_ad("after a write (no read before)", V, 1, 1, 1);
    *pte(V) &= ~(PTE_A | PTE_D);
    pm_invlpg(V);
    memcpy((void *)F1 + 0x100, ret_insn, 1);
    ((void (*)(void))(V + 0x100))();
    check_ad("after a call to V+0x100 (ret): an instruction fetch", V, 1, 1, 0);
    (void)rd(V);
    check_ad("then a read", V, 1, 1, 0);
    map(V, F1, PTE_P);
    *pte(V) &= ~(PTE_A | PTE_D);
    pm_invlpg(V);
    (void)rd(V);
    check_ad("read-only page (WP=0), read", V, 1, 1, 0);
    wr(V, 0xf1f1f1f1);
    check_ad("  supervisor write with WP=0 succeeds and sets D", V, 1, 1, 1);

    rt_puts("-- 4 MiB pages (CR4.PSE)\n");
    wr_cr4(rd_cr4() | CR4_PSE);
    wr(0x00c00000, 0xc0c0c0c0);
    *pde(BIG) = 0x00c00000 | PTE_PS | PTE_P | PTE_W;
    flush();
    pm_check_val("BIG -> 0xc00000 (4 MiB): read BIG", rd(BIG), 0xc0c0c0c0);
    pm_check_val("  PDE A, D after the read", (*pde(BIG) >> 5) & 3, 1);
    wr(BIG + 0x3ffffc, 0xe4e4e4e4);
    pm_check_val("  write BIG+0x3ffffc, read 0xfffffc (identity)", rd(0x00fffffc), 0xe4e4e4e4);
    pm_check_val("  PDE A, D after the write", (*pde(BIG) >> 5) & 3, 3);
    *pde(BIG) = 0x01000000 | PTE_PS | PTE_P | PTE_W;
    pm_invlpg(BIG + 0x123000);
    wr(BIG, 0x01010101);
    *pde(BIG) = 0x00c00000 | PTE_PS | PTE_P | PTE_W;
    pm_invlpg(BIG + 0x3ff000);
    pm_check_val("  BIG -> 16 MiB, write, back to 0xc00000 with invlpg of another 4 KiB in it: read BIG",
                 rd(BIG), 0xc0c0c0c0);
    *pde(BIG) = 0x01000000 | PTE_PS | PTE_P | PTE_W;
    flush();
    pm_check_val("  BIG -> 16 MiB, CR3 reload: read BIG", rd(BIG), 0x01010101);
    wr_cr4(rd_cr4() & ~CR4_PSE);
    /* PS is ignored: the PDE points at a page table at 0xc00000 */
    *pde(BIG) = 0x00c00000 | PTE_PS | PTE_P | PTE_W;
    wr(0x00c00000, F3 | PTE_P | PTE_W);
    flush();
    pm_check_val("CR4.PSE=0, PDE with PS=1 -> 0xc00000 used as a page table (entry 0 -> F3): read BIG",
                 rd(BIG), 0xf3f3f3f3);
    wr(0x00c00000, 0);
    flush();
    PM_TRY(AT "movl 0x40000000, %eax");
    expect_pf("  its entry 0 cleared: read BIG", 0);
    *pde(BIG) = 0;
    flush();
}

static void protection(void)
{
    rt_puts("-- CR0.WP, U/S and R/W in PDE and PTE (SDM 'Access Rights', 'Page-Fault Exceptions')\n");
    map(V, F1, PTE_P);
    pm_invlpg(V);
    EXPECT_OK("supervisor write, read-only supervisor page, WP=0", "movl %eax, 0x900000");
    wr_cr0(rd_cr0() | CR0_WP);
    PM_TRY(AT "movl %eax, 0x900000");
    expect_pf("supervisor write, read-only page, WP=1", 3);
    PM_USER_TRY(AT "movl 0x900000, %eax");
    expect_pf("ring 3 read, supervisor page", 5);
    map(V, F1, PTE_P | PTE_U);
    pm_invlpg(V);
    EXPECT_USER_OK("ring 3 read, read-only user page", "movl 0x900000, %eax");
    PM_USER_TRY(AT "movl %eax, 0x900000");
    expect_pf("ring 3 write, read-only user page", 7);
    map(V, F1, PTE_P | PTE_W | PTE_U);
    *pde(V) &= ~PTE_U;
    flush();
    PM_USER_TRY(AT "movl 0x900000, %eax");
    expect_pf("ring 3 read, PTE U=1 but PDE U=0", 5);
    *pde(V) = (*pde(V) | PTE_U) & ~PTE_W;
    flush();
    EXPECT_USER_OK("ring 3 read, PDE R/W=0, PTE R/W=1", "movl 0x900000, %eax");
    PM_USER_TRY(AT "movl %eax, 0x900000");
    expect_pf("ring 3 write, PDE R/W=0, PTE R/W=1", 7);
    PM_TRY(AT "movl %eax, 0x900000");
    expect_pf("supervisor write, PDE R/W=0, WP=1", 3);
    wr_cr0(rd_cr0() & ~CR0_WP);
    EXPECT_OK("supervisor write, PDE R/W=0, WP=0", "movl %eax, 0x900000");
    *pde(V) |= PTE_W;
    flush();
    EXPECT_USER_OK("ring 3 write, everything R/W and U", "movl %eax, 0x900000");
}

static void global_pages(void)
{
    rt_puts("-- global pages (CR4.PGE; SDM 'Global Pages', 'Invalidation of TLBs and Paging-Structure Caches')\n");
    wr(F1, 0xf1f1f1f1); /* the protection checks wrote into F1 */
    wr_cr4(rd_cr4() | CR4_PGE);
    map(V, F1, PTE_P | PTE_W | PTE_G);
    pm_invlpg(V);
    pm_check_val("V -> F1 global: read V", rd(V), 0xf1f1f1f1);
    map(V, F2, PTE_P | PTE_W | PTE_G);
    pm_invlpg(V);
    pm_check_val("  PTE -> F2, invlpg V (drops global entries too): read V", rd(V), 0xf2f2f2f2);
    map(V, F3, PTE_P | PTE_W | PTE_G);
    wr_cr3(rd_cr3()); /* may keep the global entry: V is not read here */
    wr_cr4(rd_cr4() & ~CR4_PGE);
    wr_cr4(rd_cr4() | CR4_PGE);
    pm_check_val("  PTE -> F3, CR3 reload, CR4.PGE 1 -> 0 -> 1: read V", rd(V), 0xf3f3f3f3);
    map(V, F1, PTE_P | PTE_W);
    pm_invlpg(V);
    (void)rd(V);
    map(V, F2, PTE_P | PTE_W);
    flush();
    pm_check_val("non-global V: PTE -> F2, CR3 reload (PGE=1): read V", rd(V), 0xf2f2f2f2);
    wr_cr4(rd_cr4() & ~CR4_PGE);
}

static void self_map(void)
{
    volatile uint32_t *self_pt = (volatile uint32_t *)(SELF + ((V >> 22) << 12));
    volatile uint32_t *self_pd = (volatile uint32_t *)(SELF + (1023u << 12));
    uint32_t i = (V >> 12) & 1023;
    rt_puts("-- the page directory mapped as its own page table (PDE 1023): page tables as data\n");
    pm_pd[1023] = (uint32_t)pm_pd | PTE_P | PTE_W;
    map(V, F1, PTE_P | PTE_W);
    flush();
    pm_check_val("PTE of V read through 0xffc00000 - PTE in pm_pt", self_pt[i] - *pte(V), 0);
    pm_check_val("PDE 1023 read through 0xfffff000 - pm_pd", (self_pd[1023] & ~0xfffu) - (uint32_t)pm_pd, 0);
    (void)rd(V);
    pm_check_val("  after a read of V: A in the PTE seen through the mapping", (self_pt[i] >> 5) & 1, 1);
    self_pt[i] = F3 | PTE_P | PTE_W;
    pm_invlpg(V);
    pm_check_val("PTE of V written through the mapping (-> F3), invlpg V: read V", rd(V), 0xf3f3f3f3);
    pm_check_val("  pm_pt holds the new PTE", *pte(V) & ~0xfffu, F3);
    self_pt[i + 1] = F2 | PTE_P | PTE_W;
    pm_invlpg(V2);
    pm_check_val("PTE of V2 written through the mapping (-> F2), invlpg V2: read V2", rd(V2), 0xf2f2f2f2);
    pm_pd[1023] = 0;
    flush();
}

/* Addresses that wrap around 4 GiB: the offset [reg + disp] is taken
 * modulo 2^32, past the top and below 0 alike (nestmon folds displacements
 * into host addressing and runs again, unfolded, an access that wraps).
 * Each access runs three times: the first wraps under folding, the later
 * ones run the instruction made again without it.  The self-map puts the
 * page directory at 0xfffff000. */
static void wrapping(void)
{
    uint32_t near_top = 0xfffffff8u, low = 8, v, bad_load = 0, bad_store = 0, bad_back = 0;
    rt_puts("-- offsets that wrap around 4 GiB: [reg + disp] past the top and below 0\n");
    pm_pd[1023] = (uint32_t)pm_pd | PTE_P | PTE_W;
    flush();
    wr(F1 + 0x10, 0x5a5a1234);
    for (int k = 0; k < 3; k++) {
        /* 0xfffffff8 + (F1 + 0x18) = F1 + 0x10 */
        __asm__ volatile("movl %c2(%1), %0" : "=r"(v) : "r"(near_top), "i"(F1 + 0x18) : "memory");
        bad_load += v != 0x5a5a1234;
        /* 8 - 0x10 = 0xfffffff8: PDE 1022 through the self-map (P clear) */
        __asm__ volatile("movl %1, -0x10(%0)" : : "r"(low), "r"(0x12345670u + k) : "memory");
        bad_store += pm_pd[1022] != 0x12345670u + k;
        __asm__ volatile("movl -0x10(%1), %0" : "=r"(v) : "r"(low) : "memory");
        bad_back += v != 0x12345670u + k;
    }
    pm_check_val("load [0xfffffff8 + F1+0x18] reads F1+0x10, 3 times: misses", bad_load, 0);
    pm_check_val("store [8 - 0x10] writes PDE 1022 (0xfffffff8), 3 times: misses", bad_store, 0);
    pm_check_val("load [8 - 0x10] reads it back, 3 times: misses", bad_back, 0);
    pm_pd[1022] = 0;
    pm_pd[1023] = 0;
    flush();
}

/* INVLPG's scope: a remapped code page runs its new frame's code; INVLPG
 * of one address inside a 4 MiB page invalidates all of that page. */
static void invlpg_scope(void)
{
    static const uint8_t code_a[] = { 0xb8, 0xaa, 0xaa, 0, 0, 0xc3 }; /* mov $0xaaaa,%eax; ret */
    static const uint8_t code_b[] = { 0xb8, 0xbb, 0xbb, 0, 0, 0xc3 }; /* mov $0xbbbb,%eax; ret */
    uint32_t (*fn)(void) = (uint32_t (*)(void))V;
    rt_puts("-- INVLPG scope: remapped code, one address of a 4 MiB page (SDM 'INVLPG')\n");
    memcpy((void *)F1, code_a, sizeof(code_a));
    memcpy((void *)F2, code_b, sizeof(code_b));
    map(V, F1, PTE_P | PTE_W);
    pm_invlpg(V);
    pm_check_val("code page V -> F1: call V", fn(), 0xaaaa);
    pm_check_val("  call V again", fn(), 0xaaaa);
    map(V, F2, PTE_P | PTE_W);
    pm_invlpg(V);
    pm_check_val("  PTE -> F2, invlpg V: call V runs F2's code", fn(), 0xbbbb);
    map(V, F1, PTE_P | PTE_W);
    pm_invlpg(V);
    pm_check_val("  PTE -> F1 again, invlpg V: call V", fn(), 0xaaaa);

    wr(0x00802000, 0x80802000);
    wr(0x00c02000, 0x80c02000);
    wr_cr4(rd_cr4() | CR4_PSE);
    *pde(BIG) = 0x00800000 | PTE_P | PTE_W | 0x80;
    flush();
    pm_check_val("4 MiB page BIG -> 8 MiB: read BIG+0x2000", rd(BIG + 0x2000), 0x80802000);
    *pde(BIG) = 0x00c00000 | PTE_P | PTE_W | 0x80;
    pm_invlpg(BIG + 0x1000);
    pm_check_val("  PDE -> 12 MiB, invlpg BIG+0x1000: read BIG+0x2000", rd(BIG + 0x2000),
                 0x80c02000);
    *pde(BIG) = 0;
    flush();
    wr_cr4(rd_cr4() & ~CR4_PSE);
}

__asm__(".text\nret_insn:\n\tret\n");

int main(void)
{
    pm_init();
    rt_puts("pm_paging: 4 KiB and 4 MiB pages, A/D bits, WP, U/S, R/W, global pages, INVLPG, self-map\n");
    pm_paging_on();
    basics();
    accessed_dirty();
    protection();
    global_pages();
    self_map();
    wrapping();
    invlpg_scope();
    pm_paging_off();
    rt_finish("pm_paging");
}
