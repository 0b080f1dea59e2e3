/* pm_spaces: many address spaces, page-table coherence and code that
 * differs per address space (nestmon: guest-only).
 *
 * What a shadow MMU that caches address spaces per CR3, keeps translations
 * across CR3 switches and traces page-table writes (with out-of-sync leaf
 * tables) can get wrong, checked against what the SDM guarantees:
 * - 24 page directories sharing the kernel's page tables, each with its own
 *   user pages at the same linear addresses holding different code (the
 *   same code frame in some spaces, different ones in others), switched
 *   between by CR3 writes in several orders, at ring 0 and ring 3: direct
 *   and indirect calls into those pages, direct jumps into the next page
 *   (whose frame differs per space) and from a page shared by every space
 *   into a per-space page, a return into a per-space page, and
 *   instructions that straddle two pages whose second frame differs per
 *   space;
 * - PTEs and PDEs of a space that is not current rewritten, then switched
 *   to; PTEs of the current space rewritten with INVLPG, and many times
 *   over (one page table written again and again) before a CR3 reload;
 * - a PTE made not present (#PF with CR2 and the error code, for reads,
 *   writes and fetches at rings 0 and 3) and present again, with INVLPG
 *   and without (not-present entries are never cached);
 * - a page table shared by two page directories; every page directory
 *   mapped as its own page table (PDE 1023) and written through that
 *   mapping; a page directory of another space mapped as data; a page
 *   table freed, reused as data and as code, and as a page table again;
 *   CR3 values that differ only in PWT/PCD;
 * - U/S and CR0.WP per space; 4 MiB and 4 KiB pages at one linear address
 *   in two spaces; global pages (CR4.PGE), printing only what the SDM
 *   guarantees after an invalidation, never what a possibly stale TLB
 *   entry gives;
 * - `rep stosb` over 16 pages of translated code with paging on (dirty and
 *   clean PTEs);
 * - accessed and dirty bits: set by the current space's walks only; the
 *   page tables of a space that is not current keep what software wrote;
 * - 192 short-lived page directories, visited, rewritten while not current
 *   and visited again (a cache of spaces must evict and notice rewrites);
 * - last: an instruction straddling into a page that is not present
 *   raises #PF with CR2 = that page, and runs once it is present.
 *
 * The expected results are computed by the guest itself from a software
 * walk of the space's own page tables and the tag of each frame (every
 * code frame holds code generated from its tag); the printed sums and
 * values are compared with qemu-system-i386 (guests/expected). */
#include "pm.h"

#define CR0_WP 0x10000
#define CR4_PSE 0x10
#define CR4_PGE 0x80
#define CR3_PWT_PCD 0x18

#define NSPACES 24
/* linear layout of every space (PDE 0-3: the kernel's identity map) */
#define CODE0 0x40000000u /* PDE 256: the space's own page table "upt" */
#define CODE1 0x40001000u
#define CODE2 0x40002000u /* the same frame in every space */
#define CODE3 0x40003000u
#define DATA0 0x40008000u /* per-space signature page (user) */
#define DATA1 0x40009000u /* user in spaces 0, 3, 6, ... else supervisor */
#define MANY 0x40010000u  /* 32 pages rewritten many times (upt 16-47) */
#define NMANY 32
#define STOS 0x40040000u  /* 16 code pages for rep stosb (upt 64-79) */
#define PDWIN 0x40064000u /* another space's page directory as data (upt 100) */
#define REUSE 0x40065000u /* a freed page table as data and code (upt 101) */
#define SHR 0x40400000u   /* PDE 257: a page table shared by spaces 2k, 2k+1 */
#define FREED 0x40800000u /* PDE 258: a page table freed and reused */
#define GL 0x40c00000u    /* PDE 259: global pages */
#define BIGV 0x41000000u  /* PDE 260: a 4 MiB page in one space, a PT in another */
#define SELF 0xffc00000u  /* PDE 1023: the page directory as its page table */
#define SELF_PD 0xfffff000u
#define BIGFRAME 0x00400000u /* the 4 MiB page's frame (4-8 MiB, unused else) */
/* frames for page tables, code and data are allocated at 8-16 MiB, which
 * the kernel's identity map covers */
#define FRAMES_START 0x00800000u
#define FRAMES_END 0x01000000u

#define NRES 18 /* results of one pass over the entry points */

struct space {
    uint32_t *pd, *upt; /* page directory and the PDE 256 table */
};
static struct space sp[NSPACES];
static uint32_t *spt[NSPACES / 2]; /* PDE 257 tables, one per pair */
static uint32_t code0_pool[8], code2_frame, code3_pool[5];
static uint32_t next_frame = FRAMES_START;
static int failed_alloc;

/* shared with the assembly of the entry passes */
uint32_t sp_res[NRES];
static volatile uint32_t sink;

/* ---- frames ---- */
static uint32_t tag(uint32_t frame)
{
    uint32_t x = frame * 0x9e3779b1u;
    x ^= x >> 15;
    x *= 0x85ebca77u;
    x ^= x >> 13;
    return x;
}

static uint32_t frame_alloc(void)
{
    uint32_t f = next_frame;
    if (f >= FRAMES_END) {
        failed_alloc = 1;
        f = FRAMES_END - 0x1000;
    }
    next_frame += 0x1000;
    memset((void *)f, 0, 0x1000);
    return f;
}

/* a data frame: its tag at offset 0, the complement at 0xffc */
static uint32_t data_frame(void)
{
    uint32_t f = frame_alloc();
    *(volatile uint32_t *)f = tag(f);
    *(volatile uint32_t *)(f + 0xffc) = ~tag(f);
    return f;
}

static uint32_t *table_alloc(void) { return (uint32_t *)frame_alloc(); }

/* ---- code templates (written through the kernel's identity map) ---- */
static uint8_t *cp;
static uint32_t cp_lin; /* linear address cp stands for */
static void at(uint32_t frame, uint32_t page_lin, uint32_t off)
{
    cp = (uint8_t *)(frame + off);
    cp_lin = page_lin + off;
}
static void b(uint8_t v) { *cp++ = v, cp_lin++; }
static void d(uint32_t v) { b(v), b(v >> 8), b(v >> 16), b(v >> 24); }
static void mov_eax(uint32_t v) { b(0xb8), d(v); }
static void add_eax(uint32_t v) { b(0x05), d(v); }
static void ret(void) { b(0xc3); }
static void jmp(uint32_t to) { b(0xe9), d(to - (cp_lin + 4)); }
static void call(uint32_t to) { b(0xe8), d(to - (cp_lin + 4)); }
static void fill(uint32_t frame) { memset((void *)frame, 0xcc, 0x1000); } /* int3 */

/* CODE0 (tag t0):
 *   +0x000 mov $t0, %eax; ret
 *   +0x020 mov $t0, %eax; jmp CODE1+0x010              (into the next page)
 *   +0x040 mov $t0, %eax; call *%ebx; add $t0, %eax; ret (returns here)
 *   +0x060 jmp *%ecx
 *   +0x080 mov $t0, %eax; jmp CODE3+0x010
 *   +0xff0 mov $t0, %eax; 7 nops; +0xffc add $imm, %eax whose last byte
 *          is CODE1's first byte: imm = t0 & 0xffffff | t1 & 0xff000000 */
static uint32_t new_code0(void)
{
    uint32_t f = frame_alloc(), t = tag(f);
    int i;
    fill(f);
    at(f, CODE0, 0x000), mov_eax(t), ret();
    at(f, CODE0, 0x020), mov_eax(t), jmp(CODE1 + 0x010);
    at(f, CODE0, 0x040), mov_eax(t), b(0xff), b(0xd3), add_eax(t), ret();
    at(f, CODE0, 0x060), b(0xff), b(0xe1);
    at(f, CODE0, 0x080), mov_eax(t), jmp(CODE3 + 0x010);
    at(f, CODE0, 0xff0), mov_eax(t);
    for (i = 0; i < 7; i++)
        b(0x90);
    b(0x05), b(t), b(t >> 8), b(t >> 16);
    return f;
}

