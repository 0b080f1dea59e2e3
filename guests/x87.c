/* x87: floating point unit test.
 *
 * Exact operations (loads/stores in every format, + - * /, sqrt, fprem,
 * frndint, fscale, fxtract, fistp/fbstp, compares, rounding and precision
 * control) are printed as full 80-bit (or integer/BCD) bit patterns.
 * Transcendental results (fsin/fcos/fsincos/fptan/fpatan/fyl2x/fyl2xp1/
 * f2xm1) are not correctly rounded on real hardware and differ between
 * implementations in the last bits, so they are printed rounded to 40
 * mantissa bits and checked against known values. */
#include "rt.h"

typedef union {
    long double ld;
    struct {
        uint32_t lo, hi;
        uint16_t se;
    } p;
} ext_t;

static uint32_t hash = 0x811c9dc5;
static void mix(uint32_t v)
{
    hash = (hash ^ v) * 0x01000193u;
    hash ^= hash >> 13;
}

static void set_cw(uint16_t cw) { __asm__ __volatile__("fldcw %0" : : "m"(cw)); }
static uint16_t get_sw(void)
{
    uint16_t sw;
    __asm__ __volatile__("fnstsw %0" : "=am"(sw));
    return sw;
}
static void clex(void) { __asm__ __volatile__("fnclex"); }

static void pext(const char *name, long double v)
{
    ext_t e;
    e.ld = v;
    rt_printf("%-22s %04x_%08x%08x\n", name, e.p.se, e.p.hi, e.p.lo);
    mix(e.p.se);
    mix(e.p.hi);
    mix(e.p.lo);
}
/* rounded to 40 mantissa bits */
static void papprox(const char *name, long double v)
{
    ext_t e;
    uint64_t m;
    e.ld = v;
    m = ((uint64_t)e.p.hi << 32) | e.p.lo;
    m = (m >> 24) + ((m >> 23) & 1);
    rt_printf("%-22s %04x_%010llx~\n", name, e.p.se, m);
    mix(e.p.se);
    mix((uint32_t)m);
}
static void pdbl(const char *name, double d)
{
    uint64_t b;
    memcpy(&b, &d, 8);
    rt_printf("%-22s %016llx\n", name, b);
    mix((uint32_t)b);
    mix((uint32_t)(b >> 32));
}
static void pflt(const char *name, float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    rt_printf("%-22s %08x\n", name, b);
    mix(b);
}
static long double ld_abs(long double x)
{
    __asm__ __volatile__("fabs" : "+t"(x));
    return x;
}
static void approx_check(const char *name, long double got, long double want)
{
    long double d = ld_abs(got - want), tol = ld_abs(want) * 1e-15L + 1e-300L;
    RT_CHECK(d <= tol, "%s inaccurate", name);
}

#define CW_RN 0x037f
#define CW_RD 0x077f
#define CW_RU 0x0b7f
#define CW_RZ 0x0f7f
static const uint16_t cws[4] = {CW_RN, CW_RD, CW_RU, CW_RZ};
static const char *const rcn[4] = {"rn", "rd", "ru", "rz"};

static long double fadd_(long double a, long double b) { __asm__ __volatile__("faddp" : "+t"(a) : "u"(b) : "st(1)"); return a; }
static long double fsub_(long double a, long double b)
{
    long double r;
    __asm__ __volatile__("fsubrp" : "=t"(r) : "0"(b), "u"(a) : "st(1)"); /* AT&T fsubrp = Intel FSUBP: a - b */
    return r;
}
static long double fmul_(long double a, long double b) { __asm__ __volatile__("fmulp" : "+t"(a) : "u"(b) : "st(1)"); return a; }
static long double fdiv_(long double a, long double b)
{
    long double r;
    __asm__ __volatile__("fdivrp" : "=t"(r) : "0"(b), "u"(a) : "st(1)"); /* st0 = a / st0 */
    return r;
}
static long double fsqrt_(long double a) { __asm__ __volatile__("fsqrt" : "+t"(a)); return a; }

