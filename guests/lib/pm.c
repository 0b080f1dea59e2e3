/* Protected-mode test support: descriptor tables, the exception dispatcher,
 * recovery, the double-fault task, identity paging.  See pm.h. */
#include "pm.h"

uint64_t pm_gdt[PM_GDT_ENTRIES] __attribute__((aligned(8)));
uint64_t pm_ldt[PM_LDT_ENTRIES] __attribute__((aligned(8)));
uint64_t pm_idt[256] __attribute__((aligned(8)));
struct pm_main_tss pm_tss __attribute__((aligned(128)));
struct pm_tss pm_fault_tss __attribute__((aligned(128)));
uint32_t pm_pd[1024] __attribute__((aligned(4096)));
uint32_t pm_pt[4][1024] __attribute__((aligned(4096)));

struct pm_recov pm_recov;
struct pm_trap pm_last = { .vector = PM_NONE };
struct pm_trap pm_log[PM_LOG_MAX];
int pm_nlog;
uint32_t pm_user_eflags = 0x2;

static pm_hook_t hooks[256];
static int depth;

extern uint8_t pm_stubs[], pm_tstack_top[];
extern void pm_fault_task_entry(void);
void pm_recover(void) __attribute__((noreturn));
void pm_dispatch(struct pm_frame *f);
void pm_task_c(uint32_t *sp);
int pm_task_vec = PM_DF;
uint16_t pm_fault_tr, pm_fault_link;
void pm_arm(void);

static const char *const names[32] = {
    "DE", "DB", "NMI", "BP", "OF", "BR", "UD", "NM", "DF", "CSO", "TS", "NP", "SS", "GP", "PF", "15",
    "MF", "AC", "MC", "XM", "VE", "CP", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
};

/* ---- descriptors ---- */
uint64_t pm_seg_desc(uint32_t base, uint32_t limit, unsigned access, unsigned flags)
{
    uint32_t lo = (limit & 0xffff) | (base << 16);
    uint32_t hi = ((base >> 16) & 0xff) | ((access & 0xff) << 8) | (limit & 0xf0000) |
                  ((flags & 0xf) << 20) | (base & 0xff000000);
    return ((uint64_t)hi << 32) | lo;
}

uint64_t pm_gate_desc(uint16_t sel, uint32_t offset, unsigned access, unsigned params)
{
    uint32_t lo = (offset & 0xffff) | ((uint32_t)sel << 16);
    uint32_t hi = (offset & 0xffff0000) | ((access & 0xff) << 8) | (params & 0x1f);
    return ((uint64_t)hi << 32) | lo;
}

uint64_t pm_tss_desc(const void *tss, uint32_t limit, unsigned access)
{
    return pm_seg_desc((uint32_t)tss, limit, access, 0);
}

void pm_gdt_set(uint16_t sel, uint64_t desc) { pm_gdt[sel >> 3] = desc; }
void pm_ldt_set(uint16_t sel, uint64_t desc) { pm_ldt[sel >> 3] = desc; }
void pm_idt_set(int vec, uint64_t desc) { pm_idt[vec & 0xff] = desc; }
uint32_t pm_stub_addr(int vec) { return (uint32_t)pm_stubs + 16 * (vec & 0xff); }

void pm_idt_stub(int vec, unsigned type, unsigned dpl)
{
    pm_idt_set(vec, pm_gate_desc(SEL_KCODE, pm_stub_addr(vec), ACC_P | DPL(dpl) | type, 0));
}

void pm_set_hook(int vec, pm_hook_t fn) { hooks[vec & 0xff] = fn; }

void pm_tss_init(struct pm_tss *t, void (*fn)(void), void *stack_top)
{
    memset(t, 0, sizeof(*t));
    t->eip = (uint32_t)fn;
    t->esp = t->esp0 = (uint32_t)stack_top;
    t->eflags = 0x2;
    t->cs = SEL_KCODE;
    t->ss = t->ds = t->es = t->fs = t->gs = t->ss0 = SEL_KDATA;
    t->cr3 = rd_cr3();
    t->ldt = SEL_LDT;
    t->iomap = sizeof(struct pm_tss); /* beyond the limit: no I/O bitmap */
}

