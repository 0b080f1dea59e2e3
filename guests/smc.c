/* smc: self-modifying code.
 *  1. patch the imm32 of an instruction in another function, then call it
 *  2. a function that patches an instruction later in its own page
 *  3. patch the very next instruction (the store is immediately followed
 *     by the modified instruction)
 *  4. a loop whose body rewrites its own add immediate every iteration
 *  5. a code buffer rewritten repeatedly in a loop and called
 *  6. code copied with rep movsb into a buffer, patched, then called
 *  7. a jump whose displacement is patched to select different targets
 *  8. overwrite a whole function with a different body (different length)
 *  9. patch code that runs only after a jump back from the function
 *     entered (a translation unit that follows the jump covers it)
 * The image is linked as one RWX segment, so natively the text is writable
 * too. */
#include "rt.h"

__asm__(".text\n"
        ".globl smc_imm, smc_imm_insn\n"
        "smc_imm:\n"
        "smc_imm_insn: movl $0x11111111, %eax\n"
        "  ret\n"
        /* 2: patch an instruction later in the same page */
        ".globl smc_same_page\n"
        "smc_same_page:\n"
        "  movl 4(%esp), %eax\n"
        "  movl %eax, 2f+1\n"
        "  xorl %ecx, %ecx\n"
        "  addl $1, %ecx\n"
        "  addl $2, %ecx\n"
        "2: movl $0, %eax\n"
        "  addl %ecx, %eax\n"
        "  ret\n"
        /* 3: patch the very next instruction: nop -> inc %eax (0x40) */
        ".globl smc_next\n"
        "smc_next:\n"
        "  movl 4(%esp), %eax\n"
        "  movb $0x90, 3f\n"          /* restore the nop */
        "  movb 8(%esp), %dl\n"
        "  movb %dl, 3f\n"            /* store the new opcode byte ... */
        "3: nop\n"                    /* ... which is the next instruction */
        "  ret\n"
        /* 3b: the next instruction's immediate, written with a 32-bit store */
        ".globl smc_next_imm\n"
        "smc_next_imm:\n"
        "  movl 4(%esp), %edx\n"
        "  movl %edx, 4f+1\n"
        "4: movl $0xdeadbeef, %eax\n"
        "  ret\n"
        /* 4: loop that rewrites its own immediate each iteration:
         *    sum = sum + k for k = 0..n-1 by patching 'addl $k' */
        ".globl smc_loop\n"
        "smc_loop:\n"
        "  movl 4(%esp), %ecx\n"
        "  xorl %eax, %eax\n"
        "  xorl %edx, %edx\n"
        "5: movl %edx, 6f+1\n"
        "6: addl $0x7fffffff, %eax\n"
        "  incl %edx\n"
        "  cmpl %ecx, %edx\n"
        "  jb 5b\n"
        "  ret\n"
        /* 6: template copied with rep movsb */
        ".globl smc_tmpl, smc_tmpl_end\n"
        "smc_tmpl:\n"
        "  movl 4(%esp), %eax\n"
        "  imull $3, %eax, %eax\n"
        "  addl $0x01000000, %eax\n"
        "  ret\n"
        "smc_tmpl_end:\n"
        /* 7: patched jump displacement */
        ".globl smc_jmp, smc_jmp_insn, smc_jmp_a, smc_jmp_b, smc_jmp_c\n"
        "smc_jmp:\n"
        "smc_jmp_insn: .byte 0xe9\n  .long smc_jmp_a - . - 4\n"   /* jmp rel32 */
        "smc_jmp_a: movl $0xa, %eax\n  ret\n"
        "smc_jmp_b: movl $0xb, %eax\n  ret\n"
        "smc_jmp_c: movl $0xc, %eax\n  ret\n"
        /* 8: a function that is overwritten wholesale */
        ".globl smc_victim\n"
        "smc_victim:\n"
        "  movl $1, %eax\n"
        "  ret\n"
        "  .fill 64, 1, 0xcc\n"
        /* 9: code reached only through a jump back from smc_back, in the
         * same page */
        ".balign 4096\n"
        ".globl smc_back, smc_back_insn\n"
        "smc_back_insn: movl $0, %eax\n"
        "  addl %edx, %eax\n"
        "  ret\n"
        "smc_back:\n"
        "  movl 4(%esp), %edx\n"
        "  jmp smc_back_insn\n");

uint32_t smc_imm(void);
extern uint8_t smc_imm_insn[];
uint32_t smc_same_page(uint32_t);
uint32_t smc_next(uint32_t v, uint32_t opcode);
uint32_t smc_next_imm(uint32_t v);
uint32_t smc_loop(uint32_t n);
extern uint8_t smc_tmpl[], smc_tmpl_end[];
uint32_t smc_jmp(void);
extern uint8_t smc_jmp_insn[], smc_jmp_a[], smc_jmp_b[], smc_jmp_c[];
uint32_t smc_victim(uint32_t);
uint32_t smc_back(uint32_t);
extern uint8_t smc_back_insn[];
extern uint8_t smc_victim_bytes[] __asm__("smc_victim");

static uint8_t codebuf[256] __attribute__((aligned(64)));

static void patch32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

