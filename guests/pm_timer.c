/* pm_timer: the 8259A PIC pair and the 8254 PIT as a kernel programs them
 * (nestmon: guest-only).
 * The PICs are remapped to vectors 0x20 and 0x28 with the ICW1-ICW4
 * sequence Linux uses; PIT channel 0 runs at 1 kHz in mode 2 on IRQ0 and
 * the guest waits for its ticks with sti; hlt, checking each interrupt's
 * vector, the in-service register in the handler, the saved EIP (just
 * after the hlt) and the end of interrupt; an interrupt that is not ended
 * holds back the next one until a specific EOI; a masked IRQ0 does not
 * arrive, stays latched in the IRR and arrives once unmasked; auto-EOI;
 * poll mode; and channel 2 counting down through ports 0x42 and 0x61 as
 * Linux calibrates the TSC with it; and a cycle made of calls alone (no
 * backward jump, no return) is still interrupted by IRQ0.  Every check is deterministic (a
 * count "at least", never a timing); timings are on '#' lines only.
 * Intel 8259A and 8254 datasheets; QEMU's i8259, i8254 and pcspk agree. */
#include "pm.h"

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xa0
#define PIC2_DATA 0xa1
#define PIT_CH0 0x40
#define PIT_CH2 0x42
#define PIT_MODE 0x43
#define PORT_B 0x61

#define VEC_MASTER 0x20
#define VEC_SLAVE 0x28
#define PIT_HZ 1193182
#define TICK_COUNT 1193 /* 1 kHz */
#define TICKS 20
#define SPIN_LIMIT 20000000u /* polls before a wait is declared failed */

/* halt_once: sti; hlt; cli -- the one place interrupts are taken while
 * waiting, so an interrupt's saved EIP is after_hlt. */
__asm__(".text\n"
        ".globl halt_once\n"
        "halt_once:\n\t"
        "sti\n\t"
        "hlt\n"
        ".globl after_hlt\n"
        "after_hlt:\n\t"
        "cli\n\t"
        "ret\n");
extern void halt_once(void);
extern char after_hlt[];

/* call_cycle(turns): a cycle of calls alone.  Each turn calls
 * call_cycle_top, which lies below the call; it drops the return address
 * and runs forward into the call again, so no backward jump and no return
 * closes the cycle.  It leaves (forward) when cycle_stop is set or the
 * turns ran out, returning the turns left. */
static volatile uint32_t cycle_stop;
__asm__(".text\n"
        ".globl call_cycle\n"
        "call_cycle:\n\t"
        "mov 4(%esp), %ecx\n\t"
        "jmp call_cycle_call\n"
        "call_cycle_top:\n\t"
        "add $4, %esp\n\t"
        "cmpl $0, cycle_stop\n\t"
        "jne call_cycle_out\n\t"
        "dec %ecx\n\t"
        "jz call_cycle_out\n"
        "call_cycle_call:\n\t"
        "call call_cycle_top\n"
        "call_cycle_out:\n\t"
        "mov %ecx, %eax\n\t"
        "ret\n");
extern uint32_t call_cycle(uint32_t turns);

/* ---- the IRQ handler (a pm.h hook on vectors 0x20-0x2f) ---- */
enum { EOI_NONSPECIFIC, EOI_NONE };
static volatile struct {
    uint32_t ticks;       /* IRQ0 at vector 0x20 */
    uint32_t others;      /* any other vector */
    uint32_t other_vec;
    uint32_t at_hlt;      /* saved EIP == after_hlt */
    uint32_t isr_and, isr_or; /* the master ISR read in the handler */
    int eoi;              /* what the handler does at the end */
    int mask_after;       /* mask IRQ0 in the handler: exactly one arrives */
} irq;

static uint8_t read_isr(uint16_t cmd)
{
    uint8_t v;
    outb(cmd, 0x0b); /* OCW3: read ISR */
    v = inb(cmd);
    outb(cmd, 0x0a); /* OCW3: read IRR */
    return v;
}

static uint8_t read_irr(uint16_t cmd)
{
    outb(cmd, 0x0a);
    return inb(cmd);
}

