/* pm_apic: the local APIC (xAPIC registers at 0xFEE00000) and the I/O APIC
 * (0xFEC00000) as a kernel programs them (nestmon: guest-only).
 * IA32_APIC_BASE and CPUID; the spurious-interrupt vector register; self-IPIs
 * through the ICR with the IRR, ISR, PPR and EOI; delivery by priority
 * class; the task priority holding an interrupt back; the timer one-shot,
 * periodic and masked; a self-NMI; the I/O APIC's redirection table with
 * the PIT's IRQ0 on pin 2 (edge) and COM1's IRQ4 on pin 4 (level, remote
 * IRR cleared by the EOI).  The 8259A pair stays masked while the I/O APIC
 * routes.  Every check is deterministic (counts "at least", never a
 * timing; no timer frequency is printed); timings are on '#' lines only.
 * That a software-disabled APIC masks every LVT entry (SDM vol. 3A,
 * "Local APIC State After It Has Been Software Disabled") is checked by
 * the unit tests of monitor/src/devices/lapic.rs: QEMU TCG does not model
 * it, and this guest's output must match QEMU's.
 * Intel SDM vol. 3A, the APIC chapter; Intel 82093AA I/O APIC datasheet; QEMU's apic
 * and ioapic agree. */
#include "pm.h"

#define LAPIC 0xfee00000u
#define IOAPIC 0xfec00000u

#define APIC_ID 0x20
#define APIC_VER 0x30
#define APIC_TPR 0x80
#define APIC_PPR 0xa0
#define APIC_EOI 0xb0
#define APIC_LDR 0xd0
#define APIC_DFR 0xe0
#define APIC_SVR 0xf0
#define APIC_ISR 0x100
#define APIC_TMR 0x180
#define APIC_IRR 0x200
#define APIC_ICR_LO 0x300
#define APIC_ICR_HI 0x310
#define APIC_LVT_TIMER 0x320
#define APIC_LINT0 0x350
#define APIC_LINT1 0x360
#define APIC_LVT_ERROR 0x370
#define APIC_TIMER_INIT 0x380
#define APIC_TIMER_CUR 0x390
#define APIC_TIMER_DIV 0x3e0

#define LVT_MASKED (1u << 16)
#define LVT_PERIODIC (1u << 17)
#define ICR_SELF (1u << 18)
#define ICR_NMI (4u << 8)
#define RTE_LEVEL (1u << 15)
#define RTE_REMOTE_IRR (1u << 14)

#define PIC1_DATA 0x21
#define PIC2_DATA 0xa1
#define PIT_CH0 0x40
#define PIT_MODE 0x43
#define COM1 0x3f8

#define VEC_LOW 0x41
#define VEC_SELF 0x40
#define VEC_TIMER 0x42
#define VEC_HIGH 0x81
#define VEC_PIT 0x50
#define VEC_COM1 0x51
#define SPIN_LIMIT 20000000u

/* halt_once: sti; hlt; cli -- the one place interrupts are taken while
 * waiting. */
__asm__(".text\n"
        ".globl halt_once\n"
        "halt_once:\n\t"
        "sti\n\t"
        "hlt\n\t"
        "cli\n\t"
        "ret\n");
extern void halt_once(void);

static uint32_t lapic_read(uint32_t reg)
{
    return *(volatile uint32_t *)(LAPIC + reg);
}

static void lapic_write(uint32_t reg, uint32_t value)
{
    *(volatile uint32_t *)(LAPIC + reg) = value;
}

static uint32_t ioapic_read(uint8_t index)
{
    *(volatile uint32_t *)IOAPIC = index;
    return *(volatile uint32_t *)(IOAPIC + 0x10);
}

static void ioapic_write(uint8_t index, uint32_t value)
{
    *(volatile uint32_t *)IOAPIC = index;
    *(volatile uint32_t *)(IOAPIC + 0x10) = value;
}

/* Bit `vector` of one of the 256-bit registers (ISR, TMR, IRR). */
static uint32_t vector_bit(uint32_t base, int vector)
{
    return (lapic_read(base + 0x10 * (vector / 32)) >> (vector % 32)) & 1;
}

