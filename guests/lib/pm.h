/* nestmon protected-mode test support (guest-only; pm.c, pm_entry.S).
 *
 * pm_init() replaces the runtime's flat GDT with a larger one, loads an IDT
 * with one stub per vector, a TSS (ESP0/SS0, I/O permission bitmap) and an
 * empty LDT.  Every exception or interrupt is recorded (vector, error code,
 * saved EIP/CS/EFLAGS, ESP/SS after a privilege change, CR2 for #PF, DR6
 * for #DB) in pm_last and pm_log[], then either given to a hook the test
 * installed, or, when a PM_TRY block is running, control goes back to the
 * end of that block ("recovery"), so a test reads like a list of
 * expectations:
 *
 *     EXPECT_FAULT("ss <- null", PM_GP, 0, LOAD_SEG(ss, 0));
 *     EXPECT_OK("ds <- 0x23", LOAD_SEG(ds, SEL_UDATA));
 *     EXPECT_USER_FAULT("hlt at ring 3", PM_GP, 0, AT "hlt");
 *
 * Bodies are AT&T assembly strings (basic asm: write registers with a single
 * '%').  A body may clobber every register and EFLAGS and load any segment
 * register: the block saves them before and restores them (and flat ring-0
 * DS/ES/FS/GS/SS) after, on both the normal and the recovery path.  Bodies
 * must not use the local labels 7770-7779.  Put AT ("7770:") before the
 * instruction under test: a saved EIP is then printed relative to it
 * ("eip=insn", "eip=insn+2"), otherwise relative to the start of the body.
 * Values are passed in and out through memory (globals, by name).
 *
 * Faults at CPL 0 are delivered on the current stack: a body that loads SS
 * with a non-zero base at CPL 0 must restore a flat SS before anything can
 * fault.  Bodies run at ring 3 (EXPECT_USER_*, PM_USER_TRY) are entered with
 * iret (CS=SEL_UCODE, SS:ESP=SEL_UDATA:pm_ustack_top, DS/ES/FS/GS=SEL_UDATA,
 * EFLAGS=pm_user_eflags) and return to ring 0 with int PM_VEC_RETURN, whose
 * gate has DPL 3; faults at ring 3 arrive on the TSS.ESP0 stack. */
#ifndef NESTMON_PM_H
#define NESTMON_PM_H

/* ---- selectors of the fixed GDT entries ---- */
#define SEL_KCODE 0x08   /* flat 32-bit code, DPL 0 (same as the runtime's) */
#define SEL_KDATA 0x10   /* flat 32-bit data, DPL 0 */
#define SEL_UCODE 0x1b   /* flat 32-bit code, DPL 3 (index 3, RPL 3) */
#define SEL_UDATA 0x23   /* flat 32-bit data, DPL 3 (index 4, RPL 3) */
#define SEL_TSS 0x28     /* the main task's 32-bit TSS (with I/O bitmap) */
#define SEL_FTSS 0x30    /* the fault task's TSS (pm_use_task_gate) */
#define SEL_LDT 0x38     /* the LDT (PM_LDT_ENTRIES entries, all null) */
#define SEL_FREE 0x40    /* GDT selectors 0x40..0x1f8 are free for tests */
#define PM_GDT_ENTRIES 64
#define PM_LDT_ENTRIES 16
#define LDT_SEL(index, rpl) (((index) << 3) | 4 | (rpl))

/* vectors */
#define PM_DE 0
#define PM_DB 1
#define PM_NMI 2
#define PM_BP 3
#define PM_OF 4
#define PM_BR 5
#define PM_UD 6
#define PM_NM 7
#define PM_DF 8
#define PM_TS 10
#define PM_NP 11
#define PM_SS 12
#define PM_GP 13
#define PM_PF 14
#define PM_MF 16
#define PM_AC 17
#define PM_MC 18
#define PM_XM 19
#define PM_VEC_RETURN 0x81 /* ring 3 -> ring 0: end of a user body */
#define PM_NONE (-1)       /* expected/observed: no exception */
#define PM_NOERR (-1)      /* expected: no error code pushed */

/* set in pm_frame.vector when the CPU pushed an error code */
#define PM_HAS_ERR 0x10000

/* offsets in struct pm_recov (used by the PM_TRY assembly) */
#define PMR_ESP 0
#define PMR_EFLAGS 32
#define PMR_EIP 36