static int irq_hook(struct pm_frame *f)
{
    int vec = f->vector & 0xff;
    uint8_t isr = read_isr(PIC1_CMD);
    if (vec == VEC_MASTER) {
        irq.ticks++;
        cycle_stop = 1;
    } else {
        irq.others++;
        irq.other_vec = vec;
    }
    if (f->eip == (uint32_t)after_hlt)
        irq.at_hlt++;
    irq.isr_and &= isr;
    irq.isr_or |= isr;
    if (irq.mask_after)
        outb(PIC1_DATA, 0xff);
    if (irq.eoi == EOI_NONSPECIFIC)
        outb(PIC1_CMD, 0x20);
    return PM_RESUME;
}

static void irq_reset(int eoi, int mask_after)
{
    irq.ticks = irq.others = irq.other_vec = irq.at_hlt = 0;
    irq.isr_and = 0xff;
    irq.isr_or = 0;
    irq.eoi = eoi;
    irq.mask_after = mask_after;
}

/* ICW1-ICW4 as Linux's init_8259A: edge-triggered, cascade on IR2. */
static void pic_init(uint8_t icw4)
{
    outb(PIC1_CMD, 0x11);
    outb(PIC1_DATA, VEC_MASTER);
    outb(PIC1_DATA, 0x04);
    outb(PIC1_DATA, icw4);
    outb(PIC2_CMD, 0x11);
    outb(PIC2_DATA, VEC_SLAVE);
    outb(PIC2_DATA, 0x02);
    outb(PIC2_DATA, icw4);
    outb(PIC1_DATA, 0xff);
    outb(PIC2_DATA, 0xff);
}

/* Polls until the IRR has bit 0 (an IRQ0 edge latched); 1 when it came. */
static int wait_irr0(void)
{
    uint32_t n;
    for (n = 0; n < SPIN_LIMIT; n++)
        if (read_irr(PIC1_CMD) & 1)
            return 1;
    return 0;
}

static uint16_t ch2_latched(void)
{
    uint8_t lo, hi;
    outb(PIT_MODE, 0x80); /* counter latch, channel 2 */
    lo = inb(PIT_CH2);
    hi = inb(PIT_CH2);
    return lo | hi << 8;
}

/* Channel 2, mode 0, `count` clocks, gate on and speaker off. */
static void ch2_start(uint16_t count)
{
    outb(PORT_B, (inb(PORT_B) & ~0x02) | 0x01);
    outb(PIT_MODE, 0xb0); /* channel 2, LSB then MSB, mode 0, binary */
    outb(PIT_CH2, count & 0xff);
    outb(PIT_CH2, count >> 8);
}

/* Polls port B until OUT2 is high; the number of polls that saw it low. */
static uint32_t ch2_wait(void)
{
    uint32_t n = 0;
    while (!(inb(PORT_B) & 0x20) && n < SPIN_LIMIT)
        n++;
    return n;
}

static void pic_setup(void)
{
    rt_puts("-- PIC initialization (8259A: ICW1-ICW4, OCW1, OCW3)\n");
    pic_init(0x01);
    pm_check_val("master IMR after OCW1 0xff", inb(PIC1_DATA), 0xff);
    pm_check_val("slave IMR after OCW1 0xff", inb(PIC2_DATA), 0xff);
    outb(PIC1_DATA, 0xa5);
    outb(PIC2_DATA, 0x5a);
    pm_check_val("master IMR reads back 0xa5", inb(PIC1_DATA), 0xa5);
    pm_check_val("slave IMR reads back 0x5a", inb(PIC2_DATA), 0x5a);
    outb(PIC1_DATA, 0xff);
    outb(PIC2_DATA, 0xff);
    pm_check_val("master ISR (OCW3 read ISR)", read_isr(PIC1_CMD), 0);
    pm_check_val("slave ISR", read_isr(PIC2_CMD), 0);
}