static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}

static void sti_nop_cli(void)
{
    __asm__ __volatile__("sti\n\tnop\n\tnop\n\tcli" ::: "memory");
}

/* ---- the handler (a pm.h hook on every vector used here) ---- */
#define ORDER_MAX 8
static volatile struct {
    uint32_t count[256];
    int order[ORDER_MAX];
    int norder;
    uint32_t isr_in_handler;  /* ISR bit of the vector, in its handler */
    uint32_t ppr_in_handler;
    uint32_t tmr_in_handler;
    uint32_t remote_irr_in_handler;
    int eoi;                  /* send an EOI at the end */
} irq;

static int irq_hook(struct pm_frame *f)
{
    int vec = f->vector & 0xff;
    irq.count[vec]++;
    if (irq.norder < ORDER_MAX)
        irq.order[irq.norder++] = vec;
    irq.isr_in_handler = vector_bit(APIC_ISR, vec);
    irq.ppr_in_handler = lapic_read(APIC_PPR);
    irq.tmr_in_handler = vector_bit(APIC_TMR, vec);
    if (vec == VEC_COM1) {
        irq.remote_irr_in_handler = (ioapic_read(0x10 + 2 * 4) & RTE_REMOTE_IRR) != 0;
        inb(COM1 + 2);       /* IIR: acknowledges the THR-empty interrupt */
        outb(COM1 + 1, 0);   /* IER: no more */
    }
    if (irq.eoi)
        lapic_write(APIC_EOI, 0);
    return PM_RESUME;
}

static void irq_reset(void)
{
    int v;
    for (v = 0; v < 256; v++)
        irq.count[v] = 0;
    irq.norder = 0;
    irq.eoi = 1;
}

static void identity(void)
{
    uint32_t a, b, c, d;
    uint64_t base = rdmsr(0x1b);
    uint32_t ver = lapic_read(APIC_VER);

    rt_puts("-- identity: CPUID, IA32_APIC_BASE, ID and version registers\n");
    pm_cpuid(1, &a, &b, &c, &d);
    pm_check_val("CPUID.1:EDX.APIC", (d >> 9) & 1, 1);
    pm_check_val("IA32_APIC_BASE base", (uint32_t)base & 0xfffff000u, LAPIC);
    pm_check_val("IA32_APIC_BASE enable", (uint32_t)(base >> 11) & 1, 1);
    pm_check_val("IA32_APIC_BASE BSP", (uint32_t)(base >> 8) & 1, 1);
    pm_check_val("APIC ID", lapic_read(APIC_ID) >> 24, b >> 24);
    pm_check_val("version: integrated APIC", (ver & 0xff) >= 0x10, 1);
    pm_check_val("version: max LVT entry", (ver >> 16) & 0xff, 5);
}

static void software_enable(void)
{
    rt_puts("-- spurious-interrupt vector register\n");
    lapic_write(APIC_SVR, 0x0ff);
    pm_check_val("SVR with the enable clear", lapic_read(APIC_SVR) & 0x1ff, 0x0ff);
    pm_check_val("  LVT error reads masked", lapic_read(APIC_LVT_ERROR) & LVT_MASKED, LVT_MASKED);
    lapic_write(APIC_SVR, 0x1ff);
    pm_check_val("SVR enabled, spurious vector 0xff", lapic_read(APIC_SVR) & 0x1ff, 0x1ff);
    lapic_write(APIC_SVR, 0x13f);
    pm_check_val("spurious vector 0x3f reads back", lapic_read(APIC_SVR) & 0x1ff, 0x13f);
    lapic_write(APIC_SVR, 0x1ff);
    lapic_write(APIC_LINT0, LVT_MASKED | (7 << 8)); /* ExtINT, masked: no 8259A */
    lapic_write(APIC_LINT1, 4 << 8);                /* NMI */
    lapic_write(APIC_LVT_ERROR, LVT_MASKED | 0xfe);
    lapic_write(APIC_TPR, 0);
    lapic_write(APIC_DFR, 0xffffffffu);             /* flat model */
    lapic_write(APIC_LDR, 0x01000000u);
    pm_check_val("DFR flat", lapic_read(APIC_DFR) >> 28, 0xf);
    pm_check_val("LDR logical ID", lapic_read(APIC_LDR) >> 24, 1);
}

