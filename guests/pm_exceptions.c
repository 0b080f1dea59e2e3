/* pm_exceptions: the exceptions the CPU raises, their error codes, and
 * whether the saved EIP is the faulting instruction (fault) or the next one
 * (trap); ESP-relative push/pop and faults that must leave ESP unchanged;
 * exceptions during the delivery of another one (benign/contributory/page
 * fault classes, SDM vol. 3 table 6-5), #DF through a task gate.
 * (nestmon: guest-only) */
#include "pm.h"

#define SEL_NPDATA 0x40   /* data segment, not present */
#define SEL_SHORTTSS 0x48 /* 32-bit TSS with limit 0x60 (< 0x67) */
#define SEL_DATA_AS_CODE 0x50

uint8_t pf_page[4096] __attribute__((aligned(4096)));
uint8_t pf_stack[2][4096] __attribute__((aligned(4096)));
uint8_t ro_page[4096] __attribute__((aligned(4096)));
uint32_t bounds[2] = { 10, 20 };
uint32_t saved_esp, result, saved_flags;
uint16_t fpu_cw_zm_unmasked = 0x037b; /* default 0x037f with ZM (bit 2) clear */
float zero_f = 0.0f;
uint8_t zero_byte = 0;
struct pm_tss short_tss;
struct {
    uint16_t pad, limit;
    uint32_t base;
} __attribute__((packed, aligned(4))) small_idtr, full_idtr;

static void gate_absent(int v) { pm_idt[v] &= ~((uint64_t)ACC_P << 40); }
static void gate_restore(int v) { pm_idt_stub(v, SYS_INTGATE32, 0); }

/* #PF and the faulting address (CR2) */
static void expect_pf(const char *what, int err)
{
    pm_expect_begin(what, PM_PF, err);
    if (pm_last.vector == PM_PF) {
        rt_puts(" cr2=");
        pm_print_addr(pm_last.cr2);
    }
    pm_end();
}
#define EXPECT_PF(what, err, body)                                          \
    do {                                                                    \
        PM_TRY(body);                                                       \
        expect_pf(what, err);                                               \
    } while (0)
#define EXPECT_USER_PF(what, err, body)                                     \
    do {                                                                    \
        PM_USER_TRY(body);                                                  \
        expect_pf(what, err);                                               \
    } while (0)

static void faults_and_traps(void)
{
    rt_puts("-- faults and traps\n");
    EXPECT_FAULT("div by zero", PM_DE, PM_NOERR,
                 "movl $1, %eax\n\txorl %edx, %edx\n\txorl %ecx, %ecx\n\t" AT "divl %ecx");
    EXPECT_FAULT("idiv -2^31 / -1", PM_DE, PM_NOERR,
                 "movl $0x80000000, %eax\n\tmovl $-1, %edx\n\tmovl $-1, %ecx\n\t" AT "idivl %ecx");
    EXPECT_FAULT("div by zero, byte divisor in memory", PM_DE, PM_NOERR,
                 "movl $1, %eax\n\t" AT "divb zero_byte");
    EXPECT_FAULT("div by zero, divisor AH, CF set before", PM_DE, PM_NOERR,
                 "movl $0x0005, %eax\n\tstc\n\t" AT "divb %ah");
    pm_check_val("  EFLAGS.CF in the #DE frame", pm_last.eflags & 1, 1);
    EXPECT_FAULT("div 8-bit quotient 0x100", PM_DE, PM_NOERR,
                 "movw $0x1000, %ax\n\tmovb $0x10, %cl\n\t" AT "divb %cl");
    EXPECT_FAULT("int3", PM_BP, PM_NOERR, AT "int3");
    EXPECT_FAULT("int $3 (cd 03)", PM_BP, PM_NOERR, AT ".byte 0xcd, 0x03");
    EXPECT_FAULT("into, OF=1", PM_OF, PM_NOERR,
                 "movl $0x7fffffff, %eax\n\taddl $1, %eax\n\t" AT "into");
    EXPECT_OK("into, OF=0", "xorl %eax, %eax\n\t" AT "into");
    EXPECT_FAULT("bound, below", PM_BR, PM_NOERR, "movl $9, %eax\n\t" AT "boundl %eax, bounds");
    EXPECT_FAULT("bound, above", PM_BR, PM_NOERR, "movl $21, %eax\n\t" AT "boundl %eax, bounds");
    EXPECT_OK("bound, at both ends",
              "movl $10, %eax\n\tboundl %eax, bounds\n\tmovl $20, %eax\n\tboundl %eax, bounds");
    EXPECT_FAULT("ud2", PM_UD, PM_NOERR, AT "ud2");
    EXPECT_FAULT("lock add %eax, %eax (register destination)", PM_UD, PM_NOERR,
                 AT ".byte 0xf0, 0x01, 0xc0");
    EXPECT_FAULT("mov %cr1, %eax", PM_UD, PM_NOERR, AT ".byte 0x0f, 0x20, 0xc8");
    EXPECT_FAULT("fld1 with CR0.TS", PM_NM, PM_NOERR,
                 "movl %cr0, %eax\n\torl $8, %eax\n\tmovl %eax, %cr0\n\t" AT "fld1");
    __asm__ __volatile__("clts");
    EXPECT_FAULT("fwait with CR0.TS|MP", PM_NM, PM_NOERR,
                 "movl %cr0, %eax\n\torl $8, %eax\n\tmovl %eax, %cr0\n\t" AT "fwait");
    __asm__ __volatile__("clts");
    EXPECT_OK("fld1 after clts", "fld1\n\tfstp %st(0)");
    EXPECT_FAULT("unmasked x87 #Z, then fwait", PM_MF, PM_NOERR,
                 "fninit\n\tfldcw fpu_cw_zm_unmasked\n\tfld1\n\t"
                 "fdivs zero_f\n\tnop\n\t" AT "fwait");
    __asm__ __volatile__("fnclex; fninit");
}