void pm_sync_cr3(void)
{
    pm_tss.t.cr3 = rd_cr3();
    pm_fault_tss.cr3 = rd_cr3();
}

void pm_init(void)
{
    struct {
        uint16_t pad, limit;
        uint32_t base;
    } __attribute__((packed, aligned(4))) gdtr, idtr;
    int v;

    memset(pm_gdt, 0, sizeof(pm_gdt));
    /* accessed bits preset: QEMU does not set them for CS loads */
    pm_gdt_set(SEL_KCODE, pm_seg_desc(0, 0xfffff, ACC_CODE_XR | ACC_ACCESSED, FL_G | FL_DB));
    pm_gdt_set(SEL_KDATA, pm_seg_desc(0, 0xfffff, ACC_DATA_RW | ACC_ACCESSED, FL_G | FL_DB));
    pm_gdt_set(SEL_UCODE, pm_seg_desc(0, 0xfffff, ACC_CODE_XR | ACC_ACCESSED | DPL(3), FL_G | FL_DB));
    pm_gdt_set(SEL_UDATA, pm_seg_desc(0, 0xfffff, ACC_DATA_RW | ACC_ACCESSED | DPL(3), FL_G | FL_DB));

    memset(&pm_tss, 0, sizeof(pm_tss));
    pm_tss.t.ss0 = SEL_KDATA;
    pm_tss.t.esp0 = (uint32_t)pm_kstack_top;
    pm_tss.t.cr3 = rd_cr3();
    pm_tss.t.ldt = SEL_LDT;
    pm_tss.t.eflags = 0x2;
    pm_tss.t.iomap = sizeof(struct pm_tss);
    memset(pm_tss.iomap, 0xff, sizeof(pm_tss.iomap));
    pm_gdt_set(SEL_TSS, pm_tss_desc(&pm_tss, sizeof(pm_tss) - 1, ACC_P | SYS_TSS32));
    pm_tss_init(&pm_fault_tss, pm_fault_task_entry, pm_tstack_top);
    pm_gdt_set(SEL_FTSS, pm_tss_desc(&pm_fault_tss, sizeof(pm_fault_tss) - 1, ACC_P | SYS_TSS32));
    memset(pm_ldt, 0, sizeof(pm_ldt));
    pm_gdt_set(SEL_LDT, pm_seg_desc((uint32_t)pm_ldt, sizeof(pm_ldt) - 1, ACC_P | SYS_LDT, 0));

    for (v = 0; v < 256; v++)
        pm_idt_stub(v, SYS_INTGATE32, 0);
    pm_idt_stub(PM_VEC_RETURN, SYS_INTGATE32, 3);

    gdtr.limit = sizeof(pm_gdt) - 1;
    gdtr.base = (uint32_t)pm_gdt;
    idtr.limit = sizeof(pm_idt) - 1;
    idtr.base = (uint32_t)pm_idt;
    __asm__ __volatile__("lgdt %0\n\t"
                         "ljmp $" PM_STR(SEL_KCODE) ", $1f\n"
                         "1:\tmovl $" PM_STR(SEL_KDATA) ", %%eax\n\t"
                         "movw %%ax, %%ds\n\tmovw %%ax, %%es\n\tmovw %%ax, %%fs\n\t"
                         "movw %%ax, %%gs\n\tmovw %%ax, %%ss\n\t"
                         "lidt %1\n\t"
                         "movw $" PM_STR(SEL_TSS) ", %%ax\n\tltr %%ax\n\t"
                         "movw $" PM_STR(SEL_LDT) ", %%ax\n\tlldt %%ax"
                         : : "m"(gdtr.limit), "m"(idtr.limit) : "eax", "memory");
}

void pm_use_task_gate(int vec)
{
    pm_task_vec = vec;
    pm_tss_init(&pm_fault_tss, pm_fault_task_entry, pm_tstack_top);
    pm_sync_cr3();
    pm_gdt_set(SEL_FTSS, pm_tss_desc(&pm_fault_tss, sizeof(pm_fault_tss) - 1, ACC_P | SYS_TSS32));
    pm_idt_set(vec, pm_gate_desc(SEL_FTSS, 0, ACC_P | SYS_TASKGATE, 0));
}

/* ---- exceptions ---- */
const char *pm_vec_name(int vec)
{
    return vec >= 0 && vec < 32 ? names[vec] : "INT";
}