/* CODE1 (tag t1): +0x000 t1 >> 24 (the straddling add's last byte); ret
 *   +0x010 add $t1, %eax; ret
 *   +0x100 mov $(t1 ^ 0x5a5a5a5a), %eax; ret */
static uint32_t new_code1(void)
{
    uint32_t f = frame_alloc(), t = tag(f);
    fill(f);
    at(f, CODE1, 0x000), b(t >> 24), ret();
    at(f, CODE1, 0x010), add_eax(t), ret();
    at(f, CODE1, 0x100), mov_eax(t ^ 0x5a5a5a5a), ret();
    return f;
}

/* CODE2, one frame in every space:
 *   +0x000 mov $0x11111111, %eax; jmp CODE3+0x010
 *   +0x020 call CODE1+0x100; add $1, %eax; ret
 *   +0x040 mov $0x2222, %eax; jmp CODE1+0x010
 *   +0xff0 mov $0x01000000, %eax; 8 nops; +0xffd add $imm, %eax whose two
 *          high bytes are CODE3's first two: imm = 0x3333 | t3 & 0xffff0000 */
static uint32_t new_code2(void)
{
    uint32_t f = frame_alloc();
    int i;
    fill(f);
    at(f, CODE2, 0x000), mov_eax(0x11111111), jmp(CODE3 + 0x010);
    at(f, CODE2, 0x020), call(CODE1 + 0x100), add_eax(1), ret();
    at(f, CODE2, 0x040), mov_eax(0x2222), jmp(CODE1 + 0x010);
    at(f, CODE2, 0xff0), mov_eax(0x01000000);
    for (i = 0; i < 8; i++)
        b(0x90);
    b(0x05), b(0x33), b(0x33);
    return f;
}

/* CODE3 (tag t3): +0x000 t3 >> 16, t3 >> 24; ret;  +0x010 add $t3, %eax; ret */
static uint32_t new_code3(void)
{
    uint32_t f = frame_alloc(), t = tag(f);
    fill(f);
    at(f, CODE3, 0x000), b(t >> 16), b(t >> 24), ret();
    at(f, CODE3, 0x010), add_eax(t), ret();
    return f;
}

/* "mov $v, %eax; ret" at offset off of a frame */
static void code_ret(uint32_t frame, uint32_t off, uint32_t v)
{
    at(frame, 0, off), mov_eax(v), ret();
}

/* ---- the software walk: what the SDM says a flushed TLB gives ---- */
static uint32_t walk(const uint32_t *pd, uint32_t va)
{
    uint32_t pde = pd[va >> 22], pte;
    if (!(pde & PTE_P))
        return 0;
    if ((pde & PTE_PS) && (rd_cr4() & CR4_PSE))
        return (pde & 0xffc00000u) | (va & 0x003ff000u);
    pte = ((const uint32_t *)(pde & ~0xfffu))[(va >> 12) & 1023];
    return pte & PTE_P ? pte & ~0xfffu : 0;
}

static void expect_pd(const uint32_t *pd, uint32_t *e)
{
    uint32_t t0 = tag(walk(pd, CODE0)), t1 = tag(walk(pd, CODE1));
    uint32_t t3 = tag(walk(pd, CODE3)), dt = tag(walk(pd, DATA0));
    uint32_t straddle01 = (t0 & 0xffffff) | (t1 & 0xff000000);
    uint32_t straddle23 = 0x3333 | (t3 & 0xffff0000);
    e[0] = e[1] = t0;
    e[2] = e[3] = t0 + t1;
    e[4] = 3 * t0;
    e[5] = t1 ^ 0x5a5a5a5a;
    e[6] = t3;
    e[7] = t0 + t3;
    e[8] = t0 + straddle01;
    e[9] = straddle01;
    e[10] = t1 ^ 0x5a5a5a5a;
    e[11] = 0x11111111 + t3;
    e[12] = (t1 ^ 0x5a5a5a5a) + 1;
    e[13] = 0x2222 + t1;
    e[14] = 0x01000000 + straddle23;
    e[15] = straddle23;
    e[16] = dt;
    e[17] = ~dt;
}

/* ---- one pass over the entry points (ring 0 or ring 3) ---- */
/* the kernel function the CODE0+0x040 entry calls: doubles EAX */
__asm__(".text\n.globl sp_helper\nsp_helper:\n\taddl %eax, %eax\n\tret\n");

#define PRE "xorl %eax, %eax\n\tmovl $sp_helper, %ebx\n\t"
#define STORE(slot) "movl %eax, sp_res+4*" #slot "\n\t"
/* an indirect call (call *%edx) and a direct call from the kernel; the
 * first entry is a direct call to another page, so that right after a
 * switch to a space whose directory was rewritten while not current the
 * pass reaches per-space code before any other access could show the
 * monitor the new mapping (a copy loop writing a lazy directory through
 * nestmon's software TLB once went unseen there) */
#define CALLI(target, slot) PRE "movl $" target ", %edx\n\tcall *%edx\n\t" STORE(slot)
#define CALLD(target, slot) PRE "call " target "\n\t" STORE(slot)
#define ENTRIES                                                             \
    CALLD("0x40000000", 1)                                                  \
    CALLI("0x40000000", 0)                                                  \
    CALLI("0x40000020", 2)                                                  \
    CALLD("0x40000020", 3)                                                  \
    CALLI("0x40000040", 4)                                                  \
    "movl $0x40001100, %ecx\n\t" CALLI("0x40000060", 5)                     \
    "movl $0x40003010, %ecx\n\t" CALLI("0x40000060", 6)                     \
    CALLI("0x40000080", 7)                                                  \
    CALLI("0x40000ff0", 8)                                                  \
    CALLD("0x40000ffc", 9)                                                  \
    CALLI("0x40001100", 10)                                                 \
    CALLD("0x40002000", 11)                                                 \
    CALLI("0x40002020", 12)                                                 \
    CALLI("0x40002040", 13)                                                 \
    CALLI("0x40002ff0", 14)                                                 \
    CALLD("0x40002ffd", 15)                                                 \
    "movl 0x40008000, %eax\n\t" STORE(16)                                   \
    "movl 0x40008ffc, %eax\n\t" STORE(17)

/* runs the pass; 0 when it completed, else the exception is in pm_last */
static int run_entries(int ring3)
{
    memset(sp_res, 0, sizeof(sp_res));
    if (ring3)
        PM_USER_TRY(ENTRIES);
    else
        PM_TRY(ENTRIES);
    return pm_last.vector == PM_NONE ? 0 : -1;
}

static const char *fail_what;
static int fail_space, fail_ring, fail_slot;
static uint32_t fail_got, fail_want;

/* runs a pass at the given ring in the current address space, whose page
 * directory is pd (s names it in failure reports), and compares with the
 * walk; returns the number of wrong results and adds the results to *sum */
static int pass_pd(const uint32_t *pd, int s, int ring3, uint32_t *sum)
{
    uint32_t e[NRES];
    int i, wrong = 0;
    expect_pd(pd, e);
    if (run_entries(ring3)) {
        if (!fail_what) {
            fail_what = "exception", fail_space = s, fail_ring = ring3 ? 3 : 0;
            fail_slot = pm_last.vector, fail_got = pm_last.eip, fail_want = pm_last.cr2;
        }
        return NRES;
    }
    for (i = 0; i < NRES; i++) {
        *sum += sp_res[i];
        if (sp_res[i] != e[i]) {
            wrong++;
            if (!fail_what) {
                fail_what = "result", fail_space = s, fail_ring = ring3 ? 3 : 0;
                fail_slot = i, fail_got = sp_res[i], fail_want = e[i];
            }
        }
    }
    return wrong;
}

