/* pm_segments: segmentation (nestmon: guest-only).
 * Loads of DS/ES/FS/GS/SS/CS with null, out-of-limit, not-present,
 * wrong-type and wrong-privilege selectors and the exception and error code
 * the SDM gives for each; segment bases (data, expand-down, SS for every
 * stack instruction, string instruction sources and destinations with
 * overrides, CS for a far jump into a based code segment); the descriptor
 * cache; LDT selectors; far jmp/call/ret and a call gate to ring 0 with
 * parameter copying; lar/lsl/verr/verw/arpl; sgdt/sidt/sldt/str/smsw; a
 * 16-bit code segment running 16-bit code.  Segment limit and type checks
 * on ordinary accesses are not tested: QEMU does not make them (see
 * docs/guests.md, "Known QEMU deviations"). */
#include "pm.h"

#define SEL_DATA_A 0x40     /* data, base data_a, limit 0xfff */
#define SEL_DATA_B 0x48     /* data, base data_b, limit 0xfff */
#define SEL_NP 0x50         /* data, not present */
#define SEL_CODE_X 0x58     /* flat code, execute-only, DPL 0 */
#define SEL_CODE_XR 0x60    /* flat code, execute/read, DPL 0 */
#define SEL_DATA_RO 0x68    /* flat data, read-only, DPL 0 */
#define SEL_CODE_XRC 0x70   /* flat conforming code, execute/read, DPL 0 */
#define SEL_DOWN 0x78       /* expand-down data, base data_a+0x1000, limit 0xfff, B=1 */
#define SEL_STACK 0x80      /* data, base stack_area, limit 0xffff: SS with a base */
#define SEL_CODE_BASED 0x88 /* code, base 0x100000 (the image), limit 0xfffff */
#define SEL_KCODE2 0x90     /* flat code, DPL 0: a second ring-0 code segment */
#define SEL_GATE3 0x98      /* call gate DPL 3 -> SEL_KCODE:gate_entry, 2 dwords */
#define SEL_GATE0 0xa0      /* call gate DPL 0 -> SEL_KCODE:gate_entry, 2 dwords */
#define SEL_CODE16 0xa8     /* 16-bit code, base blk16, limit 0xffff */
#define SEL_DATA16 0xb0     /* 16-bit data (B=0), base blk16, limit 0xffff */
#define SEL_CODE_2M 0xb8    /* flat code with limit 2 MiB - 1 */
#define SEL_INTGATE 0xc0    /* an interrupt gate in the GDT (not a segment) */
#define SEL_GATE_NP 0xc8    /* call gate, not present */
#define SEL_DATA_G 0xd0     /* data, limit 0xf with G=1 (0xffff) */
#define SEL_CODE_XRC3 0xd8  /* flat conforming code, DPL 3 */
#define SEL_GATE3_TO3 0xe0  /* call gate DPL 3 -> SEL_CODE_X (DPL 0), count 0 */
#define SEL_DATA_DPL1 0xe8  /* flat data, DPL 1 */
#define SEL_CODE_NP 0xf0    /* flat code, not present */
#define LSEL_DATA LDT_SEL(1, 0) /* LDT: data, base data_b */
#define LSEL_UDATA LDT_SEL(2, 3) /* LDT: flat data, DPL 3 */

uint8_t data_a[0x3000] __attribute__((aligned(4096)));
uint8_t data_b[0x1000] __attribute__((aligned(4096)));
uint8_t stack_area[0x10000] __attribute__((aligned(4096)));
uint32_t r[16];
uint32_t far_ptr[2];
uint32_t saved_esp;

static void fill(void)
{
    int i;
    for (i = 0; i < 0x3000; i++)
        data_a[i] = (uint8_t)(i * 7 + 1);
    for (i = 0; i < 0x1000; i++)
        data_b[i] = (uint8_t)(0x80 + i * 3);
    memset(r, 0, sizeof(r));
}

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static void setup_gdt(void)
{
    pm_gdt_set(SEL_DATA_A, pm_seg_desc((uint32_t)data_a, 0xfff, ACC_DATA_RW, FL_DB));
    pm_gdt_set(SEL_DATA_B, pm_seg_desc((uint32_t)data_b, 0xfff, ACC_DATA_RW, FL_DB));
    pm_gdt_set(SEL_NP, pm_seg_desc(0, 0xfffff, ACC_DATA_RW & ~ACC_P, FL_G | FL_DB));
    pm_gdt_set(SEL_CODE_X, pm_seg_desc(0, 0xfffff, ACC_CODE_X, FL_G | FL_DB));
    pm_gdt_set(SEL_CODE_XR, pm_seg_desc(0, 0xfffff, ACC_CODE_XR, FL_G | FL_DB));
    pm_gdt_set(SEL_DATA_RO, pm_seg_desc(0, 0xfffff, ACC_DATA_RO, FL_G | FL_DB));
    pm_gdt_set(SEL_CODE_XRC, pm_seg_desc(0, 0xfffff, ACC_CODE_XRC, FL_G | FL_DB));
    pm_gdt_set(SEL_DOWN, pm_seg_desc((uint32_t)data_a + 0x1000, 0xfff, ACC_DATA_RW_DOWN, FL_DB));
    pm_gdt_set(SEL_STACK, pm_seg_desc((uint32_t)stack_area, 0xffff, ACC_DATA_RW, FL_DB));
    pm_gdt_set(SEL_CODE_BASED, pm_seg_desc(0x100000, 0xfffff, ACC_CODE_XR, FL_DB));
    pm_gdt_set(SEL_KCODE2, pm_seg_desc(0, 0xfffff, ACC_CODE_XR, FL_G | FL_DB));
    pm_gdt_set(SEL_CODE_2M, pm_seg_desc(0, 0x1ff, ACC_CODE_XR, FL_G | FL_DB));
    pm_gdt_set(SEL_INTGATE, pm_gate_desc(SEL_KCODE, 0, ACC_P | SYS_INTGATE32, 0));
    pm_gdt_set(SEL_DATA_G, pm_seg_desc(0, 0xf, ACC_DATA_RW, FL_G | FL_DB));
    pm_gdt_set(SEL_CODE_XRC3, pm_seg_desc(0, 0xfffff, ACC_CODE_XRC | DPL(3), FL_G | FL_DB));
    pm_gdt_set(SEL_DATA_DPL1, pm_seg_desc(0, 0xfffff, ACC_DATA_RW | DPL(1), FL_G | FL_DB));
    pm_gdt_set(SEL_CODE_NP, pm_seg_desc(0, 0xfffff, ACC_CODE_XR & ~ACC_P, FL_G | FL_DB));
    pm_ldt_set(LSEL_DATA, pm_seg_desc((uint32_t)data_b, 0xfff, ACC_DATA_RW, FL_DB));
    pm_ldt_set(LSEL_UDATA, pm_seg_desc(0, 0xfffff, ACC_DATA_RW | DPL(3), FL_G | FL_DB));
}