static void selector_faults(void)
{
    rt_puts("-- selector faults\n");
    pm_gdt_set(SEL_NPDATA, pm_seg_desc(0, 0xfffff, ACC_DATA_RW & ~ACC_P, FL_G | FL_DB));
    EXPECT_FAULT("ds <- not-present data", PM_NP, SEL_NPDATA, LOAD_SEG(ds, SEL_NPDATA));
    EXPECT_FAULT("ss <- not-present data", PM_SS, SEL_NPDATA, LOAD_SEG(ss, SEL_NPDATA));
    EXPECT_FAULT("ss <- null", PM_GP, 0, LOAD_SEG(ss, 0));
    EXPECT_FAULT("ss <- RPL 3 selector at CPL 0", PM_GP, 0x20, LOAD_SEG(ss, SEL_UDATA));
    EXPECT_FAULT("ds <- beyond the GDT limit", PM_GP, 0x200, LOAD_SEG(ds, 0x200));
    EXPECT_FAULT("ds <- system descriptor (TSS)", PM_GP, SEL_TSS, LOAD_SEG(ds, SEL_TSS));
    memset(&short_tss, 0, sizeof(short_tss));
    pm_gdt_set(SEL_SHORTTSS, pm_tss_desc(&short_tss, 0x60, ACC_P | SYS_TSS32));
    EXPECT_FAULT("ljmp to a TSS with limit 0x60", PM_TS, SEL_SHORTTSS,
                 AT "ljmp $" PM_STR(SEL_SHORTTSS) ", $0");
    gate_absent(0x40);
    EXPECT_FAULT("int $0x40, gate not present", PM_NP, 0x40 * 8 + 2, AT "int $0x40");
    gate_restore(0x40);
    __asm__ __volatile__("sidt %0" : "=m"(full_idtr.limit));
    small_idtr = full_idtr;
    small_idtr.limit = 0x40 * 8 - 1;
    EXPECT_FAULT("int $0x50 beyond an IDT limit of 0x1ff", PM_GP, 0x50 * 8 + 2,
                 "lidt small_idtr+2\n\t" AT "int $0x50");
    __asm__ __volatile__("lidt %0" : : "m"(full_idtr.limit));
    EXPECT_FAULT("ltr of the busy main TSS", PM_GP, SEL_TSS, "movw $" PM_STR(SEL_TSS) ", %ax\n\t" AT "ltr %ax");
    EXPECT_FAULT("ltr of a data segment", PM_GP, SEL_KDATA, "movw $" PM_STR(SEL_KDATA) ", %ax\n\t" AT "ltr %ax");
    EXPECT_FAULT("lldt of a TSS", PM_GP, SEL_TSS, "movw $" PM_STR(SEL_TSS) ", %ax\n\t" AT "lldt %ax");
    EXPECT_FAULT("ljmp to a data segment", PM_GP, SEL_KDATA, AT "ljmp $" PM_STR(SEL_KDATA) ", $0");
}

static void esp_forms(void)
{
    rt_puts("-- ESP-relative push/pop\n");
    result = 0;
    EXPECT_OK("popl (%esp)", "pushl $0x11111111\n\tpushl $0x22222222\n\tpopl (%esp)\n\t"
                             "popl %eax\n\tmovl %eax, result");
    pm_check_val("  popl (%esp) stores the popped value at the new top", result, 0x22222222);
    EXPECT_OK("pushl 4(%esp)", "pushl $0x33333333\n\tpushl $0x44444444\n\tpushl 4(%esp)\n\t"
                               "popl %eax\n\tmovl %eax, result\n\taddl $8, %esp");
    pm_check_val("  pushl 4(%esp) pushes the value before the decrement", result, 0x33333333);
    EXPECT_OK("popl 4(%esp)", "pushl $0x55555555\n\tpushl $0x66666666\n\tpushl $0x77777777\n\t"
                              "popl 4(%esp)\n\tpopl %eax\n\tpopl %eax\n\tmovl %eax, result");
    pm_check_val("  popl 4(%esp) writes 4 above the new top", result, 0x77777777);
}