static int pass(int s, int ring3, uint32_t *sum) { return pass_pd(sp[s].pd, s, ring3, sum); }

static void report(const char *what, int results, int wrong, uint32_t sum)
{
    rt_printf("%s: %d results, wrong %d, sum %08x\n", what, results, wrong, sum);
    rt_checks++;
    if (wrong) {
        rt_failures++;
        rt_printf("FAIL %s: first wrong: %s in space %d at ring %d: ", what, fail_what,
                  fail_space, fail_ring);
        if (fail_what[0] == 'e')
            rt_printf("vector %d eip %08x cr2 %08x\n", fail_slot, fail_got, fail_want);
        else
            rt_printf("slot %d got %08x want %08x\n", fail_slot, fail_got, fail_want);
    }
}

static void switch_to(int s) { wr_cr3((uint32_t)sp[s].pd); }

/* rings: 1 = ring 0, 2 = ring 3, 3 = both */
static void round_of(const char *what, const int *order, int n, int rings)
{
    int k, wrong = 0, results = 0;
    uint32_t sum = 0;
    fail_what = 0;
    for (k = 0; k < n; k++) {
        switch_to(order[k]);
        if (rings & 1)
            wrong += pass(order[k], 0, &sum), results += NRES;
        if (rings & 2)
            wrong += pass(order[k], 1, &sum), results += NRES;
    }
    report(what, results, wrong, sum);
}

/* one pass in the current space s, reported on its own line */
static void pass_line(const char *what, int s, int ring3)
{
    uint32_t sum = 0;
    int wrong;
    fail_what = 0;
    wrong = pass(s, ring3, &sum);
    report(what, NRES, wrong, sum);
}

/* ---- helpers ---- */
static volatile uint32_t *pte_of(int s, uint32_t va)
{
    uint32_t pde = sp[s].pd[va >> 22];
    return (volatile uint32_t *)(pde & ~0xfffu) + ((va >> 12) & 1023);
}
static volatile uint32_t *pde_of(int s, uint32_t va) { return (volatile uint32_t *)&sp[s].pd[va >> 22]; }
static uint32_t rd(uint32_t va) { return *(volatile uint32_t *)va; }
static void wr(uint32_t va, uint32_t v) { *(volatile uint32_t *)va = v; }
static uint32_t call_at(uint32_t va)
{
    uint32_t r;
    __asm__ __volatile__("call *%1" : "=a"(r) : "r"(va), "0"(0) : "ecx", "edx", "memory");
    return r;
}
/* a check that the value read is the tag of the expected frame */
static void check_tag(const char *what, uint32_t got, uint32_t frame)
{
    pm_check_val(what, got, tag(frame));
}

static void expect_pf(const char *what, int err)
{
    pm_expect_begin(what, PM_PF, err);
    if (pm_last.vector == PM_PF)
        rt_printf(" cr2=%08x", pm_last.cr2);
    pm_end();
}

/* ---- building the spaces ---- */
static void build(void)
{
    int s, i;
    for (i = 0; i < 8; i++)
        code0_pool[i] = new_code0();
    for (i = 0; i < 5; i++)
        code3_pool[i] = new_code3();
    code2_frame = new_code2();
    for (i = 0; i < NSPACES / 2; i++) {
        spt[i] = table_alloc();
        spt[i][0] = data_frame() | PTE_P | PTE_W | PTE_U;
    }
    for (s = 0; s < NSPACES; s++) {
        uint32_t *pd = table_alloc(), *upt = table_alloc();
        sp[s].pd = pd;
        sp[s].upt = upt;
        for (i = 0; i < 4; i++)
            pd[i] = pm_pd[i];
        pd[CODE0 >> 22] = (uint32_t)upt | PTE_P | PTE_W | PTE_U;
        pd[SHR >> 22] = (uint32_t)spt[s / 2] | PTE_P | PTE_W | PTE_U;
        pd[1023] = (uint32_t)pd | PTE_P | PTE_W;
        upt[0] = code0_pool[s % 8] | PTE_P | PTE_W | PTE_U;
        upt[1] = new_code1() | PTE_P | PTE_W | PTE_U;
        upt[2] = code2_frame | PTE_P | PTE_W | PTE_U;
        upt[3] = code3_pool[s % 5] | PTE_P | PTE_W | PTE_U;
        upt[8] = data_frame() | PTE_P | PTE_W | PTE_U;
        upt[9] = data_frame() | PTE_P | PTE_W | (s % 3 == 0 ? PTE_U : 0);
    }
}

/* ---- the checks ---- */
static void switching(const char *when)
{
    int order[64], i, x;
    rt_printf("-- 24 address spaces, the same linear addresses, different code, %s "
              "(CR3 writes; SDM 'Invalidation of TLBs and Paging-Structure Caches')\n", when);
    for (i = 0; i < NSPACES; i++)
        order[i] = i;
    round_of("forward 0..23, ring 0", order, NSPACES, 1);
    for (i = 0; i < NSPACES; i++)
        order[i] = NSPACES - 1 - i;
    round_of("backward 23..0, rings 0 and 3", order, NSPACES, 3);
    for (i = 0; i < NSPACES; i++)
        order[i] = i * 7 % NSPACES;
    round_of("stride 7, ring 3", order, NSPACES, 2);
    for (i = 0, x = 12345; i < 48; i++) {
        x = x * 1103515245 + 12345;
        order[i] = ((uint32_t)x >> 16) % NSPACES;
    }
    round_of("48 pseudo-random switches (repeats: CR3 reloads), ring 0", order, 48, 1);
    for (i = 0; i < 16; i++)
        order[i] = i & 1 ? 8 : 0; /* the same CODE0 frame, different CODE1 */
    round_of("ping-pong 0 <-> 8 (same CODE0 frame), rings 0 and 3", order, 16, 3);
    for (i = 0; i < 16; i++)
        order[i] = i & 1 ? 5 : 0; /* the same CODE3 frame, different CODE0/1 */
    round_of("ping-pong 0 <-> 5 (same CODE3 frame), ring 0", order, 16, 1);
}

static void not_current(void)
{
    uint32_t f, old_upt;
    int order[2] = { 5, 5 }, i;
    rt_puts("-- PTEs and PDEs of a space that is not current rewritten, then a CR3 write to it\n");
    switch_to(5);
    pass_line("space 5 before", 5, 0);
    switch_to(0);
    *pte_of(5, CODE1) = new_code1() | PTE_P | PTE_W | PTE_U;
    *pte_of(5, DATA0) = data_frame() | PTE_P | PTE_W | PTE_U;
    switch_to(5);
    pass_line("space 5: CODE1 and DATA0 PTEs rewritten from space 0", 5, 0);
    pass_line("  again at ring 3", 5, 1);
    switch_to(0);
    /* a new page table for PDE 256: a copy with other CODE0 and CODE3 frames */
    old_upt = *pde_of(5, CODE0);
    {
        uint32_t *t = table_alloc();
        memcpy(t, sp[5].upt, 4096);
        t[0] = code0_pool[7] | PTE_P | PTE_W | PTE_U;
        t[3] = code3_pool[4] | PTE_P | PTE_W | PTE_U;
        *pde_of(5, CODE0) = (uint32_t)t | PTE_P | PTE_W | PTE_U;
    }
    switch_to(5);
    pass_line("space 5: PDE 256 -> another page table, from space 0", 5, 0);
    switch_to(0);
    *pde_of(5, CODE0) = old_upt;
    switch_to(5);
    pass_line("space 5: PDE 256 back, from space 0", 5, 0);
    switch_to(0);
    *pte_of(5, CODE0) = 0;
    switch_to(5);
    PM_TRY("movl $0x40000000, %edx\n\t" AT "call *%edx");
    expect_pf("space 5: CODE0 PTE cleared from space 0: call CODE0", 0);
    switch_to(0);
    *pte_of(5, CODE0) = code0_pool[5] | PTE_P | PTE_W | PTE_U;
    round_of("space 5: CODE0 PTE back, from space 0", order, 2, 3);
    /* a burst: CODE1 of every other space rewritten from space 0 */
    switch_to(0);
    for (i = 1; i < NSPACES; i++) {
        f = new_code1();
        *pte_of(i, CODE1) = f | PTE_P | PTE_W | PTE_U;
        if (i % 4 == 0)
            *pte_of(i, DATA0) = data_frame() | PTE_P | PTE_W | PTE_U;
    }
    {
        int ord[NSPACES];
        for (i = 0; i < NSPACES; i++)
            ord[i] = (i * 5 + 1) % NSPACES;
        round_of("CODE1 of spaces 1..23 rewritten from space 0, then each visited", ord, NSPACES, 3);
    }
}

