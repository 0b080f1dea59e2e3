/* pm_rings: privilege levels (nestmon: guest-only).
 * Entering ring 3 with iret; system calls with int $0x80 through a DPL 3
 * interrupt gate and a DPL 3 trap gate, the stack switched to TSS.SS0:ESP0;
 * int n through a DPL 0 gate from ring 3; privileged instructions at ring
 * 3; IOPL and the TSS I/O permission bitmap for in/out and string I/O;
 * pushf/popf/cli/sti at ring 3 with IOPL 0 and 3; iret to the same and to
 * an outer level, the checks iret makes, and iret with NT=1. */
#include "pm.h"

#define SEL_TSS_AVAIL 0x40 /* an available (not busy) TSS */
#define SEL_UDATA_RPL0 (SEL_UDATA & ~3)

uint32_t r[16];
struct pm_tss spare_tss;
uint8_t alt_kstack[4096] __attribute__((aligned(16)));

/* ---- the system call handler ---- */
static struct {
    uint32_t n, handler_esp, handler_ss, esp, ss, cs, eflags, eflags_in, eax;
} sys;

static int syscall_hook(struct pm_frame *f)
{
    uint16_t ss;
    __asm__ __volatile__("movw %%ss, %0" : "=r"(ss));
    sys.n++;
    sys.handler_esp = (uint32_t)&f->eip;
    sys.handler_ss = ss;
    sys.esp = f->esp;
    sys.ss = f->ss & 0xffff;
    sys.cs = f->cs & 0xffff;
    sys.eflags = f->eflags;
    sys.eflags_in = pm_eflags();
    sys.eax = f->eax;
    f->eax = f->eax * 2 + 1; /* the "result" */
    return PM_RESUME;
}

static void enter_ring3(void)
{
    rt_puts("-- entering ring 3 with iret (SDM: IRET, Returning from an Interrupt Handler)\n");
    memset(r, 0, sizeof(r));
    EXPECT_USER_OK("iret to ring 3; read cs, ss, esp, eflags, ds",
                   "movw %cs, %ax\n\tmovl %eax, r\n\tmovw %ss, %ax\n\tmovl %eax, r+4\n\t"
                   "movl %esp, r+8\n\tpushfl\n\tpopl r+12\n\tmovw %ds, %ax\n\tmovl %eax, r+16");
    pm_check_val("  cs", r[0] & 0xffff, SEL_UCODE);
    pm_check_val("  ss", r[1] & 0xffff, SEL_UDATA);
    pm_check_val("  esp - pm_ustack_top", r[2] - (uint32_t)pm_ustack_top, 0);
    pm_check_val("  eflags", r[3], 0x2);
    pm_check_val("  ds", r[4] & 0xffff, SEL_UDATA);
}

