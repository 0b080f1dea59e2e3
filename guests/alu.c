/* alu: integer and flags torture.
 *
 * Every ALU operation runs over a table of interesting operands with two
 * incoming flag states (all arithmetic flags clear / all set).  Results,
 * untouched register bytes and the *defined* arithmetic flags (undefined
 * ones are masked per instruction) are hashed; each operation prints its
 * hash and one sample result, so native and guest outputs can be compared
 * line by line.  A set of known-answer checks makes the program fail on its
 * own when an instruction is plainly wrong.  Covers 8/16/32-bit forms,
 * AH/BH/CH/DH with memory operands, adc/sbb, mul/imul/div/idiv, shifts and
 * rotates through CF/OF, shld/shrd, bt*, bsf/bsr, setcc/cmovcc, BCD
 * adjusts, one-byte inc/dec, pusha/popa, xchg, cmpxchg, cmpxchg8b, xadd,
 * bswap, lahf/sahf, pushf/popf, cbw/cwde/cwd/cdq, movzx/movsx, lea, neg/not. */
#include "rt.h"

#define O_ 0x800u
#define S_ 0x080u
#define Z_ 0x040u
#define A_ 0x010u
#define P_ 0x004u
#define C_ 0x001u
#define ALL (O_ | S_ | Z_ | A_ | P_ | C_)
#define LOGIC (ALL & ~A_)

static const uint32_t vals[] = {
    0x00000000, 0x00000001, 0x00000002, 0x0000007f, 0x00000080, 0x000000ff,
    0x00000100, 0x00007fff, 0x00008000, 0x0000ffff, 0x00010000, 0x7fffffff,
    0x80000000, 0x80000001, 0xfffffffe, 0xffffffff, 0x12345678, 0xdeadbeef,
    0x0f0f0f0f, 0x55aa55aa, 0x8000807f, 0x00ff7f80,
};
#define NV (sizeof(vals) / sizeof(vals[0]))
static const uint32_t counts[] = {0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 23, 31, 32, 33, 63};
#define NC (sizeof(counts) / sizeof(counts[0]))
static const uint32_t fins[] = {0x002, 0x002 | ALL};

uint32_t g_mem, g_mem2;
static uint32_t hash, total;

static void mix(uint32_t v)
{
    hash = (hash ^ v) * 0x01000193u;
    hash ^= hash >> 13;
}

typedef void (*opfn)(uint32_t a, uint32_t b, uint32_t fin, uint32_t *o);

/* Two-operand op with registers a (dest) and b (source); "code" may use
 * %[a] %[b] (%b / %w / %h modifiers) and the memory cell g_mem. */