/* ---- loads ---- */
static void loads(void)
{
    rt_puts("-- data segment register loads at CPL 0 (SDM: MOV, Segment Loading)\n");
    EXPECT_OK("ds <- null", LOAD_SEG(ds, 0));
    EXPECT_OK("es <- null", LOAD_SEG(es, 0));
    EXPECT_OK("fs <- null (RPL 3)", LOAD_SEG(fs, 3));
    EXPECT_OK("gs <- readable code", LOAD_SEG(gs, SEL_CODE_XR));
    EXPECT_OK("ds <- read-only data", LOAD_SEG(ds, SEL_DATA_RO));
    EXPECT_OK("es <- DPL 3 data (RPL 3)", LOAD_SEG(es, SEL_UDATA));
    EXPECT_OK("fs <- DPL 1 data", LOAD_SEG(fs, SEL_DATA_DPL1));
    EXPECT_FAULT("fs <- DPL 1 data with RPL 2", PM_GP, SEL_DATA_DPL1, LOAD_SEG(fs, SEL_DATA_DPL1 | 2));
    EXPECT_FAULT("ds <- beyond the GDT limit", PM_GP, 0x200, LOAD_SEG(ds, 0x200));
    EXPECT_FAULT("es <- beyond the GDT limit (RPL 3)", PM_GP, 0x3f8 & ~7, LOAD_SEG(es, 0x3fb));
    EXPECT_FAULT("fs <- not present", PM_NP, SEL_NP, LOAD_SEG(fs, SEL_NP));
    EXPECT_FAULT("gs <- execute-only code", PM_GP, SEL_CODE_X, LOAD_SEG(gs, SEL_CODE_X));
    EXPECT_FAULT("ds <- TSS", PM_GP, SEL_TSS, LOAD_SEG(ds, SEL_TSS));
    EXPECT_FAULT("es <- LDT", PM_GP, SEL_LDT, LOAD_SEG(es, SEL_LDT));
    EXPECT_FAULT("fs <- call gate", PM_GP, SEL_GATE0, LOAD_SEG(fs, SEL_GATE0));
    EXPECT_FAULT("gs <- interrupt gate", PM_GP, SEL_INTGATE, LOAD_SEG(gs, SEL_INTGATE));
    EXPECT_FAULT("ds <- DPL 0 data with RPL 3", PM_GP, SEL_KDATA, LOAD_SEG(ds, SEL_KDATA | 3));
    EXPECT_OK("ds <- conforming code DPL 0 with RPL 3", LOAD_SEG(ds, SEL_CODE_XRC | 3));
    EXPECT_FAULT("ds <- non-conforming code DPL 0 with RPL 3", PM_GP, SEL_CODE_XR,
                 LOAD_SEG(ds, SEL_CODE_XR | 3));
    EXPECT_FAULT("mov to cs", PM_UD, PM_NOERR, "movw $8, %ax\n\t" AT "movw %ax, %cs");
    pm_gdt_set(SEL_DATA_B, pm_seg_desc((uint32_t)data_b, 0xfff, ACC_DATA_RW, FL_DB));
    pm_check_val("  data_b descriptor accessed bit before a load", (uint32_t)(pm_gdt[SEL_DATA_B >> 3] >> 40) & 1, 0);
    EXPECT_OK("es <- data_b", LOAD_SEG(es, SEL_DATA_B));
    pm_check_val("  accessed bit set by the load", (uint32_t)(pm_gdt[SEL_DATA_B >> 3] >> 40) & 1, 1);

    rt_puts("-- SS loads at CPL 0\n");
    EXPECT_OK("ss <- flat data", LOAD_SEG(ss, SEL_KDATA));
    EXPECT_FAULT("ss <- null", PM_GP, 0, LOAD_SEG(ss, 0));
    EXPECT_FAULT("ss <- null with RPL 3", PM_GP, 0, LOAD_SEG(ss, 3));
    EXPECT_FAULT("ss <- beyond the GDT limit", PM_GP, 0x200, LOAD_SEG(ss, 0x200));
    EXPECT_FAULT("ss <- not present", PM_SS, SEL_NP, LOAD_SEG(ss, SEL_NP));
    EXPECT_FAULT("ss <- read-only data", PM_GP, SEL_DATA_RO, LOAD_SEG(ss, SEL_DATA_RO));
    EXPECT_FAULT("ss <- readable code", PM_GP, SEL_CODE_XR, LOAD_SEG(ss, SEL_CODE_XR));
    EXPECT_FAULT("ss <- RPL 3, DPL 3", PM_GP, SEL_UDATA & ~3, LOAD_SEG(ss, SEL_UDATA));
    EXPECT_FAULT("ss <- RPL 0, DPL 3", PM_GP, SEL_UDATA & ~3, LOAD_SEG(ss, SEL_UDATA & ~3));
    EXPECT_FAULT("ss <- DPL 1 data", PM_GP, SEL_DATA_DPL1, LOAD_SEG(ss, SEL_DATA_DPL1));

    rt_puts("-- pop/lds/lss with bad selectors (ESP unchanged on a fault)\n");
    EXPECT_FAULT("pop ds <- not present", PM_NP, SEL_NP,
                 "pushl $" PM_STR(SEL_NP) "\n\tmovl %esp, saved_esp\n\t" AT "popl %ds");
    pm_check_val("  ESP at the fault - ESP before", pm_last.esp - saved_esp, 0);
    EXPECT_FAULT("pop ss <- null", PM_GP, 0, "pushl $0\n\tmovl %esp, saved_esp\n\t" AT "popl %ss");
    pm_check_val("  ESP at the fault - ESP before", pm_last.esp - saved_esp, 0);
    far_ptr[0] = 0x1234;
    far_ptr[1] = SEL_NP;
    EXPECT_FAULT("lfs from a far pointer, not present", PM_NP, SEL_NP, AT "lfs far_ptr, %eax");
    far_ptr[1] = SEL_DATA_A;
    r[0] = 0;
    EXPECT_OK("lgs from a far pointer", "movl $0, %eax\n\tlgs far_ptr, %eax\n\tmovl %eax, r\n\t"
                                        "movw %gs, %ax\n\tmovl %eax, r+4");
    rt_printf("  eax=%08x gs=%04x\n", r[0], r[1] & 0xffff);
    far_ptr[1] = SEL_CODE_XR;
    EXPECT_FAULT("lss from a far pointer, code segment", PM_GP, SEL_CODE_XR, AT "lss far_ptr, %eax");

    rt_puts("-- data segment loads at CPL 3\n");
    EXPECT_USER_OK("ds <- DPL 3 data", LOAD_SEG(ds, SEL_UDATA));
    EXPECT_USER_OK("es <- null", LOAD_SEG(es, 0));
    EXPECT_USER_FAULT("ds <- DPL 0 data", PM_GP, SEL_KDATA, LOAD_SEG(ds, SEL_KDATA));
    EXPECT_USER_FAULT("fs <- DPL 1 data (RPL 1)", PM_GP, SEL_DATA_DPL1, LOAD_SEG(fs, SEL_DATA_DPL1 | 1));
    EXPECT_USER_OK("gs <- conforming code DPL 0", LOAD_SEG(gs, SEL_CODE_XRC));
    EXPECT_USER_FAULT("gs <- non-conforming code DPL 0", PM_GP, SEL_CODE_XR, LOAD_SEG(gs, SEL_CODE_XR));
    EXPECT_USER_FAULT("ss <- DPL 0 data", PM_GP, SEL_KDATA, LOAD_SEG(ss, SEL_KDATA));
    EXPECT_USER_FAULT("ss <- DPL 3 data, RPL 0", PM_GP, SEL_UDATA & ~3, LOAD_SEG(ss, SEL_UDATA & ~3));
    EXPECT_USER_OK("ss <- DPL 3 data, RPL 3", LOAD_SEG(ss, SEL_UDATA));
    EXPECT_USER_FAULT("ss <- null", PM_GP, 0, LOAD_SEG(ss, 3));
}

