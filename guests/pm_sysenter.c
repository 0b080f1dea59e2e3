/* pm_sysenter: sysenter/sysexit and MSRs (nestmon: guest-only).
 * CPUID features first (what the rest assumes); sysenter from ring 3 and
 * ring 0 with IA32_SYSENTER_CS/ESP/EIP, sysexit back to ring 3, the fixed
 * flat descriptors both load whatever the GDT holds, EFLAGS.IF cleared;
 * SYSENTER_CS = 0 -> #GP(0) for both, sysexit at ring 3 -> #GP(0);
 * IA32_PAT, IA32_MISC_ENABLE, the MTRRs when CPUID has
 * them.  Not tested (QEMU deviations, see docs/guests.md): the TSC MSR and
 * #GP(0) for unknown MSRs and for invalid PAT types. */
#include "pm.h"

#define MSR_APIC_BASE 0x1b
#define MSR_MTRRCAP 0xfe
#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define MSR_MISC_ENABLE 0x1a0
#define MSR_MTRR_PHYSBASE0 0x200
#define MSR_MTRR_PHYSMASK0 0x201
#define MSR_PAT 0x277
#define MSR_MTRR_DEFTYPE 0x2ff

uint32_t r[16];
uint32_t msr_lo, msr_hi;
uint8_t sysenter_stack[4096] __attribute__((aligned(16)));

