/* pm_fpu: x87/MMX/SSE control state (nestmon: guest-only).
 * CR0.TS -> #NM for x87, MMX, SSE, fxsave and (with MP) wait; a lazy-FPU
 * #NM handler that clears TS and restarts the instruction; CR0.EM -> #NM
 * for x87, #UD for MMX and SSE; CR0.MP and wait; CR4.OSFXSR=0 -> #UD for SSE;
 * fxsave/fxrstor and fnsave/frstor round trips; fninit state; unmasked x87
 * exceptions reported as #MF (CR0.NE=1) at the next fwait, not at the
 * faulting instruction or a non-waiting one.  Not tested (QEMU deviations):
 * #XM/#UD for unmasked SSE exceptions, #MF at waiting x87 instructions
 * other than fwait. */
#include "pm.h"

#define CR0_MP 0x2
#define CR0_EM 0x4
#define CR0_TS 0x8
#define CR4_OSFXSR 0x200

uint8_t fx_a[512] __attribute__((aligned(16)));
uint8_t fx_b[512] __attribute__((aligned(16)));
uint8_t fsave_a[108], fsave_b[108];
uint16_t cw, sw, cw_unmask_zm = 0x037b, cw_unmask_im = 0x037e, cw_pc53 = 0x027f;
uint32_t mxcsr_v = 0x3f80, mxcsr_default = 0x1f80, val32;
float one_f = 1.0f, zero_f = 0.0f, minus_one_f = -1.0f, three_f = 3.0f;
float four_f[4] = { 1.5f, 2.5f, -3.0f, 4.25f };
uint32_t inf_f = 0x7f800000;
uint32_t xmm_pattern[4] = { 0x11223344, 0x55667788, 0x99aabbcc, 0xddeeff00 };
uint32_t xmm_out[4];
uint64_t mm_pattern = 0x0123456789abcdefull;

static void set_cr0(uint32_t set, uint32_t clear) { wr_cr0((rd_cr0() | set) & ~clear); }
static uint16_t le16(const uint8_t *p) { return p[0] | p[1] << 8; }
static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static void cr0_flags(void)
{
    rt_puts("-- CR0.TS, EM, MP (SDM vol. 3 'Interaction of the EM, MP and TS flags', 'Using the TS Flag')\n");
    __asm__ __volatile__("fninit");
    set_cr0(CR0_TS, 0);
    EXPECT_FAULT("TS=1: fld1", PM_NM, PM_NOERR, AT "fld1");
    EXPECT_FAULT("TS=1: fnstcw (non-waiting x87 too)", PM_NM, PM_NOERR, AT "fnstcw cw");
    EXPECT_FAULT("TS=1: movq %mm0, %mm1", PM_NM, PM_NOERR, AT "movq %mm0, %mm1");
    EXPECT_FAULT("TS=1: addps %xmm1, %xmm0", PM_NM, PM_NOERR, AT "addps %xmm1, %xmm0");
    EXPECT_FAULT("TS=1: ldmxcsr", PM_NM, PM_NOERR, AT "ldmxcsr mxcsr_default");
    EXPECT_FAULT("TS=1: fxsave", PM_NM, PM_NOERR, AT "fxsave fx_a");
    EXPECT_FAULT("TS=1 MP=1: fwait", PM_NM, PM_NOERR, AT "fwait");
    set_cr0(0, CR0_MP);
    EXPECT_OK("TS=1 MP=0: fwait", AT "fwait");
    set_cr0(CR0_MP, 0);
    EXPECT_OK("TS=1: movl, addl, pushf (not FPU)", "movl $1, %eax\n\taddl $2, %eax\n\tpushfl\n\tpopl %eax");
    __asm__ __volatile__("clts");
    EXPECT_OK("after clts: fld1; fstp", "fld1\n\tfstp %st(0)");
    pm_check_val("  CR0.TS", (rd_cr0() >> 3) & 1, 0);

    set_cr0(CR0_EM, 0);
    EXPECT_FAULT("EM=1: fld1", PM_NM, PM_NOERR, AT "fld1");
    EXPECT_FAULT("EM=1: fninit", PM_NM, PM_NOERR, AT "fninit");
    EXPECT_FAULT("EM=1: movq %mm0, %mm1", PM_UD, PM_NOERR, AT "movq %mm0, %mm1");
    EXPECT_FAULT("EM=1: addps %xmm1, %xmm0", PM_UD, PM_NOERR, AT "addps %xmm1, %xmm0");
    EXPECT_FAULT("EM=1: ldmxcsr", PM_UD, PM_NOERR, AT "ldmxcsr mxcsr_default");
    EXPECT_OK("EM=1 TS=0: fwait", AT "fwait");
    set_cr0(CR0_TS, 0);
    EXPECT_FAULT("EM=1 TS=1 MP=1: fwait", PM_NM, PM_NOERR, AT "fwait");
    EXPECT_FAULT("EM=1 TS=1: fld1 (#NM)", PM_NM, PM_NOERR, AT "fld1");
    set_cr0(0, CR0_EM | CR0_TS);
    EXPECT_OK("EM=0 TS=0: fld1; fstp; emms; addps", "fld1\n\tfstp %st(0)\n\temms\n\taddps %xmm1, %xmm0");
}

