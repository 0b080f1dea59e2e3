/* mmu: cycles per event for what a paging kernel makes a shadow MMU do
 * (nestmon: guest-only).  Built by `make -C guests bench-mmu`, run by
 * benches/run-mmu.sh (side by side with QEMU TCG; README.md,
 * "Benchmarks").
 *
 * Timing and reporting are lib/bench.h's, as for benches/events/events.c:
 * per event, a loop of N iterations bracketed by RDTSC, N chosen so that a
 * batch takes about the same time under any VMM, the best of several
 * batches minus the best batch of an empty loop (the same loop with no
 * body), divided by the events per batch, printed as "NAME CYCLES".  Every
 * event runs with 32-bit paging on (pm_paging_on: the first 16 MiB
 * identity-mapped with user pages, CR3 = pm_pd).  The events, in order:
 *
 *   pf_fresh_page        ring 3 reads a page that is not present; the #PF
 *                        handler (ring 0, an interrupt gate) maps a frame
 *                        there and IRETs, the read is retried.  One event:
 *                        fault, handler, retried read, minus a read of a
 *                        page already mapped and touched (the empty loop
 *                        reads the same pages again once they are mapped).
 *                        At most 1024 per batch (one page table's worth).
 *   pte_rewrite_invlpg   ring 0: write a PTE (alternating two frames),
 *                        INVLPG its page, read the page.
 *   pte_present_toggle   ring 0: PTE not present, INVLPG, present again,
 *                        INVLPG, read the page.
 *   cr3_reload           ring 0: MOV CR3 <- CR3 (the same value), then a
 *                        read of a kernel data word (the refill counts).
 *   cr3_switch           ring 0: MOV CR3 <- the other of two page
 *                        directories (both map the kernel), then a read of
 *                        a kernel data word.
 *   space_create         ring 0: copy a 4 KiB page directory (REP MOVSL)
 *                        into the next of 64 directory frames used in turn,
 *                        MOV CR3 <- it, read 16 pages it maps (PDE 258).
 *   store_hot_code_page  ring 0: CALL a RET on a page of its own, then a
 *                        store to a data word on that same page (0x800
 *                        bytes after the RET: no translated byte changes).
 *   self_patch_imm       ring 0: a loop on a page of its own stores its
 *                        counter into the immediate of its own
 *                        "mov $imm, %eax", then runs that instruction.
 *   store_plain          ring 0: the store_hot_code_page loop with the
 *                        store to a data word on a page with no code: the
 *                        baseline of the goal "a store next to hot code
 *                        within 10x of a plain store" (both rows include
 *                        the CALL/RET).
 *
 * Each batch checks what it did (the handler ran once per fault, every
 * read saw the frame its PTE names, every patched immediate ran): an event
 * that does not behave prints "NAME FAIL why", and the guest then exits
 * with status 1.  "quick" and "only=NAME" on the command line as for
 * events (lib/bench.h). */
#include "bench.h"

/* events per loop iteration of the small events */
#define UNROLL 8

#define PF_VA 0x40000000u     /* PDE 256: the page-fault pages */
#define PF_FRAMES 0x00800000u /* their frames: 8-12 MiB */
#define PF_MAX 1024u
#define T_VA 0x40400000u      /* PDE 257: the page whose PTE is rewritten */
#define T_FRAME_A 0x00c00000u
#define T_FRAME_B 0x00c01000u
#define C_VA 0x40800000u      /* PDE 258: 16 pages read in a new space */
#define C_FRAMES 0x00c10000u
#define RING 64               /* page directories space_create cycles through */

uint32_t mmu_pf_pt[1024] __attribute__((aligned(4096)));
uint32_t mmu_t_pt[1024] __attribute__((aligned(4096)));
uint32_t mmu_c_pt[1024] __attribute__((aligned(4096)));
uint32_t mmu_pd_b[1024] __attribute__((aligned(4096)));
uint32_t mmu_template[1024] __attribute__((aligned(4096)));
uint32_t mmu_ring[RING][1024] __attribute__((aligned(4096)));
uint32_t mmu_ring_pos;
uint32_t mmu_plain_data[1024] __attribute__((aligned(4096)));
volatile uint32_t mmu_pf_count;
uint32_t mmu_data = 0x12345678;
uint32_t mmu_sum; /* what a batch's reads added up to */

/* The #PF handler: map the faulting page of PDE 256 to its frame (present,
 * writable, user; a not-present entry is never cached, so no INVLPG),
 * count, drop the error code, return to the faulting read. */
