/* events: cycles per event for the things a protected-mode kernel makes a
 * VMM do (nestmon: guest-only).  Built by `make -C guests bench-events`,
 * run by benches/run-events.sh; see docs/guests.md, "Per-event costs".
 *
 * Every event is timed the same way (lib/bench.h, shared with
 * benches/mmu/mmu.c): a loop of ITERS iterations, each doing the event
 * UNROLL times, bracketed by RDTSC, and an empty loop of the same ITERS in
 * the same privilege level.  After a warm-up (which also lets a binary
 * translator translate the loop and the handler), ITERS is chosen so that
 * one batch takes about BUDGET TSC ticks, whatever the cost of the event
 * under the machine at hand; of BATCHES batches the fastest is kept (the
 * one least disturbed by the host), for the event and for the empty loop,
 * and
 *
 *     cycles per event = (best event batch - best empty batch) / (ITERS * UNROLL)
 *
 * is printed as "NAME CYCLES" with two decimals, one line per event, in a
 * fixed order.  Cycles are TSC ticks (nestmon and QEMU TCG both return the
 * host's TSC from RDTSC: see docs/guests.md).  An event that does not
 * behave (an unexpected exception, a handler not run once per event)
 * prints "NAME FAIL why" instead, and the guest then exits with status 1.
 *
 * The handlers are the smallest that do the job: they count the event and
 * return.  The ring-3 events enter and leave ring 3 through the pm.h
 * support (PM_USER_TRY); the timed loop runs wholly at ring 3, so only the
 * event itself crosses privilege levels.
 *
 * The Multiboot command line may hold "quick": tiny batches, for the test
 * that checks the guest runs (tests/events.rs); the numbers are then not
 * meaningful.  "only=NAME" measures one event (to profile it).  "paging"
 * turns 32-bit paging on first (16 MiB identity-mapped with user pages, as
 * pm_paging_on sets it up), so that every event runs as under a paging
 * kernel. */
#include "bench.h"

/* events per loop iteration (the loop overhead is also subtracted) */
#define UNROLL 8
/* a port neither nestmon (COM1, isa-debug-exit, the backdoor) nor QEMU's
 * pc machine claims; Linux's alternative I/O-delay port */
#define EV_PORT 0xed
#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define CPUID_SEP (1u << 11)

/* shared with the assembly: how many times a handler ran */
volatile uint32_t ev_count;
uint8_t ev_sysenter_stack[4096] __attribute__((aligned(16)));

/* The handlers.  Each counts the event (DS is the interrupted code's:
 * flat in both rings) and returns to the interrupted code. */
__asm__(".text\n"
        ".p2align 4\n"
        /* int $0x80, through an interrupt gate of DPL 3 */
        "ev_int_handler:\n\t"
        "incl ev_count\n\t"
        "iretl\n"
        ".p2align 4\n"
        /* #DE from "divl %ebx" (f7 f3): resume after it */
        "ev_de_handler:\n\t"
        "incl ev_count\n\t"
        "addl $2, (%esp)\n\t"
        "iretl\n"
        ".p2align 4\n"
        /* #GP(0) from "hlt" (f4) at ring 3: drop the error code, resume
         * after the hlt */
        "ev_gp_handler:\n\t"
        "incl ev_count\n\t"
        "addl $4, %esp\n\t"
        "incl (%esp)\n\t"
        "iretl\n"
        ".p2align 4\n"
        /* SYSENTER_EIP: back to ring 3 at EDX with ESP = ECX */
        "ev_sysenter_handler:\n\t"
        "incl ev_count\n\t"
        "sysexit\n"
        ".p2align 4\n"
        "ev_ret:\n\t"
        "ret\n");
extern char ev_int_handler[], ev_de_handler[], ev_gp_handler[], ev_sysenter_handler[];

/* A timed batch (lib/bench.h): SETUP, then bench_n iterations of UNROLL
 * copies of BODY, the TSC read before and after the loop. */