/* ---- LDT ---- */
static void ldt(void)
{
    rt_puts("-- LDT selectors\n");
    fill();
    r[0] = 0;
    EXPECT_OK("es <- LDT data (base data_b), read es:4",
              LOAD_SEG(es, LSEL_DATA) "\n\tmovl %es:4, %eax\n\tmovl %eax, r");
    pm_check_val("  es:4 == data_b[4..7]", r[0], le32(data_b + 4));
    EXPECT_FAULT("fs <- LDT index 20 (beyond the LDT limit)", PM_GP, LDT_SEL(20, 0),
                 LOAD_SEG(fs, LDT_SEL(20, 0)));
    EXPECT_FAULT("ds <- LDT index 3 (null descriptor)", PM_GP, LDT_SEL(3, 0), LOAD_SEG(ds, LDT_SEL(3, 0)));
    EXPECT_USER_OK("ring 3: ds <- LDT DPL 3 data", LOAD_SEG(ds, LSEL_UDATA));
    EXPECT_USER_FAULT("ring 3: ds <- LDT DPL 0 data", PM_GP, LSEL_DATA, LOAD_SEG(ds, LSEL_DATA | 3));
    EXPECT_FAULT("ldtr null, es <- LDT selector", PM_GP, LSEL_DATA,
                 "xorl %eax, %eax\n\tlldt %ax\n\t" LOAD_SEG(es, LSEL_DATA));
    __asm__ __volatile__("lldt %w0" : : "r"(SEL_LDT));
    EXPECT_OK("ldtr 0x38 again, es <- LDT selector", LOAD_SEG(es, LSEL_DATA));
}

/* ---- bases ---- */
static void bases(void)
{
    rt_puts("-- data segment bases\n");
    fill();
    EXPECT_OK("ds=data_a: movl 0x10, ds=data_b: movl 0x10",
              LOAD_SEG(ds, SEL_DATA_A) "\n\tmovl 0x10, %ecx\n\t" LOAD_SEG(ds, SEL_DATA_B)
              "\n\tmovl 0x10, %edx\n\tmovw $0x10, %bx\n\tmovw %bx, %ds\n\tmovl %ecx, r\n\tmovl %edx, r+4");
    pm_check_val("  data_a+0x10", r[0], le32(data_a + 0x10));
    pm_check_val("  data_b+0x10", r[1], le32(data_b + 0x10));
    EXPECT_OK("fs/gs/es overrides",
              LOAD_SEG(fs, SEL_DATA_A) "\n\t" LOAD_SEG(gs, SEL_DATA_B) "\n\t" LOAD_SEG(es, SEL_DATA_A)
              "\n\tmovl %fs:0x20, %eax\n\tmovl %eax, r\n\tmovl %gs:0x20, %eax\n\tmovl %eax, r+4\n\t"
              "movl $0x30, %ebx\n\tmovl %es:(%ebx), %eax\n\tmovl %eax, r+8\n\t"
              "movl $0xabcdef01, %gs:0x40");
    pm_check_val("  fs:0x20 (data_a)", r[0], le32(data_a + 0x20));
    pm_check_val("  gs:0x20 (data_b)", r[1], le32(data_b + 0x20));
    pm_check_val("  es:(ebx=0x30) (data_a)", r[2], le32(data_a + 0x30));
    pm_check_val("  gs:0x40 written (data_b+0x40)", le32(data_b + 0x40), 0xabcdef01);
    EXPECT_OK("read at the limit: es:0xffc (limit 0xfff)",
              LOAD_SEG(es, SEL_DATA_A) "\n\tmovl %es:0xffc, %eax\n\tmovl %eax, r");
    pm_check_val("  data_a+0xffc", r[0], le32(data_a + 0xffc));
    EXPECT_OK("expand-down (base data_a+0x1000, limit 0xfff): read 0xfffff000, 0x1000",
              LOAD_SEG(es, SEL_DOWN) "\n\tmovl %es:0xfffff000, %eax\n\tmovl %eax, r\n\t"
              "movl %es:0x1000, %eax\n\tmovl %eax, r+4\n\tmovl %es:0xfffffffc, %eax\n\tmovl %eax, r+8");
    pm_check_val("  es:0xfffff000 wraps to data_a", r[0], le32(data_a));
    pm_check_val("  es:0x1000 is data_a+0x2000", r[1], le32(data_a + 0x2000));
    pm_check_val("  es:0xfffffffc wraps to data_a+0xffc", r[2], le32(data_a + 0xffc));

    rt_puts("-- the descriptor cache\n");
    EXPECT_OK("es <- data_a; GDT entry changed to data_b; read es:0; reload; read es:0",
              LOAD_SEG(es, SEL_DATA_A) "\n\tmovl $pm_gdt+" PM_STR(SEL_DATA_A) ", %ebx\n\t"
              "movl pm_gdt+" PM_STR(SEL_DATA_B) ", %eax\n\tmovl %eax, (%ebx)\n\t"
              "movl pm_gdt+" PM_STR(SEL_DATA_B) "+4, %eax\n\tmovl %eax, 4(%ebx)\n\t"
              "movl %es:0, %eax\n\tmovl %eax, r\n\t" LOAD_SEG(es, SEL_DATA_A)
              "\n\tmovl %es:0, %eax\n\tmovl %eax, r+4");
    pm_check_val("  before the reload: data_a", r[0], le32(data_a));
    pm_check_val("  after the reload: data_b", r[1], le32(data_b));
    pm_gdt_set(SEL_DATA_A, pm_seg_desc((uint32_t)data_a, 0xfff, ACC_DATA_RW, FL_DB));

    rt_puts("-- string instructions with segment bases (DS base data_a, ES base data_b)\n");
#define STR_PRO LOAD_SEG(ds, SEL_DATA_A) "\n\t" LOAD_SEG(es, SEL_DATA_B) "\n\t" LOAD_SEG(fs, SEL_DATA_B) "\n\t"
#define STR_EPI "\n\tmovw $0x10, %bx\n\tmovw %bx, %ds\n\tmovl %esi, r\n\tmovl %edi, r+4\n\t" \
                "movl %eax, r+8\n\tmovl %ecx, r+12\n\tpushfl\n\tpopl r+16"
    fill();
    EXPECT_OK("rep movsl: ds:0x100 -> es:0x200, 4 dwords",
              STR_PRO "movl $0x100, %esi\n\tmovl $0x200, %edi\n\tmovl $4, %ecx\n\tcld\n\trep movsl" STR_EPI);
    pm_check_val("  data_b+0x200..0x20f == data_a+0x100..", (uint32_t)memcmp(data_b + 0x200, data_a + 0x100, 16), 0);
    pm_check_val("  esi", r[0], 0x110);
    pm_check_val("  edi", r[1], 0x210);
    fill();
    EXPECT_OK("fs movsb: fs:0x10 (data_b) -> es:0x300 (data_b)",
              STR_PRO "movl $0x10, %esi\n\tmovl $0x300, %edi\n\tcld\n\tfs movsb" STR_EPI);
    pm_check_val("  data_b[0x300] == data_b[0x10]", data_b[0x300], data_b[0x10]);
    fill();
    EXPECT_OK("std; stosw x3 at es:0x404",
              STR_PRO "movl $0x404, %edi\n\tmovl $3, %ecx\n\tmovw $0xbeef, %ax\n\tstd\n\trep stosw\n\tcld" STR_EPI);
    pm_check_val("  data_b+0x400..0x405", le32(data_b + 0x400), 0xbeefbeef);
    pm_check_val("  data_b+0x404 (word)", data_b[0x404] | data_b[0x405] << 8, 0xbeef);
    pm_check_val("  edi", r[1], 0x3fe);
    fill();
    EXPECT_OK("lodsl ds:0x50, gs lodsl gs:0x50 (gs=data_b)",
              STR_PRO LOAD_SEG(gs, SEL_DATA_B) "\n\tmovl $0x50, %esi\n\tlodsl\n\tmovl %eax, %edx\n\t"
              "movl $0x50, %esi\n\tgs lodsl\n\tmovl %edx, %ecx" STR_EPI);
    pm_check_val("  ds:0x50 (data_a)", r[3], le32(data_a + 0x50));
    pm_check_val("  gs:0x50 (data_b)", r[2], le32(data_b + 0x50));
    fill();
    memcpy(data_b + 0x600, data_a + 0x600, 16);
    data_b[0x603] = data_a[0x603] ^ 0xff;
    EXPECT_OK("repe cmpsb ds:0x600 vs es:0x600, 16 bytes (differs at 3)",
              STR_PRO "movl $0x600, %esi\n\tmovl $0x600, %edi\n\tmovl $16, %ecx\n\tcld\n\trepe cmpsb" STR_EPI);
    pm_check_val("  ecx", r[3], 12);
    pm_check_val("  esi", r[0], 0x604);
    pm_check_val("  ZF", (r[4] >> 6) & 1, 0);
    fill();
    EXPECT_OK("repne scasb for data_b[0x710] in es:0x700..",
              STR_PRO "movl $0x700, %edi\n\tmovb %es:0x710, %al\n\tmovl $0x100, %ecx\n\tcld\n\trepne scasb" STR_EPI);
    pm_check_val("  edi (one past the match)", r[1], 0x711);
    pm_check_val("  ZF", (r[4] >> 6) & 1, 1);
    fill();
    EXPECT_OK("es movsl: source es:(esi), destination es:(edi)",
              STR_PRO "movl $0x20, %esi\n\tmovl $0x800, %edi\n\tcld\n\tes movsl" STR_EPI);
    pm_check_val("  data_b+0x800 == es:0x20 (data_b+0x20)", le32(data_b + 0x800), le32(data_b + 0x20));
}

