/* indirect: indirect control flow.  Switch jump tables (dense, compiled to
 * jmp *table(,reg,4)), function-pointer tables, computed gotos, call *reg
 * and call *mem, push/ret and modified-return-address tricks, call/pop to
 * get EIP, jmp *mem through a hand-built table, a PLT entry's jmp *slot
 * whose slot changes between calls, and a bytecode interpreter mixing all
 * of them. */
#include "rt.h"

__attribute__((noinline)) static uint32_t sw(uint32_t op, uint32_t x)
{
    switch (op) {
    case 0: return x + 1;
    case 1: return x * 3;
    case 2: return x ^ 0x5555;
    case 3: return x >> 1;
    case 4: return x << 2;
    case 5: return x - 7;
    case 6: return ~x;
    case 7: return x * x;
    case 8: return x + 0x1000;
    case 9: return x | 0x80;
    case 10: return x & 0xfff0;
    case 11: return x / 3;
    case 12: return x % 1000;
    case 13: return x + op;
    case 14: return x * 5 + 1;
    case 15: return (x << 7) | (x >> 25);
    default: return 0;
    }
}

static uint32_t f0(uint32_t x) { return x + 11; }
static uint32_t f1(uint32_t x) { return x * 7; }
static uint32_t f2(uint32_t x) { return x ^ (x >> 3); }
static uint32_t f3(uint32_t x) { return x - 100; }
static uint32_t f4(uint32_t x) { return (x << 5) + x; }
static uint32_t (*volatile ftab[5])(uint32_t) = {f0, f1, f2, f3, f4};

/* plt_jump: a static executable's PLT entry, `jmp *slot` through a slot at
 * a constant address; the caller changes the slot between calls. */
static uint32_t (*volatile plt_slot)(uint32_t) = f0;
__asm__(".text\n"
        ".globl plt_jump\n"
        "plt_jump:\n\t"
        "jmp *plt_slot\n");
extern uint32_t plt_jump(uint32_t x);

/* Calls through plt_jump, the slot steady for a while (the jump is hot
 * with one target), then moved to another function every few calls. */
__attribute__((noinline)) static uint32_t plt_calls(void)
{
    uint32_t i, sum = 0;
    plt_slot = f0;
    for (i = 0; i < 2000; i++)
        sum = plt_jump(sum);
    for (i = 0; i < 2000; i++) {
        if (i % 7 == 0)
            plt_slot = ftab[(i / 7) % 5];
        sum = plt_jump(sum + i);
    }
    return sum;
}

__attribute__((noinline)) static uint32_t computed_goto(const uint8_t *prog, uint32_t acc)
{
    static void *const labels[] = {&&op_inc, &&op_dbl, &&op_xor, &&op_neg, &&op_end};
    const uint8_t *pc = prog;
    goto *labels[*pc++];
op_inc:
    acc++;
    goto *labels[*pc++];
op_dbl:
    acc *= 2;
    goto *labels[*pc++];
op_xor:
    acc ^= 0xa5a5;
    goto *labels[*pc++];
op_neg:
    acc = -acc;
    goto *labels[*pc++];
op_end:
    return acc;
}

/* assembly tricks */
__asm__(".text\n"
        /* push target; ret == jump */
        ".globl ret_jump\n"
        "ret_jump:\n"
        "  movl 4(%esp), %eax\n"
        "  pushl $1f\n"
        "  ret\n"
        "  movl $0xbad, %eax\n"
        "1: addl $100, %eax\n"
        "  ret\n"
        /* callee skips an instruction in the caller by bumping its return address */
        ".globl ret_skip\n"
        "ret_skip:\n"
        "  call 2f\n"
        "  .byte 0xeb, 0x05\n"          /* jmp +5 (skipped over) */
        "  movl $1, %eax\n"             /* 5 bytes: skipped too  */
        "  movl $42, %eax\n"
        "  ret\n"
        "2: addl $2, (%esp)\n"          /* skip the 2-byte jmp */
        "  addl $5, (%esp)\n"           /* and the 5-byte mov  */
        "  ret\n"
        /* call/pop to get EIP */
        ".globl get_eip_delta\n"
        "get_eip_delta:\n"
        "  call 3f\n"
        "3: popl %eax\n"
        "  subl $3b, %eax\n"            /* 0 when addresses agree */
        "  ret\n"
        /* jmp *table(,%ecx,4) through a hand-built table */
        ".globl asm_table\n"
        "asm_table:\n"
        "  movl 4(%esp), %ecx\n"
        "  andl $3, %ecx\n"
        "  jmp *4f(,%ecx,4)\n"
        "5: movl $10, %eax\n  ret\n"
        "6: movl $20, %eax\n  ret\n"
        "7: movl $30, %eax\n  ret\n"
        "8: movl $40, %eax\n  ret\n"
        "  .section .rodata\n"
        "  .align 4\n"
        "4: .long 5b, 6b, 7b, 8b\n"
        "  .text\n"
        /* call *%edx and call *mem */
        ".globl call_reg_mem\n"
        "call_reg_mem:\n"
        "  pushl %ebx\n"
        "  movl 8(%esp), %edx\n"        /* function pointer */
        "  pushl $5\n"
        "  call *%edx\n"
        "  movl %eax, %ebx\n"
        "  movl 16(%esp), %edx\n"
        "  movl %edx, 9f\n"
        "  movl %ebx, (%esp)\n"
        "  call *9f\n"
        "  addl $4, %esp\n"
        "  popl %ebx\n"
        "  ret\n"
        "  .data\n"
        "9: .long 0\n"
        "  .text\n"
        /* jmp *%eax chain: a linked list of code addresses */
        ".globl jmp_chain\n"
        "jmp_chain:\n"
        "  xorl %eax, %eax\n"
        "  movl $10f, %edx\n"
        "  jmp *%edx\n"
        "10: incl %eax\n  movl $11f, %edx\n  jmp *%edx\n"
        "11: addl $10, %eax\n  movl $12f, %edx\n  jmp *%edx\n"
        "12: addl $100, %eax\n  ret\n");
