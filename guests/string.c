/* string: movs/stos/lods/scas/cmps, with and without rep/repe/repne, both
 * directions (cld/std), byte/word/dword, overlapping buffers, buffers
 * crossing 4 KiB page boundaries and rep with ECX=0.  Each case is checked
 * against a byte-exact C model of the instruction (memory, ESI, EDI, ECX,
 * EAX); final flags are hashed and printed for native/guest comparison. */
#include "rt.h"

#define PAGES 4
static uint8_t mem[PAGES * 4096] __attribute__((aligned(4096)));
static uint8_t ref[PAGES * 4096] __attribute__((aligned(4096)));
static uint32_t hash = 0x811c9dc5;
static void mix(uint32_t v)
{
    hash = (hash ^ v) * 0x01000193u;
    hash ^= hash >> 13;
}

enum { MOVS, STOS, LODS, CMPS, SCAS };
enum { NOREP, REP, REPNE };
struct regs {
    uint32_t esi, edi, ecx, eax, fl;
};

#define SOP(name, insn)                                                            \
    static void name(struct regs *r, uint32_t fin)                                 \
    {                                                                              \
        uint32_t fl;                                                               \
        __asm__ __volatile__("pushl %[fin]\n\tpopfl\n\t" insn "\n\tpushfl\n\tpopl %[fl]\n\tcld" \
                             : "+S"(r->esi), "+D"(r->edi), "+c"(r->ecx), "+a"(r->eax), [fl] "=&r"(fl) \
                             : [fin] "r"(fin)                                      \
                             : "cc", "memory");                                    \
        r->fl = fl;                                                                \
    }