static void paging_faults(void)
{
    rt_puts("-- page faults (CR2, error code P W/R U/S)\n");
    pm_name_range("pf_page", pf_page, 4096);
    pm_name_range("ro_page", ro_page, 4096);
    pm_name_range("pf_stack", pf_stack, 8192);
    pm_paging_on();
    *pm_pte((uint32_t)pf_page) &= ~PTE_P;
    *pm_pte((uint32_t)ro_page) &= ~PTE_W;
    *pm_pte((uint32_t)pf_stack[1]) &= ~PTE_P;
    wr_cr3(rd_cr3());
    EXPECT_PF("read, not present", 0x0, AT "movl pf_page+0x10, %eax");
    EXPECT_PF("write, not present", 0x2, AT "movl %eax, pf_page+0xffc");
    EXPECT_PF("fetch, not present", 0x0, "movl $pf_page+0x20, %eax\n\tjmp *%eax");
    EXPECT_OK("write, read-only, CR0.WP=0", AT "movl %eax, ro_page");
    wr_cr0(rd_cr0() | 0x10000);
    EXPECT_PF("write, read-only, CR0.WP=1", 0x3, AT "movl %eax, ro_page+8");
    EXPECT_USER_PF("ring 3 write, read-only", 0x7, AT "movl %eax, ro_page+4");
    EXPECT_USER_PF("ring 3 write, not present", 0x6, AT "movl %eax, pf_page");
    *pm_pte((uint32_t)ro_page) &= ~PTE_U;
    pm_invlpg((uint32_t)ro_page);
    EXPECT_USER_PF("ring 3 read, supervisor page", 0x5, AT "movl ro_page+12, %eax");
    *pm_pte((uint32_t)ro_page) |= PTE_U | PTE_W;
    pm_invlpg((uint32_t)ro_page);
    wr_cr0(rd_cr0() & ~0x10000);

    /* faults that must leave ESP as it was before the instruction */
    EXPECT_PF("popl (%eax) to a not-present page", 0x2,
              "pushl $1\n\tmovl %esp, saved_esp\n\tmovl $pf_page, %eax\n\t" AT "popl (%eax)");
    pm_check_val("  ESP at the fault - ESP before", pm_last.esp - saved_esp, 0);
    EXPECT_PF("pushl (%eax) from a not-present page", 0x0,
              "movl %esp, saved_esp\n\tmovl $pf_page, %eax\n\t" AT "pushl (%eax)");
    pm_check_val("  ESP at the fault - ESP before", pm_last.esp - saved_esp, 0);
    EXPECT_PF("popl (%esp), new top on a not-present page", 0x2,
              "movl $pf_stack+0x1000-4, %esp\n\t" AT "popl (%esp)");
    pm_check_val("  ESP at the fault - ESP before", pm_last.esp - ((uint32_t)pf_stack[1] - 4), 0);
    EXPECT_PF("pushl 4(%esp) from a not-present page", 0x0,
              "movl $pf_stack+0x1000-4, %esp\n\t" AT "pushl 4(%esp)");
    pm_check_val("  ESP at the fault - ESP before", pm_last.esp - ((uint32_t)pf_stack[1] - 4), 0);

    /* faults after an ESP adjustment: the frame holds the ESP and the
     * arithmetic flags that `subl` left (saved_flags: those of the same
     * subtraction on ECX), whether the instructions after the fault
     * overwrite the flags before reading them or not */
    EXPECT_PF("subl $12, %esp, then a read of a not-present page", 0x0,
              "movl %esp, %ecx\n\tsubl $12, %ecx\n\tmovl %ecx, saved_esp\n\t"
              "pushfl\n\tpopl saved_flags\n\tmovl $-1, %eax\n\taddl $1, %eax\n\t"
              "subl $12, %esp\n\t" AT "movl pf_page, %eax\n\taddl $1, %eax\n\taddl $12, %esp");
    pm_check_val("  ESP at the fault - ESP after subl", pm_last.esp - saved_esp, 0);
    pm_check_val("  arithmetic flags at the fault ^ those of subl",
                 (pm_last.eflags ^ saved_flags) & 0x8d5, 0);
    EXPECT_PF("subl $8, %esp, then a read of 12(%esp) on a not-present page", 0x0,
              "movl $pf_stack+0x1000-8, %ecx\n\taddl $8, %ecx\n\tsubl $8, %ecx\n\t"
              "pushfl\n\tpopl saved_flags\n\tmovl $-1, %eax\n\taddl $1, %eax\n\t"
              "movl $pf_stack+0x1000, %esp\n\tsubl $8, %esp\n\t" AT "movl 12(%esp), %eax\n\t"
              "adcl $0, %eax");
    pm_check_val("  ESP at the fault - ESP after subl", pm_last.esp - ((uint32_t)pf_stack[1] - 8), 0);
    pm_check_val("  arithmetic flags at the fault ^ those of subl",
                 (pm_last.eflags ^ saved_flags) & 0x8d5, 0);
}