static struct {
    const char *name;
    uint32_t base, size;
} ranges[16];
static int nranges;

void pm_name_range(const char *name, const void *base, uint32_t size)
{
    if (nranges < 16) {
        ranges[nranges].name = name;
        ranges[nranges].base = (uint32_t)base;
        ranges[nranges].size = size;
        nranges++;
    }
}

static int print_in_range(uint32_t a)
{
    int i;
    for (i = 0; i < nranges; i++) {
        if (a - ranges[i].base < ranges[i].size) {
            if (a == ranges[i].base)
                rt_puts(ranges[i].name);
            else
                rt_printf("%s+%u", ranges[i].name, a - ranges[i].base);
            return 1;
        }
    }
    return 0;
}

void pm_print_addr(uint32_t a)
{
    if (!print_in_range(a))
        rt_printf("%08x", a);
}

void pm_print_eip(uint32_t eip)
{
    uint32_t base = pm_recov.start;
    const char *name = "start";
    if (pm_recov.at <= pm_recov.end) {
        base = pm_recov.at;
        name = "insn";
    }
    rt_puts("eip=");
    if (print_in_range(eip))
        return;
    if (eip == base)
        rt_puts(name);
    else if (eip > base && eip - base < 0x1000)
        rt_printf("%s+%u", name, eip - base);
    else if (eip < base && base - eip < 0x1000)
        rt_printf("%s-%u", name, base - eip);
    else
        rt_printf("%08x", eip);
}

void pm_print_trap(const struct pm_trap *t)
{
    if (t->vector == PM_NONE) {
        rt_puts("no exception");
        return;
    }
    if (t->vector < 32)
        rt_printf("#%s", names[t->vector]);
    else
        rt_printf("int 0x%02x", t->vector);
    if (t->has_err)
        rt_printf("(%04x)", t->err);
    if (t->vector != PM_DF && !pm_hide_eip) { /* #DF: saved CS:EIP undefined */
        rt_putc(' ');
        pm_print_eip(t->eip);
    }
}

static const char *pending_fail;
static int pending_vec, pending_err;

void pm_expect_begin(const char *what, int vec, int err)
{
    const struct pm_trap *t = &pm_last;
    int ok;
    rt_printf("%s: ", what);
    pm_print_trap(t);
    if (vec == PM_NONE)
        ok = t->vector == PM_NONE;
    else
        ok = t->vector == vec &&
             (err == PM_NOERR ? !t->has_err : t->has_err && t->err == (uint32_t)err);
    rt_checks++;
    pending_fail = ok ? NULL : what;
    pending_vec = vec;
    pending_err = err;
}

void pm_end(void)
{
    rt_putc('\n');
    if (!pending_fail)
        return;
    rt_failures++;
    rt_printf("FAIL %s: want ", pending_fail);
    if (pending_vec == PM_NONE)
        rt_puts("no exception\n");
    else if (pending_err == PM_NOERR)
        rt_printf("#%s\n", pm_vec_name(pending_vec));
    else
        rt_printf("#%s(%04x)\n", pm_vec_name(pending_vec), pending_err);
    pending_fail = NULL;
}

void pm_expect(const char *what, int vec, int err)
{
    pm_expect_begin(what, vec, err);
    pm_end();
}

void pm_check_val(const char *what, uint32_t got, uint32_t want)
{
    rt_printf("%s: %08x\n", what, got);
    rt_checks++;
    if (got != want) {
        rt_failures++;
        rt_printf("FAIL %s: want %08x\n", what, want);
    }
}

int pm_hide_eip;

void pm_arm(void)
{
    pm_hide_eip = 0;
    pm_last.vector = PM_NONE;
    pm_nlog = 0;
    depth = 0;
}

static void log_it(const struct pm_trap *t)
{
    if (pm_nlog < PM_LOG_MAX)
        pm_log[pm_nlog++] = *t;
}

static void record(const struct pm_trap *t)
{
    pm_last = *t;
    log_it(t);
}

static void __attribute__((noreturn)) fatal(const char *why, const struct pm_trap *t)
{
    rt_printf("FATAL: %s: ", why);
    pm_print_trap(t);
    rt_printf(" (eip %08x cs %04x eflags %08x err %x)\n", t->eip, t->cs, t->eflags, t->err);
    rt_exit(1);
}

