/* pm_tasks: hardware task switching (nestmon: guest-only).
 * jmp to a TSS (busy bits, back link and NT unchanged, registers and LDTR
 * loaded from the new TSS, the old task's state saved in its TSS, CR0.TS),
 * call to a TSS and iret back (NT, back link), int through a task gate in
 * the IDT (from ring 0 and ring 3) and call through one in the GDT, the
 * checks made before the switch (busy, not present, DPL) and an exception
 * after the commit point (delivered in the new task), CR3 loaded from the
 * new TSS. */
#include "pm.h"

#define SEL_TSS_B 0x40
#define SEL_TSS_C 0x48
#define SEL_TSS_D 0x50
#define SEL_GATE_C 0x58     /* task gate (GDT) -> C, DPL 0 */
#define SEL_NP 0x60         /* data segment, not present */
#define SEL_TSS_NP 0x68     /* TSS, not present */
#define SEL_LDT2 0x70       /* a second LDT */
#define SEL_GATE_C3 0x78    /* task gate (GDT) -> C, DPL 3 */
#define SEL_GATE_A 0x80     /* task gate (GDT) -> the main TSS (busy) */
#define VEC_TASK 0x60       /* IDT task gate -> C, DPL 3 */
#define VEC_TASK0 0x61      /* IDT task gate -> C, DPL 0 */

struct pm_tss tss_b, tss_c, tss_d;
uint8_t stack_b[4096] __attribute__((aligned(16)));
uint8_t stack_c[4096] __attribute__((aligned(16)));
uint8_t stack_d[4096] __attribute__((aligned(16)));
uint64_t ldt2[4] __attribute__((aligned(8)));
uint8_t page_x[4096] __attribute__((aligned(4096)));
uint8_t page_y[4096] __attribute__((aligned(4096)));
uint32_t pd2[1024] __attribute__((aligned(4096)));
uint32_t pt2[1024] __attribute__((aligned(4096)));

uint32_t r[16];       /* the main task's registers after a switch back */
uint32_t tb_regs[6];  /* task B at entry: eax, ebx, esi, esp, eflags, ds */
struct {
    uint32_t ran, tr, ldtr, cr0, cr3, page_x, a_type, b_type, a_eflags;
    struct pm_tss a; /* the main TSS as task B saw it */
} tb;
struct {
    uint32_t ran, eflags, tr, link, a_type, c_type, cs, ss, a_cs, a_ss, a_esp, a_eip;
} tc;

static uint32_t type_of(uint16_t sel) { return (uint32_t)(pm_gdt[sel >> 3] >> 40) & 0xf; }

void task_b_body(void)
{
    __asm__ __volatile__("str %0" : "=r"(tb.tr));
    __asm__ __volatile__("sldt %0" : "=r"(tb.ldtr));
    tb.cr0 = rd_cr0();
    tb.cr3 = rd_cr3();
    tb.page_x = *(volatile uint32_t *)page_x;
    tb.a_type = type_of(SEL_TSS);
    tb.b_type = type_of(SEL_TSS_B);
    tb.a = pm_tss.t;
    tb.ran++;
}

void task_c_body(void)
{
    uint16_t cs, ss;
    __asm__ __volatile__("str %0" : "=r"(tc.tr));
    __asm__ __volatile__("movw %%cs, %0; movw %%ss, %1" : "=r"(cs), "=r"(ss));
    tc.eflags = pm_eflags();
    tc.link = tss_c.link;
    tc.a_type = type_of(SEL_TSS);
    tc.c_type = type_of(SEL_TSS_C);
    tc.cs = cs;
    tc.ss = ss;
    tc.a_cs = pm_tss.t.cs;
    tc.a_ss = pm_tss.t.ss;
    tc.a_esp = pm_tss.t.esp;
    tc.a_eip = pm_tss.t.eip;
    tc.ran++;
}

/* Task B records the registers its TSS gave it, then jumps back to the
 * main task; task C returns with iret (NT=1). */
__asm__(".text\n"
        "task_b_entry:\n\t"
        "movl %eax, tb_regs\n\tmovl %ebx, tb_regs+4\n\tmovl %esi, tb_regs+8\n\t"
        "movl %esp, tb_regs+12\n\tpushfl\n\tpopl tb_regs+16\n\tmovw %ds, %ax\n\tmovl %eax, tb_regs+20\n\t"
        "call task_b_body\n\t"
        "ljmp $" PM_STR(SEL_TSS) ", $0\n"
        "task_b_after:\n\t"
        "jmp task_b_entry\n"
        "task_c_entry:\n\t"
        "call task_c_body\n\t"
        "iretl\n\t"
        "jmp task_c_entry\n"
        "task_d_entry:\n\t"
        "ud2\n");
