/* memtraffic: rep movsd / rep movsb / rep stosd memory traffic over 1 MiB
 * buffers, with a checksum pass.  (QEMU TCG executes rep string
 * instructions element by element, so this one is very slow there.) */
#include "rt.h"
#define SZ (1 << 20)
#define ROUNDS 15000
static uint8_t a[SZ] __attribute__((aligned(64))), b[SZ] __attribute__((aligned(64)));
int main(void)
{
    uint32_t r, i, sum = 0;
    for (i = 0; i < SZ; i++)
        a[i] = (uint8_t)(i * 7);
    for (r = 0; r < ROUNDS; r++) {
        uint32_t si = (uint32_t)a, di = (uint32_t)b, cx = SZ / 4;
        __asm__ __volatile__("cld; rep movsl" : "+S"(si), "+D"(di), "+c"(cx) : : "memory");
        si = (uint32_t)b + 3 + (r & 0xffff), di = (uint32_t)a + 1 + (r & 0x3fff), cx = 65536;
        __asm__ __volatile__("rep movsb" : "+S"(si), "+D"(di), "+c"(cx) : : "memory");
        di = (uint32_t)b + (r & 4095), cx = SZ / 8;
        __asm__ __volatile__("rep stosl" : "+D"(di), "+c"(cx) : "a"(r * 0x01010101) : "memory");
        sum = sum * 31 + a[(r * 4099) & (SZ - 1)] + b[(r * 8191) & (SZ - 1)];
    }
    rt_printf("memtraffic: %u rounds x 1.56 MiB, checksum %08x\n", ROUNDS, sum);
    return 0;
}
