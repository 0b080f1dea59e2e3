/* pm_fpu_user: x87, MMX and SSE instructions at ring 3 (nestmon: guest-only).
 * Arithmetic with memory operands and general registers, FCOMI's flags,
 * #NM with CR0.TS, #UD for MMX with CR0.EM, an unmasked x87 exception
 * reported as #MF at the next fwait, all at CPL 3 (under an emulating KVM
 * these reach nestmon through its #UD intercept, not as emulation
 * failures). */
#include "pm.h"

#define CR0_EM 0x4
#define CR0_TS 0x8

uint16_t cw_unmask_zm = 0x037b, sw;
uint32_t val32, flags32, gpr32;
float one_f = 1.0f, zero_f = 0.0f, two_f = 2.0f;
float four_f[4] __attribute__((aligned(16))) = { 1.5f, 2.5f, -3.0f, 4.25f };
float sum_f[4] __attribute__((aligned(16)));
double third_d = 1.0 / 3.0, big_d = 2.5e9;
uint64_t mm_a = 0x00ff00ff7f7f8080ull, mm_b = 0x0101010101010101ull, mm_out;

static void set_cr0(uint32_t set, uint32_t clear) { wr_cr0((rd_cr0() | set) & ~clear); }

static void arithmetic(void)
{
    rt_puts("-- ring 3 arithmetic\n");
    EXPECT_USER_OK("fld1; fadds 2.0; fistpl", "fld1\n\tfadds two_f\n\tfistpl val32");
    pm_check_val("  1 + 2", val32, 3);
    EXPECT_USER_OK("fld 1.0; fld 2.0; fcomip; pushf (CF: 2 > 1 is clear)",
                   "flds one_f\n\tflds two_f\n\tfcomip %st(1), %st\n\tpushfl\n\tpopl flags32\n\tfstp %st(0)");
    pm_check_val("  ZF PF CF", flags32 & 0x45, 0);
    EXPECT_USER_OK("movaps; addps m128; movaps m128",
                   "movaps four_f, %xmm0\n\taddps four_f, %xmm0\n\tmovaps %xmm0, sum_f");
    pm_check_val("  2 * -3.0f", *(uint32_t *)&sum_f[2], 0xc0c00000);
    EXPECT_USER_OK("cvttsd2si m64 -> %ecx; movl %ecx, gpr32", "cvttsd2si big_d, %ecx\n\tmovl %ecx, gpr32");
    pm_check_val("  2.5e9 overflows to the integer indefinite", gpr32, 0x80000000);
    EXPECT_USER_OK("movsd; mulsd; cvtsd2si -> %edx", "movsd third_d, %xmm1\n\tmulsd third_d, %xmm1\n\t"
                   "cvtsd2si %xmm1, %edx\n\tmovl %edx, gpr32");
    pm_check_val("  round(1/9)", gpr32, 0);
    EXPECT_USER_OK("movq; paddusb m64; movq; emms",
                   "movq mm_a, %mm0\n\tpaddusb mm_b, %mm0\n\tmovq %mm0, mm_out\n\temms");
    pm_check_val("  low dword", (uint32_t)mm_out, 0x80808181);
    pm_check_val("  high dword", (uint32_t)(mm_out >> 32), 0x01ff01ff);
}

static void exceptions(void)
{
    rt_puts("-- ring 3 exceptions\n");
    set_cr0(CR0_TS, 0);
    EXPECT_USER_FAULT("TS=1: fld1", PM_NM, PM_NOERR, AT "fld1");
    EXPECT_USER_FAULT("TS=1: addps", PM_NM, PM_NOERR, AT "addps %xmm1, %xmm0");
    __asm__ __volatile__("clts");
    set_cr0(CR0_EM, 0);
    EXPECT_USER_FAULT("EM=1: paddb %mm1, %mm0", PM_UD, PM_NOERR, AT "paddb %mm1, %mm0");
    EXPECT_USER_FAULT("EM=1: fld1", PM_NM, PM_NOERR, AT "fld1");
    set_cr0(0, CR0_EM);
    EXPECT_USER_FAULT("ZM unmasked: fld1; fdivs 0.0; fwait -> #MF", PM_MF, PM_NOERR,
                      "fninit\n\tfldcw cw_unmask_zm\n\tfld1\n\tfdivs zero_f\n\tnop\n\t" AT "fwait");
    __asm__ __volatile__("fnstsw %0" : "=m"(sw));
    pm_check_val("  FSW: ES, ZE", sw & 0xff, 0x84);
    __asm__ __volatile__("fnclex; fninit");
}

int main(void)
{
    pm_init();
    rt_puts("pm_fpu_user: x87, MMX and SSE at ring 3\n");
    arithmetic();
    exceptions();
    rt_finish("pm_fpu_user");
}