static int lazy_hook(struct pm_frame *f)
{
    (void)f;
    __asm__ __volatile__("clts");
    return PM_RESUME;
}

static void lazy_fpu(void)
{
    rt_puts("-- lazy FPU switching: the #NM handler clears TS and restarts the instruction\n");
    pm_set_hook(PM_NM, lazy_hook);
    __asm__ __volatile__("fninit");
    set_cr0(CR0_TS, 0);
    EXPECT_OK("TS=1: fld1; fadd %st(0); fistpl val32; fld1; fstp",
              "fld1\n\tfadd %st(0), %st\n\tfistpl val32\n\tfld1\n\tfstp %st(0)");
    pm_check_val("  #NM taken", pm_nlog, 1);
    rt_puts("  at ");
    pm_print_eip(pm_log[0].eip);
    rt_puts("\n");
    pm_check_val("  result (the faulting fld1 ran after the handler)", val32, 2);
    pm_check_val("  CR0.TS", (rd_cr0() >> 3) & 1, 0);
    pm_set_hook(PM_NM, NULL);
}

static void osfxsr(void)
{
    rt_puts("-- CR4.OSFXSR=0 (SDM vol. 3 'Checking for SSE/SSE2 Support', vol. 2 #UD conditions)\n");
    wr_cr4(rd_cr4() & ~CR4_OSFXSR);
    EXPECT_FAULT("OSFXSR=0: addps", PM_UD, PM_NOERR, AT "addps %xmm1, %xmm0");
    EXPECT_FAULT("OSFXSR=0: movaps", PM_UD, PM_NOERR, AT "movaps %xmm1, %xmm0");
    EXPECT_FAULT("OSFXSR=0: ldmxcsr", PM_UD, PM_NOERR, AT "ldmxcsr mxcsr_default");
    EXPECT_FAULT("OSFXSR=0: paddd %xmm1, %xmm0 (SSE2)", PM_UD, PM_NOERR, AT "paddd %xmm1, %xmm0");
    EXPECT_OK("OSFXSR=0: paddd %mm1, %mm0 (MMX); emms", "paddd %mm1, %mm0\n\temms");
    EXPECT_OK("OSFXSR=0: fld1; fstp (x87)", "fld1\n\tfstp %st(0)");
    wr_cr4(rd_cr4() | CR4_OSFXSR);
    EXPECT_OK("OSFXSR=1: addps, movaps, ldmxcsr",
              "addps %xmm1, %xmm0\n\tmovaps %xmm1, %xmm0\n\tldmxcsr mxcsr_default");
}