/* ---- SS base ---- */
static void stack_base(void)
{
    rt_puts("-- SS base (SS base stack_area, ESP offsets)\n");
    memset(stack_area, 0, sizeof(stack_area));
#define SS_PRO LOAD_SEG(ss, SEL_STACK) "\n\tmovl $0x1000, %esp\n\t"
#define SS_EPI "\n\tmovl %esp, r+60\n\tmovw $0x10, %ax\n\tmovw %ax, %ss\n\tmovl pm_recov, %esp"
    EXPECT_OK("push, push, pop", SS_PRO "pushl $0x11223344\n\tpushl $0x55667788\n\t"
              "popl %eax\n\tmovl %eax, r" SS_EPI);
    pm_check_val("  stack_area+0xffc", le32(stack_area + 0xffc), 0x11223344);
    pm_check_val("  stack_area+0xff8", le32(stack_area + 0xff8), 0x55667788);
    pm_check_val("  popped", r[0], 0x55667788);
    pm_check_val("  esp", r[15], 0xffc);
    memset(stack_area, 0, sizeof(stack_area));
    EXPECT_OK("call/ret", SS_PRO "call ss_call_ret\nss_call_ret:\tmovl (%esp), %eax\n\tmovl %eax, r\n\t"
              "movl $ss_ret_target, (%esp)\n\tret\n\tud2\nss_ret_target:\tmovl %esp, r+4" SS_EPI);
    {
        extern char ss_call_ret[], ss_ret_target[];
        pm_check_val("  (%esp) after call - return address", r[0] - (uint32_t)ss_call_ret, 0);
        pm_check_val("  stack_area+0xffc - ret target", le32(stack_area + 0xffc) - (uint32_t)ss_ret_target, 0);
    }
    pm_check_val("  esp after ret", r[1], 0x1000);
    memset(stack_area, 0, sizeof(stack_area));
    EXPECT_OK("enter $16, $0; leave", SS_PRO "movl $0xeb0eb0eb, %ebp\n\tenter $16, $0\n\t"
              "movl %esp, r\n\tmovl %ebp, r+4\n\tmovl $0x12345678, (%ebp)\n\tmovl $0xcafe, -4(%ebp)\n\t"
              "leave\n\tmovl %ebp, r+8" SS_EPI);
    pm_check_val("  esp after enter", r[0], 0xfec);
    pm_check_val("  ebp after enter", r[1], 0xffc);
    pm_check_val("  ss:-4(%ebp) went to stack_area+0xff8", le32(stack_area + 0xff8), 0xcafe);
    pm_check_val("  ebp after leave (popped from stack_area+0xffc)", r[2], 0x12345678);
    pm_check_val("  esp after leave", r[15], 0x1000);
    memset(stack_area, 0, sizeof(stack_area));
    EXPECT_OK("enter $8, $2 (nesting level 2)", SS_PRO "movl $0x900, %ebp\n\tmovl $0x77777777, %ss:0x8fc\n\t"
              "enter $8, $2\n\tmovl %esp, r\n\tmovl %ebp, r+4" SS_EPI);
    pm_check_val("  ss:0xffc = old ebp", le32(stack_area + 0xffc), 0x900);
    pm_check_val("  ss:0xff8 = copied frame pointer from ss:0x8fc", le32(stack_area + 0xff8), 0x77777777);
    pm_check_val("  ss:0xff4 = new frame pointer", le32(stack_area + 0xff4), 0xffc);
    pm_check_val("  esp", r[0], 0xfec);
    pm_check_val("  ebp", r[1], 0xffc);
    memset(stack_area, 0, sizeof(stack_area));
    EXPECT_OK("pushal/popal", SS_PRO "movl $1, %eax\n\tmovl $2, %ecx\n\tmovl $3, %edx\n\tmovl $4, %ebx\n\t"
              "movl $5, %ebp\n\tmovl $6, %esi\n\tmovl $7, %edi\n\tpushal\n\tmovl $0, %eax\n\tpopal\n\t"
              "movl %eax, r" SS_EPI);
    pm_check_val("  ss:0xfe0 = edi", le32(stack_area + 0xfe0), 7);
    pm_check_val("  ss:0xfec = esp before pushal", le32(stack_area + 0xfec), 0x1000);
    pm_check_val("  ss:0xffc = eax", le32(stack_area + 0xffc), 1);
    pm_check_val("  eax after popal", r[0], 1);
    memset(stack_area, 0, sizeof(stack_area));
    EXPECT_OK("stc; pushfl; clc; popfl; pushfl", SS_PRO "stc\n\tpushfl\n\tclc\n\tpopfl\n\tpushfl\n\tpopl %eax\n\tmovl %eax, r" SS_EPI);
    pm_check_val("  CF of the EFLAGS pushed at ss:0xffc", le32(stack_area + 0xffc) & 1, 1);
    pm_check_val("  popfl restored CF", r[0] & 1, 1);
    memset(stack_area, 0, sizeof(stack_area));
    EXPECT_OK("movl 8(%esp) and (%ebp) use SS", SS_PRO "movl $0xa1a2a3a4, %ss:0x1008\n\tmovl 8(%esp), %eax\n\t"
              "movl $0x1008, %ebp\n\tmovl (%ebp), %ecx\n\tmovl %eax, r\n\tmovl %ecx, r+4" SS_EPI);
    pm_check_val("  8(%esp)", r[0], 0xa1a2a3a4);
    pm_check_val("  (%ebp)", r[1], 0xa1a2a3a4);
}

