/* pm_debug: single-step and debug registers (nestmon: guest-only).
 * TF single-step: a #DB with DR6.BS after each instruction, starting after
 * the instruction following the popf/iret that set TF and ending after the
 * popf that clears it; pushf shows TF; stepping over int n and its iret (the
 * handler is not stepped); int3 leaves DR6 alone; DR0 execution breakpoint
 * (fault, DR6.B0, resumed with RF); DR1 data breakpoints on write and on
 * read/write (traps, DR6.B1); DR0-DR3/DR6/DR7 read back, DR4/DR5 aliases
 * and #UD with CR4.DE.  Not tested: DR7.GD (QEMU does not implement it). */
#include "pm.h"

uint32_t var[2], r[8], tr_eflags;
static uint32_t int_eflags_in, int_eflags_pushed;

static int db_resume(struct pm_frame *f)
{
    (void)f;
    return PM_RESUME;
}
static int db_resume_rf(struct pm_frame *f)
{
    f->eflags |= EFL_RF;
    return PM_RESUME;
}
static int int_hook(struct pm_frame *f)
{
    int_eflags_in = pm_eflags();
    int_eflags_pushed = f->eflags;
    return PM_RESUME;
}

/* the #DBs logged inside the body [start, end] with their DR6 status bits,
 * one line */
static void show_trace(const char *what)
{
    int i, n = 0;
    rt_printf("%s:", what);
    for (i = 0; i < pm_nlog; i++) {
        const struct pm_trap *t = &pm_log[i];
        if (t->vector != PM_DB || t->eip < pm_recov.start || t->eip > pm_recov.end)
            continue;
        rt_putc(' ');
        pm_print_eip(t->eip);
        rt_printf("%s%s%s%s%s", t->dr6 & 1 ? "/B0" : "", t->dr6 & 2 ? "/B1" : "", t->dr6 & 4 ? "/B2" : "",
                  t->dr6 & 8 ? "/B3" : "", t->dr6 & 0x4000 ? "/BS" : "");
        n++;
    }
    rt_printf(" (%d)\n", n);
}

static int count_db(void)
{
    int i, n = 0;
    for (i = 0; i < pm_nlog; i++)
        n += pm_log[i].vector == PM_DB;
    return n;
}