__asm__(".text\n"
        ".p2align 4\n"
        "mmu_pf_handler:\n\t"
        "pushl %eax\n\t"
        "pushl %edx\n\t"
        "movl %cr2, %eax\n\t"
        "shrl $12, %eax\n\t"
        "andl $1023, %eax\n\t"
        "movl %eax, %edx\n\t"
        "shll $12, %edx\n\t"
        "addl $(" PM_STR(PF_FRAMES) " | 7), %edx\n\t"
        "movl %edx, mmu_pf_pt(,%eax,4)\n\t"
        "incl mmu_pf_count\n\t"
        "popl %edx\n\t"
        "popl %eax\n\t"
        "addl $4, %esp\n\t"
        "iretl\n");
extern char mmu_pf_handler[];

/* The hot code page: a RET at its start and a data word 0x800 bytes
 * further; nothing else on the page. */
__asm__(".text\n"
        ".p2align 12\n"
        "mmu_hot_fn:\n\t"
        "ret\n\t"
        ".p2align 11\n"
        "mmu_hot_data:\n\t"
        ".long 0\n\t"
        ".p2align 12\n");

/* The self-patching loop, on a page of its own: ECX counts down from
 * bench_n; each iteration stores ECX into the immediate of the MOV that
 * follows, runs it and adds EAX to EBX.  Returns EBX in mmu_sum (which must
 * be n (n + 1) / 2), the TSC before and after in bench_t0/bench_t1. */
__asm__(".text\n"
        ".p2align 12\n"
        "mmu_patch_loop:\n\t"
        "pushl %ebx\n\t"
        "xorl %ebx, %ebx\n\t"
        "rdtsc\n\t"
        "movl %eax, bench_t0\n\t"
        "movl %edx, bench_t0+4\n\t"
        "movl bench_n, %ecx\n\t"
        ".p2align 4\n"
        "1:\n\t"
        "movl %ecx, 2f+1\n"
        "2:\n\t"
        "movl $0, %eax\n\t"
        "addl %eax, %ebx\n\t"
        "decl %ecx\n\t"
        "jnz 1b\n\t"
        "rdtsc\n\t"
        "movl %eax, bench_t1\n\t"
        "movl %edx, bench_t1+4\n\t"
        "movl %ebx, mmu_sum\n\t"
        "popl %ebx\n\t"
        "ret\n\t"
        ".p2align 12\n");
extern void mmu_patch_loop(void);

static const char *cur_name;

/* 0 after printing a FAIL line for an exception in the last block */
static int no_exception(void)
{
    if (pm_last.vector == PM_NONE)
        return 1;
    rt_printf("%s FAIL unexpected ", cur_name);
    pm_print_trap(&pm_last);
    rt_printf(" (eip %08x cr2 %08x)\n", pm_last.eip, pm_last.cr2);
    return 0;
}

static uint64_t checked(int ok, const char *why, uint32_t got, uint32_t want)
{
    if (!no_exception())
        return 0;
    if (!ok) {
        rt_printf("%s FAIL %s: %08x, want %08x\n", cur_name, why, got, want);
        return 0;
    }
    return bench_ticks();
}

/* ---- empty loops: run once untimed first (n = 2), so that the batch
 * after an event that dropped translations (today's CR3 writes) does not
 * time their translation ---- */
static void __attribute__((noinline)) empty_loop(void) { PM_TRY(BENCH_TIMED(UNROLL, "", "")); }
static void __attribute__((noinline)) empty_loop_1(void) { PM_TRY(BENCH_TIMED(1, "", "")); }
static uint64_t empty_ring0(uint32_t n)
{
    bench_n = 2;
    empty_loop();
    bench_n = n;
    empty_loop();
    return checked(1, "", 0, 0);
}
static uint64_t empty_ring0_1(uint32_t n)
{
    bench_n = 2;
    empty_loop_1();
    bench_n = n;
    empty_loop_1();
    return checked(1, "", 0, 0);
}

/* ---- pf_fresh_page: the same loop (one copy of its code) for the event
 * and the empty batch ---- */
static void __attribute__((noinline)) pf_loop(void)
{
    PM_USER_TRY(BENCH_TIMED(1, "movl $" PM_STR(PF_VA) ", %edi",
                            "movl (%edi), %eax\n\taddl $4096, %edi"));
}

static uint64_t pf_batch(uint32_t n)
{
    memset(mmu_pf_pt, 0, sizeof(mmu_pf_pt));
    wr_cr3(rd_cr3());
    mmu_pf_count = 0;
    bench_n = n;
    pm_idt_set(PM_PF, pm_gate_desc(SEL_KCODE, (uint32_t)mmu_pf_handler, ACC_P | SYS_INTGATE32, 0));
    pf_loop();
    pm_idt_stub(PM_PF, SYS_INTGATE32, 0);
    return checked(mmu_pf_count == n, "page faults handled", mmu_pf_count, n);
}