/* ---- code segments ---- */
__asm__(".text\n"
        /* far-called with SEL_KCODE2: records the return CS:EIP, returns */
        "kcode2_func:\n\t"
        "movl (%esp), %eax\n\tmovl %eax, r\n\tmovl 4(%esp), %eax\n\tmovl %eax, r+4\n\t"
        "movw %cs, %ax\n\tmovl %eax, r+8\n\tlret $8\n"
        /* reached by a far jump through SEL_CODE_BASED (base 0x100000) */
        "based_code:\n\t"
        "call 1f\n1:\tpopl %eax\n\tmovl %eax, r\n\tmovw %cs, %ax\n\tmovl %eax, r+4\n\t"
        "movl $based_code, r+8\n\tljmp $" PM_STR(SEL_KCODE) ", $based_back\n"
        /* far-called through SEL_CODE_BASED: returns with lret */
        "based_func:\n\t"
        "movl (%esp), %eax\n\tmovl %eax, r+12\n\tcall based_func_pop\n"
        "based_func_pop:\n\tpopl %eax\n\tmovl %eax, r+16\n\tlret\n"
        /* the target of the call gates: records its stack, returns with lret $8 */
        "gate_entry:\n\t"
        "movl %esp, r\n\tmovw %ss, %ax\n\tmovl %eax, r+4\n\tmovw %cs, %ax\n\tmovl %eax, r+8\n\t"
        "movl (%esp), %eax\n\tmovl %eax, r+12\n\tmovl 4(%esp), %eax\n\tmovl %eax, r+16\n\t"
        "movl 8(%esp), %eax\n\tmovl %eax, r+20\n\tmovl 12(%esp), %eax\n\tmovl %eax, r+24\n\t"
        "movl 16(%esp), %eax\n\tmovl %eax, r+28\n\tmovl 20(%esp), %eax\n\tmovl %eax, r+32\n\t"
        "movw $" PM_STR(SEL_KDATA) ", %ax\n\tmovw %ax, %fs\n\t" /* DPL 0: nulled on return to ring 3 */
        "movw $" PM_STR(SEL_UDATA) ", %ax\n\tmovw %ax, %gs\n\t" /* DPL 3: kept */
        "lret $8\n");

static void code_segments(void)
{
    rt_puts("-- far jmp/call/ret at the same privilege (SDM: CALL, JMP, RET far)\n");
    memset(r, 0, sizeof(r));
    EXPECT_OK("lcall $0x90, $kcode2_func (pushes 2 extra dwords, lret $8)",
              "pushl $0\n\tpushl $0\n\tmovl %esp, saved_esp\n\tlcall $" PM_STR(SEL_KCODE2) ", $kcode2_func\n"
              "9:\tmovl %esp, r+12\n\tmovl $9b, r+16");
    pm_check_val("  pushed EIP is the return address", r[0] - r[4], 0);
    pm_check_val("  pushed CS (low 16 bits)", r[1] & 0xffff, SEL_KCODE);
    pm_check_val("  cs in the callee", r[2] & 0xffff, SEL_KCODE2);
    pm_check_val("  esp after lret $8 - esp before the pushes", r[3] - (saved_esp + 8), 0);
    EXPECT_OK("ljmp $0x90 then ljmp back to $0x08",
              "ljmp $" PM_STR(SEL_KCODE2) ", $1f\n1:\tmovw %cs, %ax\n\tmovl %eax, r\n\t"
              "ljmp $" PM_STR(SEL_KCODE) ", $2f\n2:\tmovw %cs, %ax\n\tmovl %eax, r+4");
    pm_check_val("  cs after the first ljmp", r[0] & 0xffff, SEL_KCODE2);
    pm_check_val("  cs after the second", r[1] & 0xffff, SEL_KCODE);
    memset(r, 0, sizeof(r));
    EXPECT_OK("ljmp into a code segment based at 0x100000",
              "ljmp $" PM_STR(SEL_CODE_BASED) ", $based_code-0x100000\n"
              ".globl based_back\nbased_back:");
    pm_check_val("  EIP seen by call/pop there = linear - 0x100000", r[0] - (r[2] - 0x100000 + 5), 0);
    pm_check_val("  cs there", r[1] & 0xffff, SEL_CODE_BASED);
    EXPECT_OK("lcall into the based segment, lret",
              "lcall $" PM_STR(SEL_CODE_BASED) ", $based_func-0x100000\n9:\tmovl $9b, r+20");
    pm_check_val("  pushed EIP (flat)", r[3] - r[5], 0);
    {
        extern char based_func_pop[];
        pm_check_val("  EIP in the callee - (linear - 0x100000)", r[4] - ((uint32_t)based_func_pop - 0x100000), 0);
    }
    EXPECT_FAULT("ljmp to offset 0x200000 of a segment with limit 0x1fffff", PM_GP, 0,
                 AT "ljmp $" PM_STR(SEL_CODE_2M) ", $0x200000");
    EXPECT_OK("ljmp within the limit of that segment",
              "ljmp $" PM_STR(SEL_CODE_2M) ", $1f\n1:\tljmp $" PM_STR(SEL_KCODE) ", $2f\n2:");
    EXPECT_FAULT("ljmp to a not-present code segment", PM_NP, SEL_CODE_NP,
                 AT "ljmp $" PM_STR(SEL_CODE_NP) ", $0");
    EXPECT_FAULT("ljmp to a not-present data segment (type checked first)", PM_GP, SEL_NP,
                 AT "ljmp $" PM_STR(SEL_NP) ", $0");
    EXPECT_FAULT("ljmp to DPL 3 non-conforming code at CPL 0", PM_GP, SEL_UCODE & ~3,
                 AT "ljmp $" PM_STR(SEL_UCODE) ", $0");
    EXPECT_FAULT("ljmp to DPL 3 conforming code at CPL 0", PM_GP, SEL_CODE_XRC3,
                 AT "ljmp $" PM_STR(SEL_CODE_XRC3) ", $0");
    EXPECT_OK("ljmp to DPL 0 conforming code at CPL 0",
              "ljmp $" PM_STR(SEL_CODE_XRC) ", $1f\n1:\tljmp $" PM_STR(SEL_KCODE) ", $2f\n2:");
    EXPECT_USER_OK("ring 3: ljmp to DPL 0 conforming code (CPL stays 3)",
                   "ljmp $" PM_STR(SEL_CODE_XRC) ", $1f\n1:\tmovw %cs, %ax\n\tmovl %eax, r\n\t"
                   "ljmp $" PM_STR(SEL_UCODE) ", $2f\n2:");
    pm_check_val("  cs (RPL = CPL 3)", r[0] & 0xffff, SEL_CODE_XRC | 3);
    EXPECT_USER_FAULT("ring 3: ljmp to DPL 0 non-conforming code", PM_GP, SEL_KCODE,
                      AT "ljmp $" PM_STR(SEL_KCODE) ", $0");
}

