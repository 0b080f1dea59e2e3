/* crc32: table-driven CRC32 over a 64 KiB buffer, repeated (memory loads,
 * table lookups, shifts). */
#include "rt.h"
#define ROUNDS 5000
static uint32_t table[256];
static uint8_t buf[65536];
int main(void)
{
    uint32_t i, j, k, crc = 0xffffffff;
    for (i = 0; i < 256; i++) {
        uint32_t c = i;
        for (k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320 ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    for (i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)((i * 2654435761u) >> 24);
    for (j = 0; j < ROUNDS; j++) {
        buf[j & 0xffff] ^= (uint8_t)j;
        for (i = 0; i < sizeof(buf); i++)
            crc = table[(crc ^ buf[i]) & 0xff] ^ (crc >> 8);
    }
    rt_printf("crc32: %u x 64 KiB, crc %08x\n", ROUNDS, ~crc);
    return 0;
}