int main(void)
{
    uint32_t i, sum, v;
    rt_puts("smc: self-modifying code\n");

    /* 1 */
    sum = 0;
    for (i = 0; i < 1000; i++) {
        patch32(smc_imm_insn + 1, i * 0x01010101);
        v = smc_imm();
        if (v != i * 0x01010101) {
            RT_CHECK(0, "patched immediate: iteration %u got %08x", i, v);
            break;
        }
        sum += v;
    }
    RT_CHECK(i == 1000, "patched immediate (1000 iterations)");
    rt_printf("1 patch imm: sum=%08x\n", sum);

    /* 2 */
    sum = 0;
    for (i = 0; i < 500; i++)
        sum = sum * 3 + smc_same_page(i * 7);
    RT_CHECK(smc_same_page(1000) == 1003, "same-page patch: %u", smc_same_page(1000));
    rt_printf("2 same page: sum=%08x\n", sum);

    /* 3 */
    RT_CHECK(smc_next(5, 0x90) == 5, "next insn nop");
    RT_CHECK(smc_next(5, 0x40) == 6, "next insn nop->inc eax: %u", smc_next(5, 0x40));
    RT_CHECK(smc_next(5, 0x48) == 4, "next insn nop->dec eax");
    sum = 0;
    for (i = 0; i < 300; i++)
        sum += smc_next(i, (i & 1) ? 0x40 : 0x48) + smc_next_imm(i * 13);
    RT_CHECK(smc_next_imm(0x12345678) == 0x12345678, "next insn imm32");
    rt_printf("3 next insn: sum=%08x\n", sum);

    /* 4 */
    v = smc_loop(1000);
    RT_CHECK(v == 999 * 1000 / 2, "self-patching loop: %u", v);
    rt_printf("4 self-patching loop: %u\n", v);

    /* 5: rewrite a code buffer repeatedly and call it */
    sum = 0;
    for (i = 0; i < 2000; i++) {
        uint8_t *p = codebuf;
        uint32_t (*fn)(uint32_t) = (uint32_t(*)(uint32_t))codebuf;
        *p++ = 0x8b; *p++ = 0x44; *p++ = 0x24; *p++ = 0x04; /* mov 4(%esp), %eax */
        if (i % 3 == 0) {
            *p++ = 0x05; patch32(p, i); p += 4;          /* add $i, %eax */
        } else if (i % 3 == 1) {
            *p++ = 0x2d; patch32(p, i * 2); p += 4;      /* sub $2i, %eax */
        } else {
            *p++ = 0x69; *p++ = 0xc0; patch32(p, i); p += 4; /* imul $i, %eax, %eax */
        }
        *p++ = 0xc3;
        v = fn(i + 1);
        sum = sum * 31 + v;
        if (v != (i % 3 == 0 ? 2 * i + 1 : i % 3 == 1 ? (uint32_t)(1 - i) : (i + 1) * i)) {
            RT_CHECK(0, "code buffer iteration %u: %08x", i, v);
            break;
        }
    }
    rt_printf("5 rewritten buffer: sum=%08x\n", sum);

    /* 6: rep movsb a template, patch its add immediate, call */
    sum = 0;
    for (i = 0; i < 200; i++) {
        uint32_t n = (uint32_t)(smc_tmpl_end - smc_tmpl), si = (uint32_t)smc_tmpl, di = (uint32_t)codebuf + 64;
        uint32_t (*fn)(uint32_t) = (uint32_t(*)(uint32_t))(codebuf + 64);
        __asm__ __volatile__("cld; rep movsb" : "+S"(si), "+D"(di), "+c"(n) : : "memory");
        patch32(codebuf + 64 + 4 + 3 + 1, i << 8); /* mov(4) imul(3) add opcode(1) */
        v = fn(i);
        sum += v;
        if (v != 3 * i + (i << 8)) {
            RT_CHECK(0, "rep movsb code iteration %u: %08x", i, v);
            break;
        }
    }
    rt_printf("6 rep movsb code: sum=%08x\n", sum);

    /* 7 */
    sum = 0;
    for (i = 0; i < 30; i++) {
        uint8_t *t = i % 3 == 0 ? smc_jmp_a : i % 3 == 1 ? smc_jmp_b : smc_jmp_c;
        patch32(smc_jmp_insn + 1, (uint32_t)(t - (smc_jmp_insn + 5)));
        v = smc_jmp();
        RT_CHECK(v == 0xa + i % 3, "patched jump %u: %x", i, v);
        sum = sum * 7 + v;
    }
    rt_printf("7 patched jump: sum=%08x\n", sum);

    /* 8 */
    RT_CHECK(smc_victim(9) == 1, "victim before");
    {
        static const uint8_t body[] = {0x8b, 0x44, 0x24, 0x04, /* mov 4(%esp),%eax */
                                       0x0f, 0xaf, 0xc0,       /* imul %eax,%eax */
                                       0x83, 0xc0, 0x05,       /* add $5,%eax */
                                       0xc3};
        memcpy(smc_victim_bytes, body, sizeof(body));
    }
    v = smc_victim(9);
    RT_CHECK(v == 86, "victim rewritten: %u", v);
    rt_printf("8 rewritten function: %u\n", v);

    /* 9 */
    sum = 0;
    for (i = 0; i < 300; i++) {
        /* One plain 32-bit store (a string copy kills every translation
         * of the frame anyway). */
        *(volatile uint32_t *)(smc_back_insn + 1) = i * 3;
        v = smc_back(i);
        if (v != 4 * i) {
            RT_CHECK(0, "code behind a jump back, iteration %u: %u", i, v);
            break;
        }
        sum = sum * 3 + v;
    }
    rt_printf("9 code behind a jump back: sum=%08x\n", sum);
    rt_finish("smc");
}