/* descriptor access bytes (P, DPL, S, type) */
#define ACC_P 0x80
#define DPL(n) ((n) << 5)
#define ACC_CODE_X 0x98    /* execute-only code */
#define ACC_CODE_XR 0x9a   /* execute/read code */
#define ACC_CODE_XC 0x9c   /* conforming, execute-only */
#define ACC_CODE_XRC 0x9e  /* conforming, execute/read */
#define ACC_DATA_RO 0x90   /* read-only data */
#define ACC_DATA_RW 0x92   /* read/write data */
#define ACC_DATA_RO_DOWN 0x94
#define ACC_DATA_RW_DOWN 0x96
#define ACC_ACCESSED 0x01
/* system descriptor and gate types (S=0), or with ACC_P | DPL(n) */
#define SYS_TSS16 0x01
#define SYS_LDT 0x02
#define SYS_TSS16_BUSY 0x03
#define SYS_CALLGATE16 0x04
#define SYS_TASKGATE 0x05
#define SYS_INTGATE16 0x06
#define SYS_TRAPGATE16 0x07
#define SYS_TSS32 0x09
#define SYS_TSS32_BUSY 0x0b
#define SYS_CALLGATE32 0x0c
#define SYS_INTGATE32 0x0e
#define SYS_TRAPGATE32 0x0f
/* flags nibble (bits 52-55 of a segment descriptor) */
#define FL_G 0x8  /* limit in 4 KiB units */
#define FL_DB 0x4 /* 32-bit default operand size / big stack / expand-down to 4 GiB */

/* EFLAGS bits */
#define EFL_CF 0x1
#define EFL_TF 0x100
#define EFL_IF 0x200
#define EFL_DF 0x400
#define EFL_OF 0x800
#define EFL_IOPL(n) ((n) << 12)
#define EFL_NT 0x4000
#define EFL_RF 0x10000
#define EFL_AC 0x40000

#define PM_STR_(x) #x
#define PM_STR(x) PM_STR_(x)

#ifndef __ASSEMBLER__
#include "guest.h"

/* ---- run a body of assembly, catching exceptions ---- */
#define AT "7770:\n\t"
#define PM_TRY_WITH(pro, body, epi)                                         \
    do {                                                                    \
        __asm__ __volatile__("" ::: "memory");                              \
        __asm__ __volatile__(                                               \
            "pushfl\n\tpopl pm_recov+32\n\t"                                \
            "movl %esp, pm_recov+0\n\tmovl %ebp, pm_recov+4\n\t"            \
            "movl %ebx, pm_recov+8\n\tmovl %esi, pm_recov+12\n\t"           \
            "movl %edi, pm_recov+16\n\tmovl %eax, pm_recov+20\n\t"          \
            "movl %ecx, pm_recov+24\n\tmovl %edx, pm_recov+28\n\t"          \
            "movl $7771f, pm_recov+40\n\tmovl $7773f, pm_recov+44\n\t"      \
            "movl $7770f, pm_recov+48\n\t"                                  \
            "call pm_arm\n\t"                                               \
            "movl $7772f, pm_recov+36\n\t" pro "\n"                         \
            "7771:\n\t" body "\n"                                           \
            "7773:\n\t" epi "\n"                                            \
            "7772:\n\t"                                                     \
            "movl $0x10, %eax\n\tmovw %ax, %ds\n\tmovw %ax, %es\n\t"        \
            "movw %ax, %fs\n\tmovw %ax, %gs\n\tmovw %ax, %ss\n\t"           \
            "movl pm_recov+0, %esp\n\tmovl pm_recov+4, %ebp\n\t"            \
            "movl pm_recov+8, %ebx\n\tmovl pm_recov+12, %esi\n\t"           \
            "movl pm_recov+16, %edi\n\tmovl pm_recov+20, %eax\n\t"          \
            "movl pm_recov+24, %ecx\n\tmovl pm_recov+28, %edx\n\t"          \
            "pushl pm_recov+32\n\tpopfl\n\t"                                \
            "movl $0, pm_recov+36\n\t"                                      \
            "jmp 7774f\n"                                                   \
            "7770:\n7774:\n");                                              \
        __asm__ __volatile__("" ::: "memory");                              \
    } while (0)

/* at ring 0 */
#define PM_TRY(body) PM_TRY_WITH("", body, "")
/* at ring 3 (see the comment at the top) */
#define PM_USER_PRO                                                         \
    "movl $" PM_STR(SEL_UDATA) ", %eax\n\tmovw %ax, %ds\n\tmovw %ax, %es\n\t" \
    "movw %ax, %fs\n\tmovw %ax, %gs\n\t"                                    \
    "pushl $" PM_STR(SEL_UDATA) "\n\tpushl $pm_ustack_top\n\t"              \
    "pushl pm_user_eflags\n\tpushl $" PM_STR(SEL_UCODE) "\n\t"              \
    "pushl $7771f\n\tiretl"