extern void task_b_entry(void), task_c_entry(void), task_d_entry(void);
extern char task_b_after[];

/* the main task's registers around a switch: set, switch, store */
#define SET_REGS                                                            \
    "pushl $0x8c3\n\tpopfl\n\t"                                             \
    "movl $0x11111111, %eax\n\tmovl $0x22222222, %ecx\n\tmovl $0x33333333, %edx\n\t" \
    "movl $0x44444444, %ebx\n\tmovl $0x55555555, %ebp\n\tmovl $0x66666666, %esi\n\t" \
    "movl $0x77777777, %edi\n\tmovl %esp, r+32\n\t"
#define STORE_REGS                                                          \
    "movl %eax, r\n\tmovl %ecx, r+4\n\tmovl %edx, r+8\n\tmovl %ebx, r+12\n\t" \
    "movl %ebp, r+16\n\tmovl %esi, r+20\n\tmovl %edi, r+24\n\tmovl %esp, r+28\n\t" \
    "pushfl\n\tpopl r+36"

static void init_tasks(void)
{
    pm_tss_init(&tss_b, task_b_entry, stack_b + sizeof(stack_b));
    tss_b.eax = 0xb000000a;
    tss_b.ebx = 0xb000000b;
    tss_b.esi = 0xb0000051;
    tss_b.eflags = 0x2 | EFL_NT | EFL_CF; /* a jmp loads NT from the image */
    tss_b.ldt = SEL_LDT2;
    pm_tss_init(&tss_c, task_c_entry, stack_c + sizeof(stack_c));
    tss_c.link = 0x1234; /* overwritten by call/int */
    pm_tss_init(&tss_d, task_d_entry, stack_d + sizeof(stack_d));
    tss_d.ds = SEL_NP;
    pm_gdt_set(SEL_TSS_B, pm_tss_desc(&tss_b, sizeof(tss_b) - 1, ACC_P | SYS_TSS32));
    pm_gdt_set(SEL_TSS_C, pm_tss_desc(&tss_c, sizeof(tss_c) - 1, ACC_P | SYS_TSS32));
    pm_gdt_set(SEL_TSS_D, pm_tss_desc(&tss_d, sizeof(tss_d) - 1, ACC_P | SYS_TSS32));
    memset(&tb, 0, sizeof(tb));
    memset(&tc, 0, sizeof(tc));
    memset(r, 0, sizeof(r));
    memset(tb_regs, 0, sizeof(tb_regs));
}

/* after an exception in a new task: TR = that task; make the main task
 * current again */
static void reset_tr(void)
{
    uint16_t tr = pm_str();
    pm_gdt[tr >> 3] &= ~(2ull << 40);
    pm_gdt[SEL_TSS >> 3] &= ~(2ull << 40);
    __asm__ __volatile__("ltr %w0" : : "r"(SEL_TSS));
}