static void save_restore(void)
{
    int i, same;
    rt_puts("-- fxsave/fxrstor (SDM vol. 2 FXSAVE, FXRSTOR)\n");
    memset(fx_a, 0xcc, sizeof(fx_a));
    memset(fx_b, 0xcc, sizeof(fx_b));
    EXPECT_OK("state: fldcw 0x27f, fld1, fldz, fld 3.0, xmm0..7, mxcsr 0x3f80; fxsave",
              "fninit\n\tfldcw cw_pc53\n\tfld1\n\tfldz\n\tflds three_f\n\tmovups xmm_pattern, %xmm0\n\t"
              "movups four_f, %xmm1\n\tmovaps %xmm0, %xmm2\n\tmovaps %xmm1, %xmm3\n\tmovaps %xmm0, %xmm4\n\t"
              "movaps %xmm1, %xmm5\n\tmovaps %xmm0, %xmm6\n\tmovaps %xmm1, %xmm7\n\tldmxcsr mxcsr_v\n\t"
              "fxsave fx_a");
    pm_check_val("  FCW", le16(fx_a + 0), 0x027f);
    pm_check_val("  FSW (TOP=5)", le16(fx_a + 2), 0x2800);
    pm_check_val("  abridged FTW (R5 R6 R7 valid)", fx_a[4], 0xe0);
    pm_check_val("  MXCSR", le32(fx_a + 24), 0x3f80);
    pm_check_val("  ST0 mantissa high (3.0)", le32(fx_a + 32 + 4), 0xc0000000);
    pm_check_val("  ST0 sign/exponent", le16(fx_a + 32 + 8), 0x4000);
    pm_check_val("  ST1 exponent (0.0)", le16(fx_a + 48 + 8), 0);
    pm_check_val("  ST2 mantissa high (1.0)", le32(fx_a + 64 + 4), 0x80000000);
    pm_check_val("  XMM0 dword 0", le32(fx_a + 160), 0x11223344);
    pm_check_val("  XMM7 dword 3 (4.25f)", le32(fx_a + 160 + 7 * 16 + 12), 0x40880000);
    EXPECT_OK("clobber (fninit, xorps, ldmxcsr 0x1f80), fxrstor, fxsave again",
              "fninit\n\txorps %xmm0, %xmm0\n\txorps %xmm7, %xmm7\n\tldmxcsr mxcsr_default\n\t"
              "fxrstor fx_a\n\tfxsave fx_b\n\tfstps val32\n\tstmxcsr mxcsr_v\n\tmovups %xmm0, xmm_out");
    same = 1;
    for (i = 0; i < 288; i++) {
        if (i >= 6 && i < 24) /* FOP, FIP/FCS, FDP/FDS: implementation-dependent */
            continue;
        if (i >= 28 && i < 32) /* MXCSR_MASK */
            continue;
        if (fx_a[i] != fx_b[i]) {
            if (same)
                rt_printf("  first difference at byte %d: %02x vs %02x\n", i, fx_a[i], fx_b[i]);
            same = 0;
        }
    }
    pm_check_val("  x87 + MXCSR + XMM0-7 images equal (bytes 0-5, 24-27, 32-287)", same, 1);
    pm_check_val("  ST0 after fxrstor (3.0f)", val32, 0x40400000);
    pm_check_val("  MXCSR after fxrstor", mxcsr_v, 0x3f80);
    pm_check_val("  XMM0 dword 1 after fxrstor", xmm_out[1], 0x55667788);
    __asm__ __volatile__("fninit; ldmxcsr %0" : : "m"(mxcsr_default));

    rt_puts("-- fnsave/frstor, fninit\n");
    memset(fsave_a, 0xcc, sizeof(fsave_a));
    EXPECT_OK("fninit; fldcw 0x27f; fld1; fldz; fld +inf; fnsave; fnstcw; fnstsw",
              "fninit\n\tfldcw cw_pc53\n\tfld1\n\tfldz\n\tflds inf_f\n\tfnsave fsave_a\n\t"
              "fnstcw cw\n\tfnstsw sw");
    pm_check_val("  image FCW", le16(fsave_a + 0), 0x027f);
    pm_check_val("  image FSW (TOP=5)", le16(fsave_a + 4), 0x2800);
    pm_check_val("  image FTW (R7 valid, R6 zero, R5 special, rest empty)", le16(fsave_a + 8), 0x1bff);
    pm_check_val("  image ST0 exponent (+inf)", le16(fsave_a + 28 + 8), 0x7fff);
    pm_check_val("  image ST2 mantissa high (1.0)", le32(fsave_a + 28 + 20 + 4), 0x80000000);
    pm_check_val("  FCW after fnsave (reinitialised)", cw, 0x037f);
    pm_check_val("  FSW after fnsave", sw, 0);
    EXPECT_OK("frstor; fnstcw; fnstsw; fstp", "frstor fsave_a\n\tfnstcw cw\n\tfnstsw sw\n\tfstps val32");
    pm_check_val("  FCW", cw, 0x027f);
    pm_check_val("  FSW (TOP=5)", sw, 0x2800);
    pm_check_val("  ST0 (+inf)", val32, 0x7f800000);
    memset(fsave_b, 0xcc, sizeof(fsave_b));
    EXPECT_OK("fninit; fnstenv (first 28 bytes: FCW FSW FTW)", "fninit\n\tfnstenv fsave_b");
    pm_check_val("  FCW", le16(fsave_b + 0), 0x037f);
    pm_check_val("  FSW", le16(fsave_b + 4), 0);
    pm_check_val("  FTW (all empty)", le16(fsave_b + 8), 0xffff);
    memset(fx_b, 0, sizeof(fx_b));
    EXPECT_OK("fninit; fxsave", "fninit\n\tfxsave fx_b");
    pm_check_val("  FCW FSW", le16(fx_b) << 16 | le16(fx_b + 2), 0x037f0000);
    pm_check_val("  abridged FTW (all empty)", fx_b[4], 0);
}