static void current(void)
{
    int i, wrong, checked;
    uint32_t frames[40], want[NMANY];
    rt_puts("-- PTEs of the current space rewritten, INVLPG ('INVLPG'), CR3 reload\n");
    switch_to(9);
    pass_line("space 9", 9, 0);
    *pte_of(9, CODE1) = new_code1() | PTE_P | PTE_W | PTE_U;
    pm_invlpg(CODE1);
    pass_line("CODE1 -> new frame, invlpg CODE1 (straddling add, jumps into it)", 9, 0);
    *pte_of(9, CODE3) = code3_pool[(9 + 1) % 5] | PTE_P | PTE_W | PTE_U;
    pm_invlpg(CODE3);
    pass_line("CODE3 -> other frame, invlpg CODE3 (shared CODE2 straddles into it)", 9, 1);
    *pte_of(9, CODE0) = code0_pool[(9 + 3) % 8] | PTE_P | PTE_W | PTE_U;
    pm_invlpg(CODE0);
    pass_line("CODE0 -> other frame, invlpg CODE0", 9, 0);
    *pde_of(9, CODE0) = (uint32_t)sp[10].upt | PTE_P | PTE_W | PTE_U;
    pm_invlpg(CODE0);
    pm_invlpg(CODE1);
    pm_invlpg(CODE2);
    pm_invlpg(CODE3);
    pm_invlpg(DATA0);
    pass_line("PDE 256 -> space 10's page table, invlpg of each page used", 9, 1);
    *pde_of(9, CODE0) = (uint32_t)sp[9].upt | PTE_P | PTE_W | PTE_U;
    wr_cr3(rd_cr3());
    pass_line("PDE 256 back, CR3 reload", 9, 0);

    rt_puts("-- one page table written again and again (out of sync), then a CR3 reload\n");
    for (i = 0; i < 40; i++)
        frames[i] = data_frame();
    for (i = 0; i < NMANY; i++) {
        want[i] = frames[i];
        sp[9].upt[(MANY >> 12 & 1023) + i] = frames[i] | PTE_P | PTE_W | PTE_U;
    }
    wr_cr3(rd_cr3());
    for (i = 0, wrong = 0; i < NMANY; i++)
        wrong += rd(MANY + i * 4096) != tag(want[i]);
    pm_check_val("32 pages mapped, CR3 reload: pages reading the wrong frame", wrong, 0);
    for (i = 0, wrong = 0, checked = 0; i < 640; i++) {
        int p = i * 5 % NMANY, f = i * 11 % 40;
        uint32_t flags = i % 13 == 0 ? 0 : PTE_P | PTE_W | PTE_U;
        sp[9].upt[(MANY >> 12 & 1023) + p] = frames[f] | flags;
        want[p] = flags ? frames[f] : 0;
        if (i % 8 == 7 && flags) {
            pm_invlpg(MANY + p * 4096);
            wrong += rd(MANY + p * 4096) != tag(frames[f]);
            checked++;
        } else if (i % 3 == 0) {
            /* reads that may see a stale entry: not checked */
            int q = (p + 7) % NMANY;
            if (want[q])
                sink += rd(MANY + q * 4096);
        }
    }
    rt_printf("640 PTE writes, every 8th invlpg'd and read (%d reads): ", checked);
    pm_check_val("wrong", wrong, 0);
    /* make every page present again for the reload check */
    for (i = 0; i < NMANY; i++)
        if (!want[i]) {
            want[i] = frames[i];
            sp[9].upt[(MANY >> 12 & 1023) + i] = frames[i] | PTE_P | PTE_W | PTE_U;
        }
    wr_cr3(rd_cr3());
    for (i = 0, wrong = 0; i < NMANY; i++)
        wrong += rd(MANY + i * 4096) != tag(want[i]);
    pm_check_val("  CR3 reload: pages reading the wrong frame", wrong, 0);
    for (i = 0; i < NMANY; i++) {
        int f = (i * 3 + 1) % 40;
        want[i] = frames[f];
        sp[9].upt[(MANY >> 12 & 1023) + i] = frames[f] | PTE_P | PTE_W | PTE_U;
        sink += rd(MANY + ((i + 5) % NMANY) * 4096); /* may be stale */
    }
    switch_to(4);
    switch_to(9);
    for (i = 0, wrong = 0; i < NMANY; i++)
        wrong += rd(MANY + i * 4096) != tag(want[i]);
    pm_check_val("32 more writes, switch to space 4 and back: pages reading the wrong frame",
                 wrong, 0);
    /* the same burst on a space that is not current */
    for (i = 0; i < NMANY; i++)
        sp[11].upt[(MANY >> 12 & 1023) + i] = frames[i] | PTE_P | PTE_W | PTE_U;
    switch_to(11);
    for (i = 0; i < NMANY; i++)
        sink += rd(MANY + i * 4096);
    switch_to(9);
    for (i = 0; i < 320; i++) {
        int p = i * 7 % NMANY;
        want[p] = frames[(i * 13 + 3) % 40];
        sp[11].upt[(MANY >> 12 & 1023) + p] = want[p] | PTE_P | PTE_W | PTE_U;
    }
    switch_to(11);
    for (i = 0, wrong = 0; i < NMANY; i++)
        wrong += rd(MANY + i * 4096) != tag(want[i]);
    pm_check_val("320 PTE writes to space 11's table from space 9, switch to 11: wrong frames",
                 wrong, 0);
    pass_line("  space 11's entry points", 11, 0);
}

static void not_present(void)
{
    uint32_t data, c1;
    rt_puts("-- present -> not present -> present ('Page-Fault Exceptions')\n");
    switch_to(10);
    data = *pte_of(10, DATA0);
    c1 = *pte_of(10, CODE1);
    pass_line("space 10", 10, 0);
    *pte_of(10, DATA0) = data & ~PTE_P;
    pm_invlpg(DATA0);
    PM_TRY(AT "movl 0x40008000, %eax");
    expect_pf("DATA0 not present, invlpg: read", 0);
    PM_TRY(AT "movl %eax, 0x40008004");
    expect_pf("  write", 2);
    PM_USER_TRY(AT "movl 0x40008008, %eax");
    expect_pf("  ring 3 read", 4);
    PM_USER_TRY(AT "movl %eax, 0x4000800c");
    expect_pf("  ring 3 write", 6);
    *pte_of(10, DATA0) = data;
    pm_check_val("  present again, no invlpg (not-present entries are never cached): read",
                 rd(DATA0) - tag(data & ~0xfffu), 0);
    *pte_of(10, DATA0) = data & ~PTE_P;
    pm_invlpg(DATA0);
    PM_TRY(AT "movl 0x40008000, %eax");
    expect_pf("  not present again, invlpg: read", 0);
    *pte_of(10, DATA0) = data;
    pm_invlpg(DATA0);
    pass_line("  present again, invlpg: every entry point", 10, 0);

    *pte_of(10, CODE1) = c1 & ~PTE_P;
    pm_invlpg(CODE1);
    PM_TRY("movl $0x40001100, %edx\n\t" AT "call *%edx");
    expect_pf("CODE1 not present, invlpg: call CODE1+0x100", 0);
    PM_USER_TRY("movl $0x40001100, %edx\n\t" AT "call *%edx");
    expect_pf("  at ring 3", 4);
    PM_TRY("movl $0x40000020, %edx\n\t" AT "call *%edx");
    expect_pf("  call CODE0+0x020 (jumps into CODE1)", 0);
    *pte_of(10, CODE1) = c1;
    pass_line("  present again, no invlpg: every entry point", 10, 0);
    *pte_of(10, CODE1) = c1 & ~PTE_P;
    *pte_of(10, CODE1) = c1;
    pm_invlpg(CODE1);
    pass_line("  not present and present again without an access, invlpg", 10, 1);
}