#define PM_USER_EPI "int $" PM_STR(PM_VEC_RETURN)
#define PM_USER_TRY(body) PM_TRY_WITH(PM_USER_PRO, body, PM_USER_EPI)

#define EXPECT_FAULT(what, vec, err, body)                                  \
    do {                                                                    \
        PM_TRY(body);                                                       \
        pm_expect(what, vec, err);                                          \
    } while (0)
#define EXPECT_OK(what, body) EXPECT_FAULT(what, PM_NONE, 0, body)
#define EXPECT_USER_FAULT(what, vec, err, body)                             \
    do {                                                                    \
        PM_USER_TRY(body);                                                  \
        pm_expect(what, vec, err);                                          \
    } while (0)
#define EXPECT_USER_OK(what, body) EXPECT_USER_FAULT(what, PM_NONE, 0, body)

/* "movw $SEL, %ax; movw %ax, %SEG" */
#define LOAD_SEG(seg, sel) "movw $" PM_STR(sel) ", %ax\n\t" AT "movw %ax, %" #seg

/* ---- state ---- */
struct pm_recov {
    uint32_t esp, ebp, ebx, esi, edi, eax, ecx, edx, eflags;
    uint32_t eip;   /* recovery point, 0 when no PM_TRY block runs */
    uint32_t start; /* first instruction of the body */
    uint32_t end;   /* end of the body */
    uint32_t at;    /* the AT marker (> end when the body has none) */
};
extern struct pm_recov pm_recov;

/* What the stubs push, as seen by hooks (which may change it). */
struct pm_frame {
    uint32_t gs, fs, es, ds;
    uint32_t edi, esi, ebp, esp_k, ebx, edx, ecx, eax;
    uint32_t vector; /* | PM_HAS_ERR when the CPU pushed an error code */
    uint32_t err;
    uint32_t eip, cs, eflags;
    uint32_t esp, ss; /* only after a privilege change (cs & 3) != 0 */
};
struct pm_trap {
    int vector;      /* PM_NONE: nothing happened */
    int has_err;
    uint32_t err;
    uint32_t eip, cs, eflags;
    uint32_t esp, ss; /* the interrupted stack: pushed ESP/SS after a
                         privilege change, else ESP before the push, SS */
    int stack_switched;
    uint32_t cr2;     /* #PF */
    uint32_t dr6;     /* #DB (DR6 is cleared after reading) */
    uint32_t handler_esp; /* ESP of the handler frame (where EIP was pushed) */
};
#define PM_LOG_MAX 64
extern struct pm_trap pm_last;
extern struct pm_trap pm_log[PM_LOG_MAX];
extern int pm_nlog;

/* Hooks: called after the event was appended to pm_log; may modify the
 * frame.  PM_RESUME returns to the interrupted code (iret) and leaves
 * pm_last alone (a system call made by a check is not "its exception");
 * anything else records the event in pm_last and recovers. */
enum { PM_UNHANDLED, PM_RESUME, PM_RECOVER };
typedef int (*pm_hook_t)(struct pm_frame *f);
void pm_set_hook(int vec, pm_hook_t fn);

extern uint32_t pm_user_eflags; /* EFLAGS for ring-3 bodies (default 0x2) */
extern uint8_t pm_ustack_top[], pm_kstack_top[];

/* ---- tables ---- */
struct pm_tss {
    uint16_t link, r0;
    uint32_t esp0;
    uint16_t ss0, r1;
    uint32_t esp1;
    uint16_t ss1, r2;
    uint32_t esp2;
    uint16_t ss2, r3;
    uint32_t cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint16_t es, r4, cs, r5, ss, r6, ds, r7, fs, r8, gs, r9, ldt, r10, trap, iomap;
} __attribute__((packed));
struct pm_main_tss {
    struct pm_tss t;
    uint8_t iomap[8192 + 1]; /* one bit per port, 1 = denied; last byte 0xff */
} __attribute__((packed));

extern uint64_t pm_gdt[PM_GDT_ENTRIES];
extern uint64_t pm_ldt[PM_LDT_ENTRIES];
extern uint64_t pm_idt[256];
extern struct pm_main_tss pm_tss;
extern struct pm_tss pm_fault_tss;

uint64_t pm_seg_desc(uint32_t base, uint32_t limit, unsigned access, unsigned flags);
uint64_t pm_gate_desc(uint16_t sel, uint32_t offset, unsigned access, unsigned params);
uint64_t pm_tss_desc(const void *tss, uint32_t limit, unsigned access);
void pm_gdt_set(uint16_t sel, uint64_t desc);
void pm_ldt_set(uint16_t sel, uint64_t desc);
/* interrupt gate to the recording stub of vec */
void pm_idt_stub(int vec, unsigned type, unsigned dpl);
void pm_idt_set(int vec, uint64_t desc);
uint32_t pm_stub_addr(int vec);
/* a 32-bit TSS for a task running fn on stack top, flat ring-0 segments */
void pm_tss_init(struct pm_tss *t, void (*fn)(void), void *stack_top);

