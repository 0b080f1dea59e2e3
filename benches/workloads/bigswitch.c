/* bigswitch: a bytecode interpreter whose dispatch is one switch over 48
 * opcodes (a jump table), running a generated program that uses all of
 * them, so that the dispatch jump has many targets in turn. */
#include "rt.h"
#define NOPS 48
#define PROG 4096
#define ROUNDS 30000
static uint8_t prog[PROG];
static uint32_t run(const uint8_t *code, uint32_t n, uint32_t a, uint32_t b)
{
    uint32_t pc = 0, c = 0x12345678, d = 0;
    while (pc < n) {
        switch (code[pc++]) {
        case 0: a += b; break;
        case 1: a -= b; break;
        case 2: a ^= b; break;
        case 3: a |= b >> 3; break;
        case 4: a &= b | 0x0f0f0f0f; break;
        case 5: a = a * 33 + 1; break;
        case 6: a = (a << 5) | (a >> 27); break;
        case 7: b += a >> 2; break;
        case 8: b ^= a << 1; break;
        case 9: b = b * 5 + 7; break;
        case 10: c += a; break;
        case 11: c ^= b; break;
        case 12: d += c >> 1; break;
        case 13: d ^= a; break;
        case 14: { uint32_t t = a; a = b; b = t; } break;
        case 15: { uint32_t t = c; c = d; d = t; } break;
        case 16: a += code[pc & (PROG - 1)]; break;
        case 17: b -= code[(pc + 7) & (PROG - 1)]; break;
        case 18: if (a & 1) pc++; break;
        case 19: if (b & 2) pc += 2; break;
        case 20: a = ~a; break;
        case 21: b = -b; break;
        case 22: c = c * 3 + d; break;
        case 23: d = d * 7 + c; break;
        case 24: a += 0x9e3779b9; break;
        case 25: b += 0x7f4a7c15; break;
        case 26: c -= a ^ b; break;
        case 27: d -= b ^ c; break;
        case 28: a = a >> 1 ^ (-(a & 1) & 0xedb88320); break;
        case 29: b = b >> 1 ^ (-(b & 1) & 0x82f63b78); break;
        case 30: a += b + c + d; break;
        case 31: b ^= a + c; break;
        case 32: c = (c << 3) | (c >> 29); break;
        case 33: d = (d << 11) | (d >> 21); break;
        case 34: a = a * 0x01000193; break;
        case 35: b = b * 0x5bd1e995; break;
        case 36: c ^= c >> 15; break;
        case 37: d ^= d >> 13; break;
        case 38: a -= d; break;
        case 39: b -= c; break;
        case 40: c += 0x6a09e667; break;
        case 41: d += 0xbb67ae85; break;
        case 42: a ^= a >> 16; break;
        case 43: b ^= b >> 16; break;
        case 44: a = a < b ? b - a : a - b; break;
        case 45: c = c < d ? c : d ^ 0x55; break;
        case 46: d = d > a ? d - a : a; break;
        case 47: a ^= b ^ c ^ d; break;
        }
    }
    return a ^ b ^ c ^ d;
}
int main(void)
{
    uint32_t i, x = 88172645, sum = 0;
    for (i = 0; i < PROG; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        prog[i] = x % NOPS;
    }
    for (i = 0; i < ROUNDS; i++)
        sum = sum * 31 + run(prog, PROG, i, sum);
    rt_printf("bigswitch: %u ops x %u, checksum %08x\n", PROG, ROUNDS, sum);
    return 0;
}