static void call_gates(void)
{
    rt_puts("-- call gates (SDM: Call Gates, Stack Switching)\n");
    {
        extern char gate_entry[];
        pm_gdt_set(SEL_GATE3, pm_gate_desc(SEL_KCODE, (uint32_t)gate_entry, ACC_P | DPL(3) | SYS_CALLGATE32, 2));
        pm_gdt_set(SEL_GATE0, pm_gate_desc(SEL_KCODE, (uint32_t)gate_entry, ACC_P | DPL(0) | SYS_CALLGATE32, 2));
        pm_gdt_set(SEL_GATE_NP, pm_gate_desc(SEL_KCODE, (uint32_t)gate_entry, DPL(3) | SYS_CALLGATE32, 2));
        pm_gdt_set(SEL_GATE3_TO3, pm_gate_desc(SEL_CODE_XRC3, (uint32_t)gate_entry, ACC_P | DPL(3) | SYS_CALLGATE32, 0));
    }
    memset(r, 0, sizeof(r));
    EXPECT_USER_OK("ring 3: push 0xaaaa, 0xbbbb; lcall through a DPL 3 gate to ring 0 (2 params)",
                   "movw $" PM_STR(SEL_UDATA) ", %ax\n\tmovw %ax, %fs\n\tmovw %ax, %gs\n\t"
                   "pushl $0xaaaa\n\tpushl $0xbbbb\n\tmovl %esp, r+40\n\t"
                   "lcall $" PM_STR(SEL_GATE3) ", $0x12345678\n9:\tmovl %esp, r+44\n\t"
                   "movl $9b, r+48\n\tmovw %fs, %ax\n\tmovl %eax, r+52\n\tmovw %gs, %ax\n\tmovl %eax, r+56\n\t"
                   "movw %cs, %ax\n\tmovl %eax, r+36");
    pm_check_val("  handler ESP = TSS.ESP0 - 24", (uint32_t)pm_kstack_top - r[0], 24);
    pm_check_val("  handler SS = TSS.SS0", r[1] & 0xffff, SEL_KDATA);
    pm_check_val("  handler CS (gate's selector, CPL 0)", r[2] & 0xffff, SEL_KCODE);
    pm_check_val("  [esp] = return EIP", r[3] - r[12], 0);
    pm_check_val("  [esp+4] = caller CS", r[4] & 0xffff, SEL_UCODE);
    pm_check_val("  [esp+8] = param 1 (pushed last)", r[5], 0xbbbb);
    pm_check_val("  [esp+12] = param 2", r[6], 0xaaaa);
    pm_check_val("  [esp+16] = caller ESP (after the pushes)", r[7] - r[10], 0);
    pm_check_val("  [esp+20] = caller SS", r[8] & 0xffff, SEL_UDATA);
    pm_check_val("  back at ring 3: cs", r[9] & 0xffff, SEL_UCODE);
    pm_check_val("  back at ring 3: esp (lret $8 popped the params)", r[11] - (r[10] + 8), 0);
    pm_check_val("  fs loaded with DPL 0 data in the handler: nulled", r[13] & 0xffff, 0);
    pm_check_val("  gs loaded with DPL 3 data in the handler: kept", r[14] & 0xffff, SEL_UDATA);
    memset(r, 0, sizeof(r));
    EXPECT_OK("ring 0: lcall through a DPL 0 gate (no stack switch)",
              "pushl $0x1111\n\tpushl $0x2222\n\tmovl %esp, r+40\n\tlcall $" PM_STR(SEL_GATE0) ", $0\n\t"
              "movl %esp, r+44");
    pm_check_val("  handler ESP = caller ESP - 8 (EIP, CS only)", r[10] - r[0], 8);
    pm_check_val("  [esp+8] = param 1 (the caller's own stack)", r[5], 0x2222);
    pm_check_val("  esp after lret $8", r[11] - (r[10] + 8), 0);
    EXPECT_USER_FAULT("ring 3: lcall through a DPL 0 gate", PM_GP, SEL_GATE0,
                      AT "lcall $" PM_STR(SEL_GATE0) ", $0");
    EXPECT_USER_FAULT("ring 3: lcall through a not-present gate", PM_NP, SEL_GATE_NP,
                      AT "lcall $" PM_STR(SEL_GATE_NP) ", $0");
    EXPECT_USER_FAULT("ring 3: ljmp through a gate to DPL 0 code (jmp: DPL must = CPL)", PM_GP, SEL_KCODE,
                      AT "ljmp $" PM_STR(SEL_GATE3) ", $0");
    EXPECT_FAULT("ring 0: lcall through a gate to DPL 3 conforming code (DPL > CPL)", PM_GP,
                 SEL_CODE_XRC3, AT "lcall $" PM_STR(SEL_GATE3_TO3) ", $0");
}

/* ---- lar/lsl/verr/verw/arpl ---- */
uint32_t zsel, zval, zflag;
#define SEL_OP(insn, sel)                                                   \
    "movl $" PM_STR(sel) ", %ecx\n\tmovl $0xdeadbeef, %eax\n\t" insn " %cx, %eax\n\t" \
    "setz %dl\n\tmovzbl %dl, %edx\n\tmovl %edx, zflag\n\tmovl %eax, zval"
#define SEL_OP1(insn, sel)                                                  \
    "movl $" PM_STR(sel) ", %ecx\n\t" insn " %cx\n\t"                       \
    "setz %dl\n\tmovzbl %dl, %edx\n\tmovl %edx, zflag"

static void show_zv(const char *what, uint32_t want_zf, uint32_t want_val)
{
    rt_printf("%s: ZF=%u %08x\n", what, zflag, zval);
    rt_checks++;
    if (zflag != want_zf || (want_zf && zval != want_val)) {
        rt_failures++;
        rt_printf("FAIL %s: want ZF=%u %08x\n", what, want_zf, want_val);
    }
}
static void show_z(const char *what, uint32_t want_zf)
{
    rt_printf("%s: ZF=%u\n", what, zflag);
    rt_checks++;
    if (zflag != want_zf) {
        rt_failures++;
        rt_printf("FAIL %s: want ZF=%u\n", what, want_zf);
    }
}
#define LAR(what, sel, zf, val) do { PM_TRY(SEL_OP("larl", sel)); show_zv(what, zf, val); } while (0)
#define LSL(what, sel, zf, val) do { PM_TRY(SEL_OP("lsll", sel)); show_zv(what, zf, val); } while (0)
#define ULAR(what, sel, zf, val) do { PM_USER_TRY(SEL_OP("larl", sel)); show_zv(what, zf, val); } while (0)
#define ULSL(what, sel, zf, val) do { PM_USER_TRY(SEL_OP("lsll", sel)); show_zv(what, zf, val); } while (0)
#define VER(what, insn, sel, zf) do { PM_TRY(SEL_OP1(insn, sel)); show_z(what, zf); } while (0)
#define UVER(what, insn, sel, zf) do { PM_USER_TRY(SEL_OP1(insn, sel)); show_z(what, zf); } while (0)