static void pit_ticks(void)
{
    uint16_t count;
    uint64_t t0, t1;

    rt_puts("-- PIT channel 0 at 1 kHz (mode 2) on IRQ0, sti; hlt until " PM_STR(TICKS) " ticks\n");
    outb(PIT_MODE, 0x34); /* channel 0, LSB then MSB, mode 2, binary */
    outb(PIT_CH0, TICK_COUNT & 0xff);
    outb(PIT_CH0, TICK_COUNT >> 8);
    outb(PIT_MODE, 0x00); /* counter latch, channel 0 */
    count = inb(PIT_CH0);
    count |= inb(PIT_CH0) << 8;
    pm_check_val("channel 0 latched count is within 1..1193", count >= 1 && count <= TICK_COUNT, 1);
    outb(PIT_MODE, 0xe2); /* read-back: status of channel 0 */
    pm_check_val("channel 0 status: LSB/MSB, mode 2, binary", inb(PIT_CH0) & 0x3f, 0x34);

    irq_reset(EOI_NONSPECIFIC, 0);
    outb(PIC1_DATA, 0xfe); /* unmask IRQ0 */
    t0 = rt_rdtsc();
    while (irq.ticks < TICKS)
        halt_once();
    t1 = rt_rdtsc();
    outb(PIC1_DATA, 0xff);
    rt_printf("# %u ticks in %llu TSC cycles\n", irq.ticks, t1 - t0);
    pm_check_val("IRQ0 ticks >= " PM_STR(TICKS), irq.ticks >= TICKS, 1);
    pm_check_val("interrupts at other vectors", irq.others, 0);
    pm_check_val("every tick came at the hlt (saved EIP after it)", irq.at_hlt == irq.ticks, 1);
    pm_check_val("ISR in the handler, AND over the ticks", irq.isr_and, 0x01);
    pm_check_val("ISR in the handler, OR over the ticks", irq.isr_or, 0x01);
    pm_check_val("ISR after the EOIs", read_isr(PIC1_CMD), 0);
}

static void eoi_and_masking(void)
{
    rt_puts("-- end of interrupt and masking (8259A: OCW2, in-service priority, IMR)\n");
    irq_reset(EOI_NONE, 0);
    outb(PIC1_DATA, 0xfe);
    halt_once();
    pm_check_val("a tick without EOI", irq.ticks, 1);
    pm_check_val("  ISR keeps bit 0", read_isr(PIC1_CMD), 0x01);
    __asm__ __volatile__("sti");
    pm_check_val("  with IF=1, the next edge is latched in the IRR", wait_irr0(), 1);
    __asm__ __volatile__("cli");
    pm_check_val("  but not delivered: ticks", irq.ticks, 1);
    irq.eoi = EOI_NONSPECIFIC;
    irq.mask_after = 1;
    outb(PIC1_CMD, 0x60); /* specific EOI, level 0 */
    pm_check_val("  specific EOI clears ISR bit 0", read_isr(PIC1_CMD), 0);
    __asm__ __volatile__("sti\n\tnop\n\tcli");
    pm_check_val("  the latched IRQ0 arrives at sti: ticks", irq.ticks, 2);

    irq_reset(EOI_NONSPECIFIC, 1);
    outb(PIC1_DATA, 0xff);
    outb(PIC1_CMD, 0x0a);
    __asm__ __volatile__("sti");
    pm_check_val("masked IRQ0: an edge is latched in the IRR", wait_irr0(), 1);
    ch2_start(3 * PIT_HZ / 1000); /* at least 3 ms with IF=1 */
    ch2_wait();
    __asm__ __volatile__("cli");
    pm_check_val("  no interrupt in 3 ms with IF=1: ticks", irq.ticks, 0);
    pm_check_val("  IRR bit 0 still set", read_irr(PIC1_CMD) & 1, 1);
    outb(PIC1_DATA, 0xfe);
    __asm__ __volatile__("sti\n\tnop\n\tcli");
    pm_check_val("  unmasked: the latched IRQ0 arrives at sti: ticks", irq.ticks, 1);
    pm_check_val("  at vector 0x20: other vectors", irq.others, 0);
}

static void auto_eoi(void)
{
    rt_puts("-- auto-EOI (ICW4 bit 1): no in-service bit, no EOI needed\n");
    pic_init(0x03);
    irq_reset(EOI_NONE, 0);
    outb(PIC1_DATA, 0xfe);
    while (irq.ticks < 5)
        halt_once();
    outb(PIC1_DATA, 0xff);
    pm_check_val("ticks without EOI >= 5", irq.ticks >= 5, 1);
    pm_check_val("ISR in the handler, OR over the ticks", irq.isr_or, 0);
    pm_check_val("interrupts at other vectors", irq.others, 0);
    pic_init(0x01);
}

