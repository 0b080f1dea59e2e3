/* jump_tables: jumps through tables of targets (jmp *table(,reg,4), what a
 * C switch compiles to) in the cases a translation that keeps its own copy
 * of the table must get right: a table in writable data rewritten after
 * its jump ran hot (every entry moved, then put back), a table of 300
 * entries whose index goes past 255 (index k and k + 256 share a low byte
 * but not a target), one target in many entries, an index register
 * without a legacy low byte (ESI), and a position-independent table
 * (mov ecx, [ebx + eax*4 + off]; add ecx, ebx; jmp ecx) whose base
 * register moves.  Then indirect calls whose one target a translation may
 * cache: a site that called one function 3000 times and then another,
 * and a site that calls four in turn. */
#include "rt.h"

__asm__(".text\n"
        /* wtab_jump(i): through wtab[i & 3], a table in .data */
        ".globl wtab_jump\n"
        "wtab_jump:\n"
        "  movl 4(%esp), %ecx\n"
        "  andl $3, %ecx\n"
        "  jmp *wtab(,%ecx,4)\n"
        "wt0: movl $1, %eax\n  ret\n"
        "wt1: movl $2, %eax\n  ret\n"
        "wt2: movl $4, %eax\n  ret\n"
        "wt3: movl $8, %eax\n  ret\n"
        "  .data\n"
        "  .align 4\n"
        ".globl wtab\n"
        "wtab: .long wt0, wt1, wt2, wt3\n"
        "  .text\n"
        /* big_jump(k): through btab[k], 300 entries, entry k -> bt(k % 3) */
        ".globl big_jump\n"
        "big_jump:\n"
        "  movl 4(%esp), %edx\n"
        "  jmp *btab(,%edx,4)\n"
        "bt0: movl $100, %eax\n  ret\n"
        "bt1: movl $200, %eax\n  ret\n"
        "bt2: movl $300, %eax\n  ret\n"
        "  .section .rodata\n"
        "  .align 4\n"
        "btab: .rept 100\n"
        "  .long bt0, bt1, bt2\n"
        "  .endr\n"
        "  .text\n"
        /* esi_jump(i): through stab[i & 1] indexed by ESI */
        ".globl esi_jump\n"
        "esi_jump:\n"
        "  pushl %esi\n"
        "  movl 8(%esp), %esi\n"
        "  andl $1, %esi\n"
        "  jmp *stab(,%esi,4)\n"
        "st0: movl $7, %eax\n  popl %esi\n  ret\n"
        "st1: movl $9, %eax\n  popl %esi\n  ret\n"
        "  .section .rodata\n"
        "  .align 4\n"
        "stab: .long st0, st1\n"
        "  .text\n");
/* pic_jump(i, base): the i386 PIC switch, entries relative to the base
 * register (EBX), which is `base` (pic_base, or pic_base2 where a second
 * copy of the table lies at the same offset, with the targets reversed). */
__asm__(".text\n"
        ".globl pic_jump\n"
        "pic_jump:\n"
        "  pushl %ebx\n"
        "  movl 8(%esp), %eax\n"
        "  movl 12(%esp), %ebx\n"
        "  andl $3, %eax\n"
        "  movl ptab - pic_base(%ebx,%eax,4), %ecx\n"
        "  addl %ebx, %ecx\n"
        "  jmp *%ecx\n"
        "pt0: movl $11, %eax\n  popl %ebx\n  ret\n"
        "pt1: movl $22, %eax\n  popl %ebx\n  ret\n"
        "pt2: movl $33, %eax\n  popl %ebx\n  ret\n"
        "pt3: movl $44, %eax\n  popl %ebx\n  ret\n"
        "  .section .rodata\n"
        "  .align 4\n"
        ".globl pic_base\n"
        "pic_base: .long 0\n"
        "ptab: .long pt0 - pic_base, pt1 - pic_base, pt2 - pic_base, pt3 - pic_base\n"
        ".globl pic_base2\n"
        "pic_base2: .long 0\n"
        "ptab2: .long pt3 - pic_base2, pt2 - pic_base2, pt1 - pic_base2, pt0 - pic_base2\n"
        "  .text\n");
extern uint32_t pic_jump(uint32_t i, const void *base);
extern const char pic_base[], pic_base2[];