/* the same reads of the same pages, mapped and touched once already */
static uint64_t pf_empty(uint32_t n)
{
    uint32_t i;
    for (i = 0; i < PF_MAX; i++)
        mmu_pf_pt[i] = (PF_FRAMES + (i << 12)) | PTE_P | PTE_W | PTE_U;
    wr_cr3(rd_cr3());
    bench_n = n;
    pf_loop();
    if (!no_exception())
        return 0;
    pf_loop();
    return checked(1, "", 0, 0);
}

/* ---- PTE rewrites: T_VA reads the tag word of T_FRAME_A or T_FRAME_B ---- */
#define TAG_A 0xaaaa0001u
#define TAG_B 0xbbbb0002u

static uint64_t pte_rewrite_batch(uint32_t n)
{
    mmu_t_pt[0] = T_FRAME_B | PTE_P | PTE_W;
    pm_invlpg(T_VA);
    bench_n = n;
    /* ECX: the next PTE, EDI: A ^ B (the PTE alternates), EBX: the sum */
    PM_TRY(BENCH_TIMED(UNROLL,
                       "movl $(" PM_STR(T_FRAME_A) " | 3), %ecx\n\t"
                       "movl $(" PM_STR(T_FRAME_A) " ^ " PM_STR(T_FRAME_B) "), %edi\n\t"
                       "xorl %ebx, %ebx",
                       "movl %ecx, mmu_t_pt\n\t"
                       "invlpg " PM_STR(T_VA) "\n\t"
                       "addl " PM_STR(T_VA) ", %ebx\n\t"
                       "xorl %edi, %ecx")
           "\n\tmovl %ebx, mmu_sum");
    return checked(mmu_sum == n * (UNROLL / 2) * (TAG_A + TAG_B), "sum of the reads", mmu_sum,
                   n * (UNROLL / 2) * (TAG_A + TAG_B));
}

static uint64_t pte_toggle_batch(uint32_t n)
{
    mmu_t_pt[0] = T_FRAME_A | PTE_P | PTE_W;
    pm_invlpg(T_VA);
    bench_n = n;
    PM_TRY(BENCH_TIMED(UNROLL,
                       "movl $(" PM_STR(T_FRAME_A) " | 3), %ecx\n\t"
                       "xorl %ebx, %ebx",
                       "movl $" PM_STR(T_FRAME_A) ", mmu_t_pt\n\t"
                       "invlpg " PM_STR(T_VA) "\n\t"
                       "movl %ecx, mmu_t_pt\n\t"
                       "invlpg " PM_STR(T_VA) "\n\t"
                       "addl " PM_STR(T_VA) ", %ebx")
           "\n\tmovl %ebx, mmu_sum");
    return checked(mmu_sum == n * UNROLL * TAG_A, "sum of the reads", mmu_sum, n * UNROLL * TAG_A);
}

/* ---- CR3 ---- */
static uint64_t cr3_reload_batch(uint32_t n)
{
    bench_n = n;
    PM_TRY(BENCH_TIMED(UNROLL, "xorl %ebx, %ebx",
                       "movl %cr3, %eax\n\tmovl %eax, %cr3\n\taddl mmu_data, %ebx")
           "\n\tmovl %ebx, mmu_sum");
    return checked(mmu_sum == n * UNROLL * mmu_data, "sum of the reads", mmu_sum,
                   n * UNROLL * mmu_data);
}

static uint64_t cr3_switch_batch(uint32_t n)
{
    bench_n = n;
    PM_TRY(BENCH_TIMED(UNROLL, "movl $mmu_pd_b, %edi\n\tmovl $pm_pd, %ecx\n\txorl %ebx, %ebx",
                       "movl %edi, %cr3\n\taddl mmu_data, %ebx\n\txchgl %edi, %ecx")
           "\n\tmovl %ebx, mmu_sum");
    wr_cr3((uint32_t)pm_pd);
    return checked(mmu_sum == n * UNROLL * mmu_data, "sum of the reads", mmu_sum,
                   n * UNROLL * mmu_data);
}

/* ---- space_create ---- */
#define READ16 ".irp k,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"                \
               "addl " PM_STR(C_VA) " + \\k * 4096, %ebx\n\t.endr\n\t"

static uint32_t c_tag(uint32_t k) { return 0xc0000000u + k * 0x10001u; }