static void single_step(void)
{
    rt_puts("-- TF single-step (SDM vol. 3 'Single-Step Exception Condition', 'Debug Exceptions')\n");
    pm_set_hook(PM_DB, db_resume);
    PM_TRY("pushfl\n\torl $0x100, (%esp)\n\tpopfl\n" AT "nop\n\tmovl $1, %eax\n\taddl %eax, %eax\n\t"
           "jmp 1f\n\tud2\n1:\tpushfl\n\tpopl tr_eflags\n\tpushfl\n\tandl $~0x100, (%esp)\n\tpopfl\n\tnop\n\tnop");
    pm_expect("popf TF=1; nop; mov; add; jmp; pushf; pop; pushf; and; popf TF=0; nop; nop", PM_NONE, 0);
    show_trace("  #DB at");
    pm_check_val("  #DB count", count_db(), 9);
    pm_check_val("  pushf while stepping: TF", (tr_eflags >> 8) & 1, 1);
    pm_check_val("  last #DB: pushed EFLAGS.TF (popf cleared it)", (pm_log[pm_nlog - 1].eflags >> 8) & 1, 0);
    pm_check_val("  first #DB: pushed EFLAGS.TF", (pm_log[0].eflags >> 8) & 1, 1);

    rt_puts("-- stepping a call and a ret run once before without TF (translated, in the lookup tables)\n");
    PM_TRY("xorl %ecx, %ecx\n"
           "1:\ttestl %ecx, %ecx\n\tjz 4f\n\t"
           "pushfl\n\torl $0x100, (%esp)\n\tpopfl\n"
           "4:\t" AT "call 2f\n\tnop\n\tnop\n\tincl %ecx\n\tcmpl $2, %ecx\n\tjb 1b\n\t"
           "pushfl\n\tandl $~0x100, (%esp)\n\tpopfl\n\tnop\n\tjmp 3f\n"
           "2:\tret\n"
           "3:");
    pm_expect("call/ret twice, the second time with TF=1", PM_NONE, 0);
    show_trace("  #DB at");

    rt_puts("-- stepping over int n and iret\n");
    pm_set_hook(0x83, int_hook);
    PM_TRY("pushfl\n\torl $0x100, (%esp)\n\tpopfl\n" AT "nop\n\tint $0x83\n\tnop\n\tnop\n\t"
           "pushfl\n\tandl $~0x100, (%esp)\n\tpopfl\n\tnop");
    pm_expect("popf TF=1; nop; int $0x83 (handler iret); nop; nop; pushf; and; popf TF=0; nop", PM_NONE, 0);
    /* only #DBs inside this body are listed: whether a #DB is also taken at
     * the handler's first instruction is left out */
    show_trace("  #DB at");
    pm_check_val("  EFLAGS.TF pushed by int", (int_eflags_pushed >> 8) & 1, 1);
    pm_check_val("  EFLAGS.TF in the handler", (int_eflags_in >> 8) & 1, 0);
    pm_set_hook(0x83, NULL);

    rt_puts("-- stepping ring 3 code entered with iret (TF in the iret image)\n");
    pm_user_eflags = 0x2 | EFL_TF;
    PM_USER_TRY(AT "nop\n\tmovl $2, %eax\n\tnop\n\tpushfl\n\tandl $~0x100, (%esp)\n\tpopfl\n\tnop");
    pm_user_eflags = 0x2;
    pm_expect("iret TF=1 to ring 3; nop; mov; nop; pushf; and; popf TF=0; nop", PM_NONE, 0);
    show_trace("  #DB at");
    pm_check_val("  first #DB from ring 3: pushed CS, stack switched", pm_log[0].cs << 16 | pm_log[0].stack_switched,
                 SEL_UCODE << 16 | 1);

    EXPECT_FAULT("int3: #BP, DR6 unchanged", PM_BP, PM_NOERR, "movl $0, %eax\n\tmovl %eax, %db6\n\t" AT "int3");
    pm_check_val("  DR6", rd_dr6(), 0xffff0ff0);
}

static void breakpoints(void)
{
    extern char bp_target[], bp_user[];
    rt_puts("-- DR0 instruction breakpoint (SDM 'Instruction-Breakpoint Exception Condition', RF)\n");
    pm_set_hook(PM_DB, db_resume_rf);
    wr_dr0((uint32_t)bp_target);
    wr_dr7(0x1); /* L0, R/W0 = 00 (execute), LEN0 = 00 */
    var[0] = 0;
    PM_TRY("movl $0, %eax\n\tnop\n.globl bp_target\nbp_target:\n" AT "incl %eax\n\tincl %eax\n\tmovl %eax, var");
    pm_expect("DR0 = bp_target (incl), L0: handler sets RF and resumes", PM_NONE, 0);
    pm_check_val("  #DB count", count_db(), 1);
    rt_printf("  #DB at ");
    pm_print_eip(pm_log[0].eip);
    rt_printf(" (a fault: before the instruction), DR6=%08x\n", pm_log[0].dr6);
    pm_check_val("  DR6.B0", pm_log[0].dr6 & 0xf, 1);
    pm_check_val("  the instruction ran once after the resume", var[0], 2);
    wr_dr7(0);
    PM_TRY("movl $0, %eax\n\tnop\n\tjmp bp_target2\n\tud2\nbp_target2:\n\tincl %eax");
    pm_expect("DR7 = 0: no breakpoint", PM_NONE, 0);
    wr_dr0((uint32_t)bp_user);
    wr_dr7(0x1);
    PM_USER_TRY("nop\n.globl bp_user\nbp_user:\n" AT "nop\n\tnop");
    pm_expect("ring 3: DR0 = bp_user", PM_NONE, 0);
    pm_check_val("  #DB count", count_db(), 1);
    rt_printf("  #DB at ");
    pm_print_eip(pm_log[0].eip);
    rt_printf(", cs=%04x\n", pm_log[0].cs);
    wr_dr7(0);

    rt_puts("-- DR1 data breakpoints (traps after the access)\n");
    pm_set_hook(PM_DB, db_resume);
    wr_dr1((uint32_t)var);
    wr_dr7(0x4 | (1 << 20) | (3 << 22)); /* L1, R/W1 = 01 (write), LEN1 = 11 (4 bytes) */
    PM_TRY("movl var, %eax\n\t" AT "movl $5, var\n\tnop\n\tmovl $7, var+4\n\tmovb $9, var+3\n\tnop");
    pm_expect("write watch on var: read var; write var; write var+4; write byte var+3", PM_NONE, 0);
    show_trace("  #DB at");
    pm_check_val("  DR6.B1 of the first", pm_log[0].dr6 & 0xf, 2);
    wr_dr7(0x4 | (3 << 20) | (3 << 22)); /* R/W1 = 11: read or write */
    PM_TRY(AT "movl var, %eax\n\tnop\n\tmovl var+4, %eax\n\tnop");
    pm_expect("read/write watch on var: read var; read var+4", PM_NONE, 0);
    show_trace("  #DB at");
    wr_dr7(0);
    pm_set_hook(PM_DB, NULL);
}

