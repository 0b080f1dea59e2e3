/* interp: a switch-dispatched bytecode interpreter (stack machine) running
 * a loop that computes a checksum of integer operations. */
#include "rt.h"
enum { PUSH, LOAD, STORE, ADD, SUB, MUL, XOR, SHL, SHR, DUP, JNZ, DEC, SWAP, HALT, AND, OVER };
#define ITERS 32000000
static const int32_t prog[] = {
    PUSH, ITERS, STORE, 0,           /* r0 = counter */
    PUSH, 1, STORE, 1,               /* r1 = acc */
    /* loop: */
    LOAD, 1, PUSH, 1103515245, MUL, PUSH, 12345, ADD, /* acc = acc*a + c */
    DUP, PUSH, 7, SHR, XOR,          /* acc ^= acc >> 7 */
    LOAD, 0, ADD, STORE, 1,          /* acc += counter */
    LOAD, 0, PUSH, 255, AND, LOAD, 1, XOR, STORE, 2,
    LOAD, 0, DEC, DUP, STORE, 0, JNZ, 8,
    LOAD, 1, LOAD, 2, ADD, HALT};
int main(void)
{
    int32_t stack[64], reg[4] = {0, 0, 0, 0};
    int sp = 0, pc = 0;
    uint32_t steps = 0;
    for (;;) {
        int32_t op = prog[pc++], t;
        steps++;
        switch (op) {
        case PUSH: stack[sp++] = prog[pc++]; break;
        case LOAD: stack[sp++] = reg[prog[pc++]]; break;
        case STORE: reg[prog[pc++]] = stack[--sp]; break;
        case ADD: sp--; stack[sp - 1] += stack[sp]; break;
        case SUB: sp--; stack[sp - 1] -= stack[sp]; break;
        case MUL: sp--; stack[sp - 1] = (int32_t)((uint32_t)stack[sp - 1] * (uint32_t)stack[sp]); break;
        case XOR: sp--; stack[sp - 1] ^= stack[sp]; break;
        case AND: sp--; stack[sp - 1] &= stack[sp]; break;
        case SHL: sp--; stack[sp - 1] = (int32_t)((uint32_t)stack[sp - 1] << (stack[sp] & 31)); break;
        case SHR: sp--; stack[sp - 1] = (int32_t)((uint32_t)stack[sp - 1] >> (stack[sp] & 31)); break;
        case DUP: stack[sp] = stack[sp - 1]; sp++; break;
        case OVER: stack[sp] = stack[sp - 2]; sp++; break;
        case SWAP: t = stack[sp - 1]; stack[sp - 1] = stack[sp - 2]; stack[sp - 2] = t; break;
        case DEC: stack[sp - 1]--; break;
        case JNZ: t = prog[pc++]; if (stack[--sp]) pc = t; break;
        case HALT:
            rt_printf("interp: %u bytecodes, result %08x\n", steps, (uint32_t)stack[sp - 1]);
            return 0;
        }
    }
}