#define SOPS(op)                                                                   \
    SOP(op##b, #op "b") SOP(op##w, #op "w") SOP(op##l, #op "l")                    \
    SOP(rep_##op##b, "rep " #op "b") SOP(rep_##op##w, "rep " #op "w") SOP(rep_##op##l, "rep " #op "l")
#define SOPS_CMP(op)                                                               \
    SOP(op##b, #op "b") SOP(op##w, #op "w") SOP(op##l, #op "l")                    \
    SOP(repe_##op##b, "repe " #op "b") SOP(repe_##op##w, "repe " #op "w") SOP(repe_##op##l, "repe " #op "l") \
    SOP(repne_##op##b, "repne " #op "b") SOP(repne_##op##w, "repne " #op "w") SOP(repne_##op##l, "repne " #op "l")
SOPS(movs)
SOPS(stos)
SOPS(lods)
SOPS_CMP(cmps)
SOPS_CMP(scas)

typedef void (*sfn)(struct regs *, uint32_t);
static const sfn table[5][3][3] = {
    {{movsb, movsw, movsl}, {rep_movsb, rep_movsw, rep_movsl}, {0, 0, 0}},
    {{stosb, stosw, stosl}, {rep_stosb, rep_stosw, rep_stosl}, {0, 0, 0}},
    {{lodsb, lodsw, lodsl}, {rep_lodsb, rep_lodsw, rep_lodsl}, {0, 0, 0}},
    {{cmpsb, cmpsw, cmpsl}, {repe_cmpsb, repe_cmpsw, repe_cmpsl}, {repne_cmpsb, repne_cmpsw, repne_cmpsl}},
    {{scasb, scasw, scasl}, {repe_scasb, repe_scasw, repe_scasl}, {repne_scasb, repne_scasw, repne_scasl}},
};
static const char *const opn[5] = {"movs", "stos", "lods", "cmps", "scas"};

static uint32_t rd(const uint8_t *p, int sz)
{
    uint32_t v = 0;
    int i;
    for (i = sz - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static void wr(uint8_t *p, int sz, uint32_t v)
{
    int i;
    for (i = 0; i < sz; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

/* C model operating on ref[]; addresses are offsets into the buffer. */
static void model(int op, int rep, int sz, int df, struct regs *r)
{
    int32_t step = df ? -sz : sz;
    uint32_t mask = sz == 4 ? 0xffffffff : (1u << (8 * sz)) - 1;
    if (rep != NOREP && r->ecx == 0)
        return;
    for (;;) {
        int stop = 0;
        switch (op) {
        case MOVS:
            memmove(ref + r->edi, ref + r->esi, sz);
            r->esi += step;
            r->edi += step;
            break;
        case STOS:
            wr(ref + r->edi, sz, r->eax);
            r->edi += step;
            break;
        case LODS:
            r->eax = (r->eax & ~mask) | rd(ref + r->esi, sz);
            r->esi += step;
            break;
        case CMPS: {
            int eq = rd(ref + r->esi, sz) == rd(ref + r->edi, sz);
            r->esi += step;
            r->edi += step;
            stop = rep == REP ? !eq : eq;
            break;
        }
        case SCAS: {
            int eq = (r->eax & mask) == rd(ref + r->edi, sz);
            r->edi += step;
            stop = rep == REP ? !eq : eq;
            break;
        }
        }
        if (rep == NOREP)
            return;
        r->ecx--;
        if (r->ecx == 0 || ((op == CMPS || op == SCAS) && stop))
            return;
    }
}

static int cases;
static void run_case(int op, int rep, int sz, int df, uint32_t src, uint32_t dst, uint32_t count, uint32_t eax)
{
    struct regs r, m;
    uint32_t base = (uint32_t)mem, i, fin;
    sfn fn = table[op][rep][sz == 1 ? 0 : sz == 2 ? 1 : 2];
    for (i = 0; i < sizeof(mem); i++)
        mem[i] = ref[i] = (uint8_t)((i * 7 + (i >> 9) * 3) ^ (i >> 12));
    /* for cmps/scas tests make long equal runs so repe runs a while */
    if (op == CMPS || op == SCAS)
        for (i = 0; i < sizeof(mem); i++)
            mem[i] = ref[i] = (i % 97 == 0) ? (uint8_t)(i >> 3) : 0x5a;
    m.esi = src;
    m.edi = dst;
    m.ecx = count;
    m.eax = eax;
    r = m;
    r.esi += base;
    r.edi += base;
    fin = 0x2 | 0x8d5 * (count & 1) | (df ? 0x400 : 0);
    fn(&r, fin);
    model(op, rep, sz, df, &m);
    cases++;
    RT_CHECK(r.esi - base == m.esi && r.edi - base == m.edi && r.ecx == m.ecx && r.eax == m.eax,
             "%s%s%d df=%d src=%x dst=%x n=%u: got esi=%x edi=%x ecx=%x eax=%x want %x %x %x %x",
             rep == NOREP ? "" : rep == REP ? "rep " : "repne ", opn[op], sz, df, src, dst, count,
             r.esi - base, r.edi - base, r.ecx, r.eax, m.esi, m.edi, m.ecx, m.eax);
    RT_CHECK(memcmp(mem, ref, sizeof(mem)) == 0, "%s%d df=%d src=%x dst=%x n=%u: memory differs",
             opn[op], sz, df, src, dst, count);
    if (rep == NOREP || count == 0 || op == CMPS || op == SCAS)
        mix(r.fl & (count == 0 && rep != NOREP ? 0xcd5 : 0xcd5));
    mix(r.esi - base);
    mix(r.edi - base);
    mix(r.ecx);
    mix(r.eax);
    for (i = 0; i < sizeof(mem); i += 61)
        mix(mem[i]);
}

int main(void)
{
    static const uint32_t counts[] = {0, 1, 2, 3, 7, 100, 1025, 4097};
    static const uint32_t srcs[] = {0x0ff0, 0x1ffd, 0x0003, 0x2000};
    static const uint32_t dsts[] = {0x2ff8, 0x0fff, 0x0005, 0x1fff};
    int op, rep, szi, df, c, p;
    rt_puts("string: string instructions\n");
    for (op = 0; op < 5; op++) {
        hash = 0x811c9dc5;
        for (rep = 0; rep < 3; rep++) {
            if (rep == REPNE && op != CMPS && op != SCAS)
                continue;
            for (szi = 0; szi < 3; szi++)
                for (df = 0; df < 2; df++)
                    for (c = 0; c < 8; c++) {
                        if (rep == NOREP && c > 2)
                            continue;
                        for (p = 0; p < 4; p++) {
                            uint32_t n = counts[c], sz = 1u << szi;
                            uint32_t s = srcs[p], d = dsts[p];
                            if (df) { /* backwards: start near the top of the range */
                                s += n * sz;
                                d += n * sz;
                                if (s + 4 > sizeof(mem) || d + 4 > sizeof(mem))
                                    continue;
                            }
                            if (s + n * sz > sizeof(mem) - 4 || d + n * sz > sizeof(mem) - 4)
                                continue;
                            run_case(op, rep, sz, df, s, d, n, 0x5a5a5a5a ^ (c * 0x01010101));
                        }
                    }
        }
        rt_printf("%-6s %08x\n", opn[op], hash);
    }
    /* overlapping copies: forward rep movsb with dst = src + 1 replicates */
    hash = 0x811c9dc5;
    run_case(MOVS, REP, 1, 0, 0x0ffe, 0x0fff, 300, 0);
    run_case(MOVS, REP, 4, 0, 0x1000, 0x1002, 1000, 0);
    run_case(MOVS, REP, 1, 1, 0x1fff, 0x1ffe, 300, 0);
    run_case(MOVS, REP, 2, 1, 0x2ffe, 0x3000, 700, 0);
    run_case(MOVS, REP, 4, 0, 0x0100, 0x0100, 50, 0);
    rt_printf("%-6s %08x\n", "overlap", hash);
    rt_printf("%d string cases\n", cases);
    {
        /* known answer: overlapping forward movsb replicates a byte */
        uint8_t *p = mem + 0x0ffe;
        uint32_t i, ok = 1;
        p[0] = 0xab;
        {
            uint32_t si = (uint32_t)p, di = (uint32_t)(p + 1), cx = 300;
            __asm__ __volatile__("cld; rep movsb" : "+S"(si), "+D"(di), "+c"(cx) : : "memory");
        }
        for (i = 0; i <= 300; i++)
            ok &= p[i] == 0xab;
        RT_CHECK(ok, "overlapping rep movsb replicates");
    }
    rt_finish("string");
}