#define OP(name, code, mask)                                                          \
    static void name(uint32_t a, uint32_t b, uint32_t fin, uint32_t *o)               \
    {                                                                                 \
        uint32_t fl, a0 = a, b0 = b;                                                  \
        (void)a0;                                                                     \
        (void)b0;                                                                     \
        g_mem = a ^ 0x5a5a5a5a;                                                       \
        __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\t" code "\n\tpushfl\n\tpopl %[fl]" \
                             : [a] "+Q"(a), [b] "+Q"(b), [fl] "=&r"(fl)               \
                             : [fin] "r"(fin)                                         \
                             : "cc", "memory");                                       \
        o[0] = a;                                                                     \
        o[1] = b;                                                                     \
        o[2] = fl & (mask);                                                           \
        o[3] = g_mem;                                                                 \
    }

/* The same, for code that uses EAX/EDX itself. */
#define OPX(name, code, mask)                                                         \
    static void name(uint32_t a, uint32_t b, uint32_t fin, uint32_t *o)               \
    {                                                                                 \
        uint32_t fl;                                                                  \
        g_mem = a ^ 0x5a5a5a5a;                                                       \
        __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\t" code "\n\tpushfl\n\tpopl %[fl]" \
                             : [a] "+Q"(a), [b] "+Q"(b), [fl] "=&r"(fl)               \
                             : [fin] "r"(fin)                                         \
                             : "cc", "memory", "eax", "edx");                         \
        o[0] = a;                                                                     \
        o[1] = b;                                                                     \
        o[2] = fl & (mask);                                                           \
        o[3] = g_mem;                                                                 \
    }

/* Shift/rotate with the count in CL (b is the count). */
#define SH(name, code, mask)                                                          \
    static void name(uint32_t a, uint32_t b, uint32_t fin, uint32_t *o)               \
    {                                                                                 \
        uint32_t fl, a0 = a, c = b, d = a * 0x9e3779b9u;                              \
        unsigned n = b & 31;                                                          \
        (void)a0;                                                                     \
        (void)n;                                                                      \
        g_mem = a;                                                                    \
        __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\t" code "\n\tpushfl\n\tpopl %[fl]" \
                             : [a] "+Q"(a), [c] "+c"(c), [d] "+r"(d), [fl] "=&r"(fl)  \
                             : [fin] "r"(fin)                                         \
                             : "cc", "memory");                                       \
        o[0] = a;                                                                     \
        o[1] = d;                                                                     \
        o[2] = fl & (mask);                                                           \
        o[3] = g_mem;                                                                 \
    }

/* ---- add/adc/sub/sbb/cmp/and/or/xor/test in all widths and forms ---- */
#define ARITH(insn, mask)                                                          \
    OP(insn##_r32, #insn "l %[b], %[a]", mask)                                     \
    OP(insn##_r16, #insn "w %w[b], %w[a]", mask)                                   \
    OP(insn##_r8, #insn "b %b[b], %b[a]", mask)                                    \
    OP(insn##_r8h, #insn "b %h[b], %h[a]", mask)                                   \
    OP(insn##_r8hl, #insn "b %b[b], %h[a]", mask)                                  \
    OP(insn##_m32, #insn "l %[b], g_mem", mask)                                    \
    OP(insn##_rm32, #insn "l g_mem, %[a]", mask)                                   \
    OP(insn##_m8h, #insn "b %h[b], g_mem+1", mask)                                 \
    OP(insn##_rm8h, #insn "b g_mem+2, %h[a]", mask)                                \
    OP(insn##_m16, #insn "w %w[b], g_mem+1", mask)                                 \
    OP(insn##_i32, #insn "l $0x9abcdef1, %[a]", mask)                              \
    OP(insn##_i8s, #insn "l $-3, %[a]", mask)                                      \
    OP(insn##_i8h, #insn "b $0x81, %h[a]", mask)                                   \
    OP(insn##_mi16, #insn "w $0x7ffe, g_mem+2", mask)
ARITH(add, ALL)
ARITH(adc, ALL)
ARITH(sub, ALL)
ARITH(sbb, ALL)
ARITH(cmp, ALL)
ARITH(and, LOGIC)
ARITH(or, LOGIC)
ARITH(xor, LOGIC)
ARITH(test, LOGIC)

#define ARITH_LIST(insn)                                                           \
    {#insn "_r32", insn##_r32}, {#insn "_r16", insn##_r16}, {#insn "_r8", insn##_r8}, \
    {#insn "_r8h", insn##_r8h}, {#insn "_r8hl", insn##_r8hl}, {#insn "_m32", insn##_m32}, \
    {#insn "_rm32", insn##_rm32}, {#insn "_m8h", insn##_m8h}, {#insn "_rm8h", insn##_rm8h}, \
    {#insn "_m16", insn##_m16}, {#insn "_i32", insn##_i32}, {#insn "_i8s", insn##_i8s}, \
    {#insn "_i8h", insn##_i8h}, {#insn "_mi16", insn##_mi16}

/* ---- unary ---- */
OP(inc_1byte, "incl %[a]", ALL)            /* 0x40+r in 32-bit code */
OP(dec_1byte, "decl %[a]", ALL)            /* 0x48+r */
OP(inc_1byte16, "incw %w[a]", ALL)         /* 66 40+r */
OP(dec_1byte16, "decw %w[a]", ALL)
OPX(inc_modrm, "xchgl %[a], %%eax\n\t.byte 0xff, 0xc0\n\txchgl %[a], %%eax", ALL) /* ff /0 form */
OP(inc_r8h, "incb %h[a]", ALL)
OP(dec_r8h, "decb %h[b]", ALL)
OP(inc_m8, "incb g_mem+3", ALL)
OP(dec_m16, "decw g_mem+1", ALL)
OP(neg_r32, "negl %[a]", ALL)
OP(neg_r8h, "negb %h[a]", ALL)
OP(neg_m16, "negw g_mem", ALL)
OP(not_r32, "notl %[a]", ALL)
OP(not_m8h, "notb %h[a]\n\tnotb g_mem+1", ALL)

/* ---- mul / imul ---- */
OPX(mul_r32, "movl %[a], %%eax\n\tmull %[b]\n\tmovl %%eax, %[a]\n\tmovl %%edx, %[b]", O_ | C_)
OPX(mul_r16, "movl %[a], %%eax\n\tmulw %w[b]\n\tmovl %%eax, %[a]\n\tmovl %%edx, %[b]", O_ | C_)
OPX(mul_r8, "movl %[a], %%eax\n\tmulb %b[b]\n\tmovl %%eax, %[a]", O_ | C_)
OPX(mul_r8h, "movl %[a], %%eax\n\tmulb %h[b]\n\tmovl %%eax, %[a]", O_ | C_)
OPX(mul_m32, "movl %[b], %%eax\n\tmull g_mem\n\tmovl %%eax, %[a]\n\tmovl %%edx, %[b]", O_ | C_)
OPX(imul1_r32, "movl %[a], %%eax\n\timull %[b]\n\tmovl %%eax, %[a]\n\tmovl %%edx, %[b]", O_ | C_)
OPX(imul1_r16, "movl %[a], %%eax\n\timulw %w[b]\n\tmovl %%eax, %[a]\n\tmovl %%edx, %[b]", O_ | C_)
OPX(imul1_r8, "movl %[a], %%eax\n\timulb %b[b]\n\tmovl %%eax, %[a]", O_ | C_)
OPX(imul1_m8h, "movl %[a], %%eax\n\timulb g_mem+1\n\tmovl %%eax, %[a]", O_ | C_)
OP(imul2_r32, "imull %[b], %[a]", O_ | C_)
OP(imul2_r16, "imulw %w[b], %w[a]", O_ | C_)
OP(imul2_m32, "imull g_mem, %[a]", O_ | C_)
OP(imul3_i32, "imull $0x12345, %[b], %[a]", O_ | C_)
OP(imul3_i8, "imull $-7, %[b], %[a]", O_ | C_)
OP(imul3_i16, "imulw $-300, %w[b], %w[a]", O_ | C_)

/* ---- div / idiv (only run when no #DE) ---- */
#define DIVOP(name, code, ok)                                                      \
    OPX(name##_raw, code, 0)                                                        \
    static void name(uint32_t a, uint32_t b, uint32_t fin, uint32_t *o)            \
    {                                                                              \
        if (!(ok)) {                                                               \
            o[0] = o[1] = o[2] = o[3] = 0xd1d1d1d1;                                       \
            return;                                                                \
        }                                                                          \
        name##_raw(a, b, fin, o);                                                  \
    }
/* edx:eax = (a >> 16) : a, divisor b */
DIVOP(div_r32, "movl %[a], %%eax\n\tmovl %[a], %%edx\n\tshrl $16, %%edx\n\tdivl %[b]\n\tmovl %%eax, %[a]\n\tmovl %%edx, %[b]",
      b != 0 && (a >> 16) < b)
DIVOP(div_r16, "movl %[a], %%eax\n\tmovl %[a], %%edx\n\tshrl $16, %%edx\n\tdivw %w[b]\n\tmovl %%eax, %[a]\n\tmovl %%edx, %[b]",
      (uint16_t)b != 0 && ((a >> 16) & 0xffff) < (uint16_t)b)
DIVOP(div_r8, "movl %[a], %%eax\n\tdivb %b[b]\n\tmovl %%eax, %[a]",
      (uint8_t)b != 0 && ((a >> 8) & 0xff) < (uint8_t)b)
DIVOP(div_r8h, "movl %[a], %%eax\n\tdivb %h[b]\n\tmovl %%eax, %[a]",
      (uint8_t)(b >> 8) != 0 && ((a >> 8) & 0xff) < (uint8_t)(b >> 8))
static int idiv32_ok(uint32_t a, uint32_t b)
{
    int64_t n = (int64_t)(int32_t)a; /* cdq */
    int32_t d = (int32_t)b;
    if (d == 0 || (d == -1 && (int32_t)a == (int32_t)0x80000000))
        return 0;
    (void)n;
    return 1;
}
static int idiv16_ok(uint32_t a, uint32_t b)
{
    int32_t n = (int32_t)(((a >> 16) << 16) | (a & 0xffff)), d = (int16_t)b;
    int32_t q;
    if (d == 0)
        return 0;
    if (d == -1 && n == (int32_t)0x80000000)
        return 0;
    q = n / d;
    return q >= -32768 && q <= 32767;
}
static int idiv8_ok(uint32_t a, uint32_t b)
{
    int32_t n = (int16_t)a, d = (int8_t)b, q;
    if (d == 0)
        return 0;
    q = n / d;
    return q >= -128 && q <= 127;
}
DIVOP(idiv_r32, "movl %[a], %%eax\n\tcltd\n\tidivl %[b]\n\tmovl %%eax, %[a]\n\tmovl %%edx, %[b]", idiv32_ok(a, b))
DIVOP(idiv_r16, "movl %[a], %%eax\n\tmovl %[a], %%edx\n\tshrl $16, %%edx\n\tidivw %w[b]\n\tmovl %%eax, %[a]\n\tmovl %%edx, %[b]",
      idiv16_ok(a, b))
DIVOP(idiv_r8, "movl %[a], %%eax\n\tidivb %b[b]\n\tmovl %%eax, %[a]", idiv8_ok(a, b))

/* ---- shifts and rotates (count in CL) ---- */
/* shl/shr/sar: count 0 leaves flags; 1 defines OF; CF undefined when the
 * count reaches the operand width (8/16-bit); AF always undefined. */
#define SHMASK(w) (n == 0 ? ALL : ((n == 1 ? O_ : 0) | S_ | Z_ | P_ | (n < (w) ? C_ : 0)))
/* rotates change only CF and OF; OF is defined for 1-bit rotates only (and
 * is modified even when an 8/16-bit rcl/rcr count is a multiple of 9/17) */
#define ROMASK (n == 1 ? ALL : ALL & ~O_)
#define RCMASK(w) ROMASK
#define SHIFTS(insn, MASK32, MASK16, MASK8)                                        \
    SH(insn##_r32, #insn "l %%cl, %[a]", MASK32)                                   \
    SH(insn##_r16, #insn "w %%cl, %w[a]", MASK16)                                  \
    SH(insn##_r8, #insn "b %%cl, %b[a]", MASK8)                                    \
    SH(insn##_r8h, #insn "b %%cl, %h[a]", MASK8)                                   \
    SH(insn##_m32, #insn "l %%cl, g_mem", MASK32)                                  \
    SH(insn##_m8, #insn "b %%cl, g_mem+1", MASK8)
SHIFTS(shl, SHMASK(32), SHMASK(16), SHMASK(8))
SHIFTS(shr, SHMASK(32), SHMASK(16), SHMASK(8))
SHIFTS(sar, SHMASK(32), SHMASK(16), SHMASK(8))
SHIFTS(rol, ROMASK, ROMASK, ROMASK)
SHIFTS(ror, ROMASK, ROMASK, ROMASK)
SHIFTS(rcl, RCMASK(32), RCMASK(16), RCMASK(8))
SHIFTS(rcr, RCMASK(32), RCMASK(16), RCMASK(8))
#define SHIFT_LIST(insn)                                                           \
    {#insn "_r32", insn##_r32}, {#insn "_r16", insn##_r16}, {#insn "_r8", insn##_r8}, \
    {#insn "_r8h", insn##_r8h}, {#insn "_m32", insn##_m32}, {#insn "_m8", insn##_m8}
/* immediate-count and by-one forms (fixed count) */
#define n_1 1
SH(shl1_r32, "shll $1, %[a]", ALL & ~A_)
SH(shr1_r8h, "shrb $1, %h[a]", ALL & ~A_)
SH(sar1_m16, "sarw $1, g_mem", ALL & ~A_)
SH(rol1_r32, "roll $1, %[a]", O_ | C_)
SH(rcr1_r32, "rcrl $1, %[a]", O_ | C_)
SH(rcl1_r8h, "rclb $1, %h[a]", O_ | C_)
SH(shl5_r32, "shll $5, %[a]", S_ | Z_ | P_ | C_)
SH(sar31_r32, "sarl $31, %[a]", S_ | Z_ | P_ | C_)
SH(ror12_r16, "rorw $12, %w[a]", C_)
SH(rcl3_m8, "rclb $3, g_mem", C_)
/* shld/shrd: d is the fill source; 16-bit counts above 16 are undefined */
#define SHDMASK (n == 0 ? ALL : ((n == 1 ? O_ : 0) | S_ | Z_ | P_ | C_))
SH(shld_r32, "shldl %%cl, %[d], %[a]", SHDMASK)
SH(shrd_r32, "shrdl %%cl, %[d], %[a]", SHDMASK)
SH(shld_m32, "shldl %%cl, %[d], g_mem", SHDMASK)
SH(shrd_r16, "andl $15, %%ecx\n\tshrdw %%cl, %w[d], %w[a]", ((c & 15) == 0 ? ALL : ((c & 15) == 1 ? O_ : 0) | S_ | Z_ | P_ | C_))
SH(shld_i32, "shldl $7, %[d], %[a]", S_ | Z_ | P_ | C_)
SH(shrd_i16, "shrdw $9, %w[d], %w[a]", S_ | Z_ | P_ | C_)

/* ---- bit ops ---- */
OP(bt_r32, "btl %[b], %[a]", C_)
OP(bts_r32, "btsl %[b], %[a]", C_)
OP(btr_r32, "btrl %[b], %[a]", C_)
OP(btc_r32, "btcl %[b], %[a]", C_)
OP(bt_r16, "btw %w[b], %w[a]", C_)
OP(btc_r16, "btcw %w[b], %w[a]", C_)
OP(bts_i32, "btsl $29, %[a]", C_)
OP(btr_i16, "btrw $3, %w[a]", C_)
OP(btc_mi, "btcl $13, g_mem", C_)
/* bit string in memory with a register offset: signed, may leave the dword */
uint32_t g_bits[8];
static void bt_mem_str(uint32_t a, uint32_t b, uint32_t fin, uint32_t *o)
{
    uint32_t fl, off = (int32_t)(int8_t)b, i;
    for (i = 0; i < 8; i++)
        g_bits[i] = a * (i + 1) ^ (i << 28);
    __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\tbtcl %[off], g_bits+16\n\tpushfl\n\tpopl %[fl]"
                         : [fl] "=&r"(fl) : [off] "r"(off), [fin] "r"(fin) : "cc", "memory");
    o[0] = g_bits[0] ^ g_bits[1] ^ g_bits[2] ^ g_bits[3];
    o[1] = g_bits[4] ^ g_bits[5] * 3 ^ g_bits[6] * 5 ^ g_bits[7] * 7;
    o[2] = fl & C_;
    o[3] = 0;
}
static void bsf_r32(uint32_t a, uint32_t b, uint32_t fin, uint32_t *o)
{
    uint32_t fl, r = 0x77;
    __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\tbsfl %[a], %[r]\n\tpushfl\n\tpopl %[fl]"
                         : [r] "+r"(r), [fl] "=&r"(fl) : [a] "rm"(a), [fin] "r"(fin) : "cc");
    o[0] = a ? r : 0x77;
    o[1] = b;
    o[2] = fl & Z_;
    o[3] = 0;
}
static void bsr_r32(uint32_t a, uint32_t b, uint32_t fin, uint32_t *o)
{
    uint32_t fl, r = 0x77;
    __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\tbsrl %[a], %[r]\n\tpushfl\n\tpopl %[fl]"
                         : [r] "+r"(r), [fl] "=&r"(fl) : [a] "rm"(a), [fin] "r"(fin) : "cc");
    o[0] = a ? r : 0x77;
    o[1] = b;
    o[2] = fl & Z_;
    o[3] = 0;
}
static void bsf_r16(uint32_t a, uint32_t b, uint32_t fin, uint32_t *o)
{
    uint32_t fl, r = 0xabcd0077;
    __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\tbsfw %w[a], %w[r]\n\tpushfl\n\tpopl %[fl]"
                         : [r] "+r"(r), [fl] "=&r"(fl) : [a] "r"(a), [fin] "r"(fin) : "cc");
    o[0] = (a & 0xffff) ? r : 0x77;
    o[1] = b;
    o[2] = fl & Z_;
    o[3] = 0;
}
static void bsr_m16(uint32_t a, uint32_t b, uint32_t fin, uint32_t *o)
{
    uint32_t fl, r = 0xabcd0077;
    g_mem = a;
    __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\tbsrw g_mem+1, %w[r]\n\tpushfl\n\tpopl %[fl]"
                         : [r] "+r"(r), [fl] "=&r"(fl) : [fin] "r"(fin) : "cc", "memory");
    o[0] = ((a >> 8) & 0xffff) ? r : 0x77;
    o[1] = b;
    o[2] = fl & Z_;
    o[3] = 0;
}

/* ---- exchange family ---- */
OP(xchg_r32, "xchgl %[a], %[b]", ALL)
OP(xchg_r8h, "xchgb %h[a], %b[b]", ALL)
OP(xchg_m16, "xchgw %w[a], g_mem+1", ALL)
OPX(xchg_eax, "xchgl %%eax, %[b]\n\txchgl %%eax, %[b]\n\txchgl %[a], %[b]", ALL)
OP(xadd_r32, "xaddl %[b], %[a]", ALL)
OP(xadd_m8h, "xaddb %h[b], g_mem+2", ALL)
OP(xadd_m16, "lock xaddw %w[b], g_mem", ALL)
OPX(cmpxchg_r32, "movl %[a], %%eax\n\txorl $1, %%eax\n\tcmpxchgl %[b], %[a]\n\tmovl %%eax, %[b]", ALL)
OPX(cmpxchg_eq, "movl %[a], %%eax\n\tcmpxchgl %[b], %[a]\n\tmovl %%eax, %[b]", ALL)
OPX(cmpxchg_m8, "movl %[a], %%eax\n\tlock cmpxchgb %b[b], g_mem", ALL)
OPX(cmpxchg_m16, "movl g_mem, %%eax\n\tcmpxchgw %w[b], g_mem", ALL)
OP(bswap_r32, "bswapl %[a]\n\tbswapl %[b]\n\tbswapl %[b]", ALL)

/* ---- setcc / cmovcc over all flag combinations ---- */
static uint32_t flagcombo(uint32_t i) /* 6 bits -> O S Z A P C */
{
    return 0x002 | ((i & 1) ? C_ : 0) | ((i & 2) ? P_ : 0) | ((i & 4) ? A_ : 0) |
           ((i & 8) ? Z_ : 0) | ((i & 16) ? S_ : 0) | ((i & 32) ? O_ : 0);
}
#define SETCC(cc)                                                                  \
    static uint32_t set##cc(uint32_t fin, uint32_t a, uint32_t b)                  \
    {                                                                              \
        uint32_t r = 0xaaaaaaaa, r2 = a;                                           \
        __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\tset" #cc " %b[r]\n\tset" #cc \
                             " %h[r]\n\tcmov" #cc "l %[b], %[r2]"                  \
                             : [r] "+Q"(r), [r2] "+r"(r2)                          \
                             : [fin] "r"(fin), [b] "rm"(b)                         \
                             : "cc");                                              \
        return r ^ (r2 * 3);                                                       \
    }
SETCC(o) SETCC(no) SETCC(b) SETCC(ae) SETCC(e) SETCC(ne) SETCC(be) SETCC(a)
SETCC(s) SETCC(ns) SETCC(p) SETCC(np) SETCC(l) SETCC(ge) SETCC(le) SETCC(g)
static uint32_t (*const setccs[16])(uint32_t, uint32_t, uint32_t) = {
    seto, setno, setb, setae, sete, setne, setbe, seta,
    sets, setns, setp, setnp, setl, setge, setle, setg};

/* ---- BCD adjusts: a = AX, b selects AF/CF in ---- */
#define BCD(name, code, mask)                                                      \
    static void name(uint32_t ax, uint32_t fin, uint32_t *o)                       \
    {                                                                              \
        uint32_t fl, a = ax;                                                       \
        __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\t" code "\n\tpushfl\n\tpopl %[fl]" \
                             : "+a"(a), [fl] "=&r"(fl) : [fin] "r"(fin) : "cc");   \
        o[0] = a;                                                                  \
        o[1] = 0;                                                                  \
        o[2] = fl & (mask);                                                        \
        o[3] = 0;                                                                  \
    }
BCD(daa_, "daa", ALL & ~O_)
BCD(das_, "das", ALL & ~O_)
BCD(aaa_, "aaa", A_ | C_)
BCD(aas_, "aas", A_ | C_)
BCD(aam10, "aam", S_ | Z_ | P_)
BCD(aam16, "aam $16", S_ | Z_ | P_)
BCD(aam7, "aam $7", S_ | Z_ | P_)
BCD(aad10, "aad", S_ | Z_ | P_)
BCD(aad16, "aad $16", S_ | Z_ | P_)
BCD(aad3, "aad $3", S_ | Z_ | P_)

/* ---- misc ---- */
OPX(cbw_, "movl %[a], %%eax\n\tcbtw\n\tmovl %%eax, %[a]", ALL)
OPX(cwde_, "movl %[a], %%eax\n\tcwtl\n\tmovl %%eax, %[a]", ALL)
OPX(cwd_, "movl %[a], %%eax\n\tmovl %[b], %%edx\n\tcwtd\n\tmovl %%edx, %[b]", ALL)
OPX(cdq_, "movl %[a], %%eax\n\tcltd\n\tmovl %%edx, %[b]", ALL)
OP(movzx_, "movzbl %h[b], %[a]\n\tmovzwl g_mem+1, %[b]", ALL)
OP(movsx_, "movsbl %h[b], %[a]\n\tmovswl g_mem+1, %[b]\n\tmovsbw %b[a], %w[a]", ALL)
OP(lea_, "leal 0x1234(%[a],%[b],4), %[a]\n\tleal -8(%[b],%[b],8), %[b]\n\tleaw 3(%[a],%[b]), %w[b]", ALL)
OPX(lahf_sahf, "movl %[a], %%eax\n\tsahf\n\tlahf\n\tmovl %%eax, %[b]", ALL)
OPX(lahf_only, "movl %[a], %%eax\n\tlahf\n\tandl $0xd5ff, %%eax\n\tmovl %%eax, %[b]", ALL)
OP(popf_arith, "pushl %[a]\n\tandl $0x8d5, (%%esp)\n\torl $2, (%%esp)\n\tpopfl\n\tadcl %[b], %[a]", ALL)
OP(pushf_read, "addl %[b], %[a]\n\tpushfl\n\tpopl %[b]\n\tandl $0x8d5, %[b]", LOGIC)
OPX(sahf_adc, "movl %[b], %%eax\n\tsahf\n\tadcb %h[b], %b[a]\n\tsbbl $5, %[a]", ALL)

struct op {
    const char *name;
    opfn fn;
};
static const struct op ops[] = {
    ARITH_LIST(add), ARITH_LIST(adc), ARITH_LIST(sub), ARITH_LIST(sbb),
    ARITH_LIST(cmp), ARITH_LIST(and), ARITH_LIST(or), ARITH_LIST(xor),
    ARITH_LIST(test),
    {"inc_1byte", inc_1byte}, {"dec_1byte", dec_1byte}, {"inc_1byte16", inc_1byte16},
    {"dec_1byte16", dec_1byte16}, {"inc_modrm", inc_modrm}, {"inc_r8h", inc_r8h},
    {"dec_r8h", dec_r8h}, {"inc_m8", inc_m8}, {"dec_m16", dec_m16},
    {"neg_r32", neg_r32}, {"neg_r8h", neg_r8h}, {"neg_m16", neg_m16},
    {"not_r32", not_r32}, {"not_m8h", not_m8h},
    {"mul_r32", mul_r32}, {"mul_r16", mul_r16}, {"mul_r8", mul_r8}, {"mul_r8h", mul_r8h},
    {"mul_m32", mul_m32}, {"imul1_r32", imul1_r32}, {"imul1_r16", imul1_r16},
    {"imul1_r8", imul1_r8}, {"imul1_m8h", imul1_m8h}, {"imul2_r32", imul2_r32},
    {"imul2_r16", imul2_r16}, {"imul2_m32", imul2_m32}, {"imul3_i32", imul3_i32},
    {"imul3_i8", imul3_i8}, {"imul3_i16", imul3_i16},
    {"div_r32", div_r32}, {"div_r16", div_r16}, {"div_r8", div_r8}, {"div_r8h", div_r8h},
    {"idiv_r32", idiv_r32}, {"idiv_r16", idiv_r16}, {"idiv_r8", idiv_r8},
    {"bt_r32", bt_r32}, {"bts_r32", bts_r32}, {"btr_r32", btr_r32}, {"btc_r32", btc_r32},
    {"bt_r16", bt_r16}, {"btc_r16", btc_r16}, {"bts_i32", bts_i32}, {"btr_i16", btr_i16},
    {"btc_mi", btc_mi}, {"btc_mem_str", bt_mem_str},
    {"bsf_r32", bsf_r32}, {"bsr_r32", bsr_r32}, {"bsf_r16", bsf_r16}, {"bsr_m16", bsr_m16},
    {"xchg_r32", xchg_r32}, {"xchg_r8h", xchg_r8h}, {"xchg_m16", xchg_m16},
    {"xchg_eax", xchg_eax}, {"xadd_r32", xadd_r32}, {"xadd_m8h", xadd_m8h},
    {"xadd_m16", xadd_m16}, {"cmpxchg_r32", cmpxchg_r32}, {"cmpxchg_eq", cmpxchg_eq},
    {"cmpxchg_m8", cmpxchg_m8}, {"cmpxchg_m16", cmpxchg_m16}, {"bswap_r32", bswap_r32},
    {"cbw", cbw_}, {"cwde", cwde_}, {"cwd", cwd_}, {"cdq", cdq_}, {"movzx", movzx_},
    {"movsx", movsx_}, {"lea", lea_}, {"lahf_sahf", lahf_sahf}, {"lahf_only", lahf_only},
    {"popf_arith", popf_arith}, {"pushf_read", pushf_read}, {"sahf_adc", sahf_adc},
};
static const struct op shops[] = {
    SHIFT_LIST(shl), SHIFT_LIST(shr), SHIFT_LIST(sar), SHIFT_LIST(rol),
    SHIFT_LIST(ror), SHIFT_LIST(rcl), SHIFT_LIST(rcr),
    {"shl1_r32", shl1_r32}, {"shr1_r8h", shr1_r8h}, {"sar1_m16", sar1_m16},
    {"rol1_r32", rol1_r32}, {"rcr1_r32", rcr1_r32}, {"rcl1_r8h", rcl1_r8h},
    {"shl5_r32", shl5_r32}, {"sar31_r32", sar31_r32}, {"ror12_r16", ror12_r16},
    {"rcl3_m8", rcl3_m8},
    {"shld_r32", shld_r32}, {"shrd_r32", shrd_r32}, {"shld_m32", shld_m32},
    {"shrd_r16", shrd_r16}, {"shld_i32", shld_i32}, {"shrd_i16", shrd_i16},
};

static void run_op(const struct op *op, const uint32_t *bs, unsigned nb)
{
    uint32_t o[4], i, j, k;
    hash = 0x811c9dc5;
    for (i = 0; i < NV; i++)
        for (j = 0; j < nb; j++)
            for (k = 0; k < 2; k++) {
                op->fn(vals[i], bs[j], fins[k], o);
                mix(o[0]);
                mix(o[1]);
                mix(o[2]);
                mix(o[3]);
            }
    op->fn(0x8000807f, bs[nb > 7 ? 7 : 1], 0x2 | C_, o);
    rt_printf("%-13s %08x  r=%08x %08x f=%03x\n", op->name, hash, o[0], o[1], o[2]);
    total = total * 31 + hash;
}

/* ---- pusha/popa, known-answer checks ---- */
uint32_t g_pusha[8], g_esp_before;
__asm__(".text\n"
        ".globl pusha_test\n"
        "pusha_test:\n"
        "  pushal\n"                      /* save caller state */
        "  movl $0x11111111, %eax\n"
        "  movl $0x22222222, %ecx\n"
        "  movl $0x33333333, %edx\n"
        "  movl $0x44444444, %ebx\n"
        "  movl $0x55555555, %ebp\n"
        "  movl $0x66666666, %esi\n"
        "  movl $0x77777777, %edi\n"
        "  movl %esp, g_esp_before\n"
        "  pushal\n"
        "  movl 0(%esp), %eax;  movl %eax, g_pusha+0\n"
        "  movl 4(%esp), %eax;  movl %eax, g_pusha+4\n"
        "  movl 8(%esp), %eax;  movl %eax, g_pusha+8\n"
        "  movl 12(%esp), %eax; movl %eax, g_pusha+12\n"
        "  movl 16(%esp), %eax; movl %eax, g_pusha+16\n"
        "  movl 20(%esp), %eax; movl %eax, g_pusha+20\n"
        "  movl 24(%esp), %eax; movl %eax, g_pusha+24\n"
        "  movl 28(%esp), %eax; movl %eax, g_pusha+28\n"
        "  movl $0xabcdef01, 12(%esp)\n"  /* popa skips the saved ESP */
        "  movl $0x99999999, 28(%esp)\n"  /* new EAX */
        "  popal\n"
        "  cmpl g_esp_before, %esp\n"
        "  jne 1f\n"
        "  cmpl $0x99999999, %eax\n"
        "  jne 1f\n"
        "  cmpl $0x77777777, %edi\n"
        "  jne 1f\n"
        "  popal\n"
        "  movl $1, %eax\n"
        "  ret\n"
        "1: movl g_esp_before, %esp\n"
        "  popal\n"
        "  xorl %eax, %eax\n"
        "  ret\n"
        ".globl pushaw_test\n"
        "pushaw_test:\n"                  /* 16-bit pushaw/popaw */
        "  pushal\n"
        "  movl $0xaaaa1111, %eax\n"
        "  movl $0xbbbb2222, %ebx\n"
        "  pushw %ax\n"
        "  pushaw\n"
        "  movl $0, %eax\n"
        "  movl $0, %ebx\n"
        "  popaw\n"
        "  popw %cx\n"
        "  shll $16, %ecx\n"
        "  movw %ax, %cx\n"
        "  movl %ecx, g_pusha\n"
        "  movl %ebx, g_pusha+4\n"
        "  popal\n"
        "  ret\n");
int pusha_test(void);
void pushaw_test(void);

static uint32_t cx8(uint64_t *mem, uint64_t expect, uint64_t newv, uint32_t *zf)
{
    uint32_t lo = (uint32_t)expect, hi = (uint32_t)(expect >> 32);
    uint32_t f;
    __asm__ __volatile__("lock cmpxchg8b %[m]\n\tpushfl\n\tpopl %[f]"
                         : [m] "+m"(*mem), "+a"(lo), "+d"(hi), [f] "=r"(f)
                         : "b"((uint32_t)newv), "c"((uint32_t)(newv >> 32))
                         : "cc");
    *zf = (f >> 6) & 1;
    return lo ^ hi;
}

static void known_answers(void)
{
    uint32_t o[4], zf, r;
    uint64_t m64;

    add_r32(0xffffffff, 1, 0x2, o);
    RT_CHECK(o[0] == 0 && o[2] == (Z_ | A_ | C_ | P_), "add ffffffff+1: %08x f=%x", o[0], o[2]);
    adc_r32(0x7fffffff, 0, 0x2 | C_, o);
    RT_CHECK(o[0] == 0x80000000 && (o[2] & (O_ | S_)) == (O_ | S_), "adc overflow: %08x f=%x", o[0], o[2]);
    sbb_r8(0x1234, 0x35, 0x2 | C_, o);
    RT_CHECK(o[0] == 0x12fe && (o[2] & (C_ | S_)) == (C_ | S_), "sbb8: %08x f=%x", o[0], o[2]);
    sub_r8h(0x0100, 0x0200, 0x2, o);
    RT_CHECK(o[0] == 0xff00 && (o[2] & C_), "sub ah,bh: %08x f=%x", o[0], o[2]);
    add_rm8h(0x00ff0000 | 0x1000, 0, 0x2, o); /* g_mem = a ^ 5a5a5a5a: byte2 = ff^5a = a5 */
    RT_CHECK(o[0] == (0x00ff0000 | 0xb500), "add ah,[mem+2]: %08x", o[0]);
    inc_1byte(0x7fffffff, 0, 0x2 | C_, o);
    RT_CHECK(o[0] == 0x80000000 && (o[2] & (O_ | C_)) == (O_ | C_), "inc keeps CF: f=%x", o[2]);
    dec_1byte16(0x12340000, 0, 0x2, o);
    RT_CHECK(o[0] == 0x1234ffff && !(o[2] & C_), "dec ax: %08x f=%x", o[0], o[2]);
    mul_r32(0x80000000, 4, 0x2, o);
    RT_CHECK(o[0] == 0 && o[1] == 2 && (o[2] & (O_ | C_)) == (O_ | C_), "mul: %08x:%08x f=%x", o[1], o[0], o[2]);
    imul2_r32(-7, 6, 0x2, o);
    RT_CHECK(o[0] == (uint32_t)-42 && !(o[2] & C_), "imul: %08x", o[0]);
    idiv_r32((uint32_t)-100, 7, 0x2, o);
    RT_CHECK(o[0] == (uint32_t)-14 && o[1] == (uint32_t)-2, "idiv: q=%08x r=%08x", o[0], o[1]);
    div_r8(0x0123, 0x10, 0x2, o);
    RT_CHECK((o[0] & 0xffff) == 0x0312, "div8: %08x", o[0]);
    shl_r32(0x80000001, 1, 0x2, o);
    RT_CHECK(o[0] == 2 && (o[2] & (C_ | O_)) == (C_ | O_), "shl1: %08x f=%x", o[0], o[2]);
    sar_r8(0x80, 3, 0x2, o);
    RT_CHECK((o[0] & 0xff) == 0xf0, "sar8: %08x", o[0]);
    rcl_r8(0x80, 1, 0x2, o);
    RT_CHECK((o[0] & 0xff) == 0 && (o[2] & C_), "rcl8: %08x f=%x", o[0], o[2]);
    rcr_r32(1, 1, 0x2 | C_, o);
    RT_CHECK(o[0] == 0x80000000 && (o[2] & C_), "rcr32: %08x f=%x", o[0], o[2]);
    rol_r16(0x8001, 4, 0x2, o);
    RT_CHECK((o[0] & 0xffff) == 0x0018, "rol16: %08x", o[0]);
    shld_r32(0x12345678, 8, 0x2, o); /* d = a * golden */
    RT_CHECK(o[0] == (0x34567800 | ((0x12345678u * 0x9e3779b9u) >> 24)), "shld: %08x", o[0]);
    bsf_r32(0x00500000, 0, 0x2, o);
    RT_CHECK(o[0] == 20 && !(o[2] & Z_), "bsf: %u", o[0]);
    bsr_r32(0x00500000, 0, 0x2, o);
    RT_CHECK(o[0] == 22, "bsr: %u", o[0]);
    bt_r32(0x10, 36, 0x2, o); /* register bit offset is mod 32 */
    RT_CHECK(o[2] & C_, "bt reg mod 32: f=%x", o[2]);
    bswap_r32(0x11223344, 0, 0x2, o);
    RT_CHECK(o[0] == 0x44332211, "bswap: %08x", o[0]);
    xadd_r32(5, 7, 0x2, o);
    RT_CHECK(o[0] == 12 && o[1] == 5, "xadd: %08x %08x", o[0], o[1]);
    cmpxchg_eq(0x42, 0x99, 0x2, o);
    RT_CHECK(o[0] == 0x99 && (o[2] & Z_), "cmpxchg eq: %08x f=%x", o[0], o[2]);
    cmpxchg_r32(0x42, 0x99, 0x2, o);
    RT_CHECK(o[0] == 0x42 && !(o[2] & Z_), "cmpxchg ne: %08x f=%x", o[0], o[2]);
    m64 = 0x1122334455667788ULL;
    r = cx8(&m64, 0x1122334455667788ULL, 0xaabbccddeeff0011ULL, &zf);
    RT_CHECK(zf && m64 == 0xaabbccddeeff0011ULL, "cmpxchg8b eq");
    r = cx8(&m64, 0x1ULL, 0x2ULL, &zf);
    RT_CHECK(!zf && r == (0xaabbccdd ^ 0xeeff0011) && m64 == 0xaabbccddeeff0011ULL, "cmpxchg8b ne");
    daa_(0x0019 + 0x0028, 0x2, o); /* 0x41 with AF clear -> no adjust */
    RT_CHECK((o[0] & 0xff) == 0x41, "daa: %02x", o[0] & 0xff);
    daa_(0x0041, 0x2 | A_, o);
    RT_CHECK((o[0] & 0xff) == 0x47, "daa af: %02x", o[0] & 0xff);
    das_(0x00f0, 0x2, o);
    RT_CHECK((o[0] & 0xff) == 0x90 && (o[2] & C_), "das: %02x f=%x", o[0] & 0xff, o[2]);
    aaa_(0x000b, 0x2, o);
    RT_CHECK((o[0] & 0xffff) == 0x0101 && (o[2] & C_), "aaa: %04x", o[0] & 0xffff);
    aas_(0x020f, 0x2, o);
    RT_CHECK((o[0] & 0xffff) == 0x0109, "aas: %04x", o[0] & 0xffff);
    aam10(0x004f, 0x2, o);
    RT_CHECK((o[0] & 0xffff) == 0x0709, "aam: %04x", o[0] & 0xffff);
    aad10(0x0709, 0x2, o);
    RT_CHECK((o[0] & 0xffff) == 0x004f, "aad: %04x", o[0] & 0xffff);
    lahf_only(0, 0, 0x2 | C_ | Z_, o);
    RT_CHECK(((o[1] >> 8) & 0xd5) == (C_ | Z_), "lahf: %08x", o[1]);
    setccs[4](0x2 | Z_, 0, 0);
    RT_CHECK((sete(0x2 | Z_, 0, 0) & 0xffff) == 0x0101, "sete");
    RT_CHECK((setl(0x2 | O_, 0, 0) & 0xffff) == 0x0101, "setl");
    RT_CHECK((setg(0x2 | O_ | S_, 0, 0) & 0xffff) == 0x0101, "setg");
    RT_CHECK(pusha_test() == 1, "pusha/popa");
    RT_CHECK(g_pusha[7] == 0x11111111 && g_pusha[0] == 0x77777777 && g_pusha[3] == g_esp_before,
             "pusha layout: %08x %08x %08x", g_pusha[7], g_pusha[0], g_pusha[3]);
    pushaw_test();
    RT_CHECK(g_pusha[0] == 0x11111111 && g_pusha[1] == 0x2222, "pushaw: %08x %08x", g_pusha[0], g_pusha[1]);
    rt_printf("pusha: esp=%08x eax=%08x ebx=%08x\n", g_pusha[3] - g_esp_before, g_pusha[7], g_pusha[4]);
}

int main(void)
{
    unsigned i, fl;
    rt_puts("alu: integer and flags torture\n");
    for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        run_op(&ops[i], vals, NV);
    for (i = 0; i < sizeof(shops) / sizeof(shops[0]); i++)
        run_op(&shops[i], counts, NC);
    /* setcc/cmovcc: 64 flag combinations x 16 conditions */
    hash = 0x811c9dc5;
    for (fl = 0; fl < 64; fl++)
        for (i = 0; i < 16; i++)
            mix(setccs[i](flagcombo(fl), 0x1111 * fl, 0xdead0000 + i));
    rt_printf("%-13s %08x\n", "setcc_cmovcc", hash);
    total = total * 31 + hash;
    /* BCD: every AX low byte x AF/CF in */
    {
        static void (*const bcd[])(uint32_t, uint32_t, uint32_t *) = {daa_, das_, aaa_, aas_, aam10, aam16, aam7, aad10, aad16, aad3};
        static const char *const bcdn[] = {"daa", "das", "aaa", "aas", "aam10", "aam16", "aam7", "aad10", "aad16", "aad3"};
        uint32_t o[4], ax, k;
        for (i = 0; i < 10; i++) {
            hash = 0x811c9dc5;
            for (ax = 0; ax < 256; ax++)
                for (k = 0; k < 4; k++) {
                    bcd[i](ax | ((ax * 7) & 0xff) << 8 | 0xabcd0000, 0x2 | ((k & 1) ? C_ : 0) | ((k & 2) ? A_ : 0), o);
                    mix(o[0]);
                    mix(o[2]);
                }
            rt_printf("%-13s %08x\n", bcdn[i], hash);
            total = total * 31 + hash;
        }
    }
    known_answers();
    rt_printf("alu checksum %08x\n", total);
    rt_finish("alu");
}
