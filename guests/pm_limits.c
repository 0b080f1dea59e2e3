/* pm_limits: segment limit and type checks on ordinary accesses
 * (nestmon: guest-only; nestmon: no-qemu).
 * Data accesses through DS, ES, FS, GS, SS and CS overrides: expand-up
 * limits (byte and page granular), expand-down segments (B=1 and B=0),
 * read-only data, writes through a code segment, a null selector, SS
 * faults (#SS(0)) for EBP- and ESP-based addresses, XLAT, a string
 * instruction, a loop that runs off the end of its segment (precise
 * registers at the faulting iteration), and that the checks leave the
 * arithmetic flags alone.  Every expectation is the SDM's (vol. 3,
 * "Limit Checking", "Type Checking"); QEMU TCG does not make these checks
 * (docs/guests.md, "Known QEMU deviations"), so this guest's only oracle
 * is the SDM and it is not run under QEMU. */
#include "pm.h"

#define SEL_DATA_A 0x40   /* data, base data_a, limit 0xfff */
#define SEL_DOWN 0x48     /* expand-down data, base data_a+0x1000, limit 0xfff, B=1 */
#define SEL_DOWN16 0x50   /* expand-down data, base data_a, limit 0xfff, B=0 */
#define SEL_DATA_RO 0x58  /* flat data, read-only */
#define SEL_STACK 0x60    /* data, base 0, limit stack_area + 0xffff (G=1): SS with a limit */
#define SEL_DATA_G 0x68   /* data, base data_a, limit 0 with G=1 (0xfff) */
#define SEL_DATA16 0x70   /* data, base data_a, limit 0xffff, B=0 */

/* "movw $SEL, %ax; movw %ax, %SEG" without pm.h's AT label (the checks
 * put AT on the instruction under test) */
#define LOAD(seg, sel) "movw $" PM_STR(sel) ", %ax\n\tmovw %ax, %" #seg

uint8_t data_a[0x3000] __attribute__((aligned(4096)));
uint8_t stack_area[0x10000] __attribute__((aligned(4096)));
uint32_t r[8];

static void setup_gdt(void)
{
    pm_gdt_set(SEL_DATA_A, pm_seg_desc((uint32_t)data_a, 0xfff, ACC_DATA_RW, FL_DB));
    pm_gdt_set(SEL_DOWN, pm_seg_desc((uint32_t)data_a + 0x1000, 0xfff, ACC_DATA_RW_DOWN, FL_DB));
    pm_gdt_set(SEL_DOWN16, pm_seg_desc((uint32_t)data_a, 0xfff, ACC_DATA_RW_DOWN, 0));
    pm_gdt_set(SEL_DATA_RO, pm_seg_desc(0, 0xfffff, ACC_DATA_RO, FL_G | FL_DB));
    pm_gdt_set(SEL_STACK, pm_seg_desc(0, ((uint32_t)stack_area + 0xffff) >> 12, ACC_DATA_RW,
                                      FL_G | FL_DB));
    pm_gdt_set(SEL_DATA_G, pm_seg_desc((uint32_t)data_a, 0, ACC_DATA_RW, FL_G | FL_DB));
    pm_gdt_set(SEL_DATA16, pm_seg_desc((uint32_t)data_a, 0xffff, ACC_DATA_RW, 0));
}