static void self_ipi(void)
{
    rt_puts("-- self-IPI: IRR, ISR, PPR and EOI\n");
    irq_reset();
    lapic_write(APIC_ICR_HI, 0);
    lapic_write(APIC_ICR_LO, ICR_SELF | VEC_SELF);
    pm_check_val("ICR delivery status idle", (lapic_read(APIC_ICR_LO) >> 12) & 1, 0);
    pm_check_val("with IF=0 the vector waits in the IRR", vector_bit(APIC_IRR, VEC_SELF), 1);
    pm_check_val("  nothing delivered", irq.count[VEC_SELF], 0);
    sti_nop_cli();
    pm_check_val("delivered at sti", irq.count[VEC_SELF], 1);
    pm_check_val("  ISR bit set in the handler", irq.isr_in_handler, 1);
    pm_check_val("  PPR in the handler", irq.ppr_in_handler & 0xf0, VEC_SELF & 0xf0);
    pm_check_val("  edge: TMR bit clear", irq.tmr_in_handler, 0);
    pm_check_val("IRR clear after delivery", vector_bit(APIC_IRR, VEC_SELF), 0);
    pm_check_val("ISR clear after the EOI", vector_bit(APIC_ISR, VEC_SELF), 0);
    pm_check_val("PPR 0 after the EOI", lapic_read(APIC_PPR), 0);

    rt_puts("-- two self-IPIs: the higher priority class first\n");
    irq_reset();
    lapic_write(APIC_ICR_LO, ICR_SELF | VEC_LOW);
    lapic_write(APIC_ICR_LO, ICR_SELF | VEC_HIGH);
    sti_nop_cli();
    pm_check_val("both delivered", irq.norder, 2);
    pm_check_val("  first", irq.order[0], VEC_HIGH);
    pm_check_val("  second", irq.order[1], VEC_LOW);

    rt_puts("-- task priority holds back a vector of its class or lower\n");
    irq_reset();
    lapic_write(APIC_TPR, 0x50);
    lapic_write(APIC_ICR_LO, ICR_SELF | VEC_LOW);
    sti_nop_cli();
    pm_check_val("TPR 0x50: vector 0x41 not delivered", irq.count[VEC_LOW], 0);
    pm_check_val("  pending in the IRR", vector_bit(APIC_IRR, VEC_LOW), 1);
    pm_check_val("  PPR follows the TPR", lapic_read(APIC_PPR), 0x50);
    lapic_write(APIC_ICR_LO, ICR_SELF | VEC_HIGH);
    sti_nop_cli();
    pm_check_val("  vector 0x81 passes", irq.count[VEC_HIGH], 1);
    lapic_write(APIC_TPR, 0);
    sti_nop_cli();
    pm_check_val("TPR 0: vector 0x41 delivered", irq.count[VEC_LOW], 1);

    rt_puts("-- an interrupt without EOI holds back its class\n");
    irq_reset();
    irq.eoi = 0;
    lapic_write(APIC_ICR_LO, ICR_SELF | VEC_LOW);
    sti_nop_cli();
    lapic_write(APIC_ICR_LO, ICR_SELF | VEC_SELF);
    sti_nop_cli();
    pm_check_val("first delivered", irq.count[VEC_LOW], 1);
    pm_check_val("  same class waits", irq.count[VEC_SELF], 0);
    pm_check_val("  ISR keeps 0x41", vector_bit(APIC_ISR, VEC_LOW), 1);
    irq.eoi = 1;
    lapic_write(APIC_EOI, 0);
    sti_nop_cli();
    pm_check_val("after the EOI the waiting vector arrives", irq.count[VEC_SELF], 1);
    pm_check_val("  ISR empty", vector_bit(APIC_ISR, VEC_LOW) | vector_bit(APIC_ISR, VEC_SELF), 0);
}

static int nmis;
static int nmi_hook(struct pm_frame *f)
{
    (void)f;
    nmis++;
    return PM_RESUME;
}