static void shared_tables(void)
{
    uint32_t f1 = data_frame(), f2 = data_frame(), c = frame_alloc(), c2 = frame_alloc();
    volatile uint32_t *shr0 = &spt[1][0], *shr1 = &spt[1][1];
    rt_puts("-- a page table shared by two page directories (spaces 2 and 3, PDE 257)\n");
    code_ret(c, 0, 0xc0de0001);
    code_ret(c2, 0, 0xc0de0002);
    *shr1 = c | PTE_P | PTE_W | PTE_U;
    switch_to(2);
    check_tag("space 2: read SHR", rd(SHR), *shr0 & ~0xfffu);
    pm_check_val("  call SHR+0x1000", call_at(SHR + 0x1000), 0xc0de0001);
    switch_to(3);
    check_tag("space 3: read SHR", rd(SHR), *shr0 & ~0xfffu);
    pm_check_val("  call SHR+0x1000", call_at(SHR + 0x1000), 0xc0de0001);
    *shr0 = f1 | PTE_P | PTE_W | PTE_U;
    *shr1 = c2 | PTE_P | PTE_W | PTE_U;
    pm_invlpg(SHR);
    pm_invlpg(SHR + 0x1000);
    check_tag("space 3: both PTEs rewritten, invlpg: read SHR", rd(SHR), f1);
    pm_check_val("  call SHR+0x1000", call_at(SHR + 0x1000), 0xc0de0002);
    switch_to(2);
    check_tag("space 2: read SHR", rd(SHR), f1);
    pm_check_val("  call SHR+0x1000", call_at(SHR + 0x1000), 0xc0de0002);
    *shr0 = f2 | PTE_P | PTE_W | PTE_U;
    *shr1 = c | PTE_P | PTE_W | PTE_U;
    switch_to(3);
    check_tag("space 2 rewrote both PTEs (no invlpg), switch to 3: read SHR", rd(SHR), f2);
    pm_check_val("  call SHR+0x1000", call_at(SHR + 0x1000), 0xc0de0001);
    switch_to(2);
    check_tag("  back to 2: read SHR", rd(SHR), f2);
    wr(SHR + 8, 0x5a5a0002);
    switch_to(3);
    pm_check_val("  written in 2 through SHR, read in 3", rd(SHR + 8), 0x5a5a0002);

    rt_puts("-- CR3 values differing only in PWT/PCD name one address space\n");
    wr_cr3((uint32_t)sp[3].pd | CR3_PWT_PCD);
    pm_check_val("CR3 = space 3 | PWT | PCD: CR3 read back, low bits", rd_cr3() & 0xfff, CR3_PWT_PCD);
    check_tag("  read SHR", rd(SHR), f2);
    *shr0 = f1 | PTE_P | PTE_W | PTE_U;
    switch_to(3);
    check_tag("  PTE rewritten, CR3 = space 3 without PWT/PCD: read SHR", rd(SHR), f1);
    *shr0 = f2 | PTE_P | PTE_W | PTE_U;
    wr_cr3((uint32_t)sp[3].pd | CR3_PWT_PCD);
    check_tag("  PTE rewritten, CR3 = space 3 | PWT | PCD: read SHR", rd(SHR), f2);
    switch_to(3);
}

static void self_mapped(void)
{
    volatile uint32_t *self_upt = (volatile uint32_t *)(SELF + ((CODE0 >> 22) << 12));
    volatile uint32_t *self_pd = (volatile uint32_t *)SELF_PD;
    volatile uint32_t *win = (volatile uint32_t *)PDWIN;
    uint32_t f = data_frame(), old, *alt;
    int i, wrong;
    rt_puts("-- page directories mapped as their own page table (PDE 1023) and as data\n");
    switch_to(7);
    pm_check_val("space 7: CODE1 PTE through 0xffd00000 - the PTE", self_upt[1] - sp[7].upt[1], 0);
    pm_check_val("  PDE 1023 through 0xfffffffc - the page directory", (self_pd[1023] & ~0xfffu) - (uint32_t)sp[7].pd, 0);
    self_upt[8] = f | PTE_P | PTE_W | PTE_U;
    pm_invlpg(DATA0);
    check_tag("  DATA0 PTE written through the self map, invlpg: read DATA0", rd(DATA0), f);
    pm_check_val("    the page table holds it", sp[7].upt[8] & ~0xfffu, f);
    alt = table_alloc();
    memcpy(alt, sp[7].upt, 4096);
    alt[1] = new_code1() | PTE_P | PTE_W | PTE_U;
    old = self_pd[CODE0 >> 22];
    self_pd[CODE0 >> 22] = (uint32_t)alt | PTE_P | PTE_W | PTE_U;
    wr_cr3(rd_cr3());
    pass_line("  PDE 256 written through the self map (-> a copy, new CODE1), CR3 reload", 7, 0);
    self_pd[CODE0 >> 22] = old;
    pm_invlpg(CODE0), pm_invlpg(CODE1), pm_invlpg(CODE2), pm_invlpg(CODE3), pm_invlpg(DATA0);
    pass_line("  PDE 256 back through the self map, invlpg of each page used", 7, 1);
    /* space 8's page directory as data in space 7 */
    sp[7].upt[PDWIN >> 12 & 1023] = (uint32_t)sp[8].pd | PTE_P | PTE_W;
    pm_invlpg(PDWIN);
    pm_check_val("space 8's page directory mapped in 7: PDE 1023 read there - PD 8",
                 (win[1023] & ~0xfffu) - (uint32_t)sp[8].pd, 0);
    alt = table_alloc();
    memcpy(alt, sp[8].upt, 4096);
    alt[0] = code0_pool[(8 + 1) % 8] | PTE_P | PTE_W | PTE_U;
    alt[3] = code3_pool[(8 + 2) % 5] | PTE_P | PTE_W | PTE_U;
    old = win[CODE0 >> 22];
    win[CODE0 >> 22] = (uint32_t)alt | PTE_P | PTE_W | PTE_U;
    switch_to(8);
    pass_line("  its PDE 256 written there (-> other CODE0, CODE3), switch to 8", 8, 0);
    switch_to(7);
    win[CODE0 >> 22] = old;
    switch_to(8);
    pass_line("  written back from 7, switch to 8", 8, 1);
    /* every space's PDE 1023 is still its own directory */
    for (i = 0, wrong = 0; i < NSPACES; i++) {
        switch_to(i);
        wrong += (self_pd[1023] & ~0xfffu) != (uint32_t)sp[i].pd;
        wrong += (self_upt[2] & ~0xfffu) != code2_frame;
    }
    pm_check_val("each of the 24 spaces: PDE 1023 and CODE2's PTE read through its self map: wrong", wrong, 0);
}