static void syscalls(void)
{
    rt_puts("-- system calls: int $0x80 from ring 3 (SDM: Stack Switching, Interrupt and Trap Gates)\n");
    pm_set_hook(0x80, syscall_hook);
    pm_set_hook(0x82, syscall_hook);
    pm_idt_stub(0x80, SYS_INTGATE32, 3);
    pm_idt_stub(0x82, SYS_TRAPGATE32, 3);
    memset(&sys, 0, sizeof(sys));
    memset(r, 0, sizeof(r));
    EXPECT_USER_OK("int $0x80 (DPL 3 interrupt gate), eax=20",
                   "movl $20, %eax\n\tmovl %esp, r+4\n\tint $0x80\n9:\tmovl %eax, r\n\t"
                   "movl %esp, r+8\n\tmovw %cs, %ax\n\tmovl %eax, r+12\n\tmovl $9b, r+16");
    pm_check_val("  calls seen", sys.n, 1);
    pm_check_val("  handler ESP = TSS.ESP0 - 20", (uint32_t)pm_kstack_top - sys.handler_esp, 20);
    pm_check_val("  handler SS = TSS.SS0", sys.handler_ss, SEL_KDATA);
    pm_check_val("  pushed ESP = the ring 3 ESP", sys.esp - r[1], 0);
    pm_check_val("  pushed SS", sys.ss, SEL_UDATA);
    pm_check_val("  pushed CS", sys.cs, SEL_UCODE);
    pm_check_val("  eax in the handler", sys.eax, 20);
    pm_check_val("  eax after iret (set by the handler)", r[0], 41);
    pm_check_val("  esp after iret", r[2] - r[1], 0);
    pm_check_val("  cs after iret", r[3] & 0xffff, SEL_UCODE);
    pm_check_val("  in the log: vector, saved EIP - return address",
                 pm_log[0].vector << 16 | (pm_log[0].eip - r[4]), 0x800000);

    pm_tss.t.esp0 = (uint32_t)alt_kstack + sizeof(alt_kstack);
    memset(&sys, 0, sizeof(sys));
    EXPECT_USER_OK("int $0x80 after changing TSS.ESP0", "movl $1, %eax\n\tint $0x80");
    pm_check_val("  handler ESP = new ESP0 - 20",
                 (uint32_t)alt_kstack + sizeof(alt_kstack) - sys.handler_esp, 20);
    pm_tss.t.esp0 = (uint32_t)pm_kstack_top;

    pm_user_eflags = 0x2 | EFL_IF | EFL_IOPL(3);
    memset(&sys, 0, sizeof(sys));
    EXPECT_USER_OK("IF=1: int $0x80 (interrupt gate) clears IF", "movl $2, %eax\n\tint $0x80\n\tcli");
    pm_check_val("  pushed EFLAGS.IF", (sys.eflags >> 9) & 1, 1);
    pm_check_val("  EFLAGS.IF in the handler", (sys.eflags_in >> 9) & 1, 0);
    memset(&sys, 0, sizeof(sys));
    EXPECT_USER_OK("IF=1: int $0x82 (trap gate) keeps IF", "movl $3, %eax\n\tint $0x82\n\tcli");
    pm_check_val("  EFLAGS.IF in the handler", (sys.eflags_in >> 9) & 1, 1);
    __asm__ __volatile__("cli");
    pm_user_eflags = 0x2;
    memset(&sys, 0, sizeof(sys));
    EXPECT_USER_OK("NT=1 at ring 3: pushed EFLAGS has NT, the handler runs with NT=0", "pushfl\n\torl $0x4000, (%esp)\n\tpopfl\n\t"
                   "int $0x80\n\tpushfl\n\tandl $~0x4000, (%esp)\n\tpopfl");
    pm_check_val("  pushed EFLAGS.NT", (sys.eflags >> 14) & 1, 1);
    pm_check_val("  EFLAGS.NT in the handler", (sys.eflags_in >> 14) & 1, 0);

    rt_puts("-- int n from ring 3 through DPL 0 gates: #GP(n*8+2)\n");
    EXPECT_USER_FAULT("int $0x40 (DPL 0 gate)", PM_GP, 0x40 * 8 + 2, AT "int $0x40");
    EXPECT_USER_FAULT("int3 (DPL 0 gate)", PM_GP, 3 * 8 + 2, AT "int3");
    EXPECT_USER_FAULT("into with OF=1 (DPL 0 gate)", PM_GP, 4 * 8 + 2,
                      "movl $0x7fffffff, %eax\n\taddl $1, %eax\n\t" AT "into");
    pm_idt_stub(PM_BP, SYS_INTGATE32, 3);
    EXPECT_USER_FAULT("int3 (DPL 3 gate)", PM_BP, PM_NOERR, AT "int3");
    pm_check_val("  cs pushed", pm_last.cs, SEL_UCODE);
    pm_idt_stub(PM_BP, SYS_INTGATE32, 0);
    EXPECT_USER_FAULT("ud2 (exceptions ignore the gate DPL)", PM_UD, PM_NOERR, AT "ud2");
    pm_check_val("  stack switched, pushed SS", pm_last.stack_switched << 16 | pm_last.ss, 0x10000 | SEL_UDATA);
}