static void self_nmi(void)
{
    uint32_t n;
    rt_puts("-- an NMI sent to the CPU's own APIC ID (IF=0)\n");
    nmis = 0;
    lapic_write(APIC_ICR_HI, (lapic_read(APIC_ID) >> 24) << 24);
    lapic_write(APIC_ICR_LO, ICR_NMI);
    for (n = 0; n < SPIN_LIMIT && !*(volatile int *)&nmis; n++)
        __asm__ __volatile__("pause");
    pm_check_val("NMI taken with IF=0", nmis, 1);
}

static void timer(void)
{
    uint32_t n;
    uint64_t t0, t1;

    rt_puts("-- timer: one-shot, periodic and masked\n");
    irq_reset();
    lapic_write(APIC_TIMER_DIV, 0xb); /* divide by 1 */
    pm_check_val("divide configuration reads back", lapic_read(APIC_TIMER_DIV) & 0xf, 0xb);
    lapic_write(APIC_LVT_TIMER, VEC_TIMER);
    lapic_write(APIC_TIMER_INIT, 200000);
    pm_check_val("initial count reads back", lapic_read(APIC_TIMER_INIT), 200000);
    pm_check_val("current count counts down from it",
                 lapic_read(APIC_TIMER_CUR) <= 200000, 1);
    for (n = 0; n < 1000 && irq.count[VEC_TIMER] == 0; n++)
        halt_once();
    pm_check_val("one-shot: one interrupt", irq.count[VEC_TIMER], 1);
    pm_check_val("  current count 0 after expiry", lapic_read(APIC_TIMER_CUR), 0);
    pm_check_val("  TMR clear (edge)", irq.tmr_in_handler, 0);

    irq_reset();
    lapic_write(APIC_LVT_TIMER, VEC_TIMER | LVT_PERIODIC);
    lapic_write(APIC_TIMER_DIV, 0x3); /* divide by 16 */
    t0 = rt_rdtsc();
    lapic_write(APIC_TIMER_INIT, 50000);
    for (n = 0; n < 10000 && irq.count[VEC_TIMER] < 10; n++)
        halt_once();
    t1 = rt_rdtsc();
    rt_printf("# 10 periods of 50000 x 16 bus clocks in %llu TSC cycles\n", t1 - t0);
    pm_check_val("periodic: at least 10 interrupts", irq.count[VEC_TIMER] >= 10, 1);
    pm_check_val("  the count reloads (current count not 0)",
                 lapic_read(APIC_TIMER_CUR) != 0, 1);
    lapic_write(APIC_TIMER_INIT, 0);
    pm_check_val("initial count 0 stops it", lapic_read(APIC_TIMER_CUR), 0);
    /* A period that ended after the last halt is still pending in the IRR:
     * take it before the masked test looks at the IRR. */
    sti_nop_cli();

    irq_reset();
    lapic_write(APIC_LVT_TIMER, VEC_TIMER | LVT_MASKED);
    lapic_write(APIC_TIMER_DIV, 0xb);
    lapic_write(APIC_TIMER_INIT, 20000);
    for (n = 0; n < SPIN_LIMIT && lapic_read(APIC_TIMER_CUR) != 0; n++)
        __asm__ __volatile__("pause");
    pm_check_val("masked: the count still runs out", lapic_read(APIC_TIMER_CUR), 0);
    pm_check_val("  no vector in the IRR", vector_bit(APIC_IRR, VEC_TIMER), 0);
    sti_nop_cli();
    pm_check_val("  no interrupt", irq.count[VEC_TIMER], 0);
}

static void pic_masked(void)
{
    /* ICW1-ICW4 at vectors 0x20/0x28, then every line masked. */
    outb(0x20, 0x11);
    outb(PIC1_DATA, 0x20);
    outb(PIC1_DATA, 0x04);
    outb(PIC1_DATA, 0x01);
    outb(0xa0, 0x11);
    outb(PIC2_DATA, 0x28);
    outb(PIC2_DATA, 0x02);
    outb(PIC2_DATA, 0x01);
    outb(PIC1_DATA, 0xff);
    outb(PIC2_DATA, 0xff);
}