static void freed_table(void)
{
    uint32_t *p = table_alloc(), f1 = data_frame(), f2 = data_frame(), f3 = data_frame();
    volatile uint32_t *reuse = (volatile uint32_t *)REUSE;
    unsigned i;
    rt_puts("-- a page table freed, reused as data and code, then as a page table again\n");
    switch_to(11);
    p[0] = f1 | PTE_P | PTE_W | PTE_U;
    sp[11].pd[FREED >> 22] = (uint32_t)p | PTE_P | PTE_W | PTE_U;
    wr_cr3(rd_cr3());
    check_tag("space 11: PDE 258 -> table P: read FREED", rd(FREED), f1);
    sp[11].pd[FREED >> 22] = 0;
    wr_cr3(rd_cr3());
    PM_TRY(AT "movl 0x40800000, %eax");
    expect_pf("PDE 258 cleared, CR3 reload: read FREED", 0);
    sp[11].upt[REUSE >> 12 & 1023] = (uint32_t)p | PTE_P | PTE_W | PTE_U;
    pm_invlpg(REUSE);
    reuse[0] = f2 | PTE_P | PTE_W | PTE_U; /* looks like a PTE */
    reuse[1] = f3 | PTE_P | PTE_W | PTE_U;
    pm_check_val("P mapped as data at REUSE, PTE-like words written: read back", reuse[1], f3 | 7);
    PM_TRY(AT "movl 0x40800000, %eax");
    expect_pf("  read FREED (PDE still clear)", 0);
    /* code: mov $0xc0def00d, %eax; ret, written through the data mapping */
    {
        static const uint8_t code[] = { 0xb8, 0x0d, 0xf0, 0xde, 0xc0, 0xc3 };
        for (i = 0; i < sizeof(code); i++)
            ((volatile uint8_t *)REUSE)[i] = code[i];
    }
    pm_check_val("P as code: call REUSE", call_at(REUSE), 0xc0def00d);
    ((volatile uint8_t *)REUSE)[1] = 0x0e;
    pm_check_val("  its immediate rewritten through REUSE: call REUSE", call_at(REUSE), 0xc0def00e);
    memset((void *)REUSE, 0, 4096);
    reuse[0] = f3 | PTE_P | PTE_W | PTE_U;
    sp[11].pd[FREED >> 22] = (uint32_t)p | PTE_P | PTE_W | PTE_U;
    wr_cr3(rd_cr3());
    check_tag("P a page table again (entry 0 -> F3), CR3 reload: read FREED", rd(FREED), f3);
    reuse[0] = f2 | PTE_P | PTE_W | PTE_U;
    pm_invlpg(FREED);
    check_tag("  entry 0 -> F2 written through REUSE, invlpg FREED: read FREED", rd(FREED), f2);
    pm_check_val("  A set in entry 0, seen through REUSE", (reuse[0] >> 5) & 1, 1);
    sp[11].pd[FREED >> 22] = 0;
    sp[11].upt[REUSE >> 12 & 1023] = 0;
    wr_cr3(rd_cr3());
}

static void user_supervisor(void)
{
    static const int order[] = { 0, 1, 2, 3, 4, 5, 5, 3, 0 };
    unsigned i;
    rt_puts("-- U/S per space: DATA1 user in spaces 0 and 3, supervisor in 1, 2, 4, 5\n");
    for (i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        int s = order[i];
        switch_to(s);
        rt_printf("space %d: ", s);
        PM_USER_TRY(AT "movl 0x40009000, %eax");
        if (s % 3 == 0)
            pm_expect("ring 3 read of DATA1", PM_NONE, 0);
        else
            expect_pf("ring 3 read of DATA1", 5);
        EXPECT_OK("  ring 0 read", "movl 0x40009000, %eax");
    }
    rt_puts("-- CODE0 supervisor-only in space 1, user in space 0\n");
    *pte_of(1, CODE0) &= ~PTE_U;
    for (i = 0; i < 4; i++) {
        int s = i & 1;
        switch_to(s);
        rt_printf("space %d: ", s);
        PM_USER_TRY("movl $0x40000000, %edx\n\t" AT "call *%edx");
        if (s == 0)
            pm_expect("ring 3 call CODE0", PM_NONE, 0);
        else
            expect_pf("ring 3 call CODE0", 5);
        rt_printf("space %d: ", s);
        EXPECT_OK("ring 0 call CODE0", "movl $0x40000000, %edx\n\t" AT "call *%edx");
    }
    switch_to(0);
    *pte_of(1, CODE0) |= PTE_U;
    rt_puts("-- CR0.WP per space: DATA1 read-only in space 20, writable in 21\n");
    *pte_of(20, DATA1) &= ~PTE_W;
    *pte_of(21, DATA1) |= PTE_W;
    wr_cr0(rd_cr0() | CR0_WP);
    for (i = 0; i < 4; i++) {
        int s = 20 + (i & 1);
        switch_to(s);
        rt_printf("space %d, WP=1: ", s);
        PM_TRY(AT "movl %eax, 0x40009000");
        if (s == 20)
            expect_pf("ring 0 write of DATA1", 3);
        else
            pm_expect("ring 0 write of DATA1", PM_NONE, 0);
    }
    wr_cr0(rd_cr0() & ~CR0_WP);
    switch_to(20);
    EXPECT_OK("space 20, WP=0: ring 0 write of DATA1", "movl %eax, 0x40009000");
    wr_cr0(rd_cr0() | CR0_WP);
    PM_TRY(AT "movl %eax, 0x40009000");
    expect_pf("  WP=1 again (no CR3 write): ring 0 write of DATA1", 3);
    wr_cr0(rd_cr0() & ~CR0_WP);
    EXPECT_OK("  WP=0 again: ring 0 write of DATA1", "movl %eax, 0x40009000");
}

static void big_pages(void)
{
    uint32_t *bpt = table_alloc(), b0 = data_frame(), b1 = data_frame(), b2 = frame_alloc();
    rt_puts("-- a 4 MiB page in space 17, 4 KiB pages in 16, at BIGV (CR4.PSE)\n");
    wr(BIGFRAME, tag(BIGFRAME));
    wr(BIGFRAME + 0x1000, tag(BIGFRAME + 0x1000));
    code_ret(BIGFRAME + 0x2000, 0, 0xb16b16);
    code_ret(b2, 0, 0x5b5b5b);
    bpt[0] = b0 | PTE_P | PTE_W;
    bpt[1] = b1 | PTE_P | PTE_W;
    bpt[2] = b2 | PTE_P | PTE_W;
    sp[16].pd[BIGV >> 22] = (uint32_t)bpt | PTE_P | PTE_W;
    sp[17].pd[BIGV >> 22] = BIGFRAME | PTE_PS | PTE_P | PTE_W;
    for (int k = 0; k < 2; k++) {
        switch_to(16);
        check_tag("space 16: read BIGV", rd(BIGV), b0);
        check_tag("  read BIGV+0x1000", rd(BIGV + 0x1000), b1);
        pm_check_val("  call BIGV+0x2000", call_at(BIGV + 0x2000), 0x5b5b5b);
        switch_to(17);
        check_tag("space 17: read BIGV", rd(BIGV), BIGFRAME);
        check_tag("  read BIGV+0x1000", rd(BIGV + 0x1000), BIGFRAME + 0x1000);
        pm_check_val("  call BIGV+0x2000", call_at(BIGV + 0x2000), 0xb16b16);
    }
    sp[16].pd[BIGV >> 22] = BIGFRAME | PTE_PS | PTE_P | PTE_W;
    switch_to(16);
    check_tag("space 16's PDE -> the 4 MiB page from 17, switch to 16: read BIGV+0x1000",
              rd(BIGV + 0x1000), BIGFRAME + 0x1000);
    pm_check_val("  call BIGV+0x2000", call_at(BIGV + 0x2000), 0xb16b16);
    sp[17].pd[BIGV >> 22] = (uint32_t)bpt | PTE_P | PTE_W;
    switch_to(17);
    check_tag("space 17's PDE -> the page table from 16, switch to 17: read BIGV", rd(BIGV), b0);
    pm_check_val("  call BIGV+0x2000", call_at(BIGV + 0x2000), 0x5b5b5b);
    sp[17].pd[BIGV >> 22] = BIGFRAME | PTE_PS | PTE_P | PTE_W;
    pm_invlpg(BIGV + 0x1000);
    check_tag("space 17 (current): PDE -> 4 MiB page, invlpg BIGV+0x1000: read it",
              rd(BIGV + 0x1000), BIGFRAME + 0x1000);
    pm_invlpg(BIGV + 0x2000);
    pm_check_val("  invlpg BIGV+0x2000: call it", call_at(BIGV + 0x2000), 0xb16b16);
    sp[17].pd[BIGV >> 22] = (uint32_t)bpt | PTE_P | PTE_W;
    wr_cr3(rd_cr3());
    pm_check_val("  PDE -> page table, CR3 reload: call BIGV+0x2000", call_at(BIGV + 0x2000), 0x5b5b5b);
    sp[16].pd[BIGV >> 22] = 0;
    sp[17].pd[BIGV >> 22] = 0;
}