static void privileged(void)
{
    rt_puts("-- privileged instructions at ring 3: #GP(0) (SDM: Privileged Instructions)\n");
    EXPECT_USER_FAULT("hlt", PM_GP, 0, AT "hlt");
    EXPECT_USER_FAULT("cli (IOPL 0)", PM_GP, 0, AT "cli");
    EXPECT_USER_FAULT("sti (IOPL 0)", PM_GP, 0, AT "sti");
    EXPECT_USER_FAULT("mov %cr0, %eax", PM_GP, 0, AT "movl %cr0, %eax");
    EXPECT_USER_FAULT("mov %eax, %cr3", PM_GP, 0, "xorl %eax, %eax\n\t" AT "movl %eax, %cr3");
    EXPECT_USER_FAULT("mov %db7, %eax", PM_GP, 0, AT "movl %db7, %eax");
    EXPECT_USER_FAULT("lgdt", PM_GP, 0, AT "lgdt r");
    EXPECT_USER_FAULT("lidt", PM_GP, 0, AT "lidt r");
    EXPECT_USER_FAULT("ltr", PM_GP, 0, "movw $" PM_STR(SEL_TSS) ", %ax\n\t" AT "ltr %ax");
    EXPECT_USER_FAULT("clts", PM_GP, 0, AT "clts");
    EXPECT_USER_FAULT("invlpg", PM_GP, 0, AT "invlpg r");
    EXPECT_USER_FAULT("wbinvd", PM_GP, 0, AT "wbinvd");
    EXPECT_USER_FAULT("invd", PM_GP, 0, AT "invd");
    EXPECT_USER_FAULT("rdmsr", PM_GP, 0, "movl $0x10, %ecx\n\t" AT "rdmsr");
    EXPECT_USER_FAULT("wrmsr", PM_GP, 0, "movl $0x10, %ecx\n\t" AT "wrmsr");
    EXPECT_USER_OK("rdtsc (CR4.TSD=0)", AT "rdtsc");
    wr_cr4(rd_cr4() | 4);
    EXPECT_USER_FAULT("rdtsc (CR4.TSD=1)", PM_GP, 0, AT "rdtsc");
    EXPECT_OK("rdtsc at ring 0 (CR4.TSD=1)", AT "rdtsc");
    wr_cr4(rd_cr4() & ~4u);
    EXPECT_USER_FAULT("rdpmc (CR4.PCE=0)", PM_GP, 0, "xorl %ecx, %ecx\n\t" AT "rdpmc");
    pm_user_eflags = 0x2 | EFL_IOPL(3);
    EXPECT_USER_OK("cli; sti; cli with IOPL 3", "cli\n\tsti\n\tcli");
    EXPECT_USER_FAULT("hlt with IOPL 3 (still CPL 0 only)", PM_GP, 0, AT "hlt");
    pm_user_eflags = 0x2;
}

uint8_t io_val;
static void io_allow(int port, int allow)
{
    if (allow)
        pm_tss.iomap[port >> 3] &= ~(1 << (port & 7));
    else
        pm_tss.iomap[port >> 3] |= 1 << (port & 7);
}

static void io(void)
{
    rt_puts("-- I/O at ring 3: IOPL and the TSS I/O permission bitmap (SDM vol. 1: I/O Permission Bit Map)\n");
    pm_tss.t.iomap = sizeof(struct pm_tss);
    EXPECT_USER_FAULT("IOPL 0, all ports denied: inb $0x80", PM_GP, 0, AT "inb $0x80, %al");
    io_allow(0x3ff, 1);
    io_val = 0;
    EXPECT_USER_OK("port 0x3ff allowed: outb 0x5a (COM1 scratch), inb",
                   "movw $0x3ff, %dx\n\tmovb $0x5a, %al\n\toutb %al, %dx\n\tmovb $0, %al\n\t"
                   "inb %dx, %al\n\tmovb %al, io_val");
    pm_check_val("  read back", io_val, 0x5a);
    io_allow(0x80, 1);
    EXPECT_USER_OK("inb from 0x80 (allowed)", "inb $0x80, %al");
    EXPECT_USER_FAULT("inw from 0x80 (0x81 denied)", PM_GP, 0, AT "inw $0x80, %ax");
    EXPECT_USER_FAULT("inb from 0x81 (denied)", PM_GP, 0, AT "inb $0x81, %al");
    EXPECT_USER_FAULT("outb to 0x3fe (denied)", PM_GP, 0, "movw $0x3fe, %dx\n\t" AT "outb %al, %dx");
    EXPECT_USER_FAULT("insb from 0x3fe (denied)", PM_GP, 0,
                      "movw $0x3fe, %dx\n\tmovl $r, %edi\n\t" AT "insb");
    EXPECT_USER_OK("insb from 0x3ff (allowed)", "movw $0x3ff, %dx\n\tmovl $r, %edi\n\tinsb");
    pm_check_val("  stored", r[0] & 0xff, 0x5a);
    io_allow(0x81, 1);
    EXPECT_USER_OK("inw from 0x80 (0x80 and 0x81 allowed)", "inw $0x80, %ax");
    EXPECT_USER_FAULT("inl from 0x80 (0x82 denied)", PM_GP, 0, AT "inl $0x80, %eax");
    io_allow(0x80, 0);
    io_allow(0x81, 0);
    pm_tss.t.iomap = sizeof(pm_tss) + 0x100;
    EXPECT_USER_FAULT("I/O map base beyond the TSS limit: inb 0x3ff", PM_GP, 0,
                      "movw $0x3ff, %dx\n\t" AT "inb %dx, %al");
    pm_tss.t.iomap = sizeof(struct pm_tss);
    io_allow(0x3ff, 0);
    pm_user_eflags = 0x2 | EFL_IOPL(3);
    EXPECT_USER_OK("IOPL 3: inb $0x80 (denied in the bitmap)", "inb $0x80, %al");
    EXPECT_USER_OK("IOPL 3: outb/inb 0x3ff (denied in the bitmap)",
                   "movw $0x3ff, %dx\n\tmovb $0xa5, %al\n\toutb %al, %dx\n\t"
                   "movb $0, %al\n\tinb %dx, %al\n\tmovb %al, io_val");
    pm_check_val("  read back", io_val, 0xa5);
    pm_user_eflags = 0x2 | EFL_IOPL(2);
    EXPECT_USER_FAULT("IOPL 2 < CPL 3: inb $0x80 (denied in the bitmap)", PM_GP, 0, AT "inb $0x80, %al");
    pm_user_eflags = 0x2;
}