static void jmp_tss(void)
{
    extern char task_a_resume[];
    rt_puts("-- jmp to a TSS (SDM: Task Switching, table 'Effect of a Task Switch on Busy Flag, NT Flag, ...')\n");
    init_tasks();
    pm_check_val("  before: main TSS busy", type_of(SEL_TSS), SYS_TSS32_BUSY);
    pm_check_val("  before: B available", type_of(SEL_TSS_B), SYS_TSS32);
    EXPECT_OK("ljmp $0x40 (TSS B); B jumps back with ljmp $0x28",
              SET_REGS "ljmp $" PM_STR(SEL_TSS_B) ", $0\n"
              ".globl task_a_resume\ntask_a_resume:\n\t" STORE_REGS);
    pm_check_val("  B ran", tb.ran, 1);
    pm_check_val("  in B: TR", tb.tr & 0xffff, SEL_TSS_B);
    pm_check_val("  in B: LDTR from B's TSS", tb.ldtr & 0xffff, SEL_LDT2);
    pm_check_val("  in B: CR0.TS set by the switch", (tb.cr0 >> 3) & 1, 1);
    pm_check_val("  in B: main TSS available (jmp clears the old busy bit)", tb.a_type, SYS_TSS32);
    pm_check_val("  in B: B busy", tb.b_type, SYS_TSS32_BUSY);
    pm_check_val("  in B: eax from the TSS", tb_regs[0], 0xb000000a);
    pm_check_val("  in B: ebx", tb_regs[1], 0xb000000b);
    pm_check_val("  in B: esi", tb_regs[2], 0xb0000051);
    pm_check_val("  in B: esp = stack top", tb_regs[3] - (uint32_t)(stack_b + sizeof(stack_b)), 0);
    pm_check_val("  in B: eflags (NT and CF from the image)", tb_regs[4], 0x2 | EFL_NT | EFL_CF);
    pm_check_val("  in B: ds", tb_regs[5] & 0xffff, SEL_KDATA);
    pm_check_val("  B's back link (jmp leaves it)", tss_b.link, 0);
    pm_check_val("  main TSS saved: eip - task_a_resume", tb.a.eip - (uint32_t)task_a_resume, 0);
    pm_check_val("  main TSS saved: eax", tb.a.eax, 0x11111111);
    pm_check_val("  main TSS saved: ecx", tb.a.ecx, 0x22222222);
    pm_check_val("  main TSS saved: edx", tb.a.edx, 0x33333333);
    pm_check_val("  main TSS saved: ebx", tb.a.ebx, 0x44444444);
    pm_check_val("  main TSS saved: ebp", tb.a.ebp, 0x55555555);
    pm_check_val("  main TSS saved: esi", tb.a.esi, 0x66666666);
    pm_check_val("  main TSS saved: edi", tb.a.edi, 0x77777777);
    pm_check_val("  main TSS saved: esp", tb.a.esp - r[8], 0);
    pm_check_val("  main TSS saved: cs, ss", (uint32_t)tb.a.cs << 16 | tb.a.ss, SEL_KCODE << 16 | SEL_KDATA);
    pm_check_val("  main TSS saved: ds, es", (uint32_t)tb.a.ds << 16 | tb.a.es, SEL_KDATA << 16 | SEL_KDATA);
    pm_check_val("  main TSS saved: eflags", tb.a.eflags, 0x8c3);
    pm_check_val("  back in main: eax..edi restored",
                 (r[0] == 0x11111111) + (r[1] == 0x22222222) + (r[2] == 0x33333333) + (r[3] == 0x44444444) +
                 (r[4] == 0x55555555) + (r[5] == 0x66666666) + (r[6] == 0x77777777), 7);
    pm_check_val("  back in main: esp", r[7] - r[8], 0);
    pm_check_val("  back in main: eflags", r[9], 0x8c3);
    pm_check_val("  back in main: TR", pm_str(), SEL_TSS);
    pm_check_val("  back in main: main busy", type_of(SEL_TSS), SYS_TSS32_BUSY);
    pm_check_val("  back in main: B available", type_of(SEL_TSS_B), SYS_TSS32);
    pm_check_val("  back in main: LDTR from the main TSS", ({ uint32_t v; __asm__ __volatile__("sldt %0" : "=r"(v)); v; }), SEL_LDT);
    pm_check_val("  back in main: CR0.TS", (rd_cr0() >> 3) & 1, 1);
    __asm__ __volatile__("clts");
    pm_check_val("  B's TSS saved: eip - the instruction after its ljmp", tss_b.eip - (uint32_t)task_b_after, 0);
    pm_check_val("  B's TSS saved: NT (a jmp leaves the old task's NT)", (tss_b.eflags >> 14) & 1, 1);
}

static void call_tss(void)
{
    rt_puts("-- call to a TSS, iret back\n");
    init_tasks();
    EXPECT_OK("lcall $0x48 (TSS C); C returns with iret", SET_REGS "lcall $" PM_STR(SEL_TSS_C) ", $0\n\t" STORE_REGS);
    pm_check_val("  C ran", tc.ran, 1);
    pm_check_val("  in C: TR", tc.tr & 0xffff, SEL_TSS_C);
    pm_check_val("  in C: NT", (tc.eflags >> 14) & 1, 1);
    pm_check_val("  in C: back link = main TSS", tc.link, SEL_TSS);
    pm_check_val("  in C: main TSS still busy", tc.a_type, SYS_TSS32_BUSY);
    pm_check_val("  in C: C busy", tc.c_type, SYS_TSS32_BUSY);
    pm_check_val("  back in main: registers restored",
                 (r[0] == 0x11111111) + (r[1] == 0x22222222) + (r[6] == 0x77777777) + (r[7] == r[8]), 4);
    pm_check_val("  back in main: NT (the main task's own, 0)", (r[9] >> 14) & 1, 0);
    pm_check_val("  C available again", type_of(SEL_TSS_C), SYS_TSS32);
    pm_check_val("  C's saved EFLAGS: NT cleared by iret", (tss_c.eflags >> 14) & 1, 0);
    pm_check_val("  C's back link kept", tss_c.link, SEL_TSS);
    __asm__ __volatile__("clts");

    init_tasks();
    EXPECT_OK("lcall $0x58 (task gate in the GDT -> C)", "lcall $" PM_STR(SEL_GATE_C) ", $0");
    pm_check_val("  C ran, TR in C", tc.ran << 16 | (tc.tr & 0xffff), 0x10000 | SEL_TSS_C);
    pm_check_val("  in C: back link", tc.link, SEL_TSS);
    __asm__ __volatile__("clts");
}