static void global_pages(void)
{
    uint32_t *g18 = table_alloc(), *g19 = table_alloc();
    uint32_t ga = data_frame(), gb = data_frame(), gc = data_frame(), gd = data_frame();
    uint32_t ge = data_frame();
    int order[NSPACES], i, j;
    rt_puts("-- global pages (CR4.PGE): only what an invalidation guarantees is read\n");
    g18[0] = ga | PTE_P | PTE_W | PTE_G;
    g19[0] = gb | PTE_P | PTE_W;
    sp[18].pd[GL >> 22] = (uint32_t)g18 | PTE_P | PTE_W;
    sp[19].pd[GL >> 22] = (uint32_t)g19 | PTE_P | PTE_W;
    switch_to(18);
    wr_cr4(rd_cr4() | CR4_PGE);
    check_tag("space 18, GL global -> GA: read GL", rd(GL), ga);
    switch_to(19);
    pm_invlpg(GL);
    check_tag("switch to 19 (GL -> GB, not global), invlpg GL: read GL", rd(GL), gb);
    switch_to(18);
    check_tag("switch to 18 (drops 19's entry, not global): read GL", rd(GL), ga);
    switch_to(19);
    wr_cr4(rd_cr4() & ~CR4_PGE);
    wr_cr4(rd_cr4() | CR4_PGE);
    check_tag("switch to 19, CR4.PGE 1 -> 0 -> 1: read GL", rd(GL), gb);
    for (i = 0; i < 64; i++) /* one table written again and again */
        g19[i & 15] = (i & 1 ? gd : ge) | PTE_P | PTE_W;
    wr_cr4(rd_cr4() & ~CR4_PGE);
    wr_cr4(rd_cr4() | CR4_PGE);
    check_tag("  64 writes to 19's table (GL -> GE last), CR4.PGE 1 -> 0 -> 1: read GL", rd(GL), ge);
    check_tag("    read GL+0x1000", rd(GL + 0x1000), gd);
    g18[0] = gc | PTE_P | PTE_W | PTE_G;
    switch_to(18);
    check_tag("space 18's global PTE -> GC from 19 (no entry for it cached), switch to 18: read GL",
              rd(GL), gc);
    g18[0] = gd | PTE_P | PTE_W | PTE_G;
    wr_cr3(rd_cr3()); /* may keep the global entry: GL is not read here */
    pm_invlpg(GL);
    check_tag("space 18: global PTE -> GD, CR3 reload, invlpg GL: read GL", rd(GL), gd);
    wr_cr4(rd_cr4() & ~CR4_PGE);
    g18[0] = ga | PTE_P | PTE_W | PTE_G;
    wr_cr3(rd_cr3());
    check_tag("CR4.PGE=0 (G ignored): PTE -> GA, CR3 reload: read GL", rd(GL), ga);
    sp[18].pd[GL >> 22] = 0;
    sp[19].pd[GL >> 22] = 0;

    rt_puts("-- the kernel's pages and CODE2 global in every space, CR4.PGE=1\n");
    for (i = 0; i < 4; i++)
        for (j = 0; j < 1024; j++)
            pm_pt[i][j] |= PTE_G;
    for (i = 0; i < NSPACES; i++)
        *pte_of(i, CODE2) |= PTE_G;
    wr_cr4(rd_cr4() | CR4_PGE);
    for (i = 0; i < NSPACES; i++)
        order[i] = (i * 11 + 3) % NSPACES;
    round_of("stride 11 with global kernel pages, rings 0 and 3", order, NSPACES, 3);
    /* CODE1 rewritten in every space but the current one, non-global */
    for (i = 0; i < NSPACES; i++)
        if (i != order[NSPACES - 1])
            *pte_of(i, CODE1) = new_code1() | PTE_P | PTE_W | PTE_U;
    round_of("  CODE1 rewritten in every other space, stride 11 again", order, NSPACES, 1);
    wr_cr4(rd_cr4() & ~CR4_PGE);
    for (i = 0; i < 4; i++)
        for (j = 0; j < 1024; j++)
            pm_pt[i][j] &= ~PTE_G;
    for (i = 0; i < NSPACES; i++)
        *pte_of(i, CODE2) &= ~PTE_G;
    switch_to(0);
}

/* rep stosb over 16 pages of translated code, paging on, mapped at STOS
 * in space 13 (not the frames' identity addresses) */
static void rep_stos(void)
{
    uint32_t f[16], c, dd, r, wrong, i;
    int clean;
    rt_puts("-- rep stosb over 16 pages of translated code, paging on\n");
    switch_to(13);
    for (i = 0; i < 16; i++)
        f[i] = frame_alloc();
    for (clean = 0; clean < 2; clean++) {
        for (i = 0; i < 16; i++) {
            memset((void *)f[i], 0xcc, 4096);
            code_ret(f[i], 0, 1 + i);
            sp[13].upt[(STOS >> 12 & 1023) + i] =
                f[i] | PTE_P | PTE_W | (clean ? 0 : PTE_A | PTE_D);
        }
        wr_cr3(rd_cr3());
        for (i = 0, wrong = 0; i < 16; i++)
            wrong += call_at(STOS + i * 4096) != 1 + i;
        rt_printf("%s PTEs: ", clean ? "clean" : "dirty");
        pm_check_val("16 code pages called, wrong results", wrong, 0);
        /* nops over all 16 pages but the last byte, which is a ret */
        __asm__ __volatile__("cld\n\trep stosb\n\tmovb $0xc3, (%%edi)"
                             : "=c"(c), "=D"(dd)
                             : "0"(16 * 4096 - 1), "1"(STOS), "a"(0x90)
                             : "memory");
        pm_check_val("  rep stosb of nops over them (the last byte a ret): ECX", c, 0);
        pm_check_val("    EDI - STOS", dd - STOS, 16 * 4096 - 1);
        __asm__ __volatile__("call *%1" : "=a"(r) : "r"(STOS + 5 * 4096), "0"(7) : "ecx", "edx", "memory");
        pm_check_val("  call page 5 with EAX=7: slides through 11 pages of nops", r, 7);
        for (i = 0, wrong = 0; i < 16; i++)
            wrong += (sp[13].upt[(STOS >> 12 & 1023) + i] & (PTE_A | PTE_D)) != (PTE_A | PTE_D);
        pm_check_val("  PTEs without A and D set", wrong, 0);
        pm_check_val("  the last frame's byte 0xffe read through the identity map",
                     *(volatile uint8_t *)(f[15] + 0xffe), 0x90);
    }
}