static void x87_exceptions(void)
{
    rt_puts("-- unmasked x87 exceptions with CR0.NE=1: #MF at the next fwait (SDM vol. 1 'x87 FPU Exception Handling', vol. 3 'Interrupt 16')\n");
    /* fwait, not another x87 instruction: QEMU checks for a pending
     * exception only in fwait (docs/guests.md, known QEMU deviations) */
    EXPECT_FAULT("ZM unmasked: fld1; fdivs 0.0 (no fault); fnstsw (no fault); fwait -> #MF", PM_MF,
                 PM_NOERR, "fninit\n\tfldcw cw_unmask_zm\n\tfld1\n\tfdivs zero_f\n\tfnstsw sw\n\t" AT "fwait");
    pm_check_val("  FSW read by fnstsw: TOP=7, ES, ZE", sw & 0x38ff, 0x3884);
    EXPECT_OK("fnclex; fld1 (nothing pending)", "fnclex\n\tfld1\n\tfninit");
    EXPECT_FAULT("IM unmasked: fsqrt of -1, then fwait", PM_MF, PM_NOERR,
                 "fninit\n\tfldcw cw_unmask_im\n\tflds minus_one_f\n\tfsqrt\n\tnop\n\t" AT "fwait");
    __asm__ __volatile__("fnstsw %0" : "=m"(sw));
    pm_check_val("  FSW: TOP=7, ES, IE", sw & 0x38ff, 0x3881);
    __asm__ __volatile__("fnclex; fninit");
    EXPECT_FAULT("pending #Z: fxsave does not fault, fwait does", PM_MF, PM_NOERR,
                 "fninit\n\tfldcw cw_unmask_zm\n\tfld1\n\tfdivs zero_f\n\tfxsave fx_b\n\t" AT "fwait");
    pm_check_val("  FSW in the fxsave image has ES|ZE", le16(fx_b + 2) & 0x84, 0x84);
    __asm__ __volatile__("fnclex; fninit");
    EXPECT_OK("masked #Z (default FCW): fld1; fdivs 0.0; fwait", "fninit\n\tfld1\n\tfdivs zero_f\n\tfwait\n\tfnstsw sw\n\tfninit");
    pm_check_val("  FSW: ZE set, ES clear", sw & 0x84, 0x04);
}

int main(void)
{
    pm_init();
    rt_puts("pm_fpu: CR0.TS/EM/MP, CR4.OSFXSR, lazy FPU, fxsave/fnsave, #MF\n");
    pm_check_val("CR0.NE MP, EM TS clear (set by the runtime)", rd_cr0() & (0x20 | CR0_MP | CR0_EM | CR0_TS), 0x20 | CR0_MP);
    cr0_flags();
    lazy_fpu();
    osfxsr();
    save_restore();
    x87_exceptions();
    rt_finish("pm_fpu");
}
