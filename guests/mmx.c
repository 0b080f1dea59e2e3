/* mmx: MMX test.  Packed integer arithmetic on mm0-mm7, shifts, packs,
 * unpacks, movd/movq, emms and the x87/MMX state interaction (after MMX
 * use and emms, the x87 stack is usable again; MMX registers alias the
 * x87 mantissas). */
#include "rt.h"

uint64_t MA, MB, MR;
static uint32_t hash = 0x811c9dc5;
static void mix(uint32_t v)
{
    hash = (hash ^ v) * 0x01000193u;
    hash ^= hash >> 13;
}
static void pq(const char *name, uint64_t v)
{
    rt_printf("%-10s %016llx\n", name, v);
    mix((uint32_t)v);
    mix((uint32_t)(v >> 32));
}
#define M2(name, insn)                                                                 \
    static void name(void)                                                             \
    {                                                                                  \
        __asm__ __volatile__("movq MA, %%mm0\n\tmovq MB, %%mm1\n\t" insn               \
                             "\n\tmovq %%mm0, MR\n\temms" : : : "memory", "eax");      \
        pq(#name, MR);                                                                 \
    }
M2(paddb, "paddb %%mm1, %%mm0")
M2(paddw, "paddw %%mm1, %%mm0")
M2(paddd, "paddd %%mm1, %%mm0")
M2(paddsb, "paddsb %%mm1, %%mm0")
M2(paddusb, "paddusb %%mm1, %%mm0")
M2(psubw, "psubw %%mm1, %%mm0")
M2(psubsw, "psubsw %%mm1, %%mm0")
M2(psubusw, "psubusw %%mm1, %%mm0")
M2(pmullw, "pmullw %%mm1, %%mm0")
M2(pmulhw, "pmulhw %%mm1, %%mm0")
M2(pmaddwd, "pmaddwd %%mm1, %%mm0")
M2(pand, "pand %%mm1, %%mm0")
M2(pandn, "pandn %%mm1, %%mm0")
M2(por, "por %%mm1, %%mm0")
M2(pxor, "pxor MB, %%mm0")
M2(pcmpeqw, "pcmpeqw %%mm1, %%mm0")
M2(pcmpgtb, "pcmpgtb %%mm1, %%mm0")
M2(pcmpgtd, "pcmpgtd %%mm1, %%mm0")
M2(psllw, "psllw $5, %%mm0")
M2(psllq, "psllq %%mm1, %%mm0")
M2(psrlq, "psrlq $17, %%mm0")
M2(psrad, "psrad $9, %%mm0")
M2(psraw_big, "psraw $20, %%mm0")
M2(punpcklbw, "punpcklbw %%mm1, %%mm0")
M2(punpckhwd, "punpckhwd %%mm1, %%mm0")
M2(punpckhdq, "punpckhdq %%mm1, %%mm0")
M2(packsswb, "packsswb %%mm1, %%mm0")
M2(packuswb, "packuswb %%mm1, %%mm0")
M2(packssdw, "packssdw %%mm1, %%mm0")
M2(movd_r, "movd %%mm1, %%eax\n\tnotl %%eax\n\tmovd %%eax, %%mm0")
M2(pshufw, "pshufw $0x1b, %%mm1, %%mm0")
M2(pavgb, "pavgb %%mm1, %%mm0")
M2(pminsw, "pminsw %%mm1, %%mm0")
M2(psadbw, "psadbw %%mm1, %%mm0")
M2(regs, "movq %%mm0, %%mm2\n\tpaddw %%mm1, %%mm2\n\tmovq %%mm2, %%mm3\n\tpsubb %%mm0, %%mm3\n\t"
         "movq %%mm3, %%mm4\n\tpxor %%mm1, %%mm4\n\tmovq %%mm4, %%mm5\n\tpunpcklwd %%mm2, %%mm5\n\t"
         "movq %%mm5, %%mm6\n\tpaddd %%mm3, %%mm6\n\tmovq %%mm6, %%mm7\n\tpsllq $3, %%mm7\n\tmovq %%mm7, %%mm0")

int main(void)
{
    static const uint64_t va[] = {0x80ff7f0112345678ULL, 0x0001fffe7fff8000ULL, 0xffffffffffffffffULL};
    static const uint64_t vb[] = {0x7f01ff809abcdef0ULL, 0x0000000000000007ULL, 0x8000000180000001ULL};
    int i;
    rt_puts("mmx: MMX packed integer\n");
    for (i = 0; i < 3; i++) {
        MA = va[i];
        MB = vb[i];
        rt_printf("-- set %d\n", i);
        paddb(); paddw(); paddd(); paddsb(); paddusb(); psubw(); psubsw(); psubusw(); pmullw();
        pmulhw(); pmaddwd(); pand(); pandn(); por(); pxor(); pcmpeqw(); pcmpgtb(); pcmpgtd();
        psllw(); psllq(); psrlq(); psrad(); psraw_big(); punpcklbw(); punpckhwd(); punpckhdq();
        packsswb(); packuswb(); packssdw(); movd_r(); pshufw(); pavgb(); pminsw(); psadbw(); regs();
    }
    /* x87 aliasing: an MMX write to mm0 makes st(0) a NaN-like pattern with
     * exponent 0xffff; after emms the x87 stack is empty and usable. */
    {
        uint8_t st[108];
        uint16_t tw;
        long double x;
        MA = 0x0123456789abcdefULL;
        __asm__ __volatile__("fninit\n\tmovq MA, %%mm0\n\tfnsave %0\n\tfrstor %0" : "=m"(st));
        memcpy(&tw, st + 8, 2);
        /* (hardware also sets the exponent to 0xffff; QEMU TCG does not, so
         * only the mantissa is printed) */
        rt_printf("after movq: tag=%04x st0.mant=%08x%08x\n", tw, *(uint32_t *)(st + 32),
                  *(uint32_t *)(st + 28));
        __asm__ __volatile__("emms\n\tfnstenv %0" : "=m"(st));
        memcpy(&tw, st + 8, 2);
        rt_printf("after emms: tag=%04x\n", tw);
        x = 2.0L;
        __asm__ __volatile__("fsqrt" : "+t"(x));
        RT_CHECK(x > 1.414L && x < 1.415L, "x87 usable after emms");
    }
    MA = 0x0001000200030004ULL;
    MB = 0x0010002000300040ULL;
    paddw();
    RT_CHECK(MR == 0x0011002200330044ULL, "paddw known answer");
    rt_printf("mmx hash %08x\n", hash);
    rt_finish("mmx");
}