static void int_task_gate(void)
{
    rt_puts("-- int through a task gate in the IDT\n");
    pm_idt_set(VEC_TASK, pm_gate_desc(SEL_TSS_C, 0, ACC_P | DPL(3) | SYS_TASKGATE, 0));
    pm_idt_set(VEC_TASK0, pm_gate_desc(SEL_TSS_C, 0, ACC_P | DPL(0) | SYS_TASKGATE, 0));
    init_tasks();
    EXPECT_OK("ring 0: int $0x60", "int $0x60");
    pm_check_val("  C ran, TR", tc.ran << 16 | (tc.tr & 0xffff), 0x10000 | SEL_TSS_C);
    pm_check_val("  in C: NT, back link", (tc.eflags >> 14 & 1) << 16 | tc.link, 0x10000 | SEL_TSS);
    pm_check_val("  in C: cs, ss from C's TSS", tc.cs << 16 | tc.ss, SEL_KCODE << 16 | SEL_KDATA);
    __asm__ __volatile__("clts");
    init_tasks();
    memset(r, 0, sizeof(r));
    EXPECT_USER_OK("ring 3: int $0x60 (DPL 3 task gate), iret back to ring 3",
                   "movl %esp, r\n\tint $0x60\n9:\tmovl %esp, r+4\n\tmovw %cs, %ax\n\tmovl %eax, r+8\n\t"
                   "movl $9b, r+12");
    pm_check_val("  in C: CPL 0 (cs from C's TSS)", tc.cs, SEL_KCODE);
    pm_check_val("  main TSS saved cs, ss (ring 3)", tc.a_cs << 16 | tc.a_ss, SEL_UCODE << 16 | SEL_UDATA);
    pm_check_val("  main TSS saved esp = ring 3 esp (nothing pushed)", tc.a_esp - r[0], 0);
    pm_check_val("  main TSS saved eip = after the int", tc.a_eip - r[3], 0);
    pm_check_val("  back at ring 3: cs", r[2] & 0xffff, SEL_UCODE);
    pm_check_val("  back at ring 3: esp", r[1] - r[0], 0);
    __asm__ __volatile__("clts");
    init_tasks();
    EXPECT_USER_FAULT("ring 3: int $0x61 (DPL 0 task gate)", PM_GP, VEC_TASK0 * 8 + 2, AT "int $0x61");
    pm_check_val("  C did not run", tc.ran, 0);
}