static void poll_mode(void)
{
    rt_puts("-- poll mode (OCW3 bit 2), interrupts disabled\n");
    outb(PIC1_DATA, 0xfe);
    pm_check_val("IRQ0 edge latched", wait_irr0(), 1);
    outb(PIC1_CMD, 0x0c); /* OCW3: poll */
    pm_check_val("poll: 0x80 | IRQ0", inb(PIC1_CMD), 0x80);
    pm_check_val("  the poll set ISR bit 0", read_isr(PIC1_CMD), 0x01);
    outb(PIC1_CMD, 0x20);
    pm_check_val("  EOI cleared it", read_isr(PIC1_CMD), 0);
    outb(PIC1_DATA, 0xff);
    outb(PIC1_CMD, 0x0c);
    pm_check_val("poll with IRQ0 masked: nothing", inb(PIC1_CMD), 0x00);
    pm_check_val("  the IMR reads normally again", inb(PIC1_DATA), 0xff);
}

static void calls_alone(void)
{
    uint32_t left;

    rt_puts("-- a cycle made of calls alone (no backward jump, no return) meets IRQ0\n");
    irq_reset(EOI_NONSPECIFIC, 1);
    cycle_stop = 0;
    outb(PIC1_DATA, 0xfe);
    __asm__ __volatile__("sti");
    left = call_cycle(400000000u);
    __asm__ __volatile__("cli");
    outb(PIC1_DATA, 0xff);
    rt_printf("# %u turns before the tick\n", 400000000u - left);
    pm_check_val("the tick arrived inside the cycle", cycle_stop, 1);
    pm_check_val("  before its 400 million turns ran out", left != 0, 1);
    pm_check_val("  one tick (masked in the handler)", irq.ticks, 1);
}

static void channel2(void)
{
    const uint16_t count = PIT_HZ / 20; /* 50 ms, as Linux's pit_calibrate_tsc */
    uint16_t a = 0, b = 0, c = 0;
    uint8_t p = 0, q = 0;
    uint32_t polls = 0, i;
    uint64_t t0 = 0, t1 = 0;
    int attempt, ok = 0;

    rt_puts("-- channel 2 through ports 0x42 and 0x61 (8254 mode 0, latch, read-back)\n");
    /* A host preemption longer than the countdown can only make it run out
     * before the guest looked; such an attempt is retried. */
    for (attempt = 1; attempt <= 5 && !ok; attempt++) {
        ch2_start(count);
        p = inb(PORT_B);
        q = inb(PORT_B);
        a = ch2_latched();
        for (i = 0; i < 1000; i++)
            inb(PORT_B);
        b = ch2_latched();
        for (i = 0; i < 1000; i++)
            inb(PORT_B);
        c = ch2_latched();
        t0 = rt_rdtsc();
        polls = ch2_wait();
        t1 = rt_rdtsc();
        ok = !(p & 0x20) && a > b && b > c && a <= count && polls > 0;
    }
    rt_printf("# TSC: %u kHz from a 50 ms channel 2 countdown (%u polls, attempt %d)\n",
              (uint32_t)((t1 - t0) / 50), polls, attempt - 1);
    pm_check_val("port B: gate on, speaker off", p & 0x03, 0x01);
    pm_check_val("port B: OUT2 low while counting", p & 0x20, 0);
    pm_check_val("port B: refresh bit toggles between reads", (p ^ q) & 0x10, 0x10);
    pm_check_val("latched counts decrease", a > b && b > c, 1);
    pm_check_val("  and stay within the count", a <= count, 1);
    pm_check_val("OUT2 rose after the countdown", (inb(PORT_B) & 0x20) && polls > 0, 1);
    outb(PIT_MODE, 0xe8); /* read-back: status of channel 2 */
    pm_check_val("read-back status: OUT high, LSB/MSB, mode 0, binary", inb(PIT_CH2), 0xb0);
    outb(PORT_B, inb(PORT_B) & ~0x03);
    pm_check_val("port B: gate off", inb(PORT_B) & 0x03, 0);
}

int main(void)
{
    int v;

    pm_init();
    for (v = VEC_MASTER; v < VEC_SLAVE + 8; v++)
        pm_set_hook(v, irq_hook);
    rt_puts("pm_timer: 8259A PICs, 8254 PIT, IRQ0 at 1 kHz, channel 2 through port 0x61\n");
    pic_setup();
    pit_ticks();
    eoi_and_masking();
    auto_eoi();
    poll_mode();
    calls_alone();
    channel2();
    outb(PIC1_DATA, 0xff);
    outb(PIC2_DATA, 0xff);
    rt_finish("pm_timer");
}