volatile double vd[] = {1.0, 3.0, 0.1, -2.5, 1e300, 4.9406564584124654e-324, 123456.789, -0.0};
volatile float vf[] = {1.5f, -3.25f, 1e-40f, 3.4e38f};

static void t_loadstore(void)
{
    ext_t e;
    float f;
    double d;
    int i;
    for (i = 0; i < 8; i++) {
        long double x = vd[i];
        pext("fld m64", x);
        __asm__ __volatile__("fstps %0" : "=m"(f) : "t"(x));
        pflt("  fst m32", f);
    }
    for (i = 0; i < 4; i++) {
        long double x = vf[i];
        pext("fld m32", x);
        __asm__ __volatile__("fstpl %0" : "=m"(d) : "t"(x) : "st");
        pdbl("  fstp m64", d);
    }
    e.p.se = 0x3fff;
    e.p.hi = 0xaaaaaaaa;
    e.p.lo = 0xaaaaaabb;
    {
        long double x;
        __asm__ __volatile__("fldt %1" : "=t"(x) : "m"(e.ld));
        for (i = 0; i < 4; i++) {
            set_cw(cws[i]);
            __asm__ __volatile__("fstl %0" : "=m"(d) : "t"(x));
            pdbl(rcn[i], d);
            __asm__ __volatile__("fsts %0" : "=m"(f) : "t"(x));
            pflt(rcn[i], f);
        }
        set_cw(CW_RN);
    }
    {
        long double c;
        __asm__ __volatile__("fldpi" : "=t"(c)); pext("fldpi", c);
        __asm__ __volatile__("fldl2t" : "=t"(c)); pext("fldl2t", c);
        __asm__ __volatile__("fldl2e" : "=t"(c)); pext("fldl2e", c);
        __asm__ __volatile__("fldlg2" : "=t"(c)); pext("fldlg2", c);
        __asm__ __volatile__("fldln2" : "=t"(c)); pext("fldln2", c);
        __asm__ __volatile__("fld1" : "=t"(c)); pext("fld1", c);
        __asm__ __volatile__("fldz; fchs" : "=t"(c)); pext("fldz fchs", c);
    }
}

static void t_arith(void)
{
    int r, i, j;
    for (r = 0; r < 4; r++) {
        set_cw(cws[r]);
        for (i = 0; i < 4; i++)
            for (j = 0; j < 7; j++) {
                long double a = vd[j], b = vd[(j + 3) % 8] + 0.3L, x;
                x = i == 0 ? fadd_(a, b) : i == 1 ? fsub_(a, b) : i == 2 ? fmul_(a, b) : fdiv_(a, b);
                ext_t e;
                e.ld = x;
                mix(e.p.se);
                mix(e.p.hi);
                mix(e.p.lo);
            }
        {
            long double third = fdiv_(1.0L, 3.0L), s2 = fsqrt_(2.0L), tiny = fdiv_(1.0L, 3.0e4000L);
            rt_printf("[%s] ", rcn[r]);
            pext("1/3", third);
            rt_printf("[%s] ", rcn[r]);
            pext("sqrt(2)", s2);
            rt_printf("[%s] ", rcn[r]);
            pext("1/3e4000 (denormal)", tiny);
            rt_printf("[%s] ", rcn[r]);
            pext("1+2^-64", fadd_(1.0L, 1.0L / 18446744073709551616.0L));
        }
    }
    set_cw(CW_RN);
    /* precision control */
    {
        static const uint16_t pcs[3] = {0x007f, 0x027f, 0x037f};
        static const char *const pcn[3] = {"pc24", "pc53", "pc64"};
        for (i = 0; i < 3; i++) {
            set_cw(pcs[i]);
            rt_printf("[%s] ", pcn[i]);
            pext("1/3", fdiv_(1.0L, 3.0L));
            rt_printf("[%s] ", pcn[i]);
            pext("sqrt(3)", fsqrt_(3.0L));
            rt_printf("[%s] ", pcn[i]);
            pext("0.1*3", fmul_(vd[2], 3.0L));
        }
        set_cw(CW_RN);
    }
    rt_printf("arith hash %08x\n", hash);
}