static void checks(void)
{
    rt_puts("-- checks before the switch (SDM: JMP/CALL task switch operation, table 'Exception Conditions Checked During a Task Switch')\n");
    init_tasks();
    EXPECT_FAULT("ljmp to the running (busy) task", PM_GP, SEL_TSS, AT "ljmp $" PM_STR(SEL_TSS) ", $0");
    EXPECT_FAULT("lcall to the running (busy) task", PM_GP, SEL_TSS, AT "lcall $" PM_STR(SEL_TSS) ", $0");
    EXPECT_FAULT("lcall through a task gate to the busy task", PM_GP, SEL_TSS,
                 AT "lcall $" PM_STR(SEL_GATE_A) ", $0");
    pm_gdt[SEL_TSS_B >> 3] |= 2ull << 40;
    EXPECT_FAULT("ljmp to B marked busy", PM_GP, SEL_TSS_B, AT "ljmp $" PM_STR(SEL_TSS_B) ", $0");
    pm_gdt[SEL_TSS_B >> 3] &= ~(2ull << 40);
    EXPECT_FAULT("ljmp to a not-present TSS", PM_NP, SEL_TSS_NP, AT "ljmp $" PM_STR(SEL_TSS_NP) ", $0");
    EXPECT_USER_FAULT("ring 3: ljmp to a DPL 0 TSS", PM_GP, SEL_TSS_B, AT "ljmp $" PM_STR(SEL_TSS_B) ", $0");
    EXPECT_USER_FAULT("ring 3: lcall through a DPL 0 task gate", PM_GP, SEL_GATE_C,
                      AT "lcall $" PM_STR(SEL_GATE_C) ", $0");
    EXPECT_USER_OK("ring 3: lcall through a DPL 3 task gate (TSS DPL 0 not checked)",
                   "lcall $" PM_STR(SEL_GATE_C3) ", $0");
    pm_check_val("  C ran", tc.ran, 1);
    __asm__ __volatile__("clts");
    pm_check_val("  B not run by any of these", tb.ran, 0);

    rt_puts("-- an exception after the commit point: D's TSS has DS = a not-present segment\n");
    init_tasks();
    /* SDM: handled in the new task at its first instruction; QEMU pushes
     * another EIP, so the EIP is not printed */
    PM_TRY("ljmp $" PM_STR(SEL_TSS_D) ", $0");
    pm_hide_eip = 1;
    pm_expect("ljmp $0x50 (TSS D)", PM_NP, SEL_NP);
    rt_printf("  delivered in task D: tr=%04x cs=%04x esp=stack_d+%u\n", pm_str(), pm_last.cs,
              pm_last.esp - (uint32_t)stack_d);
    pm_check_val("  TR = D", pm_str(), SEL_TSS_D);
    pm_check_val("  main TSS available, D busy", type_of(SEL_TSS) << 16 | type_of(SEL_TSS_D),
                 SYS_TSS32 << 16 | SYS_TSS32_BUSY);
    reset_tr();
    __asm__ __volatile__("clts");
    pm_check_val("  TR reset to the main TSS", pm_str(), SEL_TSS);
}

static void cr3_switch(void)
{
    rt_puts("-- CR3 from the new TSS (paging on)\n");
    pm_paging_on();
    memset(page_x, 0x11, sizeof(page_x));
    memset(page_y, 0x22, sizeof(page_y));
    memcpy(pd2, pm_pd, sizeof(pd2));
    memcpy(pt2, pm_pt[(uint32_t)page_x >> 22], sizeof(pt2));
    pt2[((uint32_t)page_x >> 12) & 1023] = (uint32_t)page_y | PTE_P | PTE_W | PTE_U;
    pd2[(uint32_t)page_x >> 22] = (uint32_t)pt2 | PTE_P | PTE_W | PTE_U;
    init_tasks();
    tss_b.cr3 = (uint32_t)pd2;
    pm_sync_cr3();
    EXPECT_OK("ljmp to B whose TSS.CR3 maps page_x to page_y", "ljmp $" PM_STR(SEL_TSS_B) ", $0");
    pm_check_val("  in B: CR3 = pd2", tb.cr3 - (uint32_t)pd2, 0);
    pm_check_val("  in B: page_x reads", tb.page_x, 0x22222222);
    pm_check_val("  back in main: CR3 = pm_pd", rd_cr3() - (uint32_t)pm_pd, 0);
    pm_check_val("  back in main: page_x reads", *(volatile uint32_t *)page_x, 0x11111111);
    __asm__ __volatile__("clts");
    pm_paging_off();
}

int main(void)
{
    pm_init();
    rt_puts("pm_tasks: task switches by jmp, call, int and task gates; busy bits, back links, saved state\n");
    pm_gdt_set(SEL_GATE_C, pm_gate_desc(SEL_TSS_C, 0, ACC_P | SYS_TASKGATE, 0));
    pm_gdt_set(SEL_GATE_C3, pm_gate_desc(SEL_TSS_C, 0, ACC_P | DPL(3) | SYS_TASKGATE, 0));
    pm_gdt_set(SEL_GATE_A, pm_gate_desc(SEL_TSS, 0, ACC_P | SYS_TASKGATE, 0));
    pm_gdt_set(SEL_NP, pm_seg_desc(0, 0xfffff, ACC_DATA_RW & ~ACC_P, FL_G | FL_DB));
    pm_gdt_set(SEL_TSS_NP, pm_tss_desc(&tss_d, sizeof(tss_d) - 1, SYS_TSS32));
    pm_gdt_set(SEL_LDT2, pm_seg_desc((uint32_t)ldt2, sizeof(ldt2) - 1, ACC_P | SYS_LDT, 0));
    jmp_tss();
    call_tss();
    int_task_gate();
    checks();
    cr3_switch();
    rt_finish("pm_tasks");
}