static void flags(void)
{
    rt_puts("-- pushf/popf at ring 3 (SDM: POPF)\n");
    memset(r, 0, sizeof(r));
    EXPECT_USER_OK("IOPL 0: popf of IF=1 IOPL=3 AC=1 DF=1 CF=1",
                   "pushl $0x43603\n\tpopfl\n\tpushfl\n\tpopl r\n\tcld");
    pm_check_val("  IF (unchanged)", (r[0] >> 9) & 1, 0);
    pm_check_val("  IOPL (unchanged)", (r[0] >> 12) & 3, 0);
    pm_check_val("  AC, DF, CF (changed)", r[0] & (EFL_AC | EFL_DF | EFL_CF), EFL_AC | EFL_DF | EFL_CF);
    pm_user_eflags = 0x2 | EFL_IOPL(3);
    EXPECT_USER_OK("IOPL 3: popf of IF=1 IOPL=0", "pushl $0x202\n\tpopfl\n\tpushfl\n\tpopl r\n\tcli");
    pm_check_val("  IF (changed: CPL <= IOPL)", (r[0] >> 9) & 1, 1);
    pm_check_val("  IOPL (unchanged: CPL > 0)", (r[0] >> 12) & 3, 3);
    pm_user_eflags = 0x2;
    EXPECT_OK("ring 0: popf of IOPL=3", "pushl $0x3002\n\tpopfl\n\tpushfl\n\tpopl r");
    pm_check_val("  IOPL", (r[0] >> 12) & 3, 3);
}