static void t_special(void)
{
    long double x;
    uint16_t sw;
    clex();
    x = fsqrt_(-1.0L);
    sw = get_sw();
    pext("sqrt(-1)", x);
    rt_printf("  sw.IE=%u\n", sw & 1);
    clex();
    x = fdiv_(1.0L, vd[7]);
    sw = get_sw();
    pext("1/-0", x);
    rt_printf("  sw.ZE=%u\n", (sw >> 2) & 1);
    clex();
    x = fdiv_(0.0L, vd[7]);
    pext("0/-0", x);
    clex();
    x = fmul_(1e4000L, 1e4000L);
    sw = get_sw();
    pext("1e4000^2", x);
    rt_printf("  sw.OE=%u PE=%u\n", (sw >> 3) & 1, (sw >> 5) & 1);
    clex();
    x = fadd_(1.0L, 2.0L);
    sw = get_sw();
    rt_printf("1+2 sw.PE=%u\n", (sw >> 5) & 1);
    clex();
}

static void t_misc(void)
{
    long double a, b, q;
    int i;
    uint16_t sw;
    /* fprem: exact partial remainder, loop while C2 (incomplete) */
    {
        static const long double num[] = {10.5L, -7.25L, 1e30L, 5.0L, 1e100L};
        static const long double den[] = {3.0L, 2.0L, 7.0L, 0.75L, 3.3L};
        for (i = 0; i < 5; i++) {
            a = num[i];
            b = den[i];
            do {
                __asm__ __volatile__("fprem; fnstsw %%ax" : "+t"(a), "=a"(sw) : "u"(b));
            } while (sw & 0x400);
            pext("fprem", a);
            rt_printf("  C0C1C3=%x\n", ((sw >> 8) & 1) | ((sw >> 8) & 2) | ((sw >> 12) & 4));
            a = num[i];
            __asm__ __volatile__("1: fprem1; fnstsw %%ax; testw $0x400, %%ax; jnz 1b" : "+t"(a), "=a"(sw) : "u"(b));
            pext("fprem1", a);
        }
    }
    /* frndint in every rounding mode */
    for (i = 0; i < 4; i++) {
        set_cw(cws[i]);
        a = 2.5L;
        __asm__ __volatile__("frndint" : "+t"(a));
        b = -3.5L;
        __asm__ __volatile__("frndint" : "+t"(b));
        rt_printf("[%s] ", rcn[i]);
        pext("frndint(2.5)", a);
        rt_printf("[%s] ", rcn[i]);
        pext("frndint(-3.5)", b);
    }
    set_cw(CW_RN);
    a = 3.0L;
    b = 1.75L;
    __asm__ __volatile__("fscale" : "+t"(b) : "u"(a));
    pext("fscale(1.75,3)", b);
    a = 1234.5L;
    __asm__ __volatile__("fxtract" : "=t"(q), "=u"(b) : "0"(a));
    pext("fxtract sig", q);
    pext("fxtract exp", b);
    a = -5.5L;
    __asm__ __volatile__("fabs" : "+t"(a));
    pext("fabs", a);
    __asm__ __volatile__("fchs" : "+t"(a));
    pext("fchs", a);
    /* fxch */
    {
        long double x = 1.25L, y = 2.5L;
        __asm__ __volatile__("fxch %%st(1)" : "+t"(x), "+u"(y));
        pext("fxch st0", x);
        pext("fxch st1", y);
    }
    /* fcom / fucom via status word; fcomi / fucomi via EFLAGS */
    {
        static const long double cv[] = {1.0L, 2.0L, -1.0L, 1.0L};
        long double nan = fsqrt_(-1.0L);
        clex();
        for (i = 0; i < 4; i++) {
            uint32_t fl;
            long double x = cv[i], y = 1.0L;
            __asm__ __volatile__("fcom %%st(1); fnstsw %%ax" : "=a"(sw) : "t"(x), "u"(y));
            __asm__ __volatile__("fucomi %%st(1), %%st; pushfl; popl %0" : "=r"(fl) : "t"(x), "u"(y) : "cc");
            rt_printf("fcom %d vs 1: C3C2C0=%x  fucomi zpc=%x\n", (int)cv[i] * 1,
                      ((sw >> 14) & 1) << 2 | ((sw >> 10) & 1) << 1 | ((sw >> 8) & 1), fl & 0x45);
            mix(sw & 0x4500);
            mix(fl & 0x45);
        }
        {
            uint32_t fl;
            long double one = 1.0L;
            __asm__ __volatile__("fucom %%st(1); fnstsw %%ax" : "=a"(sw) : "t"(nan), "u"(one));
            __asm__ __volatile__("fucomi %%st(1), %%st; pushfl; popl %0" : "=r"(fl) : "t"(nan), "u"(one) : "cc");
            rt_printf("fucom nan: C3C2C0=%x  fucomi zpc=%x\n",
                      ((sw >> 14) & 1) << 2 | ((sw >> 10) & 1) << 1 | ((sw >> 8) & 1), fl & 0x45);
            __asm__ __volatile__("fcomi %%st(1), %%st; pushfl; popl %0" : "=r"(fl) : "t"(one), "u"(nan) : "cc");
            rt_printf("fcomi 1 vs nan: zpc=%x\n", fl & 0x45);
            __asm__ __volatile__("ftst; fnstsw %%ax" : "=a"(sw) : "t"(vd[3]));
            rt_printf("ftst -2.5: C3C2C0=%x\n", ((sw >> 14) & 1) << 2 | ((sw >> 10) & 1) << 1 | ((sw >> 8) & 1));
            __asm__ __volatile__("fxam; fnstsw %%ax" : "=a"(sw) : "t"(nan));
            rt_printf("fxam nan: C3C2C1C0=%x\n", ((sw >> 14) & 1) << 3 | ((sw >> 10) & 1) << 2 | ((sw >> 9) & 1) << 1 | ((sw >> 8) & 1));
            clex();
        }
    }
    /* fist/fistp in all rounding modes, 16/32/64-bit, incl. overflow */
    {
        static const long double iv[] = {2.5L, -2.5L, 3.7L, -3.7L, 0.5L, 1e10L, -32768.4L, 1e19L};
        int r;
        for (r = 0; r < 4; r++) {
            set_cw(cws[r]);
            rt_printf("[%s] fistp:", rcn[r]);
            for (i = 0; i < 8; i++) {
                int16_t s;
                int32_t l;
                int64_t q64;
                long double x = iv[i];
                __asm__ __volatile__("fists %0" : "=m"(s) : "t"(x));
                __asm__ __volatile__("fistl %0" : "=m"(l) : "t"(x));
                __asm__ __volatile__("fistpll %0" : "=m"(q64) : "t"(x) : "st");
                rt_printf(" %04x/%08x/%llx", (uint16_t)s, (uint32_t)l, (uint64_t)q64);
            }
            rt_printf("\n");
        }
        set_cw(CW_RN);
        clex();
        {
            int32_t l;
            long double x = 2.7L;
            __asm__ __volatile__("fisttpl %0" : "=m"(l) : "t"(x) : "st");
            rt_printf("fild/fisttp(2.7)=%d\n", l);
        }
    }
    /* fild */
    {
        int64_t q64 = -1234567890123456789LL;
        int32_t l = -7;
        int16_t s = 32767;
        long double x;
        __asm__ __volatile__("fildll %1" : "=t"(x) : "m"(q64));
        pext("fild m64", x);
        __asm__ __volatile__("fildl %1" : "=t"(x) : "m"(l));
        pext("fild m32", x);
        __asm__ __volatile__("filds %1" : "=t"(x) : "m"(s));
        pext("fild m16", x);
    }
    /* fbstp / fbld */
    {
        static const long double bv[] = {123456789012345678.0L, -987.0L, 0.0L, 42.5L};
        uint8_t bcd[10];
        for (i = 0; i < 4; i++) {
            long double x = bv[i], y;
            int k;
            __asm__ __volatile__("fbstp %0" : "=m"(bcd) : "t"(x) : "st");
            rt_printf("fbstp:");
            for (k = 9; k >= 0; k--)
                rt_printf("%02x", bcd[k]);
            __asm__ __volatile__("fbld %1" : "=t"(y) : "m"(bcd));
            rt_printf("  ");
            pext("fbld", y);
        }
    }
    rt_printf("misc hash %08x\n", hash);
}