void pm_init(void);
/* Deliver vec (e.g. #DF) through a task gate to the fault task (SEL_FTSS),
 * which records it (error code from its own stack; CS:EIP, EFLAGS, SS:ESP
 * from the main task's TSS) and, after the hook if any (called with a frame
 * whose EIP..SS come from the main TSS, at most once), resumes the main task
 * at the recovery point by iret (NT=1). */
void pm_use_task_gate(int vec);
extern int pm_task_vec;
extern uint16_t pm_fault_tr, pm_fault_link; /* TR and back link in the task */
/* set the main and fault TSS CR3 fields to the current CR3 */
void pm_sync_cr3(void);
/* Assert that the last PM_TRY block raised vec with error code err (or
 * PM_NOERR: no error code), or nothing (vec PM_NONE); print one line. */
void pm_expect(const char *what, int vec, int err);
/* The same in two steps, to append details to the line:
 *     pm_expect_begin(what, vec, err); rt_printf(" cr2=..."); pm_end(); */
void pm_expect_begin(const char *what, int vec, int err);
void pm_end(void);
/* A check of a value: prints "what: got" and counts a failure if got !=
 * want; like RT_CHECK but with one output line either way. */
void pm_check_val(const char *what, uint32_t got, uint32_t want);
/* "#GP(0028) eip=insn+2": the record, EIP relative to AT or the body */
void pm_print_trap(const struct pm_trap *t);
/* set after a check to leave the saved EIP out of its line (an EIP QEMU
 * does not get right); reset when the next check starts */
extern int pm_hide_eip;
/* EIP relative to the AT marker or the body start of the last block, or
 * to a named range (pm_name_range), else in hex: "eip=insn+2" */
void pm_print_eip(uint32_t eip);
/* an address relative to a named range: "pf_page+16", else in hex */
void pm_print_addr(uint32_t a);
void pm_name_range(const char *name, const void *base, uint32_t size);
const char *pm_vec_name(int vec);

/* ---- paging: identity map of the first 16 MiB with 4 KiB pages ---- */
#define PTE_P 0x1
#define PTE_W 0x2
#define PTE_U 0x4
#define PTE_PWT 0x8
#define PTE_PCD 0x10
#define PTE_A 0x20
#define PTE_D 0x40
#define PTE_PS 0x80
#define PTE_G 0x100
extern uint32_t pm_pd[1024];
extern uint32_t pm_pt[4][1024];
/* builds the identity map (P|W|U everywhere), loads CR3, sets CR0.PG */
void pm_paging_on(void);
void pm_paging_off(void);
uint32_t *pm_pte(uint32_t va);

/* ---- small helpers ---- */
#define PM_CR(n)                                                            \
    static inline uint32_t rd_cr##n(void)                                   \
    {                                                                       \
        uint32_t v;                                                         \
        __asm__ __volatile__("movl %%cr" #n ", %0" : "=r"(v));              \
        return v;                                                           \
    }                                                                       \
    static inline void wr_cr##n(uint32_t v)                                 \
    {                                                                       \
        __asm__ __volatile__("movl %0, %%cr" #n : : "r"(v) : "memory");     \
    }
PM_CR(0)
PM_CR(2)
PM_CR(3)
PM_CR(4)
#define PM_DR(n)                                                            \
    static inline uint32_t rd_dr##n(void)                                   \
    {                                                                       \
        uint32_t v;                                                         \
        __asm__ __volatile__("movl %%db" #n ", %0" : "=r"(v));              \
        return v;                                                           \
    }                                                                       \
    static inline void wr_dr##n(uint32_t v)                                 \
    {                                                                       \
        __asm__ __volatile__("movl %0, %%db" #n : : "r"(v) : "memory");     \
    }
PM_DR(0)
PM_DR(1)
PM_DR(2)
PM_DR(3)
PM_DR(6)
PM_DR(7)
static inline void pm_cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ __volatile__("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}
static inline uint32_t pm_eflags(void)
{
    uint32_t v;
    __asm__ __volatile__("pushfl; popl %0" : "=r"(v));
    return v;
}
static inline void pm_invlpg(uint32_t va)
{
    __asm__ __volatile__("invlpg (%0)" : : "r"(va) : "memory");
}
static inline uint16_t pm_str(void)
{
    uint16_t v;
    __asm__ __volatile__("str %0" : "=r"(v));
    return v;
}
#endif /* __ASSEMBLER__ */
#endif