static void pointer_validation(void)
{
    rt_puts("-- lar/lsl/verr/verw/arpl (SDM: Pointer Validation); 0xdeadbeef = unchanged\n");
    LAR("lar 0x08 (flat code, accessed)", SEL_KCODE, 1, 0x00c09b00);
    LAR("lar 0x10 (flat data, accessed)", SEL_KDATA, 1, 0x00c09300);
    LAR("lar data_a (byte granular, B=1, accessed)", SEL_DATA_A, 1, 0x00409300);
    LAR("lar execute-only code, never loaded", SEL_CODE_X, 1, 0x00c09800);
    LAR("lar 0x28 (busy 32-bit TSS)", SEL_TSS, 1, 0x00008b00);
    LAR("lar 0x38 (LDT)", SEL_LDT, 1, 0x00008200);
    LAR("lar a DPL 3 call gate (bits 23:20 are offset bits 23:20)", SEL_GATE3, 1,
        (uint32_t)(pm_gdt[SEL_GATE3 >> 3] >> 32) & 0x00f0ff00);
    LAR("lar an interrupt gate", SEL_INTGATE, 0, 0);
    LAR("lar null", 0, 0, 0);
    LAR("lar beyond the GDT limit", 0x200, 0, 0);
    LAR("lar 0x10 with RPL 3 (DPL 0 < RPL)", SEL_KDATA | 3, 0, 0);
    LAR("lar conforming code (accessed) with RPL 3", SEL_CODE_XRC | 3, 1, 0x00c09f00);
    LAR("lar the LDT data selector", LSEL_DATA, 1, 0x00409300);
    LSL("lsl 0x10 (G=1)", SEL_KDATA, 1, 0xffffffff);
    LSL("lsl data_a (limit 0xfff)", SEL_DATA_A, 1, 0xfff);
    LSL("lsl limit 0xf with G=1", SEL_DATA_G, 1, 0xffff);
    LSL("lsl expand-down", SEL_DOWN, 1, 0xfff);
    LSL("lsl the main TSS", SEL_TSS, 1, sizeof(pm_tss) - 1);
    LSL("lsl the LDT", SEL_LDT, 1, sizeof(pm_ldt) - 1);
    LSL("lsl a call gate", SEL_GATE3, 0, 0);
    LSL("lsl null", 0, 0, 0);
    VER("verr readable code", "verr", SEL_CODE_XR, 1);
    VER("verr execute-only code", "verr", SEL_CODE_X, 0);
    VER("verr read-only data", "verr", SEL_DATA_RO, 1);
    VER("verw read-only data", "verw", SEL_DATA_RO, 0);
    VER("verw data", "verw", SEL_KDATA, 1);
    VER("verw code", "verw", SEL_KCODE, 0);
    VER("verr null", "verr", 0, 0);
    VER("verr a TSS", "verr", SEL_TSS, 0);
    VER("verw DPL 0 data with RPL 3", "verw", SEL_KDATA | 3, 0);
    ULAR("ring 3: lar DPL 3 data", SEL_UDATA, 1, 0x00c0f300);
    ULAR("ring 3: lar DPL 0 data", SEL_KDATA, 0, 0);
    ULAR("ring 3: lar DPL 0 conforming code", SEL_CODE_XRC, 1, 0x00c09f00);
    ULSL("ring 3: lsl DPL 0 data", SEL_KDATA, 0, 0);
    ULSL("ring 3: lsl DPL 3 data", SEL_UDATA, 1, 0xffffffff);
    UVER("ring 3: verr DPL 0 readable code", "verr", SEL_CODE_XR, 0);
    UVER("ring 3: verr DPL 0 conforming readable code", "verr", SEL_CODE_XRC, 1);
    UVER("ring 3: verw DPL 3 data", "verw", SEL_UDATA, 1);
    UVER("ring 3: verw DPL 0 data", "verw", SEL_KDATA, 0);
    PM_TRY("movw $0x0010, %bx\n\tmovw $0x0023, %ax\n\tarpl %ax, %bx\n\tsetz %dl\n\t"
           "movzbl %dl, %edx\n\tmovl %edx, zflag\n\tmovzwl %bx, %ebx\n\tmovl %ebx, zval");
    show_zv("arpl dest 0x10, src 0x23 (raises RPL)", 1, 0x13);
    PM_TRY("movw $0x0023, %bx\n\tmovw $0x0010, %ax\n\tarpl %ax, %bx\n\tsetz %dl\n\t"
           "movzbl %dl, %edx\n\tmovl %edx, zflag\n\tmovzwl %bx, %ebx\n\tmovl %ebx, zval");
    show_zv("arpl dest 0x23, src 0x10 (unchanged)", 0, 0);
    pm_check_val("  dest", zval, 0x23);
}

/* ---- descriptor-table registers ---- */
struct {
    uint16_t pad, limit;
    uint32_t base;
} __attribute__((packed, aligned(4))) gdtr_v, idtr_v;
uint32_t ldtr_v, tr_v, msw_v, mem16[2];

static void table_registers(void)
{
    rt_puts("-- sgdt/sidt/sldt/str/smsw\n");
    EXPECT_OK("sgdt, sidt, sldt, str, smsw at ring 0",
              "sgdt gdtr_v+2\n\tsidt idtr_v+2\n\tmovl $-1, %eax\n\tsldt %eax\n\tmovl %eax, ldtr_v\n\t"
              "movl $-1, %eax\n\tstr %eax\n\tmovl %eax, tr_v\n\tmovl $-1, %eax\n\tsmsw %eax\n\t"
              "movw %ax, msw_v\n\tmovl $-1, mem16\n\tsldt mem16\n\tmovl $-1, mem16+4\n\tstr mem16+4");
    pm_check_val("  gdtr limit", gdtr_v.limit, sizeof(pm_gdt) - 1);
    pm_check_val("  gdtr base - pm_gdt", gdtr_v.base - (uint32_t)pm_gdt, 0);
    pm_check_val("  idtr limit", idtr_v.limit, 0x7ff);
    pm_check_val("  idtr base - pm_idt", idtr_v.base - (uint32_t)pm_idt, 0);
    pm_check_val("  sldt r32 (upper half cleared)", ldtr_v, SEL_LDT);
    pm_check_val("  str r32 (upper half cleared)", tr_v, SEL_TSS);
    pm_check_val("  smsw (low 16 bits of CR0)", msw_v & 0xffff, rd_cr0() & 0xffff);
    pm_check_val("  sldt m16 writes 16 bits", mem16[0], 0xffff0000 | SEL_LDT);
    pm_check_val("  str m16 writes 16 bits", mem16[1], 0xffff0000 | SEL_TSS);
    memset(&gdtr_v, 0, sizeof(gdtr_v));
    EXPECT_USER_OK("sgdt, sldt, str, smsw at ring 3 (allowed without UMIP)",
                   "sgdt gdtr_v+2\n\tmovl $-1, %eax\n\tsldt %eax\n\tmovl %eax, ldtr_v\n\t"
                   "str %eax\n\tmovl %eax, tr_v\n\tsmsw %eax\n\tmovw %ax, msw_v");
    pm_check_val("  gdtr limit", gdtr_v.limit, sizeof(pm_gdt) - 1);
    pm_check_val("  sldt", ldtr_v, SEL_LDT);
    pm_check_val("  str", tr_v, SEL_TSS);
    EXPECT_USER_FAULT("lldt at ring 3", PM_GP, 0, "movw $" PM_STR(SEL_LDT) ", %ax\n\t" AT "lldt %ax");
    EXPECT_USER_FAULT("lmsw at ring 3", PM_GP, 0, "movw $0x33, %ax\n\t" AT "lmsw %ax");
}