static uint64_t space_create_batch(uint32_t n)
{
    uint32_t k, want = 0;
    for (k = 0; k < 16; k++)
        want += c_tag(k);
    bench_n = n;
    PM_TRY(BENCH_TIMED(1, "xorl %ebx, %ebx",
                       "pushl %esi\n\t"
                       "movl mmu_ring_pos, %edi\n\t"
                       "movl $mmu_template, %esi\n\t"
                       "movl $1024, %ecx\n\t"
                       "cld\n\t"
                       "rep movsl\n\t"
                       "popl %esi\n\t"
                       "movl mmu_ring_pos, %eax\n\t"
                       "movl %eax, %cr3\n\t"
                       "addl $4096, %eax\n\t"
                       "cmpl $mmu_ring + " PM_STR(RING) " * 4096, %eax\n\t"
                       "jb 2f\n\t"
                       "movl $mmu_ring, %eax\n"
                       "2:\n\t"
                       "movl %eax, mmu_ring_pos\n\t" READ16)
           "\n\tmovl %ebx, mmu_sum");
    wr_cr3((uint32_t)pm_pd);
    return checked(mmu_sum == n * want, "sum of the reads", mmu_sum, n * want);
}

/* ---- stores next to code, and code patching itself ---- */
static uint64_t store_hot_batch(uint32_t n)
{
    bench_n = n;
    PM_TRY(BENCH_TIMED(UNROLL, "", "call mmu_hot_fn\n\tmovl %esi, mmu_hot_data"));
    return checked(1, "", 0, 0);
}

static uint64_t store_plain_batch(uint32_t n)
{
    bench_n = n;
    PM_TRY(BENCH_TIMED(UNROLL, "", "call mmu_hot_fn\n\tmovl %esi, mmu_plain_data"));
    return checked(1, "", 0, 0);
}

static uint64_t self_patch_batch(uint32_t n)
{
    uint32_t want = (uint32_t)((uint64_t)n * (n + 1) / 2);
    bench_n = n;
    PM_TRY("call mmu_patch_loop");
    return checked(mmu_sum == want, "sum of the patched immediates", mmu_sum, want);
}

static const struct bench_event events[] = {
    { "pf_fresh_page", pf_batch, pf_empty, 1, PF_MAX },
    { "pte_rewrite_invlpg", pte_rewrite_batch, empty_ring0, UNROLL, 0 },
    { "pte_present_toggle", pte_toggle_batch, empty_ring0, UNROLL, 0 },
    { "cr3_reload", cr3_reload_batch, empty_ring0, UNROLL, 0 },
    { "cr3_switch", cr3_switch_batch, empty_ring0, UNROLL, 0 },
    { "space_create", space_create_batch, empty_ring0_1, 1, 0 },
    { "store_hot_code_page", store_hot_batch, empty_ring0, UNROLL, 0 },
    { "self_patch_imm", self_patch_batch, empty_ring0_1, 1, 0 },
    { "store_plain", store_plain_batch, empty_ring0, UNROLL, 0 },
};
#define NEVENTS (int)(sizeof(events) / sizeof(events[0]))

static void setup(void)
{
    uint32_t k;
    pm_paging_on();
    /* PDE 256: the page-fault pages, PDE 257: the rewritten PTE */
    pm_pd[PF_VA >> 22] = (uint32_t)mmu_pf_pt | PTE_P | PTE_W | PTE_U;
    pm_pd[T_VA >> 22] = (uint32_t)mmu_t_pt | PTE_P | PTE_W;
    *(volatile uint32_t *)T_FRAME_A = TAG_A;
    *(volatile uint32_t *)T_FRAME_B = TAG_B;
    /* the second address space: the same kernel */
    memcpy(mmu_pd_b, pm_pd, sizeof(mmu_pd_b));
    /* the template of space_create: the kernel and 16 pages at PDE 258 */
    for (k = 0; k < 16; k++) {
        *(volatile uint32_t *)(C_FRAMES + k * 4096) = c_tag(k);
        mmu_c_pt[k] = (C_FRAMES + k * 4096) | PTE_P | PTE_W;
    }
    memcpy(mmu_template, pm_pd, sizeof(mmu_template));
    mmu_template[C_VA >> 22] = (uint32_t)mmu_c_pt | PTE_P | PTE_W;
    mmu_ring_pos = (uint32_t)mmu_ring;
    wr_cr3((uint32_t)pm_pd);
}

int main(void)
{
    int i;
    pm_init();
    bench_args();
    /* mask both PICs */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    setup();
    rt_printf("# mmu: cycles (TSC ticks) per event, best of %d batches of ~%u ticks, "
              "empty loop subtracted, paging on\n",
              bench_batches, bench_budget);
    bench_tsc_mark();
    for (i = 0; i < NEVENTS; i++) {
        if (bench_skipped(events[i].name))
            continue;
        cur_name = events[i].name;
        bench_measure(&events[i]);
    }
    bench_tsc_mark();
    wr_cr3((uint32_t)pm_pd);
    pm_paging_off();
    if (bench_failures)
        rt_printf("mmu: %d event(s) failed\n", bench_failures);
    return bench_failures ? 1 : 0;
}
