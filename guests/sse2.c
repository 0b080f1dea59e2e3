/* sse2: SSE/SSE2 test.  Packed and scalar float/double arithmetic, integer
 * SIMD, shuffles, unpacks, packs, conversions (with MXCSR rounding modes),
 * comisd/ucomisd flags, movdqa/movdqu/movq/movd, movmsk, pextrw/pinsrw.
 * Every result is printed as a 128-bit hex pattern (high dword first).
 * The compiler itself is built without SSE, so inline asm may use xmm0-7
 * without declaring them. */
#include "rt.h"

typedef struct {
    uint32_t d[4];
} __attribute__((aligned(16))) v128;

static uint32_t hash = 0x811c9dc5;
static void mix(uint32_t v)
{
    hash = (hash ^ v) * 0x01000193u;
    hash ^= hash >> 13;
}

v128 A, B, R;
uint8_t unaligned_buf[64] __attribute__((aligned(16)));

static void pv(const char *name, const v128 *v)
{
    rt_printf("%-12s %08x_%08x_%08x_%08x\n", name, v->d[3], v->d[2], v->d[1], v->d[0]);
    mix(v->d[0]);
    mix(v->d[1]);
    mix(v->d[2]);
    mix(v->d[3]);
}

#define X2(name, insn)                                                             \
    static void name(void)                                                         \
    {                                                                              \
        __asm__ __volatile__("movdqa A, %%xmm0\n\tmovdqa B, %%xmm1\n\t" insn       \
                             "\n\tmovdqa %%xmm0, R" : : : "memory", "eax");               \
        pv(#name, &R);                                                             \
    }

static void setf(v128 *v, float a, float b, float c, float d)
{
    memcpy(&v->d[0], &a, 4);
    memcpy(&v->d[1], &b, 4);
    memcpy(&v->d[2], &c, 4);
    memcpy(&v->d[3], &d, 4);
}
static void setd(v128 *v, double a, double b)
{
    memcpy(&v->d[0], &a, 8);
    memcpy(&v->d[2], &b, 8);
}
static void seti(v128 *v, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    v->d[0] = a;
    v->d[1] = b;
    v->d[2] = c;
    v->d[3] = d;
}

/* float */
X2(addps, "addps %%xmm1, %%xmm0")
X2(subps, "subps %%xmm1, %%xmm0")
X2(mulps, "mulps %%xmm1, %%xmm0")
X2(divps, "divps %%xmm1, %%xmm0")
X2(sqrtps, "sqrtps %%xmm1, %%xmm0")
X2(minps, "minps %%xmm1, %%xmm0")
X2(maxps, "maxps %%xmm1, %%xmm0")
X2(addss, "addss %%xmm1, %%xmm0")
X2(divss, "divss B+4, %%xmm0")
X2(sqrtss, "sqrtss %%xmm1, %%xmm0")
X2(cmpltps, "cmpltps %%xmm1, %%xmm0")
X2(cmpunordps, "cmpunordps %%xmm1, %%xmm0")
X2(andps, "andps %%xmm1, %%xmm0")
X2(andnps, "andnps %%xmm1, %%xmm0")
X2(xorps, "xorps %%xmm1, %%xmm0")
X2(orps, "orps %%xmm1, %%xmm0")
X2(shufps, "shufps $0x1b, %%xmm1, %%xmm0")
X2(unpcklps, "unpcklps %%xmm1, %%xmm0")
X2(unpckhps, "unpckhps %%xmm1, %%xmm0")
X2(movhlps, "movhlps %%xmm1, %%xmm0")
X2(movlhps, "movlhps %%xmm1, %%xmm0")
X2(cvtps2pd, "cvtps2pd %%xmm1, %%xmm0")
X2(cvtdq2ps, "cvtdq2ps %%xmm1, %%xmm0")
X2(cvtps2dq, "cvtps2dq %%xmm1, %%xmm0")
X2(cvttps2dq, "cvttps2dq %%xmm1, %%xmm0")
/* double */
X2(addpd, "addpd %%xmm1, %%xmm0")
X2(subpd, "subpd %%xmm1, %%xmm0")
X2(mulpd, "mulpd %%xmm1, %%xmm0")
X2(divpd, "divpd %%xmm1, %%xmm0")
X2(sqrtpd, "sqrtpd %%xmm1, %%xmm0")
X2(minpd, "minpd %%xmm1, %%xmm0")
X2(maxpd, "maxpd %%xmm1, %%xmm0")
X2(addsd, "addsd %%xmm1, %%xmm0")
X2(mulsd, "mulsd B, %%xmm0")
X2(divsd, "divsd %%xmm1, %%xmm0")
X2(sqrtsd, "sqrtsd %%xmm1, %%xmm0")
X2(maxsd, "maxsd %%xmm1, %%xmm0")
X2(cmplepd, "cmplepd %%xmm1, %%xmm0")
X2(cmpneqsd, "cmpneqsd %%xmm1, %%xmm0")
X2(andpd, "andpd %%xmm1, %%xmm0")
X2(xorpd, "xorpd %%xmm1, %%xmm0")
X2(shufpd, "shufpd $1, %%xmm1, %%xmm0")
X2(unpcklpd, "unpcklpd %%xmm1, %%xmm0")
X2(unpckhpd, "unpckhpd %%xmm1, %%xmm0")
X2(cvtpd2ps, "cvtpd2ps %%xmm1, %%xmm0")
X2(cvtpd2dq, "cvtpd2dq %%xmm1, %%xmm0")
X2(cvttpd2dq, "cvttpd2dq %%xmm1, %%xmm0")
X2(cvtdq2pd, "cvtdq2pd %%xmm1, %%xmm0")
X2(cvtsd2ss, "cvtsd2ss %%xmm1, %%xmm0")
X2(cvtss2sd, "cvtss2sd %%xmm1, %%xmm0")
/* integer */
X2(paddb, "paddb %%xmm1, %%xmm0")
X2(paddw, "paddw %%xmm1, %%xmm0")
X2(paddd, "paddd %%xmm1, %%xmm0")
X2(paddq, "paddq %%xmm1, %%xmm0")
X2(psubb, "psubb %%xmm1, %%xmm0")
X2(psubq, "psubq %%xmm1, %%xmm0")
X2(paddsb, "paddsb %%xmm1, %%xmm0")
X2(paddusw, "paddusw %%xmm1, %%xmm0")
X2(psubsw, "psubsw %%xmm1, %%xmm0")
X2(psubusb, "psubusb %%xmm1, %%xmm0")
X2(pmullw, "pmullw %%xmm1, %%xmm0")
X2(pmulhw, "pmulhw %%xmm1, %%xmm0")
X2(pmulhuw, "pmulhuw %%xmm1, %%xmm0")
X2(pmuludq, "pmuludq %%xmm1, %%xmm0")
X2(pmaddwd, "pmaddwd %%xmm1, %%xmm0")
X2(psadbw, "psadbw %%xmm1, %%xmm0")
X2(pavgb, "pavgb %%xmm1, %%xmm0")
X2(pavgw, "pavgw %%xmm1, %%xmm0")
X2(pminub, "pminub %%xmm1, %%xmm0")
X2(pmaxub, "pmaxub %%xmm1, %%xmm0")
X2(pminsw, "pminsw %%xmm1, %%xmm0")
X2(pmaxsw, "pmaxsw %%xmm1, %%xmm0")
X2(pand, "pand %%xmm1, %%xmm0")
X2(pandn, "pandn %%xmm1, %%xmm0")
X2(por, "por %%xmm1, %%xmm0")
X2(pxor, "pxor %%xmm1, %%xmm0")
X2(pcmpeqb, "pcmpeqb %%xmm1, %%xmm0")
X2(pcmpeqd, "pcmpeqd %%xmm1, %%xmm0")
X2(pcmpgtb, "pcmpgtb %%xmm1, %%xmm0")
X2(pcmpgtw, "pcmpgtw %%xmm1, %%xmm0")
X2(pcmpgtd, "pcmpgtd %%xmm1, %%xmm0")
X2(psllw, "psllw $3, %%xmm0")
X2(pslld, "pslld %%xmm1, %%xmm0")
X2(psllq, "psllq $33, %%xmm0")
X2(psrlw, "psrlw $15, %%xmm0")
X2(psrld, "psrld $7, %%xmm0")
X2(psrlq, "movd %%xmm1, %%eax\n\tandl $63, %%eax\n\tmovd %%eax, %%xmm1\n\tpsrlq %%xmm1, %%xmm0")
X2(psraw, "psraw $4, %%xmm0")
X2(psrad, "psrad $31, %%xmm0")
X2(pslldq, "pslldq $5, %%xmm0")
X2(psrldq, "psrldq $9, %%xmm0")
X2(punpcklbw, "punpcklbw %%xmm1, %%xmm0")
X2(punpckhbw, "punpckhbw %%xmm1, %%xmm0")
X2(punpcklwd, "punpcklwd %%xmm1, %%xmm0")
X2(punpckhdq, "punpckhdq %%xmm1, %%xmm0")
X2(punpcklqdq, "punpcklqdq %%xmm1, %%xmm0")
X2(punpckhqdq, "punpckhqdq %%xmm1, %%xmm0")
X2(packsswb, "packsswb %%xmm1, %%xmm0")
X2(packuswb, "packuswb %%xmm1, %%xmm0")
X2(packssdw, "packssdw %%xmm1, %%xmm0")
X2(pshufd, "pshufd $0x4e, %%xmm1, %%xmm0")
X2(pshuflw, "pshuflw $0x1b, %%xmm1, %%xmm0")
X2(pshufhw, "pshufhw $0xd8, %%xmm1, %%xmm0")
X2(pinsrw, "movl $0xbeef, %%eax\n\tpinsrw $5, %%eax, %%xmm0")
X2(movq_zero, "movq %%xmm1, %%xmm0")
X2(movd_zero, "movl $0x12345678, %%eax\n\tmovd %%eax, %%xmm0")
X2(movsd_reg, "movsd %%xmm1, %%xmm0")
X2(movsd_mem, "movsd B+8, %%xmm0")
X2(movss_reg, "movss %%xmm1, %%xmm0")
X2(movlpd, "movlpd B+8, %%xmm0")
X2(movhpd, "movhpd B, %%xmm0")
X2(movdqu_mem, "movdqu unaligned_buf+3, %%xmm0\n\tmovdqu %%xmm0, unaligned_buf+21\n\tmovdqu unaligned_buf+19, %%xmm0")
X2(all_regs, "movdqa %%xmm0, %%xmm2\n\tpaddd %%xmm1, %%xmm2\n\tmovdqa %%xmm2, %%xmm3\n\tpsubd %%xmm0, %%xmm3\n\t"
             "movdqa %%xmm3, %%xmm4\n\tpxor %%xmm2, %%xmm4\n\tmovdqa %%xmm4, %%xmm5\n\tpaddq %%xmm4, %%xmm5\n\t"
             "movdqa %%xmm5, %%xmm6\n\tpunpcklbw %%xmm1, %%xmm6\n\tmovdqa %%xmm6, %%xmm7\n\tpshufd $0x39, %%xmm7, %%xmm0")

static void run_float(void)
{
    setf(&A, 1.5f, -2.25f, 3e38f, 1e-40f);
    setf(&B, 0.1f, 4.0f, 10.0f, -0.0f);
    addps(); subps(); mulps(); divps(); sqrtps(); minps(); maxps(); addss(); divss(); sqrtss();
    cmpltps(); andps(); andnps(); xorps(); orps(); shufps(); unpcklps(); unpckhps(); movhlps();
    movlhps(); cvtps2pd(); cvtps2dq(); cvttps2dq();
    {
        uint32_t nan = 0x7fc00000;
        memcpy(&B.d[2], &nan, 4);
    }
    cmpunordps(); minps(); maxps(); addps();
    seti(&B, 7, (uint32_t)-3, 0x7fffffff, 0x80000000);
    cvtdq2ps();
}

static void run_double(void)
{
    setd(&A, 1.0 / 3.0, -1e300);
    setd(&B, 3.0, 1e10);
    addpd(); subpd(); mulpd(); divpd(); sqrtpd(); minpd(); maxpd(); addsd(); mulsd(); divsd();
    sqrtsd(); maxsd(); cmplepd(); cmpneqsd(); andpd(); xorpd(); shufpd(); unpcklpd(); unpckhpd();
    cvtpd2ps(); cvtsd2ss(); cvtss2sd(); movsd_reg(); movsd_mem(); movss_reg(); movlpd(); movhpd();
    setd(&B, 2.5, -3.5);
    cvtpd2dq(); cvttpd2dq();
    setd(&B, 1e20, -2147483648.6);
    cvtpd2dq(); cvttpd2dq();
    seti(&B, (uint32_t)-5, 0x7fffffff, 1, 2);
    cvtdq2pd();
    setd(&A, 0.0, -0.0);
    setd(&B, -0.0, 0.0);
    minpd(); maxpd();
    {
        uint64_t nan = 0x7ff8000000000001ULL;
        memcpy(&B.d[0], &nan, 8);
    }
    maxsd(); addpd(); mulpd();
}

static void run_int(void)
{
    seti(&A, 0x80ff7f01, 0x12345678, 0xfffe0002, 0x7fff8000);
    seti(&B, 0x7f01ff80, 0x9abcdef0, 0x00030004, 0x80017fff);
    paddb(); paddw(); paddd(); paddq(); psubb(); psubq(); paddsb(); paddusw(); psubsw(); psubusb();
    pmullw(); pmulhw(); pmulhuw(); pmuludq(); pmaddwd(); psadbw(); pavgb(); pavgw(); pminub();
    pmaxub(); pminsw(); pmaxsw(); pand(); pandn(); por(); pxor(); pcmpeqb(); pcmpeqd(); pcmpgtb();
    pcmpgtw(); pcmpgtd(); psllw(); psllq(); psrlw(); psrld(); psraw(); psrad(); pslldq(); psrldq();
    punpcklbw(); punpckhbw(); punpcklwd(); punpckhdq(); punpcklqdq(); punpckhqdq(); packsswb();
    packuswb(); packssdw(); pshufd(); pshuflw(); pshufhw(); pinsrw(); movq_zero(); movd_zero();
    movdqu_mem(); all_regs();
    seti(&B, 5, 0, 0, 0);
    pslld(); psrlq();
    seti(&B, 70, 0, 0, 0);
    pslld(); psrlq();
}

static void run_misc(void)
{
    uint32_t r, fl;
    double a = 1.0, nan;
    uint64_t nanbits = 0x7ff8000000000000ULL;
    static const double cmpv[] = {0.5, 1.0, 2.0};
    int i;
    memcpy(&nan, &nanbits, 8);
    for (i = 0; i < 3; i++) {
        __asm__ __volatile__("movsd %1, %%xmm0\n\tcomisd %2, %%xmm0\n\tpushfl\n\tpopl %0"
                             : "=r"(fl) : "m"(cmpv[i]), "m"(a) : "cc");
        rt_printf("comisd %d: zpc=%x\n", i, fl & 0x8d5);
        mix(fl & 0x8d5);
    }
    __asm__ __volatile__("movsd %1, %%xmm0\n\tucomisd %2, %%xmm0\n\tpushfl\n\tpopl %0"
                         : "=r"(fl) : "m"(nan), "m"(a) : "cc");
    rt_printf("ucomisd nan: zpc=%x\n", fl & 0x8d5);
    __asm__ __volatile__("movss %1, %%xmm0\n\tcomiss %1, %%xmm0\n\tpushfl\n\tpopl %0"
                         : "=r"(fl) : "m"(A.d[0]) : "cc");
    rt_printf("comiss eq: zpc=%x\n", fl & 0x8d5);
    seti(&A, 0x80ff7f01, 0x12345678, 0xfffe0002, 0x7fff8000);
    __asm__ __volatile__("movdqa A, %%xmm0\n\tpmovmskb %%xmm0, %0" : "=r"(r));
    rt_printf("pmovmskb %08x\n", r);
    __asm__ __volatile__("movdqa A, %%xmm0\n\tmovmskpd %%xmm0, %0" : "=r"(r));
    rt_printf("movmskpd %08x\n", r);
    __asm__ __volatile__("movdqa A, %%xmm0\n\tmovmskps %%xmm0, %0" : "=r"(r));
    rt_printf("movmskps %08x\n", r);
    __asm__ __volatile__("movdqa A, %%xmm0\n\tpextrw $7, %%xmm0, %0" : "=r"(r));
    rt_printf("pextrw %08x\n", r);
    __asm__ __volatile__("movdqa A, %%xmm0\n\tmovd %%xmm0, %0" : "=r"(r));
    rt_printf("movd %08x\n", r);
    /* scalar conversions under each MXCSR rounding mode */
    {
        static const double cv[] = {2.5, -2.5, 3.7, -0.5, 1e10};
        static const char *const rn[] = {"rn", "rd", "ru", "rz"};
        int m, k;
        for (m = 0; m < 4; m++) {
            uint32_t mx = 0x1f80 | (m << 13);
            __asm__ __volatile__("ldmxcsr %0" : : "m"(mx));
            rt_printf("[%s] cvtsd2si:", rn[m]);
            for (k = 0; k < 5; k++) {
                int32_t v, t;
                float f;
                uint32_t fb;
                __asm__ __volatile__("cvtsd2si %2, %0\n\tcvttsd2si %2, %1" : "=r"(v), "=r"(t) : "m"(cv[k]));
                __asm__ __volatile__("cvtsi2ss %1, %%xmm0\n\tmovss %%xmm0, %0" : "=m"(f) : "r"(0x7ffffff1 + k));
                memcpy(&fb, &f, 4);
                rt_printf(" %x/%x/%08x", (uint32_t)v, (uint32_t)t, fb);
                mix(v);
                mix(t);
                mix(fb);
            }
            rt_printf("\n");
            setd(&A, 1.0, 1.0);
            setd(&B, 3.0, -3.0);
            rt_printf("[%s] ", rn[m]);
            divpd();
        }
        {
            uint32_t mx = 0x1f80;
            __asm__ __volatile__("ldmxcsr %0" : : "m"(mx));
        }
    }
    {
        double d = -7.0, out;
        int32_t i32 = -123456;
        __asm__ __volatile__("cvtsi2sd %1, %%xmm3\n\tmovsd %%xmm3, %0" : "=m"(out) : "r"(i32));
        rt_printf("cvtsi2sd %08x%08x\n", ((uint32_t *)&out)[1], ((uint32_t *)&out)[0]);
        (void)d;
    }
    /* MXCSR exception flags: divide by zero sets ZE */
    {
        uint32_t mx, z = 0x1f80;
        __asm__ __volatile__("ldmxcsr %1\n\tmovdqa A, %%xmm0\n\txorps %%xmm1, %%xmm1\n\tdivps %%xmm1, %%xmm0\n\tstmxcsr %0"
                             : "=m"(mx) : "m"(z));
        rt_printf("mxcsr after x/0: %08x\n", mx & 0xffbf);
        __asm__ __volatile__("ldmxcsr %0" : : "m"(z));
    }
}

int main(void)
{
    int i;
    rt_puts("sse2: SSE/SSE2 floating point and integer SIMD\n");
    for (i = 0; i < 64; i++)
        unaligned_buf[i] = (uint8_t)(i * 37 + 11);
    run_float();
    run_double();
    run_int();
    run_misc();
    RT_CHECK(hash != 0, "hash");
    {
        /* known answers */
        seti(&A, 1, 2, 3, 4);
        seti(&B, 10, 20, 30, 40);
        __asm__ __volatile__("movdqa A, %%xmm0\n\tpaddd B, %%xmm0\n\tpshufd $0x1b, %%xmm0, %%xmm0\n\tmovdqa %%xmm0, R" ::: "memory");
        RT_CHECK(R.d[0] == 44 && R.d[1] == 33 && R.d[2] == 22 && R.d[3] == 11, "paddd/pshufd");
        setd(&A, 2.0, 9.0);
        __asm__ __volatile__("sqrtpd A, %%xmm0\n\tmovdqa %%xmm0, R" ::: "memory");
        RT_CHECK(R.d[2] == 0 && R.d[3] == 0x40080000, "sqrtpd(9) = 3");
    }
    rt_printf("sse2 hash %08x\n", hash);
    rt_finish("sse2");
}