static void t_transcendental(void)
{
    static const long double in[] = {0.5L, 1.0L, 2.0L, 3.0L};
    static const long double sins[] = {0.479425538604203L, 0.8414709848078965L, 0.9092974268256817L, 0.1411200080598672L};
    static const long double coss[] = {0.8775825618903728L, 0.5403023058681398L, -0.4161468365471424L, -0.9899924966004454L};
    int i;
    for (i = 0; i < 4; i++) {
        long double s = in[i], c = in[i], ss, cc, t, one;
        __asm__ __volatile__("fsin" : "+t"(s));
        __asm__ __volatile__("fcos" : "+t"(c));
        __asm__ __volatile__("fsincos" : "=t"(cc), "=u"(ss) : "0"(in[i]));
        __asm__ __volatile__("fptan" : "=t"(one), "=u"(t) : "0"(in[i]));
        papprox("fsin", s);
        papprox("fcos", c);
        papprox("fptan", t);
        approx_check("fsin", s, sins[i]);
        approx_check("fcos", c, coss[i]);
        approx_check("fsincos.sin", ss, sins[i]);
        approx_check("fsincos.cos", cc, coss[i]);
        approx_check("fptan", t * c, s);
        RT_CHECK(one == 1.0L, "fptan pushes 1.0");
    }
    {
        long double y = 1.0L, x = 2.0L, r;
        __asm__ __volatile__("fpatan" : "=t"(r) : "0"(x), "u"(y) : "st(1)");
        papprox("fpatan(1,2)", r);
        approx_check("fpatan", r, 0.4636476090008061L);
        y = 3.0L;
        x = 10.0L;
        __asm__ __volatile__("fyl2x" : "=t"(r) : "0"(x), "u"(y) : "st(1)");
        papprox("fyl2x(3,10)", r);
        approx_check("fyl2x", r, 9.965784284662087L);
        x = 0.5L;
        __asm__ __volatile__("f2xm1" : "+t"(x));
        papprox("f2xm1(0.5)", x);
        approx_check("f2xm1", x, 0.41421356237309515L);
        y = 1.0L;
        x = 0.25L;
        __asm__ __volatile__("fyl2xp1" : "=t"(r) : "0"(x), "u"(y) : "st(1)");
        papprox("fyl2xp1(1,0.25)", r);
        approx_check("fyl2xp1", r, 0.32192809488736235L);
    }
}