void pm_dispatch(struct pm_frame *f)
{
    struct pm_trap t;
    int vec = f->vector & 0xff, r = PM_UNHANDLED;
    uint16_t ss;

    if (vec == PM_VEC_RETURN && pm_recov.eip && (f->cs & 3) == 3) {
        depth = 0;
        pm_recover();
    }
    memset(&t, 0, sizeof(t));
    t.vector = vec;
    t.has_err = (f->vector & PM_HAS_ERR) != 0;
    t.err = f->err;
    t.eip = f->eip;
    t.cs = f->cs & 0xffff;
    t.eflags = f->eflags;
    t.handler_esp = (uint32_t)&f->eip;
    if (t.cs & 3) {
        t.stack_switched = 1;
        t.esp = f->esp;
        t.ss = f->ss & 0xffff;
    } else {
        __asm__ __volatile__("movw %%ss, %0" : "=r"(ss));
        t.esp = (uint32_t)&f->esp;
        t.ss = ss;
    }
    if (vec == PM_PF)
        t.cr2 = rd_cr2();
    if (vec == PM_DB) {
        t.dr6 = rd_dr6();
        wr_dr6(0);
    }
    if (depth++ > 0)
        fatal("exception inside the exception handler", &t);
    log_it(&t);
    if (hooks[vec])
        r = hooks[vec](f);
    if (r == PM_RESUME) {
        depth--;
        return;
    }
    pm_last = t;
    if (pm_recov.eip) {
        depth = 0;
        pm_recover();
    }
    fatal("unexpected exception", &t);
}

/* Runs in the fault task (TR = SEL_FTSS); sp is where the error code is,
 * if the CPU pushed one. */
void pm_task_c(uint32_t *sp)
{
    struct pm_trap t;
    struct pm_tss *old = &pm_tss.t;
    struct pm_frame f;
    int r = PM_UNHANDLED;
    memset(&t, 0, sizeof(t));
    t.vector = pm_task_vec;
    t.has_err = sp != (uint32_t *)pm_tstack_top;
    t.err = t.has_err ? *sp : 0;
    t.eip = old->eip;
    t.cs = old->cs;
    t.eflags = old->eflags;
    t.esp = old->esp;
    t.ss = old->ss;
    t.stack_switched = 1;
    if (t.vector == PM_PF)
        t.cr2 = rd_cr2();
    pm_fault_tr = pm_str();
    pm_fault_link = pm_fault_tss.link;
    record(&t);
    if (hooks[t.vector] && depth == 0) {
        memset(&f, 0, sizeof(f));
        f.vector = t.vector | (t.has_err ? PM_HAS_ERR : 0);
        f.err = t.err;
        f.eip = t.eip;
        f.cs = t.cs;
        f.eflags = t.eflags;
        f.esp = t.esp;
        f.ss = t.ss;
        depth++;
        r = hooks[t.vector](&f);
        depth--;
    }
    if (!pm_recov.eip || pm_fault_link != SEL_TSS || r == PM_RESUME)
        fatal("exception in the fault task", &t);
    old->eip = pm_recov.eip;
    old->esp = pm_recov.esp;
    old->eflags = 0x2;
    old->cs = SEL_KCODE;
    old->ss = old->ds = old->es = old->fs = old->gs = SEL_KDATA;
    depth = 0;
}

/* ---- paging ---- */
void pm_paging_on(void)
{
    int i, j;
    memset(pm_pd, 0, sizeof(pm_pd));
    for (i = 0; i < 4; i++) {
        for (j = 0; j < 1024; j++)
            pm_pt[i][j] = ((uint32_t)(i * 1024 + j) << 12) | PTE_P | PTE_W | PTE_U;
        pm_pd[i] = (uint32_t)pm_pt[i] | PTE_P | PTE_W | PTE_U;
    }
    wr_cr3((uint32_t)pm_pd);
    pm_sync_cr3();
    wr_cr0(rd_cr0() | 0x80000000u);
}

void pm_paging_off(void)
{
    wr_cr0(rd_cr0() & ~0x80000000u);
}

uint32_t *pm_pte(uint32_t va)
{
    return &pm_pt[va >> 22][(va >> 12) & 1023];
}