uint32_t ret_jump(uint32_t);
uint32_t ret_skip(void);
uint32_t get_eip_delta(void);
uint32_t asm_table(uint32_t);
uint32_t call_reg_mem(uint32_t (*)(uint32_t), uint32_t (*)(uint32_t));
uint32_t jmp_chain(void);

/* interpreter mixing switch and function pointers */
struct vm {
    uint32_t acc, pc;
};
static uint32_t prog2[64];

int main(void)
{
    uint32_t i, v, sum = 0;
    rt_puts("indirect: jump tables, function pointers, computed goto, ret tricks\n");
    for (i = 0; i < 5000; i++)
        sum = sw(i % 17, sum + i);
    rt_printf("switch: %08x\n", sum);
    RT_CHECK(sw(7, 9) == 81 && sw(16, 1) == 0 && sw(12, 12345) == 345, "switch cases");
    sum = 1;
    for (i = 0; i < 5000; i++)
        sum = ftab[(sum ^ i) % 5](sum);
    rt_printf("fnptr table: %08x\n", sum);
    RT_CHECK(ftab[1](6) == 42, "fnptr");
    {
        static const uint8_t p1[] = {0, 0, 1, 2, 3, 1, 0, 4};
        static const uint8_t p2[] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 2, 3, 3, 2, 4};
        v = computed_goto(p1, 5);
        rt_printf("computed goto: %08x %08x\n", v, computed_goto(p2, 3));
        RT_CHECK(computed_goto(p2, 3) == 3u * 256 + 1, "computed goto value 2");
        RT_CHECK(computed_goto(p1, 5) == (uint32_t)(-(int32_t)(((5 + 2) * 2) ^ 0xa5a5) * 2 + 1), "computed goto value");
    }
    v = ret_jump(1);
    RT_CHECK(v == 101, "push/ret jump: %u", v);
    v = ret_skip();
    RT_CHECK(v == 42, "return address bump: %u", v);
    RT_CHECK(get_eip_delta() == 0, "call/pop eip");
    sum = 0;
    for (i = 0; i < 100; i++)
        sum += asm_table(i);
    RT_CHECK(sum == 2500, "jmp *table: %u", sum);
    v = call_reg_mem(f1, f4);
    RT_CHECK(v == 35 * 33, "call *reg / call *mem: %u", v);
    RT_CHECK(jmp_chain() == 111, "jmp *reg chain");
    rt_printf("jmp *slot (PLT entry), slot changed between calls: %08x\n", plt_calls());
    rt_printf("asm tricks: %u %u %u %u %u\n", ret_jump(1), ret_skip(), sum, v, jmp_chain());
    /* interpreter: opcodes dispatch through a switch; op 5 calls through ftab */
    {
        struct vm m = {1, 0};
        uint32_t steps = 0, x = 7;
        for (i = 0; i < 63; i++) {
            x = x * 1103515245 + 12345;
            prog2[i] = (x >> 16) % 7;
        }
        prog2[63] = 6;
        for (;;) {
            uint32_t op = prog2[m.pc++];
            steps++;
            switch (op) {
            case 0: m.acc += m.pc; break;
            case 1: m.acc *= 3; break;
            case 2: m.acc ^= m.acc >> 5; break;
            case 3: m.acc -= 17; break;
            case 4: if (m.acc & 1) m.pc = (m.pc + 1) & 63; break;
            case 5: m.acc = ftab[m.acc % 5](m.acc); break;
            case 6:
                if (steps < 20000) {
                    m.pc = 0;
                    break;
                }
                goto done;
            }
            m.pc &= 63;
        }
    done:
        rt_printf("interpreter: acc=%08x steps=%u\n", m.acc, steps);
    }
    rt_finish("indirect");
}