static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}
static void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ __volatile__("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}
static void check64(const char *what, uint64_t got, uint64_t want)
{
    rt_printf("%s: %016llx\n", what, got);
    rt_checks++;
    if (got != want) {
        rt_failures++;
        rt_printf("FAIL %s: want %016llx\n", what, want);
    }
}

/* The sysenter target: records what it sees, returns with sysexit to the
 * EIP in EDX and the ESP in ECX that the caller passed. */
__asm__(".text\n"
        "sysenter_entry:\n\t"
        "movl %esp, r\n\tmovw %ss, %ax\n\tmovl %eax, r+4\n\tmovw %cs, %ax\n\tmovl %eax, r+8\n\t"
        "pushfl\n\tpopl r+12\n\tmovl %ecx, r+16\n\tmovl %edx, r+20\n\tmovw %ds, %ax\n\tmovl %eax, r+24\n\t"
        "incl r+60\n\t"
        "sysexit\n"
        /* entered from ring 0: return with a far jump instead */
        "sysenter_entry0:\n\t"
        "movl %esp, r\n\tmovw %cs, %ax\n\tmovl %eax, r+8\n\tincl r+60\n\t"
        "movl %ecx, %esp\n\tjmp *%edx\n"
        /* an entry whose first instruction faults */
        "sysenter_fault_entry:\n\t"
        "ud2\n"
        /* a counting entry for loops: back at once */
        "sysenter_count_entry:\n\t"
        "incl r+60\n\t"
        "sysexit\n");
extern char sysenter_entry[], sysenter_entry0[], sysenter_fault_entry[], sysenter_count_entry[];

static int has_tsc, has_msr, has_apic, has_sep, has_mtrr, has_pat;

static void features(void)
{
    uint32_t a, b, c, d;
    pm_cpuid(1, &a, &b, &c, &d);
    has_tsc = (d >> 4) & 1;
    has_msr = (d >> 5) & 1;
    has_apic = (d >> 9) & 1;
    has_sep = (d >> 11) & 1;
    has_mtrr = (d >> 12) & 1;
    has_pat = (d >> 16) & 1;
    /* The local APIC (and IA32_APIC_BASE with it) belongs to the platform
     * guests, not to this one: not printed, not checked here. */
    (void)has_apic;
    rt_printf("cpuid.1:edx: tsc=%d msr=%d sep=%d mtrr=%d pat=%d\n", has_tsc, has_msr, has_sep,
              has_mtrr, has_pat);
    /* SEP is not valid on family 6 model < 3 stepping < 3 (SDM vol. 2 SYSENTER) */
    if (((a >> 8) & 0xf) == 6 && ((a >> 4) & 0xf) < 3 && (a & 0xf) < 3)
        has_sep = 0;
    rt_printf("sysenter usable: %s\n", has_sep ? "yes" : "no");
}

static void sysenter_tests(void)
{
    rt_puts("-- sysenter/sysexit (SDM vol. 2 SYSENTER, SYSEXIT; vol. 3 'Fast System Calls in 32-Bit Mode')\n");
    wrmsr(MSR_SYSENTER_CS, SEL_KCODE);
    wrmsr(MSR_SYSENTER_ESP, (uint32_t)sysenter_stack + sizeof(sysenter_stack));
    wrmsr(MSR_SYSENTER_EIP, (uint32_t)sysenter_entry);
    check64("IA32_SYSENTER_CS", rdmsr(MSR_SYSENTER_CS), SEL_KCODE);
    check64("IA32_SYSENTER_ESP - stack top", rdmsr(MSR_SYSENTER_ESP) - ((uint32_t)sysenter_stack + sizeof(sysenter_stack)), 0);
    check64("IA32_SYSENTER_EIP - sysenter_entry", rdmsr(MSR_SYSENTER_EIP) - (uint32_t)sysenter_entry, 0);

    memset(r, 0, sizeof(r));
    pm_user_eflags = 0x2 | EFL_IF;
    EXPECT_USER_OK("ring 3: sysenter (ECX=ESP, EDX=return EIP), sysexit",
                   "movl %esp, r+28\n\tmovl %esp, %ecx\n\tmovl $9f, %edx\n\tsysenter\n\tud2\n"
                   "9:\tmovl %esp, r+32\n\tmovw %ss, %ax\n\tmovl %eax, r+36\n\tmovw %cs, %ax\n\tmovl %eax, r+40\n\t"
                   "pushfl\n\tpopl r+44\n\tmovl $9b, r+48\n\tmovl %edx, r+52");
    pm_user_eflags = 0x2;
    pm_check_val("  entered once", r[15], 1);
    pm_check_val("  at the entry: ESP = IA32_SYSENTER_ESP",
                 r[0] - ((uint32_t)sysenter_stack + sizeof(sysenter_stack)), 0);
    pm_check_val("  at the entry: SS = SYSENTER_CS + 8", r[1] & 0xffff, SEL_KCODE + 8);
    pm_check_val("  at the entry: CS = SYSENTER_CS", r[2] & 0xffff, SEL_KCODE);
    pm_check_val("  at the entry: EFLAGS.IF cleared", (r[3] >> 9) & 1, 0);
    pm_check_val("  at the entry: DS unchanged", r[6] & 0xffff, SEL_UDATA);
    pm_check_val("  back at ring 3: ESP = ECX", r[8] - r[7], 0);
    pm_check_val("  back at ring 3: SS = SYSENTER_CS + 24 | 3", r[9] & 0xffff, SEL_KCODE + 24 + 3);
    pm_check_val("  back at ring 3: CS = SYSENTER_CS + 16 | 3", r[10] & 0xffff, SEL_KCODE + 16 + 3);
    pm_check_val("  back at ring 3: EIP = EDX", r[13] - r[12], 0);
    pm_check_val("  back at ring 3: IF still 0 (sysexit does not restore it)", (r[11] >> 9) & 1, 0);

    /* the descriptors are fixed: make the GDT entries useless */
    {
        uint64_t save[4];
        memcpy(save, &pm_gdt[1], sizeof(save));
        pm_gdt[SEL_UCODE >> 3] &= ~((uint64_t)ACC_P << 40);
        pm_gdt[SEL_UDATA >> 3] = pm_seg_desc(0x1000, 0xff, ACC_DATA_RO | DPL(3), 0);
        memset(r, 0, sizeof(r));
        /* DS stays 0x10: DPL is checked when a segment is loaded, not used */
        EXPECT_OK("ring 0: sysexit with GDT 0x18 not present and 0x20 a tiny read-only segment",
                  "movl $pm_ustack_top, %ecx\n\tmovl $9f, %edx\n\tsysexit\n"
                  "9:\tmovw %cs, %ax\n\tmovl %eax, %ds:r\n\tmovw %ss, %ax\n\tmovl %eax, %ds:r+4\n\t"
                  "movl %esp, %ds:r+8\n\tpushl $0x5a5a5a5a\n\tpopl %ds:r+12\n\tint $" PM_STR(PM_VEC_RETURN));
        memcpy(&pm_gdt[1], save, sizeof(save));
        pm_check_val("  cs (flat ring 3 code whatever the GDT says)", r[0] & 0xffff, SEL_UCODE);
        pm_check_val("  ss", r[1] & 0xffff, SEL_UDATA);
        pm_check_val("  esp", r[2] - (uint32_t)pm_ustack_top, 0);
        pm_check_val("  push/pop through the fixed SS (base 0, writable)", r[3], 0x5a5a5a5a);
        pm_check_val("  value at pm_ustack_top-4", *(volatile uint32_t *)((uint32_t)pm_ustack_top - 4), 0x5a5a5a5a);
    }

    wrmsr(MSR_SYSENTER_EIP, (uint32_t)sysenter_entry0);
    memset(r, 0, sizeof(r));
    EXPECT_OK("ring 0: sysenter", "movl %esp, %ecx\n\tmovl $9f, %edx\n\tsysenter\n\tud2\n9:");
    pm_check_val("  entered, CS", r[15] << 16 | (r[2] & 0xffff), 0x10000 | SEL_KCODE);
    pm_check_val("  ESP at the entry", r[0] - ((uint32_t)sysenter_stack + sizeof(sysenter_stack)), 0);
    wrmsr(MSR_SYSENTER_EIP, (uint32_t)sysenter_entry);

    EXPECT_USER_FAULT("ring 3: sysexit", PM_GP, 0, AT "sysexit");

    /* A binary translator may carry out SYSENTER/SYSEXIT without leaving
     * translated code: the CPU state must still be exact when something
     * happens right after them. */
    wrmsr(MSR_SYSENTER_EIP, (uint32_t)sysenter_fault_entry);
    pm_name_range("sysenter_fault_entry", sysenter_fault_entry, 2);
    EXPECT_USER_FAULT("ring 3: sysenter to an entry whose first instruction is ud2", PM_UD, PM_NOERR,
                      "movl %esp, %ecx\n\tmovl $9f, %edx\n\tsysenter\n9:");
    pm_check_val("  #UD taken at ring 0: CS = SYSENTER_CS", pm_last.cs & 0xffff, SEL_KCODE);
    pm_check_val("  no stack switch", pm_last.stack_switched, 0);
    pm_check_val("  ESP before the push = IA32_SYSENTER_ESP",
                 pm_last.esp - ((uint32_t)sysenter_stack + sizeof(sysenter_stack)), 0);
    pm_check_val("  SS = SYSENTER_CS + 8", pm_last.ss & 0xffff, SEL_KCODE + 8);
    pm_check_val("  EFLAGS.IF clear", (pm_last.eflags >> 9) & 1, 0);
    wrmsr(MSR_SYSENTER_EIP, (uint32_t)sysenter_count_entry);
    memset(r, 0, sizeof(r));
    EXPECT_USER_OK("ring 3: 1000 sysenter/sysexit round trips in a loop, then ud2",
                   "movl $1000, %esi\n"
                   "1:\tmovl %esp, %ecx\n\tmovl $2f, %edx\n\tsysenter\n"
                   "2:\tdecl %esi\n\tjnz 1b\n\t"
                   "movw %cs, %ax\n\tmovl %eax, r\n\tmovw %ss, %ax\n\tmovl %eax, r+4");
    pm_check_val("  round trips counted by the entry", r[15], 1000);
    pm_check_val("  CS after the loop", r[0] & 0xffff, SEL_KCODE + 16 + 3);
    pm_check_val("  SS after the loop", r[1] & 0xffff, SEL_KCODE + 24 + 3);
    PM_USER_TRY("movl %esp, %ecx\n\tmovl $9f, %edx\n\tsysenter\n9:\t" AT "ud2");
    pm_expect("ring 3: ud2 right after a round trip", PM_UD, PM_NOERR);
    pm_check_val("  taken at ring 3: CS", pm_last.cs & 0xffff, SEL_KCODE + 16 + 3);
    pm_check_val("  with a stack switch", pm_last.stack_switched, 1);
    wrmsr(MSR_SYSENTER_EIP, (uint32_t)sysenter_entry);
    wrmsr(MSR_SYSENTER_CS, 0);
    memset(r, 0, sizeof(r));
    EXPECT_USER_FAULT("ring 3: sysenter with IA32_SYSENTER_CS = 0", PM_GP, 0,
                      "movl %esp, %ecx\n\tmovl $9f, %edx\n\t" AT "sysenter\n9:");
    EXPECT_FAULT("ring 0: sysenter with IA32_SYSENTER_CS = 0", PM_GP, 0, AT "sysenter");
    EXPECT_FAULT("ring 0: sysexit with IA32_SYSENTER_CS = 0", PM_GP, 0,
                 "movl %esp, %ecx\n\tmovl $9f, %edx\n\t" AT "sysexit\n9:");
    pm_check_val("  the entry did not run", r[15], 0);
    wrmsr(MSR_SYSENTER_CS, SEL_KCODE);
}

static void msr_tests(void)
{
    uint64_t v, t0, t1;
    rt_puts("-- MSRs (SDM vol. 4 'Model-Specific Registers'; vol. 3 'Memory Cache Control')\n");
    t0 = rt_rdtsc();
    t1 = rt_rdtsc();
    rt_printf("rdtsc twice: monotonic %s\n", t1 > t0 ? "yes" : "no");
    RT_CHECK(t1 > t0, "rdtsc not monotonic");
    if (has_pat) {
        check64("IA32_PAT at reset", rdmsr(MSR_PAT), 0x0007040600070406ull);
        wrmsr(MSR_PAT, 0x0001050400070106ull);
        check64("IA32_PAT after writing 0001050400070106 (types 0 1 4 5 6 7)", rdmsr(MSR_PAT),
                0x0001050400070106ull);
        wrmsr(MSR_PAT, 0x0007040600070406ull);
        check64("IA32_PAT restored", rdmsr(MSR_PAT), 0x0007040600070406ull);
    } else {
        rt_puts("PAT: skipped (CPUID.1:EDX.PAT=0)\n");
    }
    v = rdmsr(MSR_MISC_ENABLE);
    rt_printf("IA32_MISC_ENABLE: %016llx (fast strings=%u)\n", v, (uint32_t)v & 1);
    if (has_mtrr) {
        v = rdmsr(MSR_MTRRCAP);
        rt_printf("IA32_MTRRCAP: %016llx (VCNT=%u FIX=%u WC=%u)\n", v, (uint32_t)v & 0xff,
                  (uint32_t)(v >> 8) & 1, (uint32_t)(v >> 10) & 1);
        wrmsr(MSR_MTRR_PHYSBASE0, 0x12345006ull);
        wrmsr(MSR_MTRR_PHYSMASK0, 0xfff00800ull);
        check64("IA32_MTRR_PHYSBASE0", rdmsr(MSR_MTRR_PHYSBASE0), 0x12345006ull);
        check64("IA32_MTRR_PHYSMASK0", rdmsr(MSR_MTRR_PHYSMASK0), 0xfff00800ull);
        wrmsr(MSR_MTRR_PHYSMASK0, 0);
        wrmsr(MSR_MTRR_PHYSBASE0, 0);
    } else {
        rt_puts("MTRRs: skipped (CPUID.1:EDX.MTRR=0)\n");
    }
}

int main(void)
{
    pm_init();
    outb(0x21, 0xff); /* mask the PICs: ring 3 runs with IF=1 once */
    outb(0xa1, 0xff);
    rt_puts("pm_sysenter: CPUID, sysenter/sysexit, MSRs\n");
    features();
    if (!has_msr) {
        rt_puts("no MSRs: nothing to test\n");
        rt_finish("pm_sysenter");
    }
    if (has_sep)
        sysenter_tests();
    else
        rt_puts("sysenter: skipped\n");
    msr_tests();
    rt_finish("pm_sysenter");
}