static void expand_up(void)
{
    rt_puts("-- expand-up limits (SDM vol. 3 'Limit Checking')\n");
    EXPECT_OK("ds limit 0xfff: read dword at 0xffc",
              LOAD(ds, SEL_DATA_A) "\n\tmovl %ds:0xffc, %eax");
    EXPECT_FAULT("ds limit 0xfff: read dword at 0xffd", PM_GP, 0,
                 LOAD(ds, SEL_DATA_A) "\n\t" AT "movl %ds:0xffd, %eax");
    EXPECT_OK("ds limit 0xfff: read byte at 0xfff",
              LOAD(ds, SEL_DATA_A) "\n\tmovb %ds:0xfff, %al");
    EXPECT_FAULT("ds limit 0xfff: read word at 0xfff", PM_GP, 0,
                 LOAD(ds, SEL_DATA_A) "\n\t" AT "movw %ds:0xfff, %ax");
    EXPECT_FAULT("ds limit 0xfff: add to dword at 0x1000", PM_GP, 0,
                 LOAD(ds, SEL_DATA_A) "\n\t" AT "addl $1, %ds:0x1000");
    EXPECT_FAULT("ds limit 0xfff: read at (ebx=0xffe), DS by default", PM_GP, 0,
                 "movl $0xffe, %ebx\n\t" LOAD(ds, SEL_DATA_A) "\n\t" AT "movl (%ebx), %eax");
    EXPECT_FAULT("es limit 0xfff: store at es:0xfffffffc (no wrap)", PM_GP, 0,
                 LOAD(es, SEL_DATA_A) "\n\t" AT "movl %eax, %es:0xfffffffc");
    EXPECT_OK("fs limit 0 with G=1 (0xfff): read at 0xffc",
              LOAD(fs, SEL_DATA_G) "\n\tmovl %fs:0xffc, %eax");
    EXPECT_FAULT("fs limit 0 with G=1 (0xfff): read at 0xffe", PM_GP, 0,
                 LOAD(fs, SEL_DATA_G) "\n\t" AT "movl %fs:0xffe, %eax");
    EXPECT_OK("gs 16-bit data, limit 0xffff: read at 0xfffc",
              LOAD(gs, SEL_DATA16) "\n\tmovl %gs:0xfffc, %eax");
    EXPECT_FAULT("gs 16-bit data, limit 0xffff: read at 0xfffd", PM_GP, 0,
                 LOAD(gs, SEL_DATA16) "\n\t" AT "movl %gs:0xfffd, %eax");
    EXPECT_OK("ds limit 0xfff: fxsave of 512 bytes at 0xe00",
              LOAD(ds, SEL_DATA_A) "\n\tfxsave %ds:0xe00");
    EXPECT_FAULT("ds limit 0xfff: fxsave of 512 bytes at 0xe10", PM_GP, 0,
                 LOAD(ds, SEL_DATA_A) "\n\t" AT "fxsave %ds:0xe10");
}

static void expand_down(void)
{
    rt_puts("-- expand-down segments\n");
    EXPECT_OK("es expand-down limit 0xfff, B=1: read at 0x1000 and 0xfffffffc",
              LOAD(es, SEL_DOWN) "\n\tmovl %es:0x1000, %eax\n\tmovl %es:0xfffffffc, %eax");
    EXPECT_FAULT("es expand-down limit 0xfff, B=1: read at 0xfff", PM_GP, 0,
                 LOAD(es, SEL_DOWN) "\n\t" AT "movl %es:0xfff, %eax");
    EXPECT_FAULT("es expand-down limit 0xfff, B=1: read at 0", PM_GP, 0,
                 LOAD(es, SEL_DOWN) "\n\t" AT "movl %es:0, %eax");
    EXPECT_FAULT("es expand-down limit 0xfff, B=1: read dword at 0xfffffffd", PM_GP, 0,
                 LOAD(es, SEL_DOWN) "\n\t" AT "movl %es:0xfffffffd, %eax");
    EXPECT_OK("fs expand-down limit 0xfff, B=0: read at 0xfffc",
              LOAD(fs, SEL_DOWN16) "\n\tmovl %fs:0xfffc, %eax");
    EXPECT_FAULT("fs expand-down limit 0xfff, B=0: read at 0x10000", PM_GP, 0,
                 LOAD(fs, SEL_DOWN16) "\n\t" AT "movl %fs:0x10000, %eax");
}