/* ---- 16-bit code ---- */
/* A block with its own base: code at offsets from blk16, data after it,
 * a stack at the end.  CS = SEL_CODE16 and DS = SS = SEL_DATA16, all based
 * at blk16, so offsets are label - blk16. */
#define O(x) "(" #x "-blk16)"
__asm__(".section .text.blk16, \"ax\"\n"
        ".balign 16\n"
        ".globl blk16\n"
        "blk16:\n"
        ".code16\n"
        "entry16:\n\t"
        "movw $" PM_STR(SEL_DATA16) ", %ax\n\tmovw %ax, %ds\n\tmovw %ax, %ss\n\t"
        "movl $0x12340000+" O(stack16_top) ", %esp\n\t"
        /* operand size 16 by default, 32 with 66 */
        "movl $0xffffffff, %eax\n\tmovw $0x1234, %ax\n\tmovl %eax, " O(res16) "\n\t"
        /* 16-bit push/pop: SP only (SS.B=0), upper ESP kept */
        "movw $0x5678, %ax\n\tpushw %ax\n\tmovl %esp, " O(res16+4) "\n\tpopw %bx\n\tmovw %bx, " O(res16+8) "\n\t"
        /* 66 push: 4 bytes */
        "pushl $0x9abcdef0\n\tmovl %esp, " O(res16+12) "\n\tpopl %ecx\n\tmovl %ecx, " O(res16+16) "\n\t"
        /* call/ret near: 16-bit return address */
        "call sub16\n"
        "ret16:\n\t"
        /* enter/leave 16-bit */
        "movw $0x4444, %bp\n\tenterw $6, $0\n\tmovw %sp, " O(res16+24) "\n\tmovw %bp, " O(res16+26) "\n\t"
        "leavew\n\tmovw %bp, " O(res16+28) "\n\tmovw %sp, " O(res16+30) "\n\t"
        /* pusha/popa 16-bit: 8 words */
        "movw $0xaaaa, %ax\n\tpushaw\n\tmovw %sp, " O(res16+32) "\n\tmovw $0, %ax\n\tpopaw\n\t"
        "movw %ax, " O(res16+34) "\n\tmovw %sp, " O(res16+36) "\n\t"
        /* xlat with 16-bit addressing: BX, not EBX */
        "movl $0xabcd0000+" O(table16) ", %ebx\n\tmovb $3, %al\n\txlat\n\tmovb %al, " O(res16+38) "\n\t"
        /* 16-bit addressing (bx+si+disp) and a 67 prefix with 32-bit registers */
        "movw $" O(table16) ", %bx\n\tmovw $2, %si\n\tmovw 4(%bx,%si), %ax\n\tmovw %ax, " O(res16+40) "\n\t"
        "movl $" O(table16) ", %esi\n\taddr32 movw 8(%esi), %ax\n\tmovw %ax, " O(res16+42) "\n\t"
        /* back to 32-bit code */
        "ljmpl $" PM_STR(SEL_KCODE) ", $back16\n"
        "sub16:\n\t"
        "movw %sp, %bp\n\tmovw (%bp), %ax\n\tmovw %ax, " O(res16+20) "\n\tmovw %sp, " O(res16+22) "\n\tret\n"
        ".balign 4\n"
        "table16: .byte 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b\n"
        ".balign 4\n"
        ".globl res16\n"
        "res16: .space 64\n"
        ".space 256\n"
        "stack16_top:\n"
        ".code32\n"
        ".text\n");
extern uint8_t blk16[], res16[];

static uint32_t r16_32(int off) { return le32(res16 + off); }
static uint32_t r16_16(int off) { return res16[off] | res16[off + 1] << 8; }

static void code16(void)
{
    extern char ret16[], stack16_top[];
    uint32_t sp0 = (uint32_t)(stack16_top - (char *)blk16);
    rt_puts("-- 16-bit code segment (CS.D=0, SS.B=0, bases at blk16)\n");
    pm_gdt_set(SEL_CODE16, pm_seg_desc((uint32_t)blk16, 0xffff, ACC_CODE_XR, 0));
    pm_gdt_set(SEL_DATA16, pm_seg_desc((uint32_t)blk16, 0xffff, ACC_DATA_RW, 0));
    memset(res16, 0, 64);
    EXPECT_OK("ljmp to 16-bit code, ljmpl back",
              "ljmp $" PM_STR(SEL_CODE16) ", $0\n.globl back16\nback16:");
    pm_check_val("  movw to ax keeps the upper half of eax", r16_32(0), 0xffff1234);
    pm_check_val("  esp after pushw (SS.B=0: SP only)", r16_32(4), 0x12340000 + sp0 - 2);
    pm_check_val("  popw", r16_16(8), 0x5678);
    pm_check_val("  esp after 66 pushl", r16_32(12), 0x12340000 + sp0 - 4);
    pm_check_val("  66 popl", r16_32(16), 0x9abcdef0);
    pm_check_val("  call pushed a 16-bit return IP (- offset of ret16)", r16_16(20) - (uint32_t)(ret16 - (char *)blk16), 0);
    pm_check_val("  sp in the callee", r16_16(22), sp0 - 2);
    pm_check_val("  enterw $6: sp", r16_16(24), sp0 - 8);
    pm_check_val("  enterw $6: bp", r16_16(26), sp0 - 2);
    pm_check_val("  leavew: bp", r16_16(28), 0x4444);
    pm_check_val("  leavew: sp", r16_16(30), sp0);
    pm_check_val("  pushaw: sp - 16", r16_16(32), sp0 - 16);
    pm_check_val("  popaw: ax", r16_16(34), 0xaaaa);
    pm_check_val("  popaw: sp", r16_16(36), sp0);
    pm_check_val("  xlat uses bx (ebx upper half ignored)", res16[38], 0x13);
    pm_check_val("  movw 4(%bx,%si)", r16_16(40), 0x1716);
    pm_check_val("  addr32 movw 8(%esi)", r16_16(42), 0x1918);
}

int main(void)
{
    pm_init();
    rt_puts("pm_segments: segment loads, bases, LDT, far transfers, call gates, pointer validation, 16-bit code\n");
    setup_gdt();
    loads();
    ldt();
    bases();
    stack_base();
    code_segments();
    call_gates();
    pointer_validation();
    table_registers();
    code16();
    rt_finish("pm_segments");
}
