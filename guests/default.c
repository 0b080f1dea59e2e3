/* default: the guest nestmon runs when no kernel is given.
 * Prints a banner, runs a quick self-check (arithmetic, flags, x87, SSE2,
 * string instructions, indirect calls, self-modifying code), then a short
 * CRC32 benchmark timed with rdtsc, and exits with status 0 (1 if any
 * self-check failed).  The cycle count line starts with '#' because it
 * differs from run to run. */
#include "rt.h"

static int passed, total;
static void check(const char *what, int ok)
{
    total++;
    if (ok)
        passed++;
    else
        rt_printf("self-check FAILED: %s\n", what);
}

static uint32_t (*volatile fp)(uint32_t);
static uint32_t times3(uint32_t x) { return x * 3; }
static uint32_t plus7(uint32_t x) { return x + 7; }

__asm__(".text\n"
        ".globl dg_smc\n"
        "dg_smc: movl $0, %eax\n"
        "  ret\n");
uint32_t dg_smc(void);
extern uint8_t dg_smc_bytes[] __asm__("dg_smc");

static uint32_t flags_after_add(uint32_t a, uint32_t b)
{
    uint32_t f;
    __asm__ __volatile__("addl %2, %1\n\tpushfl\n\tpopl %0" : "=r"(f), "+r"(a) : "r"(b) : "cc");
    return f & 0x8d5;
}

static uint8_t buf1[4096], buf2[4096];
static uint32_t crc_table[256];