static void t_env(void)
{
    uint16_t cw, sw, tw;
    uint8_t env[28], st[108];
    long double a = 1.5L, b = 2.5L, c;
    set_cw(0x0e7f);
    __asm__ __volatile__("fnstcw %0" : "=m"(cw));
    rt_printf("fnstcw %04x\n", cw);
    set_cw(CW_RN);
    __asm__ __volatile__("fldt %1; fldt %2; fnstenv %0; fldcw %0" : "=m"(env) : "m"(a), "m"(b));
    memcpy(&sw, env + 4, 2);
    memcpy(&tw, env + 8, 2);
    rt_printf("fnstenv: sw.top=%u tag=%04x\n", (sw >> 11) & 7, tw);
    __asm__ __volatile__("fnsave %0; frstor %0; faddp; fstpt %1" : "+m"(st), "=m"(c));
    pext("after fnsave/frstor", c);
    __asm__ __volatile__("fninit; fnstsw %0" : "=m"(sw));
    __asm__ __volatile__("fnstcw %0" : "=m"(cw));
    rt_printf("fninit: cw=%04x sw=%04x\n", cw, sw);
}

int main(void)
{
    rt_puts("x87: floating point unit\n");
    t_loadstore();
    t_arith();
    t_special();
    t_misc();
    t_transcendental();
    t_env();
    rt_printf("x87 hash %08x\n", hash);
    rt_finish("x87");
}