static void irets(void)
{
    rt_puts("-- iret (SDM: IRET)\n");
    memset(r, 0, sizeof(r));
    EXPECT_OK("iret to the same level (pops EIP, CS, EFLAGS)",
              "pushl $0x8d7\n\tpushl %cs\n\tpushl $1f\n\tmovl %esp, r\n\tiretl\n1:\t"
              "movl %esp, r+4\n\tpushfl\n\tpopl r+8");
    pm_check_val("  esp after - esp before", r[1] - r[0], 12);
    pm_check_val("  eflags loaded (CF PF AF ZF SF OF)", r[2], 0x8d7);
    EXPECT_OK("iret to ring 3 with FS=DPL 0 data, GS=DPL 3 data",
              "movw $" PM_STR(SEL_UDATA) ", %ax\n\tmovw %ax, %ds\n\tmovw %ax, %es\n\tmovw %ax, %gs\n\t"
              "movw $" PM_STR(SEL_KDATA) ", %ax\n\tmovw %ax, %fs\n\t"
              "pushl $" PM_STR(SEL_UDATA) "\n\tpushl $pm_ustack_top\n\tpushl $0x2\n\t"
              "pushl $" PM_STR(SEL_UCODE) "\n\tpushl $1f\n\tiretl\n1:\t"
              "movw %fs, %ax\n\tmovl %eax, r\n\tmovw %gs, %ax\n\tmovl %eax, r+4\n\t"
              "movl %esp, r+8\n\tint $" PM_STR(PM_VEC_RETURN));
    pm_check_val("  fs (nulled)", r[0] & 0xffff, 0);
    pm_check_val("  gs (kept)", r[1] & 0xffff, SEL_UDATA);
    pm_check_val("  esp - pm_ustack_top", r[2] - (uint32_t)pm_ustack_top, 0);
    EXPECT_USER_OK("ring 3: iret to ring 3 (same level)",
                   "pushfl\n\tpushl %cs\n\tpushl $1f\n\tiretl\n1:");
    EXPECT_USER_FAULT("ring 3: iret to ring 0 (RPL < CPL)", PM_GP, SEL_KCODE,
                      "pushl $0x2\n\tpushl $" PM_STR(SEL_KCODE) "\n\tpushl $1f\n\t" AT "iretl\n1:");
    EXPECT_FAULT("ring 0: iret to ring 3 with SS RPL 0", PM_GP, SEL_UDATA_RPL0,
                 "pushl $" PM_STR(SEL_UDATA_RPL0) "\n\tpushl $pm_ustack_top\n\tpushl $0x2\n\t"
                 "pushl $" PM_STR(SEL_UCODE) "\n\tpushl $1f\n\t" AT "iretl\n1:");
    EXPECT_FAULT("ring 0: iret to ring 3 with SS = DPL 0 data (RPL 3)", PM_GP, SEL_KDATA,
                 "pushl $" PM_STR(SEL_KDATA) "|3\n\tpushl $pm_ustack_top\n\tpushl $0x2\n\t"
                 "pushl $" PM_STR(SEL_UCODE) "\n\tpushl $1f\n\t" AT "iretl\n1:");
    EXPECT_FAULT("ring 0: iret to ring 3 with SS null", PM_GP, 0,
                 "pushl $3\n\tpushl $pm_ustack_top\n\tpushl $0x2\n\t"
                 "pushl $" PM_STR(SEL_UCODE) "\n\tpushl $1f\n\t" AT "iretl\n1:");
    pm_user_eflags = 0x2;
    EXPECT_USER_OK("ring 3 IOPL 0: iret with IF=1 IOPL=3 in the image",
                   "pushl $0x3202\n\tpushl %cs\n\tpushl $1f\n\tiretl\n1:\tpushfl\n\tpopl r");
    pm_check_val("  IF and IOPL unchanged", r[0] & (EFL_IF | EFL_IOPL(3)), 0);

    rt_puts("-- iret with NT=1: task return through the back link\n");
    memset(&spare_tss, 0, sizeof(spare_tss));
    pm_gdt_set(SEL_TSS_AVAIL, pm_tss_desc(&spare_tss, sizeof(spare_tss) - 1, ACC_P | SYS_TSS32));
    pm_tss.t.link = SEL_TSS_AVAIL;
    EXPECT_FAULT("NT=1, back link = an available (not busy) TSS", PM_TS, SEL_TSS_AVAIL,
                 "pushfl\n\torl $0x4000, (%esp)\n\tpopfl\n\tpushfl\n\tpushl %cs\n\tpushl $1f\n\t" AT "iretl\n1:");
    pm_tss.t.link = SEL_KDATA;
    EXPECT_FAULT("NT=1, back link = a data segment", PM_TS, SEL_KDATA,
                 "pushfl\n\torl $0x4000, (%esp)\n\tpopfl\n\tpushfl\n\tpushl %cs\n\tpushl $1f\n\t" AT "iretl\n1:");
    pm_tss.t.link = LDT_SEL(1, 0);
    EXPECT_FAULT("NT=1, back link with TI=1", PM_TS, LDT_SEL(1, 0),
                 "pushfl\n\torl $0x4000, (%esp)\n\tpopfl\n\tpushfl\n\tpushl %cs\n\tpushl $1f\n\t" AT "iretl\n1:");
    pm_tss.t.link = 0;
    EXPECT_USER_FAULT("ring 3: NT=1, back link null", PM_TS, 0,
                      "pushfl\n\torl $0x4000, (%esp)\n\tpopfl\n\tpushfl\n\tpushl %cs\n\tpushl $1f\n\t" AT "iretl\n1:");
}

int main(void)
{
    pm_init();
    outb(0x21, 0xff); /* mask the PICs: IF=1 at ring 3 must not take interrupts */
    outb(0xa1, 0xff);
    rt_puts("pm_rings: ring 3, system calls, privileged instructions, I/O permissions, popf, iret\n");
    enter_ring3();
    syscalls();
    privileged();
    io();
    flags();
    irets();
    rt_finish("pm_rings");
}