static void double_faults(void)
{
    rt_puts("-- exceptions while delivering exceptions\n");
    gate_absent(PM_UD);
    /* error code 0x33 (IDT, EXT); EXT not compared: QEMU does not set it */
    PM_TRY(AT "ud2");
    pm_last.err &= ~1u;
    pm_expect("#UD, its gate not present (benign, contributory), EXT bit masked", PM_NP, PM_UD * 8 + 2);
    gate_restore(PM_UD);
    gate_absent(PM_BP);
    EXPECT_FAULT("int3, its gate not present", PM_NP, PM_BP * 8 + 2, AT "int3");
    gate_restore(PM_BP);
    gate_absent(PM_DE);
    EXPECT_FAULT("#DE, its gate not present (contributory, contributory)", PM_DF, 0,
                 "xorl %ecx, %ecx\n\t" AT "divl %ecx");
    gate_restore(PM_DE);
    pm_gdt_set(SEL_DATA_AS_CODE, pm_seg_desc(0, 0xfffff, ACC_DATA_RW, FL_G | FL_DB));
    pm_idt_set(PM_NP, pm_gate_desc(SEL_DATA_AS_CODE, pm_stub_addr(PM_NP), ACC_P | SYS_INTGATE32, 0));
    EXPECT_FAULT("#NP, its gate's CS is a data segment (#GP)", PM_DF, 0, LOAD_SEG(ds, SEL_NPDATA));
    gate_restore(PM_NP);
    gate_absent(PM_PF);
    EXPECT_FAULT("#PF, its gate not present (page fault, contributory)", PM_DF, 0,
                 AT "movl pf_page, %eax");
    gate_restore(PM_PF);
    gate_absent(PM_NP);
    EXPECT_FAULT("#NP, its gate not present", PM_DF, 0, LOAD_SEG(ds, SEL_NPDATA));
    gate_restore(PM_NP);

    rt_puts("-- #DF through a task gate\n");
    pm_use_task_gate(PM_DF);
    EXPECT_FAULT("ring 0 push onto a not-present stack page", PM_DF, 0,
                 "movl $pf_stack+0x1000+0x100, %esp\n\t" AT "pushl $0");
    rt_printf("  in the fault task: tr=%04x link=%04x; cr2 in the not-present page: %s\n",
              pm_fault_tr, pm_fault_link, rd_cr2() >> 12 == (uint32_t)pf_stack[1] >> 12 ? "yes" : "no");
    pm_check_val("  tr after the task returned", pm_str(), SEL_TSS);
    pm_check_val("  main TSS descriptor busy", (uint32_t)(pm_gdt[SEL_TSS >> 3] >> 40) & 0xf,
                 SYS_TSS32_BUSY);
    pm_check_val("  fault TSS descriptor not busy", (uint32_t)(pm_gdt[SEL_FTSS >> 3] >> 40) & 0xf,
                 SYS_TSS32);
    pm_tss.t.esp0 = (uint32_t)pf_stack[1] + 0x800;
    EXPECT_USER_FAULT("ring 3 #PF, TSS.ESP0 on a not-present page", PM_DF, 0,
                      AT "movl pf_page, %eax");
    rt_printf("  cr2 in the not-present stack page: %s\n",
              rd_cr2() >> 12 == (uint32_t)pf_stack[1] >> 12 ? "yes" : "no");
    pm_tss.t.esp0 = (uint32_t)pm_kstack_top;
    gate_restore(PM_DF);

    rt_puts("-- #TS through a task gate\n");
    pm_use_task_gate(PM_TS);
    pm_idt_stub(0x80, SYS_INTGATE32, 3);
    pm_tss.t.ss0 = SEL_UDATA;
    EXPECT_USER_FAULT("int $0x80 from ring 3, TSS.SS0 has RPL 3", PM_TS, SEL_UDATA & ~3,
                      AT "int $0x80");
    pm_tss.t.ss0 = SEL_KDATA;
    gate_restore(PM_TS);
    gate_restore(0x80);
}

int main(void)
{
    pm_init();
    rt_puts("pm_exceptions: exceptions, error codes, fault/trap EIPs, double faults\n");
    faults_and_traps();
    selector_faults();
    esp_forms();
    paging_faults();
    double_faults();
    rt_finish("pm_exceptions");
}