static uint32_t one(uint32_t x) { return x + 1; }
static uint32_t two(uint32_t x) { return x * 2; }
static uint32_t three(uint32_t x) { return x ^ 3; }
static uint32_t four(uint32_t x) { return x - 4; }
static uint32_t (*volatile hook)(uint32_t) = one;
static uint32_t (*volatile const four_fns[4])(uint32_t) = {one, two, three, four};

/* call_hook(x): one indirect call site through `hook`. */
static __attribute__((noinline)) uint32_t call_hook(uint32_t x) { return hook(x); }

/* call_each(x, i): one indirect call site whose target turns with i. */
static __attribute__((noinline)) uint32_t call_each(uint32_t x, uint32_t i)
{
    return four_fns[i & 3](x);
}

extern uint32_t wtab_jump(uint32_t i);
extern uint32_t big_jump(uint32_t k);
extern uint32_t esi_jump(uint32_t i);
extern uint32_t wtab[4];

/* Sum of wtab_jump over `rounds` passes of the four indices, and the
 * value each index gave in the last pass (one bit each). */
static uint32_t wtab_pass(uint32_t rounds, uint32_t *last)
{
    uint32_t r, i, sum = 0;
    for (r = 0; r < rounds; r++)
        for (i = 0; i < 4; i++) {
            uint32_t v = wtab_jump(i);
            sum += v;
            last[i] = v;
        }
    return sum;
}

static void rotate_wtab(void)
{
    uint32_t first = wtab[0];
    wtab[0] = wtab[1];
    wtab[1] = wtab[2];
    wtab[2] = wtab[3];
    wtab[3] = first;
}

int main(void)
{
    uint32_t last[4], sum, k, r, want, i;
    rt_puts("jump_tables: rewritten tables, indices past 255, ESI index\n");

    sum = wtab_pass(2000, last);
    rt_printf("wtab: %u %u %u %u %u\n", sum, last[0], last[1], last[2], last[3]);
    RT_CHECK(sum == 2000 * 15 && last[0] == 1 && last[3] == 8, "wtab before");
    rotate_wtab();
    sum = wtab_pass(2000, last);
    rt_printf("wtab rotated: %u %u %u %u %u\n", sum, last[0], last[1], last[2], last[3]);
    RT_CHECK(last[0] == 2 && last[1] == 4 && last[2] == 8 && last[3] == 1, "wtab rotated");
    for (i = 0; i < 3; i++)
        rotate_wtab();
    sum = wtab_pass(2000, last);
    RT_CHECK(last[0] == 1 && last[1] == 2 && last[2] == 4 && last[3] == 8, "wtab put back");

    sum = 0;
    want = 0;
    for (r = 0; r < 50; r++)
        for (k = 0; k < 300; k++) {
            sum += big_jump(k);
            want += 100 * (k % 3 + 1);
        }
    rt_printf("big table: %u\n", sum);
    RT_CHECK(sum == want, "big table: %u, want %u", sum, want);
    RT_CHECK(big_jump(256) == 200 && big_jump(0) == 100 && big_jump(299) == 300,
             "entries 0, 256 and 299");

    sum = 0;
    for (i = 0; i < 5000; i++)
        sum += esi_jump(i);
    rt_printf("esi index: %u\n", sum);
    RT_CHECK(sum == 2500 * 16, "esi index");

    sum = 0;
    for (i = 0; i < 4000; i++)
        sum += pic_jump(i, pic_base);
    for (i = 0; i < 4000; i++)
        sum += 2 * pic_jump(i, pic_base2);
    rt_printf("pic table: %u\n", sum);
    RT_CHECK(sum == 1000 * 110 * 3, "pic table");
    RT_CHECK(pic_jump(1, pic_base) == 22 && pic_jump(1, pic_base2) == 33, "pic entries");

    sum = 0;
    for (i = 0; i < 3000; i++)
        sum = call_hook(sum);
    hook = two;
    sum = call_hook(sum);
    hook = one;
    sum = call_hook(sum);
    rt_printf("call site, target changed: %u\n", sum);
    RT_CHECK(sum == 6001, "changed target");
    sum = 7;
    for (i = 0; i < 4000; i++)
        sum = call_each(sum, i);
    rt_printf("call site, four targets: %u\n", sum);
    rt_finish("jump_tables");
}