static void self_check(void)
{
    volatile uint32_t a = 123456789, b = 987;
    volatile int32_t n = -1000;
    uint32_t v, i;

    /* arithmetic */
    check("add", a + b == 123457776);
    check("sub", a - b == 123455802);
    check("mul", a * b == (uint32_t)121851850743ULL);
    check("div", a / b == 125082 && a % b == 855);
    check("idiv", n / 7 == -142 && n % 7 == -6);
    check("64-bit mul", (uint64_t)a * b == 121851850743ULL);
    check("64-bit div", 121851850743ULL / (uint64_t)b == 123456789ULL);
    check("shifts", (a << 5) == 0xeb79a2a0u && (a >> 7) == 964506 && (n >> 3) == -125);
    {
        uint32_t r;
        __asm__("roll $8, %0" : "=r"(r) : "0"((uint32_t)0x12345678));
        check("rol", r == 0x34567812);
        __asm__("bswap %0" : "=r"(r) : "0"((uint32_t)0x12345678));
        check("bswap", r == 0x78563412);
        __asm__("bsrl %1, %0" : "=r"(r) : "r"((uint32_t)0x00100000));
        check("bsr", r == 20);
    }
    /* flags */
    check("flags CF|ZF", flags_after_add(0xffffffff, 1) == 0x55);
    check("flags OF|SF", flags_after_add(0x7fffffff, 1) == 0x894);
    {
        uint32_t lo, hi;
        __asm__("addl %3, %0\n\tadcl $0, %1" : "=r"(lo), "=r"(hi) : "0"(0xffffffffu), "r"(2u), "1"(5u) : "cc");
        check("adc", lo == 1 && hi == 6);
        __asm__("cmpl %2, %1\n\tsetb %b0\n\tmovzbl %b0, %0" : "=q"(v) : "r"(1u), "r"(2u) : "cc");
        check("setb", v == 1);
        v = 5;
        __asm__("cmpl $3, %1\n\tcmovg %2, %0" : "+r"(v) : "r"(4u), "r"(99u) : "cc");
        check("cmovg", v == 99);
    }
    /* x87 */
    {
        long double x = 2.0L, s = 0.5L;
        __asm__("fsqrt" : "+t"(x));
        check("fsqrt", x > 1.41421356237L && x < 1.41421356238L);
        __asm__("fsin" : "+t"(s));
        check("fsin", s > 0.4794255386L && s < 0.4794255387L);
        {
            int32_t r;
            long double y = 1234.5L;
            __asm__("fistpl %0" : "=m"(r) : "t"(y) : "st");
            check("fistp round-to-even", r == 1234);
        }
    }
    /* SSE2 */
    {
        static uint32_t va[4] __attribute__((aligned(16))) = {1, 2, 3, 4};
        static uint32_t vb[4] __attribute__((aligned(16))) = {10, 20, 30, 40};
        static uint32_t vr[4] __attribute__((aligned(16)));
        static double d2[2] __attribute__((aligned(16))) = {1.5, -2.0};
        double dr;
        int32_t ir;
        __asm__ __volatile__("movdqa %1, %%xmm0\n\tpaddd %2, %%xmm0\n\tpshufd $0x1b, %%xmm0, %%xmm0\n\tmovdqa %%xmm0, %0"
                             : "=m"(vr) : "m"(va), "m"(vb));
        check("paddd/pshufd", vr[0] == 44 && vr[3] == 11);
        __asm__ __volatile__("movapd %1, %%xmm1\n\tmulpd %%xmm1, %%xmm1\n\tunpckhpd %%xmm1, %%xmm1\n\tmovsd %%xmm1, %0"
                             : "=m"(dr) : "m"(d2));
        check("mulpd", dr == 4.0);
        __asm__ __volatile__("cvtsi2sd %1, %%xmm2\n\tsqrtsd %%xmm2, %%xmm2\n\tcvttsd2si %%xmm2, %0" : "=r"(ir) : "r"(1000000));
        check("cvtsi2sd/sqrtsd/cvttsd2si", ir == 1000);
    }
    /* string instructions */
    {
        uint32_t si, di, cx;
        for (i = 0; i < 4096; i++)
            buf1[i] = (uint8_t)(i * 13);
        si = (uint32_t)buf1, di = (uint32_t)buf2, cx = 4096;
        __asm__ __volatile__("cld; rep movsb" : "+S"(si), "+D"(di), "+c"(cx) : : "memory");
        check("rep movsb", memcmp(buf1, buf2, 4096) == 0 && cx == 0);
        di = (uint32_t)buf2, cx = 1024;
        __asm__ __volatile__("cld; rep stosl" : "+D"(di), "+c"(cx) : "a"(0x01020304) : "memory");
        check("rep stosl", buf2[4095] == 1 && buf2[0] == 4 && di == (uint32_t)buf2 + 4096);
        buf2[1000] = 0x77;
        di = (uint32_t)buf2, cx = 4096;
        __asm__ __volatile__("cld; repne scasb" : "+D"(di), "+c"(cx) : "a"(0x77) : "cc");
        check("repne scasb", di == (uint32_t)buf2 + 1001);
        si = (uint32_t)buf1 + 4095, di = (uint32_t)buf2 + 4095, cx = 4096;
        __asm__ __volatile__("std; rep movsb; cld" : "+S"(si), "+D"(di), "+c"(cx) : : "memory");
        check("std rep movsb", memcmp(buf1, buf2, 4096) == 0);
    }
    /* indirect calls */
    fp = times3;
    v = fp(14);
    fp = plus7;
    check("indirect call", v == 42 && fp(v) == 49);
    /* self-modifying code */
    for (i = 1; i <= 3; i++) {
        memcpy(dg_smc_bytes + 1, &i, 4);
        v = dg_smc();
        if (v != i)
            break;
    }
    check("self-modifying code", i == 4);
}

static void benchmark(void)
{
    uint32_t i, j, k, crc = 0xffffffff, rounds = 22000;
    uint64_t t0, t1;
    for (i = 0; i < 256; i++) {
        uint32_t c = i;
        for (k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320 ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
    for (i = 0; i < 4096; i++)
        buf1[i] = (uint8_t)(i * 2654435761u >> 24);
    t0 = rt_rdtsc();
    for (j = 0; j < rounds; j++) {
        buf1[j & 4095] ^= (uint8_t)j;
        for (i = 0; i < 4096; i++)
            crc = crc_table[(crc ^ buf1[i]) & 0xff] ^ (crc >> 8);
    }
    t1 = rt_rdtsc();
    rt_printf("benchmark: crc32 over %u KiB: checksum %08x\n", rounds * 4, ~crc);
    rt_printf("# benchmark cycles: %llu (%llu cycles/byte x100)\n", t1 - t0,
              (t1 - t0) * 100 / ((uint64_t)rounds * 4096));
}

int main(void)
{
    rt_puts("nestmon default guest\n");
    self_check();
    rt_printf("self-check: %d/%d passed\n", passed, total);
    benchmark();
    return passed == total ? 0 : 1;
}