static void types(void)
{
    rt_puts("-- segment types and null selectors (SDM vol. 3 'Type Checking')\n");
    EXPECT_OK("ds read-only data: read", LOAD(ds, SEL_DATA_RO) "\n\tmovl %ds:r, %eax");
    EXPECT_FAULT("ds read-only data: write", PM_GP, 0,
                 LOAD(ds, SEL_DATA_RO) "\n\t" AT "movl %eax, %ds:r");
    EXPECT_FAULT("ds read-only data: inc (read-modify-write)", PM_GP, 0,
                 LOAD(ds, SEL_DATA_RO) "\n\t" AT "incl %ds:r");
    EXPECT_OK("cs (execute/read code): read through a cs override", "movl %cs:r, %eax");
    EXPECT_FAULT("cs: write through a cs override", PM_GP, 0, AT "movl %eax, %cs:r");
    EXPECT_FAULT("fs null: read", PM_GP, 0, LOAD(fs, 0) "\n\t" AT "movl %fs:0, %eax");
    EXPECT_FAULT("gs null: write", PM_GP, 0, LOAD(gs, 0) "\n\t" AT "movl %eax, %gs:r");
}

static void stack_segment(void)
{
    /* SS keeps base 0 (the exception handlers address the stack with
     * flat DS); its limit ends at stack_area + 0xffff */
#define STACK_SETUP                                                         \
    "movw $" PM_STR(SEL_STACK) ", %ax\n\tmovw %ax, %ss\n\t"                  \
    "movl $stack_area+0x8000, %esp\n\tmovl $stack_area, %ebp\n\t"
    rt_puts("-- SS with a limit: #SS(0)\n");
    EXPECT_OK("ss limit stack_area+0xffff: push, pop, read at 0xfffc(%ebp=stack_area)",
              STACK_SETUP "pushl $5\n\tpopl %eax\n\tmovl 0xfffc(%ebp), %eax");
    EXPECT_FAULT("ss: read at 0x10000(%ebp=stack_area), SS by default", PM_SS, 0,
                 STACK_SETUP AT "movl 0x10000(%ebp), %eax");
    EXPECT_FAULT("ss: write at 0x8000(%esp=stack_area+0x8000)", PM_SS, 0,
                 STACK_SETUP AT "movl %eax, 0x8000(%esp)");
    EXPECT_FAULT("ss: read through an ss override at stack_area+0xfffe", PM_SS, 0,
                 STACK_SETUP AT "movl %ss:stack_area+0xfffe, %eax");
#undef STACK_SETUP
}

static void other_forms(void)
{
    rt_puts("-- xlat, string instructions, a loop, flags\n");
    EXPECT_OK("xlat, ds limit 0xfff: ebx=0xff0, al=0x0f",
              "movl $0xff0, %ebx\n\t" LOAD(ds, SEL_DATA_A) "\n\tmovl $0x0f, %eax\n\txlat");
    EXPECT_FAULT("xlat, ds limit 0xfff: ebx=0xff0, al=0x10", PM_GP, 0,
                 "movl $0xff0, %ebx\n\t" LOAD(ds, SEL_DATA_A) "\n\tmovl $0x10, %eax\n\t" AT "xlat");
    EXPECT_FAULT("movsb to es limit 0xfff at edi=0x1000", PM_GP, 0,
                 "movl $r, %esi\n\tmovl $0x1000, %edi\n\tcld\n\t" LOAD(es, SEL_DATA_A) "\n\t"
                 AT "movsb");
    r[0] = r[1] = 0;
    EXPECT_FAULT("loop reading fs:(ecx) up the limit 0xfff: faults at ecx=0xffd", PM_GP, 0,
                 LOAD(fs, SEL_DATA_A) "\n\txorl %ecx, %ecx\n"
                 "1:\n\t" AT "movl %fs:(%ecx), %eax\n\tincl %ecx\n\t"
                 "movl %ecx, %ss:r\n\tjmp 1b");
    pm_check_val("  ecx after the last good read + 1", r[0], 0xffd);
    EXPECT_OK("stc; read through a limited ds; setc (the check keeps CF)",
              LOAD(ds, SEL_DATA_A) "\n\tstc\n\tmovl %ds:0x10, %eax\n\tsetc %al\n\t"
              "movzbl %al, %eax\n\tmovl %eax, %ss:r+4");
    pm_check_val("  CF after the read", r[1], 1);
}

int main(void)
{
    pm_init();
    rt_puts("pm_limits: segment limits and types on data and stack accesses\n");
    setup_gdt();
    expand_up();
    expand_down();
    types();
    stack_segment();
    other_forms();
    rt_finish("pm_limits");
}