/* A and D are set only in the tables of the current space */
static void accessed_dirty(void)
{
    volatile uint32_t *p15 = pte_of(15, DATA0), *d15 = pde_of(15, DATA0);
    uint32_t nf = data_frame();
    int i;
    rt_puts("-- accessed and dirty bits, and spaces that are not current\n");
    switch_to(15);
    sink += rd(DATA0);
    wr(DATA0 + 4, 1);
    pm_check_val("space 15: DATA0 read and written: PTE A, D", (*p15 >> 5) & 3, 3);
    switch_to(14);
    *p15 &= ~(PTE_A | PTE_D);
    *d15 &= ~PTE_A;
    for (i = 0; i < 64; i++) {
        sink += rd(DATA0 + (i & 15) * 4);
        wr(DATA0 + 64 + (i & 15) * 4, i);
    }
    pm_check_val("space 14: 15's A/D cleared, 64 reads and writes of DATA0 in 14: 15's PTE A, D",
                 (*p15 >> 5) & 3, 0);
    pm_check_val("  15's PDE 256 A", (*d15 >> 5) & 1, 0);
    pm_check_val("  14's own PTE A, D", (*pte_of(14, DATA0) >> 5) & 3, 3);
    *pte_of(15, DATA1) = nf | PTE_P | PTE_W;
    pm_check_val("  15's DATA1 PTE written from 14 (A=D=0): read back - the value",
                 *pte_of(15, DATA1) - (nf | PTE_P | PTE_W), 0);
    switch_to(15);
    check_tag("switch to 15: read DATA0 is its frame", rd(DATA0), *p15 & ~0xfffu);
    pm_check_val("  PTE A, D after the read", (*p15 >> 5) & 3, 1);
    pm_check_val("  PDE A", (*d15 >> 5) & 1, 1);
    wr(DATA0 + 8, 2);
    pm_check_val("  after a write", (*p15 >> 5) & 3, 3);
    check_tag("  read DATA1 (the frame written from 14)", rd(DATA1), nf);
    pm_check_val("    its PTE A, D", (*pte_of(15, DATA1) >> 5) & 3, 1);
    /* the shared table of PDE 257 (spaces 14 and 15): 15's walk sets A in it */
    spt[7][0] &= ~(PTE_A | PTE_D);
    wr_cr3(rd_cr3());
    wr(SHR + 16, 3);
    switch_to(14);
    pm_check_val("shared PDE 257 table: written in 15, its PTE A, D seen from 14", (spt[7][0] >> 5) & 3, 3);
    /* clean again while not current: a write in 15 must set D again */
    *p15 &= ~(PTE_A | PTE_D);
    switch_to(15);
    wr(DATA0 + 12, 4);
    pm_check_val("15's DATA0 PTE cleaned from 14, switch, write: A, D", (*p15 >> 5) & 3, 3);
}

/* Many short-lived address spaces: 192 page directories (each sharing the
 * page table of one of the 24 spaces) visited once, then rewritten while
 * not current (the same CR3 values naming other mappings) and visited
 * again; then the 24 spaces once more.  A cache of address spaces has to
 * evict some of them and notice rewritten directories. */
#define NSHORT 192
static uint32_t *short_pd[NSHORT];

static void short_lived(void)
{
    int k, wrong = 0, results = 0, order[NSPACES];
    uint32_t sum = 0;
    rt_puts("-- 192 short-lived address spaces (page directories reused with other contents)\n");
    fail_what = 0;
    for (k = 0; k < NSHORT; k++) {
        uint32_t *pd = short_pd[k] = table_alloc();
        memcpy(pd, sp[k % NSPACES].pd, 4096);
        pd[1023] = (uint32_t)pd | PTE_P | PTE_W;
        wr_cr3((uint32_t)pd);
        wrong += pass_pd(pd, 100 + k, k & 1, &sum), results += NRES;
    }
    report("192 new page directories, each visited once", results, wrong, sum);
    wr_cr3((uint32_t)sp[0].pd);
    for (k = 0; k < NSHORT; k++) {
        uint32_t *pd = short_pd[k];
        memcpy(pd, sp[k % 7 * 3 + 1].pd, 4096); /* spaces 1, 4, ..., 19 */
        pd[1023] = (uint32_t)pd | PTE_P | PTE_W;
    }
    wrong = results = 0, sum = 0, fail_what = 0;
    for (k = NSHORT - 1; k >= 0; k--) {
        wr_cr3((uint32_t)short_pd[k]);
        wrong += pass_pd(short_pd[k], 100 + k, 0, &sum), results += NRES;
    }
    report("  all rewritten from space 0 (other spaces' PDEs), visited backwards", results, wrong, sum);
    for (k = 0; k < NSPACES; k++)
        order[k] = (k * 13 + 5) % NSPACES;
    round_of("  then the 24 spaces, stride 13, rings 0 and 3", order, NSPACES, 3);
}

/* Last, because nestmon does not pass it yet: an instruction whose last
 * bytes are on a page that is not present must raise #PF with CR2 = the
 * start of that page and EIP = the instruction (SDM vol. 3 'Page-Fault
 * Exception (#PF)'); once the page is present again, with or without
 * INVLPG, the instruction runs. */
static void straddle_not_present(void)
{
    uint32_t c1;
    rt_puts("-- an instruction straddling into a page that is not present\n");
    switch_to(10);
    c1 = *pte_of(10, CODE1);
    *pte_of(10, CODE1) = c1 & ~PTE_P;
    pm_invlpg(CODE1);
    PM_TRY("xorl %eax, %eax\n\tmovl $0x40000ff0, %edx\n\t" AT "call *%edx");
    expect_pf("CODE1 not present: call CODE0+0xff0, the add at CODE0+0xffc straddles into CODE1", 0);
    PM_TRY(AT "call 0x40000ffc");
    expect_pf("  call CODE0+0xffc (the straddling add itself)", 0);
    PM_USER_TRY(AT "call 0x40000ffc");
    expect_pf("  the same at ring 3", 4);
    *pte_of(10, CODE1) = c1;
    pass_line("  CODE1 present again, no invlpg: every entry point", 10, 0);
    *pte_of(10, CODE1) = c1 & ~PTE_P;
    pm_invlpg(CODE1);
    PM_TRY(AT "call 0x40000ffc");
    expect_pf("  not present again, invlpg: call CODE0+0xffc", 0);
    *pte_of(10, CODE1) = c1;
    pm_invlpg(CODE1);
    pass_line("  present again, invlpg: every entry point", 10, 1);
    *pte_of(10, CODE3) &= ~PTE_P;
    switch_to(11);
    switch_to(10);
    PM_TRY(AT "call 0x40002ffd");
    expect_pf("CODE3 of space 10 not present (written from 11): the add at CODE2+0xffd", 0);
    *pte_of(10, CODE3) |= PTE_P;
    pass_line("  present again, no invlpg: every entry point", 10, 0);
}

int main(void)
{
    extern char __image_end[];
    pm_init();
    rt_puts("pm_spaces: 24 address spaces, per-space code at one linear address, "
            "page-table writes in and out of the current space\n");
    if ((uint32_t)__image_end > BIGFRAME) {
        rt_printf("FAIL: the image ends at %08x, over %08x\n", (uint32_t)__image_end, BIGFRAME);
        rt_exit(1);
    }
    pm_name_range("code", (void *)CODE0, 0x4000);
    pm_paging_on();
    wr_cr4(rd_cr4() | CR4_PSE);
    build();
    switching("first visits");
    not_current();
    current();
    not_present();
    shared_tables();
    self_mapped();
    freed_table();
    user_supervisor();
    big_pages();
    global_pages();
    rep_stos();
    accessed_dirty();
    switching("after all the rewrites");
    short_lived();
    straddle_not_present();
    if (failed_alloc) {
        rt_puts("FAIL: out of frames\n");
        rt_failures++;
    }
    wr_cr3((uint32_t)pm_pd);
    pm_paging_off();
    rt_finish("pm_spaces");
}