#define TIMED(setup, body) BENCH_TIMED(UNROLL, setup, body)

/* ---- the batches: one function per event, and the empty loops ---- */
static void empty_ring0(void) { PM_TRY(TIMED("", "")); }
static void empty_ring3(void) { PM_USER_TRY(TIMED("", "")); }

/* INT 0x80 at ring 3: gate DPL 3, stack switch to TSS.SS0:ESP0, IRET back
 * to ring 3 (the classic Linux i386 system call) */
static void int80_ring3(void) { PM_USER_TRY(TIMED("", "int $0x80")); }
/* the same gate from ring 0: no stack switch, IRET to the same level */
static void int_ring0(void) { PM_TRY(TIMED("", "int $0x80")); }
/* SYSENTER at ring 3 to the handler, SYSEXIT back to label 2 */
static void sysenter_ring3(void)
{
    PM_USER_TRY(TIMED("", "movl %esp, %ecx\n\tmovl $2f, %edx\n\tsysenter\n2:"));
}
/* a user program dividing by zero: #DE at ring 3, the kernel skips it */
static void de_ring3(void) { PM_USER_TRY(TIMED("xorl %ebx, %ebx", "divl %ebx")); }
/* a user program executing a privileged instruction: #GP(0) at ring 3 */
static void gp_ring3(void) { PM_USER_TRY(TIMED("", "hlt")); }
static void out_ring0(void) { PM_TRY(TIMED("xorl %eax, %eax", "outb %al, $" PM_STR(EV_PORT))); }
static void in_ring0(void) { PM_TRY(TIMED("", "inb $" PM_STR(EV_PORT) ", %al")); }
static void cpuid_ring0(void) { PM_TRY(TIMED("", "xorl %eax, %eax\n\tcpuid")); }
/* IF toggled at ring 0 (the PICs are masked and nestmon has no interrupt
 * source here, so nothing is delivered while IF=1); PM_TRY restores the
 * saved EFLAGS, so IF is 0 again afterwards */
static void cli_sti_ring0(void) { PM_TRY(TIMED("", "cli\n\tsti")); }
static void pushf_popf_ring0(void) { PM_TRY(TIMED("", "pushfl\n\tpopfl")); }
static void call_ret_ring0(void) { PM_TRY(TIMED("", "call ev_ret")); }
/* a selector read (what Linux's entry code does with SS) and a reload of
 * DS with the selector it holds (its kernel entry and exit reload DS and
 * ES with the user data selector they already hold) */
static void read_sreg_ring0(void) { PM_TRY(TIMED("", "movl %ss, %eax")); }
static void reload_ds_ring0(void) { PM_TRY(TIMED("", "movl %ds, %eax\n\tmovl %eax, %ds")); }

struct event {
    const char *name;
    void (*batch)(void);
    int ring3;      /* the empty loop to subtract: ring 3 or ring 0 */
    int counted;    /* a handler counts every event */
};

static const struct event events[] = {
    { "int80_ring3_iret", int80_ring3, 1, 1 },
    { "int_ring0_iret", int_ring0, 0, 1 },
    { "sysenter_sysexit", sysenter_ring3, 1, 1 },
    { "de_delivery", de_ring3, 1, 1 },
    { "gp_delivery", gp_ring3, 1, 1 },
    { "out_unclaimed", out_ring0, 0, 0 },
    { "in_unclaimed", in_ring0, 0, 0 },
    { "cpuid", cpuid_ring0, 0, 0 },
    { "cli_sti", cli_sti_ring0, 0, 0 },
    { "pushf_popf", pushf_popf_ring0, 0, 0 },
    { "call_ret", call_ret_ring0, 0, 0 },
    { "read_sreg", read_sreg_ring0, 0, 0 },
    { "reload_ds", reload_ds_ring0, 0, 0 },
};
#define NEVENTS (int)(sizeof(events) / sizeof(events[0]))

static int failures;