static void registers(void)
{
    rt_puts("-- DR0-DR3, DR6, DR7 (SDM 'Debug Registers')\n");
    wr_dr0(0x11111110);
    wr_dr1(0x22222220);
    wr_dr2(0x33333330);
    wr_dr3(0x44444440);
    pm_check_val("DR0", rd_dr0(), 0x11111110);
    pm_check_val("DR1", rd_dr1(), 0x22222220);
    pm_check_val("DR2", rd_dr2(), 0x33333330);
    pm_check_val("DR3", rd_dr3(), 0x44444440);
    wr_dr6(0);
    pm_check_val("DR6 after writing 0 (reserved bits read 1)", rd_dr6(), 0xffff0ff0);
    wr_dr7(0);
    pm_check_val("DR7 after writing 0 (bit 10 reads 1)", rd_dr7(), 0x400);
    wr_dr7(0x00000000 | (1 << 16) | (3 << 18) | (1 << 24) | (1 << 26) | 0x0);
    pm_check_val("DR7 with R/W and LEN fields, no enable bits", rd_dr7(), 0x050d0400);
    wr_dr7(0);
    r[0] = 0;
    EXPECT_OK("mov %dr4, %eax with CR4.DE=0 (alias of DR6)", ".byte 0x0f, 0x21, 0xe0\n\tmovl %eax, r");
    pm_check_val("  value", r[0], rd_dr6());
    EXPECT_OK("mov %dr5, %eax with CR4.DE=0 (alias of DR7)", ".byte 0x0f, 0x21, 0xe8\n\tmovl %eax, r");
    pm_check_val("  value", r[0], rd_dr7());
    wr_cr4(rd_cr4() | 8);
    EXPECT_FAULT("mov %dr4, %eax with CR4.DE=1", PM_UD, PM_NOERR, AT ".byte 0x0f, 0x21, 0xe0");
    EXPECT_FAULT("mov %eax, %dr5 with CR4.DE=1", PM_UD, PM_NOERR, AT ".byte 0x0f, 0x23, 0xe8");
    wr_cr4(rd_cr4() & ~8u);
    wr_dr0(0);
    wr_dr1(0);
    wr_dr2(0);
    wr_dr3(0);
}

int main(void)
{
    pm_init();
    rt_puts("pm_debug: single-step, int3, instruction and data breakpoints, debug registers\n");
    single_step();
    breakpoints();
    registers();
    rt_finish("pm_debug");
}
