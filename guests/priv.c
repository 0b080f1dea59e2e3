/* priv: kernel-mode environment checks (nestmon: guest-only).
 * Multiboot handoff (magic, info flags, memory size), protected mode with
 * paging off, our flat GDT loaded (sgdt, selectors), IF clear, control
 * registers (CR0/CR4 bits the runtime set), CPUID features the other guests
 * rely on, rdtsc monotonic, COM1 scratch register and LSR, then identity
 * paging (4 KiB page tables for the first 8 MiB), an aliased page,
 * remapping + invlpg, a CR3 reload, and turning paging off again. */
#include "guest.h"

static uint32_t pd[1024] __attribute__((aligned(4096)));
static uint32_t pt[2][1024] __attribute__((aligned(4096)));
static volatile uint32_t page_a[1024] __attribute__((aligned(4096)));
static volatile uint32_t page_b[1024] __attribute__((aligned(4096)));
#define ALIAS_VA 0x00700000u /* inside the identity-mapped range, remapped */

static inline uint32_t rd_cr0(void) { uint32_t v; __asm__ __volatile__("movl %%cr0, %0" : "=r"(v)); return v; }
static inline uint32_t rd_cr3(void) { uint32_t v; __asm__ __volatile__("movl %%cr3, %0" : "=r"(v)); return v; }
static inline uint32_t rd_cr4(void) { uint32_t v; __asm__ __volatile__("movl %%cr4, %0" : "=r"(v)); return v; }
static inline void wr_cr0(uint32_t v) { __asm__ __volatile__("movl %0, %%cr0" : : "r"(v) : "memory"); }
static inline void wr_cr3(uint32_t v) { __asm__ __volatile__("movl %0, %%cr3" : : "r"(v) : "memory"); }