static void ioapic(void)
{
    uint32_t ver = ioapic_read(0x01), n;

    rt_puts("-- I/O APIC: version and the redirection table\n");
    pm_check_val("max redirection entry", (ver >> 16) & 0xff, 23);
    pm_check_val("pin 2 masked at reset", ioapic_read(0x10 + 2 * 2) & LVT_MASKED, LVT_MASKED);
    ioapic_write(0x10 + 2 * 5, 0x12345 | LVT_MASKED);
    pm_check_val("an entry reads back (delivery status and remote IRR read-only)",
                 ioapic_read(0x10 + 2 * 5), 0x12345 | LVT_MASKED);
    ioapic_write(0x11 + 2 * 5, 0xff000000u);
    pm_check_val("  its destination reads back", ioapic_read(0x11 + 2 * 5) >> 24, 0xff);
    ioapic_write(0x10 + 2 * 5, LVT_MASKED);

    rt_puts("-- the PIT's IRQ0 on pin 2, edge-triggered, the 8259A masked\n");
    pic_masked();
    irq_reset();
    ioapic_write(0x11 + 2 * 2, (lapic_read(APIC_ID) >> 24) << 24);
    ioapic_write(0x10 + 2 * 2, VEC_PIT);
    outb(PIT_MODE, 0x34);
    outb(PIT_CH0, 1193 & 0xff); /* 1 kHz */
    outb(PIT_CH0, 1193 >> 8);
    for (n = 0; n < 10000 && irq.count[VEC_PIT] < 5; n++)
        halt_once();
    ioapic_write(0x10 + 2 * 2, VEC_PIT | LVT_MASKED);
    outb(PIT_MODE, 0x30); /* mode 0, no count: no more edges */
    pm_check_val("at least 5 ticks at the pin's vector", irq.count[VEC_PIT] >= 5, 1);
    pm_check_val("  none through the 8259A", irq.count[0x20], 0);
    pm_check_val("  TMR clear (edge)", irq.tmr_in_handler, 0);

    rt_puts("-- COM1's IRQ4 on pin 4, level-triggered: remote IRR until the EOI\n");
    irq_reset();
    ioapic_write(0x11 + 2 * 4, (lapic_read(APIC_ID) >> 24) << 24);
    ioapic_write(0x10 + 2 * 4, VEC_COM1 | RTE_LEVEL);
    outb(COM1 + 4, 0x08);  /* MCR: OUT2, the PC's interrupt gate */
    outb(COM1 + 1, 0x02);  /* IER: THR empty */
    for (n = 0; n < 1000 && irq.count[VEC_COM1] == 0; n++)
        sti_nop_cli();
    pm_check_val("one interrupt at the pin's vector", irq.count[VEC_COM1], 1);
    pm_check_val("  TMR set (level)", irq.tmr_in_handler, 1);
    pm_check_val("  remote IRR set in the handler", irq.remote_irr_in_handler, 1);
    pm_check_val("  remote IRR clear after the EOI",
                 ioapic_read(0x10 + 2 * 4) & RTE_REMOTE_IRR, 0);
    sti_nop_cli();
    pm_check_val("  no second interrupt (the line went low)", irq.count[VEC_COM1], 1);
    ioapic_write(0x10 + 2 * 4, VEC_COM1 | RTE_LEVEL | LVT_MASKED);
    outb(COM1 + 4, 0x00);
}

int main(void)
{
    static const int vectors[] = {VEC_SELF, VEC_LOW, VEC_TIMER, VEC_HIGH, VEC_PIT, VEC_COM1, 0x20};
    unsigned i;

    pm_init();
    for (i = 0; i < sizeof vectors / sizeof vectors[0]; i++)
        pm_set_hook(vectors[i], irq_hook);
    pm_set_hook(2, nmi_hook);
    rt_puts("pm_apic: local APIC (xAPIC) and I/O APIC\n");
    identity();
    software_enable();
    self_ipi();
    self_nmi();
    timer();
    ioapic();
    rt_finish("pm_apic");
}
