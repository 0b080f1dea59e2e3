/* calls: call-heavy code — recursive fib and a function-pointer dispatch
 * loop (direct calls, returns, indirect calls). */
#include "rt.h"
__attribute__((noinline)) static uint32_t fib(uint32_t n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
__attribute__((noinline)) static uint32_t op0(uint32_t x) { return x * 3 + 1; }
__attribute__((noinline)) static uint32_t op1(uint32_t x) { return x ^ (x >> 3); }
__attribute__((noinline)) static uint32_t op2(uint32_t x) { return x + 0x9e3779b9; }
__attribute__((noinline)) static uint32_t op3(uint32_t x) { return (x << 5) | (x >> 27); }
__attribute__((noinline)) static uint32_t op4(uint32_t x) { return x - (x >> 2); }
__attribute__((noinline)) static uint32_t op5(uint32_t x) { return ~x * 7; }
__attribute__((noinline)) static uint32_t op6(uint32_t x) { return x * x + 3; }
__attribute__((noinline)) static uint32_t op7(uint32_t x) { return x >> 1 ^ 0xa5a5a5a5; }
static uint32_t (*volatile const ops[8])(uint32_t) = {op0, op1, op2, op3, op4, op5, op6, op7};
int main(void)
{
    uint32_t f = fib(32), x = 1, i;
    for (i = 0; i < 80000000; i++)
        x = ops[(x ^ i) & 7](x);
    rt_printf("calls: fib(32)=%u, dispatch %08x\n", f, x);
    return 0;
}