static void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ __volatile__("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

int main(void)
{
    uint32_t *mbi = (uint32_t *)rt_mb_info, v, a, b, c, d, fl, i;
    uint16_t cs, ds, ss;
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) gdtr;
    extern const uint8_t rt_gdt_desc[];

    rt_puts("priv: kernel-mode environment\n");
    RT_CHECK(rt_mb_magic == 0x2BADB002, "multiboot magic %08x", rt_mb_magic);
    RT_CHECK(mbi != 0 && (mbi[0] & 1), "multiboot info flags %08x (mem_* present)", mbi ? mbi[0] : 0);
    if (mbi && (mbi[0] & 1))
        RT_CHECK(mbi[1] >= 512 && mbi[1] <= 640 && mbi[2] >= 8 * 1024, "mem_lower=%u mem_upper=%u", mbi[1], mbi[2]);
    rt_printf("multiboot: magic ok, info flags bit0=%u\n", mbi ? mbi[0] & 1 : 0);

    __asm__ __volatile__("movw %%cs, %0; movw %%ds, %1; movw %%ss, %2" : "=r"(cs), "=r"(ds), "=r"(ss));
    RT_CHECK(cs == 0x08 && ds == 0x10 && ss == 0x10, "selectors cs=%x ds=%x ss=%x", cs, ds, ss);
    __asm__ __volatile__("sgdt %0" : "=m"(gdtr));
    RT_CHECK(gdtr.limit == 23 && gdtr.base == *(const uint32_t *)(rt_gdt_desc + 2), "sgdt %x/%x", gdtr.limit, gdtr.base);
    __asm__ __volatile__("pushfl; popl %0" : "=r"(fl));
    RT_CHECK(!(fl & 0x200), "IF clear: eflags=%08x", fl);
    rt_printf("segments: cs=%02x ds=%02x ss=%02x gdt limit=%u IF=%u\n", cs, ds, ss, gdtr.limit, (fl >> 9) & 1);

    v = rd_cr0();
    RT_CHECK((v & 0x80000001) == 1, "cr0 PE=1 PG=0: %08x", v);
    RT_CHECK((v & 0x2e) == 0x22, "cr0 MP/NE set, EM/TS clear: %08x", v);
    RT_CHECK((rd_cr4() & 0x600) == 0x600, "cr4 OSFXSR|OSXMMEXCPT: %08x", rd_cr4());
    rt_printf("cr0: PE=%u MP=%u EM=%u TS=%u NE=%u PG=%u\n", v & 1, (v >> 1) & 1, (v >> 2) & 1,
              (v >> 3) & 1, (v >> 5) & 1, v >> 31);

    cpuid(0, &a, &b, &c, &d);
    RT_CHECK(a >= 1, "cpuid max leaf %u", a);
    cpuid(1, &a, &b, &c, &d);
    /* FPU TSC CX8 CMOV MMX FXSR SSE SSE2 */
    v = (1u << 0) | (1u << 4) | (1u << 8) | (1u << 15) | (1u << 23) | (1u << 24) | (1u << 25) | (1u << 26);
    RT_CHECK((d & v) == v, "cpuid.1 edx=%08x lacks %08x", d, v & ~d);
    rt_printf("cpuid: fpu tsc cx8 cmov mmx fxsr sse sse2 = %s\n", (d & v) == v ? "yes" : "no");
    {
        uint64_t t0 = rt_rdtsc(), t1 = rt_rdtsc();
        RT_CHECK(t1 > t0, "rdtsc monotonic");
    }

    outb(0x3ff, 0x5a);
    RT_CHECK(inb(0x3ff) == 0x5a, "COM1 scratch register");
    RT_CHECK(inb(0x3fd) & 0x20, "COM1 LSR THRE");
    rt_printf("serial: scratch and LSR ok\n");

    /* paging: identity map 0-8 MiB with 4 KiB pages */
    for (i = 0; i < 1024; i++) {
        pt[0][i] = (i << 12) | 3;
        pt[1][i] = ((i + 1024) << 12) | 3;
        pd[i] = 0;
    }
    pd[0] = (uint32_t)pt[0] | 3;
    pd[1] = (uint32_t)pt[1] | 3;
    page_a[0] = 0xaaaa0001;
    page_b[0] = 0xbbbb0002;
    /* ALIAS_VA -> page_a */
    pt[ALIAS_VA >> 22][(ALIAS_VA >> 12) & 1023] = (uint32_t)page_a | 3;
    wr_cr3((uint32_t)pd);
    wr_cr0(rd_cr0() | 0x80000000);
    RT_CHECK(rd_cr0() >> 31, "paging enabled");
    v = *(volatile uint32_t *)ALIAS_VA;
    RT_CHECK(v == 0xaaaa0001, "alias reads page_a: %08x", v);
    *(volatile uint32_t *)(ALIAS_VA + 4) = 0x12345678;
    RT_CHECK(page_a[1] == 0x12345678, "alias write visible in page_a");
    /* remap to page_b, invlpg */
    pt[ALIAS_VA >> 22][(ALIAS_VA >> 12) & 1023] = (uint32_t)page_b | 3;
    __asm__ __volatile__("invlpg (%0)" : : "r"(ALIAS_VA) : "memory");
    v = *(volatile uint32_t *)ALIAS_VA;
    RT_CHECK(v == 0xbbbb0002, "after invlpg reads page_b: %08x", v);
    /* remap back, flush by reloading CR3 */
    pt[ALIAS_VA >> 22][(ALIAS_VA >> 12) & 1023] = (uint32_t)page_a | 3;
    wr_cr3(rd_cr3());
    v = *(volatile uint32_t *)ALIAS_VA;
    RT_CHECK(v == 0xaaaa0001, "after cr3 reload reads page_a: %08x", v);
    /* accessed/dirty bits set by the MMU */
    __asm__ __volatile__("" : : : "memory");
    v = pt[ALIAS_VA >> 22][(ALIAS_VA >> 12) & 1023];
    RT_CHECK(v & 0x20, "accessed bit set: %08x", v);
    *(volatile uint32_t *)ALIAS_VA = 1;
    __asm__ __volatile__("" : : : "memory"); /* the MMU wrote pt behind the compiler's back */
    v = pt[ALIAS_VA >> 22][(ALIAS_VA >> 12) & 1023];
    RT_CHECK(v & 0x40, "dirty bit set: %08x", v);
    wr_cr0(rd_cr0() & ~0x80000000u);
    RT_CHECK(!(rd_cr0() >> 31), "paging disabled");
    rt_printf("paging: identity map, alias, invlpg, cr3 reload, A/D bits ok\n");
    rt_finish("priv");
}