/* One batch of fn with n iterations: its TSC ticks, or 0 after printing a
 * FAIL line (an exception reached the pm.h stubs, or the handler did not
 * run once per event). */
static uint64_t batch(const struct event *e, void (*fn)(void), uint32_t n)
{
    bench_n = n;
    ev_count = 0;
    fn();
    if (pm_last.vector != PM_NONE) {
        rt_printf("%s FAIL unexpected ", e->name);
        pm_print_trap(&pm_last);
        rt_printf(" (eip %08x)\n", pm_last.eip);
        return 0;
    }
    if (fn == e->batch && e->counted && ev_count != n * UNROLL) {
        rt_printf("%s FAIL the handler ran %u times for %u events\n", e->name, ev_count,
                  n * UNROLL);
        return 0;
    }
    return bench_ticks();
}

/* the event being measured, for the two batch functions bench_measure calls */
static const struct event *current;
static uint64_t event_batch(uint32_t n) { return batch(current, current->batch, n); }
static uint64_t empty_batch(uint32_t n)
{
    return batch(current, current->ring3 ? empty_ring3 : empty_ring0, n);
}

static void measure(const struct event *e)
{
    struct bench_event b = { e->name, event_batch, empty_batch, UNROLL, 0 };
    current = e;
    bench_measure(&b);
}

static void wrmsr(uint32_t msr, uint32_t v)
{
    __asm__ __volatile__("wrmsr" : : "c"(msr), "a"(v), "d"(0) : "memory");
}

int main(void)
{
    uint32_t a, b, c, d;
    int i;

    pm_init();
    bench_args();
    if (bench_flag("paging"))
        pm_paging_on();
    /* mask both PICs: cli_sti runs with IF=1 */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    /* the events' gates: an interrupt gate each, int $0x80 callable from
     * ring 3.  #DE and #GP are pointed at their handlers only while their
     * event runs, so that an unexpected fault elsewhere reaches the pm.h
     * stubs and is reported. */
    pm_idt_set(0x80, pm_gate_desc(SEL_KCODE, (uint32_t)ev_int_handler,
                                  ACC_P | DPL(3) | SYS_INTGATE32, 0));
    pm_cpuid(1, &a, &b, &c, &d);
    wrmsr(MSR_SYSENTER_CS, SEL_KCODE);
    wrmsr(MSR_SYSENTER_ESP, (uint32_t)ev_sysenter_stack + sizeof(ev_sysenter_stack));
    wrmsr(MSR_SYSENTER_EIP, (uint32_t)ev_sysenter_handler);

    rt_printf("# events: cycles (TSC ticks) per event, %u per loop iteration, best of %d "
              "batches of ~%u ticks, empty loop subtracted\n",
              UNROLL, bench_batches, bench_budget);
    rt_printf("# paging %s\n", bench_flag("paging") ? "on" : "off");
    bench_tsc_mark();
    for (i = 0; i < NEVENTS; i++) {
        const struct event *e = &events[i];
        if (bench_skipped(e->name))
            continue;
        if (e->batch == sysenter_ring3 && !(d & CPUID_SEP)) {
            rt_printf("%s FAIL CPUID.1:EDX.SEP is 0\n", e->name);
            failures++;
            continue;
        }
        if (e->batch == de_ring3)
            pm_idt_set(PM_DE, pm_gate_desc(SEL_KCODE, (uint32_t)ev_de_handler,
                                           ACC_P | SYS_INTGATE32, 0));
        if (e->batch == gp_ring3)
            pm_idt_set(PM_GP, pm_gate_desc(SEL_KCODE, (uint32_t)ev_gp_handler,
                                           ACC_P | SYS_INTGATE32, 0));
        measure(e);
        pm_idt_stub(PM_DE, SYS_INTGATE32, 0);
        pm_idt_stub(PM_GP, SYS_INTGATE32, 0);
    }
    bench_tsc_mark();
    failures += bench_failures;
    if (failures)
        rt_printf("events: %d event(s) failed\n", failures);
    return failures ? 1 : 0;
}
