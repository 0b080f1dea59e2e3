/* pm_events: INT n and IRET sites reused across changes (nestmon: guest-only).
 *
 * nestmon carries `int n` (through a 32-bit gate to ring 0), #DE and
 * #GP(0) from ring 3, and `iret` at CPL 0 out in translated code, with
 * what the monitor read when it translated the site (gate, descriptors,
 * TSS.SS0) checked again on every execution.  This guest runs ONE
 * `int $0x80` site (int80_site in user_loop, called from ring 3 and from
 * ring 0) and ONE handler `iret` site (iret_site) 1000 times per run, and
 * changes what they depend on between runs and, from inside the handler,
 * at call 500 of a run (no monitor exit needed in between): gate type,
 * offset, DPL, present bit, IDT limit, the gate's code descriptor (alias,
 * not present, DPL 3), TSS.ESP0, TSS.SS0, CR4.TSD, CR0.TS, the EFLAGS the
 * iret pops (TF, NT, IOPL, IF, AC, ID, RF, DF, reserved bits), junk in the
 * upper halves of the popped CS/SS, a data segment the return to ring 3
 * must null, a nested int, the kernel stack on a page of translated code,
 * the int's vector byte (self-modifying code), LIDT, LGDT, LTR, a task
 * gate, a call to another task, descriptors in the LDT and LLDT; with
 * paging: the kernel stack page not present (#DF through a task gate),
 * remapped, its A/D bits, U/S, R/W with CR0.WP, the IDT's, GDT's and TSS's
 * pages remapped, a gate straddling two pages mapped to swapped frames and
 * rewritten through the other mapping, frames wrapping around the top of
 * the linear address space; last, #DE and #GP(0) sites with their gates
 * and TSS.ESP0 changed.
 *
 * The handler (hcommon, in C h_c) checks every frame it gets against the
 * SDM (vol. 3 "Interrupt and Exception Handling", INT n, IRET): the pushed
 * EIP, CS, EFLAGS, ESP and SS, the frame address (TSS.ESP0 - 20 from ring
 * 3, ESP - 12 from ring 0), the EFLAGS it runs with (TF, NT, RF, VM
 * cleared, IF cleared by an interrupt gate only) and, now and then, its CS
 * and SS; the loop checks ESP, EAX (the handler's result) and, in slow
 * mode, EFLAGS and FS after each iret.  In fast mode nothing between the
 * handler's iret and the next int needs the monitor, so the EFLAGS at the
 * int are known in advance; slow mode loads and reads them with popf and
 * pushf, which nestmon carries out in the monitor at CPL 3.
 *
 * Not checked (QEMU, the oracle, differs from the SDM): VIF and VIP popped
 * by an iret at CPL 0 (SDM: loaded; QEMU 7.2: not), a handler EIP beyond
 * the gate's code segment limit (SDM: #GP(0); QEMU: not checked), RF in
 * the EFLAGS a fault pushes.
 *
 * One line per check: "name: ok" or "name: FAILED what: got X, want Y". */
#include "pm.h"

#define N 1000
#define HALF 500

#define SEL_KCODE2 0x48 /* flat ring-0 code (alias of SEL_KCODE); made not present / DPL 3 */
#define SEL_KDATA2 0x50 /* flat ring-0 data (alias of SEL_KDATA) */
#define SEL_TSS2 0x58   /* a second TSS (LTR) */
#define SEL_TSSB 0x60   /* task B's TSS (call to a TSS) */
#define SEL_LDT2 0x68   /* a second LDT */
#define LSEL_KCODE LDT_SEL(1, 0) /* in the LDTs: flat ring-0 code */
#define LSEL_UCODE LDT_SEL(2, 3) /*               flat ring-3 code */

#define VEC 0x80
#define VEC_ALT_BACK 0x82 /* DPL 3: back to ring 0 in alt_loop */
#define VEC_TASKB_BACK 0x83
#define VEC_NESTED 0x85 /* DPL 0: nested int inside the handler */
#define VEC_PATCHED 0x86 /* the int's vector byte patched to this */

#define EFL_VM 0x20000
#define EFL_VIF 0x80000
#define EFL_VIP 0x100000
#define EFL_ID 0x200000
#define GP_ERR_VEC (VEC * 8 + 2) /* IDT bit set, EXT clear */

/* ---- state shared with the assembly ---- */
uint32_t u_n, u_flags, u_at_flags, u_at_esp, u_after_flags, u_done;
uint32_t u_bad, u_bad_what, u_bad_got, u_bad_want, u_bad_iter, u_chk_fs, u_fast, u_tgt;
uint32_t h_ret_flags, h_ret_fs;
uint32_t h85_calls, h85_esp;
uint32_t alt_esp, alt_count;

/* the handler's frame, as hcommon leaves it */
struct hf {
    uint32_t edi, esi, ebp, espk, ebx, edx, ecx, eax;
    uint32_t efl_in; /* EFLAGS at the handler's first instruction */
    uint32_t which;  /* 0: h80, 1: h80b */
    uint32_t eip, cs, efl, esp, ss;
};

static struct {
    uint32_t calls, which[2], bad, bad_call, bad_got, bad_want, tf_set;
    const char *bad_what;
} h;
/* what the handler expects */
static uint32_t ex_which, ex_intgate, ex_esp0, ex_hcs, ex_hss3, ex_hcpl, ex_read_segs, ex_ucs;
/* fast mode: EFLAGS at the int from ring 3 and from ring 0 */
static uint32_t ex_fast3, ex_fast0;
/* what the handler does: at call act_at, act(); the rest on every call */
static uint32_t act_at, h_tf_every, h_toggle, h_junk, h_fs_every, h_nested, h_smc;
static void (*act)(void);
static uint32_t smc_val;
static struct {
    uint32_t n, bad, bad_got, bad_want;
    const char *bad_what;
} db;

extern char int80_site[], int80_ret[], rdtsc_site[], fnop_site[];
extern char h80[], h80b[], h85[], alt_back[], task_b_entry[], task_b_back[], iret_site[];
extern char smc_page[], smc_page_end[];
extern uint32_t smc_fn(void);
uint8_t kstack1[4096] __attribute__((aligned(4096)));
uint8_t kstack2[4096] __attribute__((aligned(4096)));
uint8_t kstack_b[4096] __attribute__((aligned(4096)));
uint8_t tstack_b[4096] __attribute__((aligned(4096)));
uint8_t ustack_b[4096] __attribute__((aligned(4096)));
struct pm_tss tss2, tss_b;
uint64_t gdt2[PM_GDT_ENTRIES] __attribute__((aligned(8)));
uint64_t ldt2[PM_LDT_ENTRIES] __attribute__((aligned(8)));

/* ring 3 or ring 0: u_n times { [slow: popf u_flags, pushf]; int $0x80;
 * mov; rdtsc; fnop; [slow: pushf, check EFLAGS and FS]; check ESP and
 * the handler's result }.  In fast mode (u_fast) nothing between the
 * handler's iret and the next int needs the monitor (pushf/popf at ring 3
 * do), and the EFLAGS at the int are those of "cmpl $0, u_fast" (all
 * arithmetic flags clear) with the rest left by the last iret. */
__asm__(".text\n"
        ".globl user_loop, int80_site, int80_ret, rdtsc_site, fnop_site\n"
        "user_loop:\n\t"
        "movl $6f, u_tgt\n\t"
        "cmpl $0, u_fast\n\t"
        "je 7f\n\t"
        "movl $5f, u_tgt\n"
        "7:\tmovl u_n, %ecx\n\t"
        "testl %ecx, %ecx\n\t"
        "jz 9f\n"
        "1:\tcmpl $0, u_fast\n\t"
        "jne 3f\n\t"
        "pushl u_flags\n\t"
        "popfl\n\t"
        "pushfl\n\t"
        "popl u_at_flags\n"
        "3:\tmovl %ecx, %eax\n\t"
        "movl %esp, u_at_esp\n"
        "int80_site:\n\t"
        "int $0x80\n"
        "int80_ret:\n\t"
        "movl %eax, %esi\n" /* a TF popped by the iret traps after this */
        "rdtsc_site:\n\t"
        "rdtsc\n"
        "fnop_site:\n\t"
        "fnop\n\t"
        "jmp *u_tgt\n" /* leaves EFLAGS alone */
        "6:\tpushfl\n\t"
        "popl u_after_flags\n\t"
        "movl u_after_flags, %edx\n\t"
        "cmpl h_ret_flags, %edx\n\t"
        "jne 13f\n\t"
        "cmpl $0, u_chk_fs\n\t"
        "je 5f\n\t"
        "movw %fs, %dx\n\t"
        "movzwl %dx, %edx\n\t"
        "cmpl h_ret_fs, %edx\n\t"
        "jne 14f\n\t"
        "movw $" PM_STR(SEL_UDATA) ", %dx\n\t"
        "movw %dx, %fs\n"
        "5:\tcmpl u_at_esp, %esp\n\t"
        "jne 11f\n\t"
        "movl %ecx, %edx\n\t"
        "xorl $0x5a5a5a5a, %edx\n\t"
        "cmpl %edx, %esi\n\t"
        "jne 12f\n\t"
        "incl u_done\n\t"
        "decl %ecx\n\t"
        "jnz 1b\n"
        "9:\tpushfl\n\t"
        "andl $~0x4000, (%esp)\n\t"
        "popfl\n\t"
        "ret\n"
        "11:\tmovl $1, u_bad_what\n\tmovl %esp, u_bad_got\n\tmovl u_at_esp, %edx\n\t"
        "movl %edx, u_bad_want\n\tjmp 19f\n"
        "12:\tmovl $2, u_bad_what\n\tmovl %esi, u_bad_got\n\tmovl %edx, u_bad_want\n\tjmp 19f\n"
        "13:\tmovl $3, u_bad_what\n\tmovl %edx, u_bad_got\n\tmovl h_ret_flags, %edx\n\t"
        "movl %edx, u_bad_want\n\tjmp 19f\n"
        "14:\tmovl $4, u_bad_what\n\tmovl %edx, u_bad_got\n\tmovl h_ret_fs, %edx\n\t"
        "movl %edx, u_bad_want\n"
        "19:\tincl u_bad\n\tmovl %ecx, u_bad_iter\n\tmovl u_at_esp, %esp\n\tjmp 9b\n"

        /* the handlers: h80 and h80b share hcommon and its iret */
        ".balign 16\n"
        ".globl h80, h80b, iret_site, h85\n"
        "h80:\tpushl $0\n\tjmp hcommon\n"
        "h80b:\tpushl $1\n\tjmp hcommon\n"
        "hcommon:\n\t"
        "pushfl\n\t"
        "pushal\n\t"
        "cld\n\t"
        "pushl %esp\n\t"
        "call h_c\n\t"
        "addl $4, %esp\n\t"
        "popal\n\t"
        "leal 8(%esp), %esp\n"
        "iret_site:\n\t"
        "iretl\n"
        "h85:\tmovl %esp, h85_esp\n\tincl h85_calls\n\tiretl\n"

        /* ring 0: alt_count times { user_loop at ring 0; iret to ring 3;
         * user_loop at ring 3; int $0x82 back to ring 0 } (u_n = 1) */
        ".globl alt_loop, alt_back\n"
        "alt_loop:\n\t"
        "movl %esp, alt_esp\n"
        "1:\tmovl $1, u_n\n\t"
        "call user_loop\n\t"
        "movl $" PM_STR(SEL_UDATA) ", %eax\n\t"
        "movw %ax, %ds\n\tmovw %ax, %es\n\tmovw %ax, %fs\n\tmovw %ax, %gs\n\t"
        "pushl $" PM_STR(SEL_UDATA) "\n\tpushl $pm_ustack_top\n\tpushl pm_user_eflags\n\t"
        "pushl $" PM_STR(SEL_UCODE) "\n\tpushl $2f\n\t"
        "iretl\n"
        "2:\tcall user_loop\n\t"
        "int $0x82\n"
        "alt_back:\n\t"
        "movl alt_esp, %esp\n\t"
        "decl alt_count\n\t"
        "jnz 1b\n\t"
        "ret\n"

        /* task B (entered by a call to its TSS, NT=1): user_loop at ring 3
         * on B's TSS.ESP0, then int $0x83 and iret (NT=1) back */
        ".globl task_b_entry, task_b_back\n"
        "task_b_entry:\n\t"
        "clts\n\t" /* set by the task switch: user_loop has an fnop */
        "pushfl\n\tandl $~0x4000, (%esp)\n\tpopfl\n\t"
        "movl $" PM_STR(SEL_UDATA) ", %eax\n\t"
        "movw %ax, %ds\n\tmovw %ax, %es\n\tmovw %ax, %fs\n\tmovw %ax, %gs\n\t"
        "pushl $" PM_STR(SEL_UDATA) "\n\tpushl $ustack_b+4096\n\tpushl $0x202\n\t"
        "pushl $" PM_STR(SEL_UCODE) "\n\tpushl $1f\n\t"
        "iretl\n"
        "1:\tcall user_loop\n\t"
        "int $0x83\n"
        "task_b_back:\n\t"
        "movl $tstack_b+4096, %esp\n\t"
        "movl $" PM_STR(SEL_KDATA) ", %eax\n\t"
        "movw %ax, %ds\n\tmovw %ax, %es\n\tmovw %ax, %fs\n\tmovw %ax, %gs\n\t"
        "pushfl\n\torl $0x4000, (%esp)\n\tpopfl\n\t"
        "iretl\n\t"
        "jmp task_b_entry\n"

        /* u_n times a faulting instruction: divl by 0 (#DE) or hlt at
         * ring 3 (#GP(0)); the handler resumes after it */
        ".globl de_loop, de_site, gp_loop, gp_site, hx_de, hx_de2, hx_gp, hx_gp2\n"
        "de_loop:\n\t"
        "movl u_n, %ecx\n"
        "1:\tmovl %ecx, %eax\n\t"
        "movl %esp, u_at_esp\n\t"
        "movl $0, %edx\n\t"
        "movl $0, %ebx\n\t"
        "cmpl %eax, %eax\n" /* ZF PF, the rest clear */
        "de_site:\n\t"
        "divl %ebx\n\t"
        "cmpl u_at_esp, %esp\n\t"
        "jne 21f\n\t"
        "cmpl %ecx, %eax\n\t" /* a fault: EAX untouched */
        "jne 22f\n\t"
        "incl u_done\n\t"
        "decl %ecx\n\t"
        "jnz 1b\n\t"
        "ret\n"
        "22:\tmovl $2, u_bad_what\n\tmovl %eax, u_bad_got\n\tmovl %ecx, u_bad_want\n\tjmp 29f\n"
        "21:\tmovl $1, u_bad_what\n\tmovl %esp, u_bad_got\n\tmovl u_at_esp, %edx\n\t"
        "movl %edx, u_bad_want\n"
        "29:\tincl u_bad\n\tmovl %ecx, u_bad_iter\n\tmovl u_at_esp, %esp\n\tret\n"
        "gp_loop:\n\t"
        "movl u_n, %ecx\n"
        "1:\tmovl %esp, u_at_esp\n\t"
        "cmpl %eax, %eax\n"
        "gp_site:\n\t"
        "hlt\n\t"
        "cmpl u_at_esp, %esp\n\t"
        "jne 21f\n\t"
        "incl u_done\n\t"
        "decl %ecx\n\t"
        "jnz 1b\n\t"
        "ret\n"
        "21:\tmovl $1, u_bad_what\n\tmovl %esp, u_bad_got\n\tmovl u_at_esp, %edx\n\t"
        "movl %edx, u_bad_want\n\tincl u_bad\n\tmovl %ecx, u_bad_iter\n\t"
        "movl u_at_esp, %esp\n\tret\n"
        ".balign 16\n"
        "hx_de:\tpushl $0\n\tpushl $0\n\tjmp hxcommon\n"
        "hx_de2:\tpushl $0\n\tpushl $1\n\tjmp hxcommon\n"
        "hx_gp:\tpushl $0\n\tjmp hxcommon\n" /* the CPU pushed an error code */
        "hx_gp2:\tpushl $1\n\tjmp hxcommon\n"
        "hxcommon:\n\t"
        "pushfl\n\t"
        "pushal\n\t"
        "cld\n\t"
        "pushl %esp\n\t"
        "call x_c\n\t"
        "addl $4, %esp\n\t"
        "popal\n\t"
        "leal 12(%esp), %esp\n\t"
        "iretl\n"

        /* a page of code whose rest is a kernel stack */
        ".balign 4096\n"
        ".globl smc_page, smc_fn, smc_page_end\n"
        "smc_page:\n"
        "smc_fn:\tmovl $1, %eax\n\tret\n"
        ".balign 4096, 0\n"
        "smc_page_end:\n");

static void hbad(const char *what, uint32_t got, uint32_t want)
{
    if (!h.bad++) {
        h.bad_what = what;
        h.bad_call = h.calls;
        h.bad_got = got;
        h.bad_want = want;
    }
}

static inline uint16_t rd_cs(void)
{
    uint16_t v;
    __asm__ __volatile__("movw %%cs, %0" : "=r"(v));
    return v;
}
static inline uint16_t rd_ss(void)
{
    uint16_t v;
    __asm__ __volatile__("movw %%ss, %0" : "=r"(v));
    return v;
}

void h_c(struct hf *f)
{
    uint32_t k = ++h.calls, ring = f->cs & 3, frame = (uint32_t)&f->eip, want, out;
    uint32_t at = !u_fast ? u_at_flags : ring == 3 ? ex_fast3 : ex_fast0;

    h.which[f->which & 1]++;
    if (f->which != ex_which)
        hbad("handler that ran", f->which, ex_which);
    if (f->eip != (uint32_t)int80_ret)
        hbad("pushed EIP", f->eip, (uint32_t)int80_ret);
    if (f->efl != at)
        hbad("pushed EFLAGS", f->efl, at);
    if (f->eax != f->ecx)
        hbad("EAX in the handler", f->eax, f->ecx);
    want = at & ~(EFL_TF | EFL_NT | EFL_RF | EFL_VM) & ~(ex_intgate ? EFL_IF : 0);
    if (f->efl_in != want)
        hbad("EFLAGS in the handler", f->efl_in, want);
    if (ex_hcpl == 3) { /* a handler at ring 3: no stack switch */
        if ((f->cs & 0xffff) != ex_ucs)
            hbad("pushed CS", f->cs & 0xffff, ex_ucs);
        if (frame != u_at_esp - 12)
            hbad("frame address (ESP - 12)", frame, u_at_esp - 12);
    } else if (ring == 3) {
        if ((f->cs & 0xffff) != ex_ucs)
            hbad("pushed CS", f->cs & 0xffff, ex_ucs);
        if (frame != ex_esp0 - 20)
            hbad("frame address (TSS.ESP0 - 20)", frame, ex_esp0 - 20);
        if (f->esp != u_at_esp)
            hbad("pushed ESP", f->esp, u_at_esp);
        if ((f->ss & 0xffff) != SEL_UDATA)
            hbad("pushed SS", f->ss & 0xffff, SEL_UDATA);
    } else {
        if ((f->cs & 0xffff) != SEL_KCODE)
            hbad("pushed CS", f->cs & 0xffff, SEL_KCODE);
        if (frame != u_at_esp - 12)
            hbad("frame address (ESP - 12)", frame, u_at_esp - 12);
    }
    if (ex_read_segs || k == 1 || (k & 63) == 0) {
        uint32_t cs = rd_cs(), ss = rd_ss();
        uint32_t want_ss = ex_hcpl == 3 ? SEL_UDATA : ring == 3 ? ex_hss3 : SEL_KDATA;
        if (cs != ex_hcs)
            hbad("CS in the handler", cs, ex_hcs);
        if (ss != want_ss)
            hbad("SS in the handler", ss, want_ss);
    }
    if (h_nested) {
        uint32_t esp;
        __asm__ __volatile__("movl %%esp, %0\n\tint $" PM_STR(VEC_NESTED) : "=&r"(esp) : : "memory");
        if (h85_esp != esp - 12)
            hbad("nested frame address (ESP - 12)", h85_esp, esp - 12);
        if (h85_calls != k)
            hbad("nested handler calls", h85_calls, k);
    }
    if (h_smc) {
        uint32_t v = smc_fn();
        if (v != smc_val)
            hbad("smc_fn() on the kernel stack's page", v, smc_val);
        if (k % 100 == 0) {
            smc_val = 0x1000 + k;
            *(volatile uint32_t *)(smc_page + 1) = smc_val; /* movl $imm32, %eax */
        }
    }

    /* the return */
    f->eax ^= 0x5a5a5a5a;
    out = f->efl;
    if (h_toggle)
        out = (k & 1) ? out | h_toggle : out & ~h_toggle;
    if (h_tf_every && k % h_tf_every == 0) {
        out |= EFL_TF;
        h.tf_set++;
    }
    f->efl = out;
    if (h_junk && (k & 1)) {
        f->cs |= 0xa5a50000;
        if (ring == 3)
            f->ss |= 0x5a5a0000;
    }
    /* EFLAGS as the slow loop's pushf shows them after the iret: at CPL
     * 0 it loads CF PF AF ZF SF TF IF DF OF IOPL NT RF AC VIF VIP ID
     * (pushf clears RF; a TF is gone, cleared by the #DB hook); at CPL 3
     * (> IOPL) IF, IOPL, VIF and VIP stay as they are */
    if (ex_hcpl == 0)
        h_ret_flags = (out & 0x003c7ed5) | 2;
    else
        h_ret_flags = (out & 0x00244cd5) | (f->efl_in & (EFL_IF | EFL_IOPL(3) | EFL_VIF | EFL_VIP)) | 2;
    if (h_fs_every) {
        if (k % h_fs_every == 0) {
            __asm__ __volatile__("movw %w0, %%fs" : : "r"(SEL_KDATA));
            h_ret_fs = ring == 3 ? 0 : SEL_KDATA; /* iret to ring 3 nulls it */
        } else {
            h_ret_fs = SEL_UDATA;
        }
    }
    if (act && k == act_at)
        act();
}

/* the exception handlers' frame */
struct xf {
    uint32_t edi, esi, ebp, espk, ebx, edx, ecx, eax;
    uint32_t efl_in, which, err;
    uint32_t eip, cs, efl, esp, ss;
};
extern char de_site[], gp_site[], hx_de[], hx_de2[], hx_gp[], hx_gp2[];
static uint32_t ex_xsite, ex_xlen;

void x_c(struct xf *f)
{
    uint32_t k = ++h.calls, frame = (uint32_t)&f->err;
    h.which[f->which & 1]++;
    if (f->which != ex_which)
        hbad("handler that ran", f->which, ex_which);
    if (f->eip != ex_xsite)
        hbad("pushed EIP (the faulting instruction)", f->eip, ex_xsite);
    if ((f->cs & 0xffff) != SEL_UCODE)
        hbad("pushed CS", f->cs & 0xffff, SEL_UCODE);
    if ((f->ss & 0xffff) != SEL_UDATA)
        hbad("pushed SS", f->ss & 0xffff, SEL_UDATA);
    if (f->esp != u_at_esp)
        hbad("pushed ESP", f->esp, u_at_esp);
    if (frame != ex_esp0 - 24)
        hbad("frame address (TSS.ESP0 - 24, with the error code)", frame, ex_esp0 - 24);
    /* RF not compared: whether a fault's pushed EFLAGS has RF set is
     * left out (QEMU pushes RF=0) */
    if ((f->efl & ~EFL_RF) != 0x246)
        hbad("pushed EFLAGS (IF ZF PF)", f->efl, 0x246);
    if (f->efl_in != 0x46)
        hbad("EFLAGS in the handler", f->efl_in, 0x46);
    if (f->err != 0)
        hbad("error code", f->err, 0);
    f->eip += ex_xlen;
    if (act && k == act_at)
        act();
}

static int db_hook(struct pm_frame *f)
{
    uint32_t dr6 = pm_nlog ? pm_log[pm_nlog - 1].dr6 : 0;
    db.n++;
    pm_nlog = 0;
    if (!db.bad) {
        if (f->eip != (uint32_t)int80_ret + 2) {
            db.bad_what = "#DB EIP (int80_ret + 2)", db.bad_got = f->eip, db.bad_want = (uint32_t)int80_ret + 2;
            db.bad = 1;
        } else if (!(dr6 & 0x4000)) {
            db.bad_what = "#DB DR6.BS", db.bad_got = dr6, db.bad_want = dr6 | 0x4000;
            db.bad = 1;
        } else if (!(f->eflags & EFL_TF)) {
            db.bad_what = "#DB pushed EFLAGS.TF", db.bad_got = f->eflags, db.bad_want = f->eflags | EFL_TF;
            db.bad = 1;
        }
    }
    f->eflags &= ~EFL_TF;
    return PM_RESUME;
}

/* ---- one line per check ---- */
static const char *ck_name, *ck_what;
static uint32_t ck_got, ck_want, ck_call;
static const char *ck_call_kind;
static int ck_failed;

static void ck_begin(const char *name)
{
    ck_name = name;
    ck_failed = 0;
}
static void ck_at(const char *what, uint32_t got, uint32_t want, const char *kind, uint32_t call)
{
    if (got != want && !ck_failed) {
        ck_failed = 1;
        ck_what = what;
        ck_got = got;
        ck_want = want;
        ck_call_kind = kind;
        ck_call = call;
    }
}
static void ck(const char *what, uint32_t got, uint32_t want) { ck_at(what, got, want, NULL, 0); }
static void ck_end(void)
{
    rt_checks++;
    if (!ck_failed) {
        rt_printf("%s: ok\n", ck_name);
        return;
    }
    rt_failures++;
    rt_printf("%s: FAILED ", ck_name);
    if (ck_call_kind)
        rt_printf("(%s %u) ", ck_call_kind, ck_call);
    rt_printf("%s: got %08x, want %08x\n", ck_what, ck_got, ck_want);
}

static const char *const u_bad_names[] = {
    "?", "ESP after the return", "EAX after the return", "EFLAGS after the iret", "FS after the iret",
};

/* exception (vec, err, at eip; eip 0: not compared), handler calls,
 * completed iterations, and everything the handler, the loop and the #DB
 * hook found */
static void ck_std(int vec, int err, uint32_t eip, uint32_t calls, uint32_t done)
{
    ck("exception vector (ffffffff: none)", (uint32_t)pm_last.vector, (uint32_t)vec);
    if (vec != PM_NONE && pm_last.vector == vec) {
        ck("error code (ffffffff: none)", pm_last.has_err ? pm_last.err : 0xffffffff, (uint32_t)err);
        if (eip)
            ck("exception EIP", pm_last.eip, eip);
    }
    if (h.bad)
        ck_at(h.bad_what, h.bad_got, h.bad_want, "handler call", h.bad_call);
    if (u_bad) /* u_bad_iter: ECX, counting down from u_n */
        ck_at(u_bad_names[u_bad_what <= 4 ? u_bad_what : 0], u_bad_got, u_bad_want, "iteration",
              u_n - u_bad_iter + 1);
    if (db.bad)
        ck(db.bad_what, db.bad_got, db.bad_want);
    ck("handler calls", h.calls, calls);
    ck("iterations completed", u_done, done);
    ck("#DB traps (one per iret that popped TF)", db.n, h.tf_set);
}

/* ---- setup ---- */
static void gate80(const char *handler, uint16_t sel, unsigned type, unsigned dpl, int present)
{
    pm_idt_set(VEC, pm_gate_desc(sel, (uint32_t)handler, (present ? ACC_P : 0) | DPL(dpl) | type, 0));
}
static void gate80_default(void) { gate80(h80, SEL_KCODE, SYS_INTGATE32, 3, 1); }

static void set_esp0(uint32_t v)
{
    pm_tss.t.esp0 = v;
    ex_esp0 = v;
}

static void reset(void)
{
    memset(&h, 0, sizeof(h));
    memset(&db, 0, sizeof(db));
    u_n = N;
    u_flags = 0x8d7; /* CF PF AF ZF SF OF */
    u_at_flags = u_at_esp = u_after_flags = u_done = 0;
    u_bad = u_bad_what = u_bad_got = u_bad_want = u_bad_iter = u_chk_fs = 0;
    u_fast = 1;
    ex_fast3 = 0x202; /* IF from pm_user_eflags, arithmetic flags clear */
    ex_fast0 = 0x2;
    h_ret_flags = h_ret_fs = 0;
    h85_calls = h85_esp = 0;
    ex_which = 0;
    ex_intgate = 1;
    ex_esp0 = pm_tss.t.esp0;
    ex_hcs = SEL_KCODE;
    ex_ucs = SEL_UCODE;
    ex_hss3 = SEL_KDATA;
    ex_hcpl = 0;
    ex_read_segs = 0;
    act = NULL;
    act_at = 0;
    h_tf_every = h_toggle = h_junk = h_fs_every = h_nested = h_smc = 0;
    pm_user_eflags = 0x202; /* IF=1 at ring 3 (the PICs are masked) */
}

static void user_run(void) { PM_USER_TRY("call user_loop"); }
static void kernel_run(void) { PM_TRY("call user_loop"); }

/* the usual run from ring 3: n calls, n iterations, no exception */
static void user_ok(const char *name)
{
    reset();
    user_run();
    ck_begin(name);
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
}

static void lgdt_of(const uint64_t *gdt)
{
    struct {
        uint16_t pad, limit;
        uint32_t base;
    } __attribute__((packed, aligned(4))) d = { 0, PM_GDT_ENTRIES * 8 - 1, (uint32_t)gdt };
    __asm__ __volatile__("lgdt %0" : : "m"(d.limit) : "memory");
}
static void lidt_of(uint32_t base, uint16_t limit)
{
    struct {
        uint16_t pad, limit;
        uint32_t base;
    } __attribute__((packed, aligned(4))) d = { 0, limit, base };
    __asm__ __volatile__("lidt %0" : : "m"(d.limit) : "memory");
}
static void set_tss_available(uint16_t sel) { pm_gdt[sel >> 3] &= ~(2ull << 40); }

/* ---- actions the handler takes at call act_at ---- */
static void act_trap_to_int(void)
{
    gate80(h80, SEL_KCODE, SYS_INTGATE32, 3, 1);
    ex_intgate = 1;
}
static void act_gate_b(void)
{
    gate80(h80b, SEL_KCODE, SYS_INTGATE32, 3, 1);
    ex_which = 1;
}
static void act_esp0_2(void) { set_esp0((uint32_t)kstack2 + 4096); }
static void act_dpl0(void) { gate80(h80, SEL_KCODE, SYS_INTGATE32, 0, 1); }
static void act_np(void) { gate80(h80, SEL_KCODE, SYS_INTGATE32, 3, 0); }
static void act_lidt_short(void) { lidt_of((uint32_t)pm_idt, VEC * 8 - 1); }
static void act_cs_alias(void)
{
    gate80(h80, SEL_KCODE2, SYS_INTGATE32, 3, 1);
    ex_hcs = SEL_KCODE2;
}
static void act_cs_np(void) { pm_gdt[SEL_KCODE2 >> 3] &= ~(1ull << 47); }
static void act_lgdt2(void) { lgdt_of(gdt2); }
static void act_cs_dpl3(void)
{
    pm_gdt_set(SEL_KCODE2, pm_seg_desc(0, 0xfffff, ACC_CODE_XR | ACC_ACCESSED | DPL(3), FL_G | FL_DB));
    ex_hcpl = 3;
    ex_hcs = SEL_KCODE2 | 3;
}
static void act_ss0_alias(void)
{
    pm_tss.t.ss0 = SEL_KDATA2;
    ex_hss3 = SEL_KDATA2;
}
static void act_ss0_rpl3(void) { pm_tss.t.ss0 = SEL_UDATA; }
static void act_ltr2(void)
{
    __asm__ __volatile__("ltr %w0" : : "r"(SEL_TSS2));
    ex_esp0 = tss2.esp0;
}
static void act_patch_vector(void)
{
    *(volatile uint8_t *)(int80_site + 1) = VEC_PATCHED;
    ex_which = 1;
}
static void act_task_gate(void)
{
    pm_use_task_gate(VEC);
    pm_idt_set(VEC, pm_gate_desc(SEL_FTSS, 0, ACC_P | DPL(3) | SYS_TASKGATE, 0));
}
static void act_de_gate_b(void)
{
    pm_idt_set(PM_DE, pm_gate_desc(SEL_KCODE, (uint32_t)hx_de2, ACC_P | SYS_INTGATE32, 0));
    ex_which = 1;
}
static void act_gp_gate_b(void)
{
    pm_idt_set(PM_GP, pm_gate_desc(SEL_KCODE, (uint32_t)hx_gp2, ACC_P | SYS_INTGATE32, 0));
    ex_which = 1;
}
static void act_lldt2(void) { __asm__ __volatile__("lldt %w0" : : "r"(SEL_LDT2)); }
static void act_tsd(void) { wr_cr4(rd_cr4() | 4); }
static void act_ts(void) { wr_cr0(rd_cr0() | 8); }

/* ---- fresh translations ----
 * nestmon keeps a translated INT or IRET only as long as GDTR, IDTR and TR
 * stay as they were when it was translated; after a change it hands every
 * execution of that translation to the monitor (correct, but no longer
 * the inline path) until the site is translated again.  CR3 is part of
 * what a translation is made for, so each group of checks after a
 * descriptor-table or TR change starts under a CR3 value not used before
 * (with paging off the value means nothing to the CPU; with paging on it
 * is a fresh copy of the page directory). */
#define NPDS 8
uint32_t pds[NPDS][1024] __attribute__((aligned(4096)));
static uint32_t epochs, pds_used;
static int paging_is_on;

static uint32_t fresh_cr3(void)
{
    epochs++;
    if (!paging_is_on)
        return 0x01000000u + (epochs << 12); /* paging is off: never walked */
    if (pds_used >= NPDS) {
        rt_puts("FATAL: out of page directories\n");
        rt_exit(1);
    }
    memcpy(pds[pds_used], pm_pd, sizeof(pm_pd));
    return (uint32_t)pds[pds_used++];
}
static void epoch(void)
{
    wr_cr3(fresh_cr3());
    pm_sync_cr3();
}
/* a PDE in pm_pd and in the current copy */
static void set_pde(int i, uint32_t v)
{
    uint32_t *cur = (uint32_t *)rd_cr3();
    pm_pd[i] = v;
    cur[i] = v;
    wr_cr3(rd_cr3());
}

/* ---- the checks ---- */
static void basics(void)
{
    rt_puts("-- int $0x80 from ring 3 through a DPL 3 gate (SDM vol. 3 6.12.1, INT n)\n");
    reset();
    u_fast = 0;
    u_flags = 0xcd7; /* + DF */
    user_run();
    ck_begin("interrupt gate, 1000 calls: frame on TSS.ESP0, IF cleared inside");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("EFLAGS at the int (IF from ring 3)", u_at_flags, 0xed7);
    ck_end();
    user_ok("the same, EFLAGS left by the iret");

    gate80(h80, SEL_KCODE, SYS_TRAPGATE32, 3, 1);
    reset();
    ex_intgate = 0;
    user_run();
    ck_begin("same site, trap gate (set between runs): IF set inside");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();

    reset();
    ex_intgate = 0;
    act = act_trap_to_int;
    act_at = HALF;
    user_run();
    ck_begin("trap gate made an interrupt gate by the handler at call 500");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();

    gate80_default();
    reset();
    pm_user_eflags = 0x2;
    ex_fast3 = 0x2;
    user_run();
    ck_begin("IF=0 at ring 3: pushed IF=0");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();

    rt_puts("-- the gate rewritten\n");
    gate80(h80b, SEL_KCODE, SYS_INTGATE32, 3, 1);
    reset();
    ex_which = 1;
    user_run();
    ck_begin("gate offset -> second handler (between runs)");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("calls of the second handler", h.which[1], N);
    ck_end();
    gate80_default();
    reset();
    act = act_gate_b;
    act_at = HALF;
    user_run();
    ck_begin("gate offset -> second handler (by the handler at call 500)");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("calls of the first handler", h.which[0], HALF);
    ck("calls of the second handler", h.which[1], N - HALF);
    ck_end();
    gate80_default();
    user_ok("gate back to the first handler");

    gate80(h80, SEL_KCODE, SYS_INTGATE32, 0, 1);
    reset();
    user_run();
    ck_begin("gate DPL 0 (between runs): #GP(0402)");
    ck_std(PM_GP, GP_ERR_VEC, (uint32_t)int80_site, 0, 0);
    ck_end();
    gate80_default();
    reset();
    act = act_dpl0;
    act_at = HALF;
    user_run();
    ck_begin("gate DPL 0 (by the handler at call 500): #GP(0402) at call 501");
    ck_std(PM_GP, GP_ERR_VEC, (uint32_t)int80_site, HALF, HALF);
    ck_end();
    gate80_default();
    user_ok("gate DPL 3 again");

    gate80(h80, SEL_KCODE, SYS_INTGATE32, 3, 0);
    reset();
    user_run();
    ck_begin("gate not present (between runs): #NP(0402)");
    ck_std(PM_NP, GP_ERR_VEC, (uint32_t)int80_site, 0, 0);
    ck_end();
    gate80_default();
    reset();
    act = act_np;
    act_at = HALF;
    user_run();
    ck_begin("gate not present (by the handler at call 500): #NP(0402) at call 501");
    ck_std(PM_NP, GP_ERR_VEC, (uint32_t)int80_site, HALF, HALF);
    ck_end();
    gate80_default();
    user_ok("gate present again");
}

static void control_regs(void)
{
    rt_puts("-- CR4.TSD and CR0.TS after the sites were translated (SDM: RDTSC, FNOP/#NM)\n");
    wr_cr4(rd_cr4() | 4);
    reset();
    user_run();
    wr_cr4(rd_cr4() & ~4u);
    ck_begin("CR4.TSD set between runs: rdtsc at ring 3 after the first return: #GP(0000)");
    ck_std(PM_GP, 0, (uint32_t)rdtsc_site, 1, 0);
    ck_end();
    user_ok("CR4.TSD clear again");
    reset();
    act = act_tsd;
    act_at = HALF;
    user_run();
    wr_cr4(rd_cr4() & ~4u);
    ck_begin("CR4.TSD set by the handler at call 500: rdtsc at ring 3 after that return: #GP(0000)");
    ck_std(PM_GP, 0, (uint32_t)rdtsc_site, HALF, HALF - 1);
    ck_end();
    user_ok("CR4.TSD clear again");

    wr_cr0(rd_cr0() | 8);
    reset();
    user_run();
    __asm__ __volatile__("clts");
    ck_begin("CR0.TS set between runs: fnop at ring 3 after the first return: #NM");
    ck_std(PM_NM, PM_NOERR, (uint32_t)fnop_site, 1, 0);
    ck_end();
    user_ok("CR0.TS clear again");
    reset();
    act = act_ts;
    act_at = HALF;
    user_run();
    __asm__ __volatile__("clts");
    ck_begin("CR0.TS set by the handler at call 500: fnop at ring 3 after that return: #NM");
    ck_std(PM_NM, PM_NOERR, (uint32_t)fnop_site, HALF, HALF - 1);
    ck_end();
    user_ok("CR0.TS clear again");
}

static void stacks(void)
{
    rt_puts("-- TSS.ESP0 and TSS.SS0\n");
    set_esp0((uint32_t)kstack2 + 4096);
    user_ok("TSS.ESP0 changed between runs: frames on the new stack");
    set_esp0((uint32_t)kstack1 + 4096);
    reset();
    act = act_esp0_2;
    act_at = HALF;
    user_run();
    ck_begin("TSS.ESP0 changed by the handler at call 500");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    set_esp0((uint32_t)kstack1 + 4096 - 2);
    user_ok("TSS.ESP0 not a multiple of 4");
    set_esp0((uint32_t)kstack1 + 4096);

    pm_gdt_set(SEL_KDATA2, pm_seg_desc(0, 0xfffff, ACC_DATA_RW | ACC_ACCESSED, FL_G | FL_DB));
    reset();
    act = act_ss0_alias;
    act_at = HALF;
    ex_read_segs = 1;
    user_run();
    ck_begin("TSS.SS0 -> another flat data selector at call 500: handler SS follows");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    pm_tss.t.ss0 = SEL_KDATA;
    user_ok("TSS.SS0 back");
}

static void segments(void)
{
    rt_puts("-- the gate's code segment\n");
    pm_gdt_set(SEL_KCODE2, pm_seg_desc(0, 0xfffff, ACC_CODE_XR | ACC_ACCESSED, FL_G | FL_DB));
    reset();
    act = act_cs_alias;
    act_at = HALF;
    ex_read_segs = 1;
    user_run();
    ck_begin("gate selector -> another flat code selector at call 500: handler CS follows");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    /* not the code segment limit cut below the handler: the SDM has
     * #GP(0), QEMU does not check it */

    reset();
    ex_hcs = SEL_KCODE2;
    act = act_cs_np;
    act_at = HALF;
    user_run();
    ck_begin("gate's code descriptor made not present at call 500: #NP(0048)");
    ck_std(PM_NP, SEL_KCODE2, (uint32_t)int80_site, HALF, HALF);
    ck_end();
    pm_gdt_set(SEL_KCODE2, pm_seg_desc(0, 0xfffff, ACC_CODE_XR | ACC_ACCESSED, FL_G | FL_DB));

    reset();
    u_fast = 0; /* IF at ring 3 changes: an iret at CPL 3 does not restore it */
    ex_hcs = SEL_KCODE2;
    act = act_cs_dpl3;
    act_at = HALF;
    ex_read_segs = 1;
    user_run();
    ck_begin("gate's code descriptor made DPL 3 at call 500: handler at ring 3 on the user stack");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    pm_gdt_set(SEL_KCODE2, pm_seg_desc(0, 0xfffff, ACC_CODE_XR | ACC_ACCESSED, FL_G | FL_DB));
    gate80_default();
    user_ok("gate back to the usual code selector");
}

static void rings(void)
{
    rt_puts("-- from ring 0, nested, both rings through one iret\n");
    reset();
    kernel_run();
    ck_begin("int $0x80 from ring 0: 3-dword frame on the current stack");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();

    pm_idt_set(VEC_NESTED, pm_gate_desc(SEL_KCODE, (uint32_t)h85, ACC_P | SYS_INTGATE32, 0));
    reset();
    h_nested = 1;
    user_run();
    ck_begin("int $0x85 (ring 0 -> ring 0) inside every ring-3 call");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("nested calls", h85_calls, N);
    ck_end();

    pm_idt_set(VEC_ALT_BACK, pm_gate_desc(SEL_KCODE, (uint32_t)alt_back, ACC_P | DPL(3) | SYS_INTGATE32, 0));
    reset();
    alt_count = N;
    PM_TRY("call alt_loop");
    ck_begin("one iret site returning to ring 0 and ring 3 alternately");
    ck_std(PM_NONE, 0, 0, 2 * N, 2 * N);
    ck_end();

    pm_set_hook(PM_DB, db_hook);
    reset();
    alt_count = N;
    h_tf_every = 7;
    PM_TRY("call alt_loop");
    ck_begin("iret popping TF every 7th call (both rings): one #DB after the next instruction");
    ck_std(PM_NONE, 0, 0, 2 * N, 2 * N);
    ck("#DB count", db.n, 2 * N / 7);
    ck_end();
    reset();
    h_tf_every = 5;
    user_run();
    ck_begin("iret popping TF every 5th call (ring 3)");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("#DB count", db.n, N / 5);
    ck_end();
    pm_set_hook(PM_DB, NULL);
}

static void flags(void)
{
    rt_puts("-- EFLAGS pushed and popped (SDM: INT n, IRET, POPF)\n");
    reset();
    u_fast = 0;
    u_flags = 0x2 | EFL_AC | EFL_ID | EFL_NT | 0x8d7;
    user_run();
    ck_begin("AC ID NT set at the int: pushed, AC ID kept and NT cleared inside, all popped");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("EFLAGS at the int", u_at_flags, 0x00244ad7);
    ck_end();

    reset();
    u_fast = 0;
    u_flags = 0x2;
    /* not VIF and VIP: the SDM has IRET at CPL 0 load them, QEMU 7.2
     * does not */
    h_toggle = EFL_IOPL(3) | EFL_IF | EFL_ID | EFL_NT | EFL_AC | EFL_RF | EFL_DF | EFL_CF;
    user_run();
    ck_begin("iret popping IOPL IF ID NT AC RF DF CF (set on odd calls, cleared on even)");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();

    reset();
    u_fast = 0;
    h_toggle = EFL_NT;
    kernel_run();
    ck_begin("iret to ring 0 popping NT on odd calls");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();

    reset();
    u_fast = 0;
    h_toggle = 0xffc08028; /* reserved bits 3, 5, 15, 22-31 */
    user_run();
    ck_begin("iret popping reserved EFLAGS bits: loaded as 0");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();

    reset();
    h_junk = 1;
    user_run();
    ck_begin("iret with junk in the upper halves of the popped CS and SS");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();

    reset();
    u_fast = 0;
    h_fs_every = 3;
    u_chk_fs = 1;
    user_run();
    ck_begin("handler loads FS with a DPL 0 selector every 3rd call: the iret to ring 3 nulls it");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    __asm__ __volatile__("movw %w0, %%fs" : : "r"(SEL_KDATA));
}

static void exceptions(void)
{
    rt_puts("-- #DE and #GP(0) from ring 3, one faulting instruction each (SDM 6.15)\n");
    epoch();
    pm_idt_set(PM_DE, pm_gate_desc(SEL_KCODE, (uint32_t)hx_de, ACC_P | SYS_INTGATE32, 0));
    reset();
    ex_xsite = (uint32_t)de_site;
    ex_xlen = 2;
    PM_USER_TRY("call de_loop");
    ck_begin("divl by 0 at ring 3, 1000 times: #DE, frame on TSS.ESP0, EIP of the div");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    reset();
    ex_xsite = (uint32_t)de_site;
    ex_xlen = 2;
    act = act_esp0_2;
    act_at = HALF;
    PM_USER_TRY("call de_loop");
    ck_begin("divl by 0: TSS.ESP0 changed at call 500");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    set_esp0((uint32_t)kstack1 + 4096);

    pm_idt_set(PM_GP, pm_gate_desc(SEL_KCODE, (uint32_t)hx_gp, ACC_P | SYS_INTGATE32, 0));
    reset();
    ex_xsite = (uint32_t)gp_site;
    ex_xlen = 1;
    PM_USER_TRY("call gp_loop");
    ck_begin("hlt at ring 3, 1000 times: #GP(0000), EIP of the hlt");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    reset();
    ex_xsite = (uint32_t)gp_site;
    ex_xlen = 1;
    act = act_gp_gate_b;
    act_at = HALF;
    PM_USER_TRY("call gp_loop");
    ck_begin("hlt: the #GP gate -> a second handler at call 500");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("calls of the second handler", h.which[1], N - HALF);
    ck_end();
    pm_idt_stub(PM_GP, SYS_INTGATE32, 0);

    /* last, so that a VMM stopping here still reports everything else:
     * the #DE gate changed under a translated division */
    reset();
    ex_xsite = (uint32_t)de_site;
    ex_xlen = 2;
    act = act_de_gate_b;
    act_at = HALF;
    PM_USER_TRY("call de_loop");
    ck_begin("divl by 0: the #DE gate -> a second handler at call 500");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("calls of the second handler", h.which[1], N - HALF);
    ck_end();
    pm_idt_stub(PM_DE, SYS_INTGATE32, 0);
}

static void smc(void)
{
    uint32_t v;
    rt_puts("-- the kernel stack on a page of translated code\n");
    *(volatile uint32_t *)(smc_page + 1) = smc_val = 0x1000;
    v = smc_fn() + smc_fn();
    set_esp0((uint32_t)smc_page_end);
    reset();
    h_smc = 1;
    u_n = N / 2;
    user_run();
    ck_begin("frames and the handler's stack on smc_fn's page; the handler calls and patches smc_fn");
    ck_std(PM_NONE, 0, 0, N / 2, N / 2);
    ck("smc_fn() before", v, 0x2000);
    *(volatile uint32_t *)(smc_page + 1) = 0x77;
    ck("smc_fn() after patching it at ring 0", smc_fn(), 0x77);
    ck_end();
    set_esp0((uint32_t)kstack1 + 4096);
    user_ok("kernel stack back on a data page");

    pm_idt_set(VEC_PATCHED, pm_gate_desc(SEL_KCODE, (uint32_t)h80b, ACC_P | DPL(3) | SYS_INTGATE32, 0));
    reset();
    act = act_patch_vector;
    act_at = HALF;
    user_run();
    *(volatile uint8_t *)(int80_site + 1) = VEC;
    ck_begin("the int's vector byte patched to 0x86 by the handler at call 500: vector 0x86's gate");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("calls through gate 0x86", h.which[1], N - HALF);
    ck_end();
    user_ok("vector byte back to 0x80");
}

static void tables(void)
{
    rt_puts("-- LIDT, LGDT, TSS.SS0 -> #TS through a task gate, LTR, a task switch\n");
    reset();
    act = act_lidt_short;
    act_at = HALF;
    user_run();
    lidt_of((uint32_t)pm_idt, sizeof(pm_idt) - 1);
    ck_begin("IDT limit below the gate (LIDT by the handler at call 500): #GP(0402)");
    ck_std(PM_GP, GP_ERR_VEC, (uint32_t)int80_site, HALF, HALF);
    ck_end();
    user_ok("IDT limit restored");
    epoch();
    user_ok("IDT limit restored, under a new CR3");

    pm_gdt_set(SEL_KCODE2, pm_seg_desc(0, 0xfffff, ACC_CODE_XR | ACC_ACCESSED, FL_G | FL_DB));
    gate80(h80, SEL_KCODE2, SYS_INTGATE32, 3, 1);
    memcpy(gdt2, pm_gdt, sizeof(gdt2));
    gdt2[SEL_KCODE2 >> 3] &= ~(1ull << 47);
    reset();
    ex_hcs = SEL_KCODE2;
    user_run(); /* the site translated with this gate */
    ck_begin("gate selector 0x48 (another flat code descriptor)");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    reset();
    ex_hcs = SEL_KCODE2;
    act = act_lgdt2;
    act_at = HALF;
    user_run();
    lgdt_of(pm_gdt);
    ck_begin("LGDT to a copy where 0x48 is not present, at call 500: #NP(0048)");
    ck_std(PM_NP, SEL_KCODE2, (uint32_t)int80_site, HALF, HALF);
    ck_end();
    gate80_default();
    epoch();
    user_ok("GDT back, under a new CR3");

    pm_use_task_gate(PM_TS); /* #TS from ring 3 with a bad SS0 needs its own stack */
    reset();
    act = act_ss0_rpl3;
    act_at = HALF;
    user_run();
    __asm__ __volatile__("clts"); /* set by the task switches */
    ck_begin("TSS.SS0 = 0x23 (RPL 3) at call 500: #TS(0020) (through a task gate)");
    ck_std(PM_TS, SEL_UDATA & ~3, 0, HALF, HALF);
    ck_end();
    pm_tss.t.ss0 = SEL_KDATA;
    pm_idt_stub(PM_TS, SYS_INTGATE32, 0);
    epoch();
    user_ok("TSS.SS0 restored, under a new CR3");

    reset();
    act = act_task_gate;
    act_at = HALF;
    user_run();
    __asm__ __volatile__("clts");
    ck_begin("gate 0x80 made a task gate by the handler at call 500: a task switch at call 501");
    ck_std(VEC, PM_NOERR, 0, HALF, HALF);
    ck("TR in the task", pm_fault_tr, SEL_FTSS);
    ck("its back link", pm_fault_link, SEL_TSS);
    ck_end();
    gate80_default();
    epoch();
    user_ok("interrupt gate again, under a new CR3");

    pm_tss_init(&tss2, NULL, kstack2 + 4096);
    pm_gdt_set(SEL_TSS2, pm_tss_desc(&tss2, sizeof(tss2) - 1, ACC_P | SYS_TSS32));
    reset();
    act = act_ltr2;
    act_at = HALF;
    user_run();
    ck_begin("LTR to a second TSS by the handler at call 500: frames on its ESP0");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("TR", pm_str(), SEL_TSS2);
    ck_end();
    set_tss_available(SEL_TSS);
    __asm__ __volatile__("ltr %w0" : : "r"(SEL_TSS));
    set_tss_available(SEL_TSS2);
    epoch();
    user_ok("LTR back to the first TSS, under a new CR3");

    rt_puts("-- descriptors in the LDT, LLDT\n");
    pm_ldt_set(LSEL_KCODE, pm_seg_desc(0, 0xfffff, ACC_CODE_XR | ACC_ACCESSED, FL_G | FL_DB));
    pm_ldt_set(LSEL_UCODE, pm_seg_desc(0, 0xfffff, ACC_CODE_XR | ACC_ACCESSED | DPL(3), FL_G | FL_DB));
    memcpy(ldt2, pm_ldt, sizeof(ldt2));
    ldt2[LSEL_KCODE >> 3] &= ~(1ull << 47);
    ldt2[LSEL_UCODE >> 3] &= ~(1ull << 47);
    pm_gdt_set(SEL_LDT2, pm_seg_desc((uint32_t)ldt2, sizeof(ldt2) - 1, ACC_P | SYS_LDT, 0));
    gate80(h80, LSEL_KCODE, SYS_INTGATE32, 3, 1);
    epoch();
    reset();
    ex_hcs = LSEL_KCODE;
    user_run();
    ck_begin("gate selector 0x0c (LDT): handler CS from the LDT");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    reset();
    ex_hcs = LSEL_KCODE;
    act = act_lldt2;
    act_at = HALF;
    user_run();
    __asm__ __volatile__("lldt %w0" : : "r"(SEL_LDT));
    ck_begin("LLDT by the handler at call 500 to an LDT where 0x0c is not present: #NP(000c)");
    ck_std(PM_NP, LSEL_KCODE & ~3, (uint32_t)int80_site, HALF, HALF);
    ck_end();
    __asm__ __volatile__("lldt %w0" : : "r"(SEL_LDT2));
    reset();
    user_run();
    __asm__ __volatile__("lldt %w0" : : "r"(SEL_LDT));
    ck_begin("LLDT between runs to that LDT: #NP(000c)");
    ck_std(PM_NP, LSEL_KCODE & ~3, (uint32_t)int80_site, 0, 0);
    ck_end();
    gate80_default();
    epoch();
    reset();
    ex_ucs = LSEL_UCODE;
    PM_TRY_WITH("movl $" PM_STR(SEL_UDATA) ", %eax\n\tmovw %ax, %ds\n\tmovw %ax, %es\n\t"
                "movw %ax, %fs\n\tmovw %ax, %gs\n\t"
                "pushl $" PM_STR(SEL_UDATA) "\n\tpushl $pm_ustack_top\n\t"
                "pushl pm_user_eflags\n\tpushl $" PM_STR(LSEL_UCODE) "\n\t"
                "pushl $7771f\n\tiretl",
                "call user_loop", PM_USER_EPI);
    ck_begin("ring 3 with CS 0x17 (LDT): the iret's CS from the LDT");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    reset();
    ex_ucs = LSEL_UCODE;
    act = act_lldt2;
    act_at = HALF;
    PM_TRY_WITH("movl $" PM_STR(SEL_UDATA) ", %eax\n\tmovw %ax, %ds\n\tmovw %ax, %es\n\t"
                "movw %ax, %fs\n\tmovw %ax, %gs\n\t"
                "pushl $" PM_STR(SEL_UDATA) "\n\tpushl $pm_ustack_top\n\t"
                "pushl pm_user_eflags\n\tpushl $" PM_STR(LSEL_UCODE) "\n\t"
                "pushl $7771f\n\tiretl",
                "call user_loop", PM_USER_EPI);
    __asm__ __volatile__("lldt %w0" : : "r"(SEL_LDT));
    ck_begin("LLDT by the handler at call 500 to an LDT where 0x17 is not present: #NP(0014) at its iret");
    ck_std(PM_NP, LSEL_UCODE & ~3, (uint32_t)iret_site, HALF, HALF - 1);
    ck_end();
    epoch();
    user_ok("LDT back, under a new CR3");

    pm_tss_init(&tss_b, (void (*)(void))task_b_entry, tstack_b + 4096);
    tss_b.esp0 = (uint32_t)kstack_b + 4096;
    pm_gdt_set(SEL_TSSB, pm_tss_desc(&tss_b, sizeof(tss_b) - 1, ACC_P | SYS_TSS32));
    pm_idt_set(VEC_TASKB_BACK, pm_gate_desc(SEL_KCODE, (uint32_t)task_b_back, ACC_P | DPL(3) | SYS_INTGATE32, 0));
    for (int round = 0; round < 2; round++) {
        reset();
        ex_esp0 = tss_b.esp0;
        tss_b.cr3 = fresh_cr3(); /* task B's sites translated afresh */
        PM_TRY("lcall $" PM_STR(SEL_TSSB) ", $0");
        __asm__ __volatile__("clts");
        ck_begin(round ? "task B again" : "call to task B's TSS: the same site in task B uses B's TSS.ESP0");
        ck_std(PM_NONE, 0, 0, N, N);
        ck("TR after the task returned", pm_str(), SEL_TSS);
        ck_end();
        user_ok(round ? "main task again" : "back in the main task: its TSS.ESP0 again");
        epoch();
        user_ok(round ? "main task again, under a new CR3" : "main task, under a new CR3");
    }
}

/* ---- with paging ---- */
#define KSL 0x00b00000u  /* the kernel stack's linear page */
#define IDTV 0x00c00000u /* two linear pages for the IDT copy */
uint8_t kframe[2][4096] __attribute__((aligned(4096)));
uint8_t idtframe[2][4096] __attribute__((aligned(4096)));
uint8_t topframe[4096] __attribute__((aligned(4096)));
uint32_t pt_top[1024] __attribute__((aligned(4096)));

static void act_idt_alias_dpl0(void) { idtframe[0][1] = ACC_P | DPL(0) | SYS_INTGATE32; }
static void act_idt_alias_offset(void)
{
    *(volatile uint16_t *)(idtframe[1] + 0xffc) = (uint16_t)(uint32_t)h80b;
    ex_which = 1;
}

/* A table's page remapped (by the handler) to a copy: cpyframe holds the
 * page's contents at that moment, with one change; unremap() copies the
 * contents back through the linear page ALIAS and restores the identity
 * mapping. */
#define ALIAS 0x00d00000u
uint8_t cpyframe[4096] __attribute__((aligned(4096)));
static uint32_t remapped;

static uint8_t *remap_begin(const void *in_page)
{
    remapped = (uint32_t)in_page & ~0xfffu;
    memcpy(cpyframe, (void *)remapped, 4096);
    return cpyframe + ((uint32_t)in_page & 0xfff);
}
static void remap_commit(void)
{
    *pm_pte(remapped) = (uint32_t)cpyframe | PTE_P | PTE_W | PTE_U;
    pm_invlpg(remapped);
}
static void unremap(void)
{
    *pm_pte(ALIAS) = remapped | PTE_P | PTE_W;
    pm_invlpg(ALIAS);
    memcpy((void *)ALIAS, (void *)remapped, 4096);
    *pm_pte(remapped) = remapped | PTE_P | PTE_W | PTE_U;
    pm_invlpg(remapped);
    *pm_pte(ALIAS) = 0;
    pm_invlpg(ALIAS);
}
static void act_remap_idt(void)
{
    uint64_t *gate = (uint64_t *)remap_begin(&pm_idt[VEC]);
    *gate = pm_gate_desc(SEL_KCODE, (uint32_t)h80b, ACC_P | DPL(3) | SYS_INTGATE32, 0);
    remap_commit();
    ex_which = 1;
}
static void act_remap_gdt(void)
{
    uint64_t *desc = (uint64_t *)remap_begin(&pm_gdt[SEL_KCODE2 >> 3]);
    *desc &= ~(1ull << 47);
    remap_commit();
}
static void act_remap_tss(void)
{
    uint32_t *esp0 = (uint32_t *)remap_begin(&pm_tss.t.esp0);
    *esp0 = (uint32_t)kstack2 + 4096;
    remap_commit();
    ex_esp0 = (uint32_t)kstack2 + 4096;
}

static uint32_t low_dword(uint32_t a)
{
    uint32_t v;
    __asm__ __volatile__("movl (%1), %0" : "=r"(v) : "r"(a) : "memory");
    return v;
}

static uint32_t nonzero_bytes(const uint8_t *p)
{
    uint32_t n = 0;
    for (int i = 0; i < 4096; i++)
        n += p[i] != 0;
    return n;
}

static void paging(void)
{
    volatile uint32_t *pte = pm_pte(KSL);
    uint32_t cr2, base;

    rt_puts("-- paging: the kernel stack on its own linear page\n");
    pm_paging_on();
    paging_is_on = 1;
    pm_use_task_gate(PM_DF);
    *pte = (uint32_t)kframe[0] | PTE_P | PTE_W;
    pm_invlpg(KSL);
    set_esp0(KSL + 4096);
    user_ok("paging on, 1000 calls");

    *pte &= ~(PTE_A | PTE_D);
    pm_invlpg(KSL);
    reset();
    user_run();
    ck_begin("kernel stack PTE A and D cleared (invlpg): set again by the frame writes");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("PTE A, D", *pte & (PTE_A | PTE_D), PTE_A | PTE_D);
    ck_end();

    memset(kframe[0], 0, 4096);
    memset(kframe[1], 0, 4096);
    *pte = (uint32_t)kframe[1] | PTE_P | PTE_W;
    pm_invlpg(KSL);
    reset();
    user_run();
    ck_begin("kernel stack page remapped to another frame (invlpg): frames land there only");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("CS slot of the frames in the new frame", *(uint32_t *)(kframe[1] + 4096 - 16), SEL_UCODE);
    ck("non-zero bytes in the old frame", nonzero_bytes(kframe[0]), 0);
    ck_end();

    reset();
    PM_USER_TRY("call user_loop\n\t" AT "movl 0xb00ff0, %eax");
    ck_begin("after 1000 returns to ring 3, a ring-3 read of the supervisor kernel stack page: #PF(0005)");
    ck_std(PM_PF, 5, pm_recov.at, N, N);
    ck("CR2", pm_last.cr2, KSL + 0xff0);
    ck_end();

    *pte = (uint32_t)kframe[1] | PTE_P;
    pm_invlpg(KSL);
    user_ok("kernel stack page read-only, CR0.WP=0: supervisor writes allowed");
    *pte = (uint32_t)kframe[0] | PTE_P | PTE_W;
    pm_invlpg(KSL);
    user_ok("kernel stack page writable again");

    rt_puts("-- paging: the IDT's, the GDT's and the TSS's page remapped (PTE + invlpg)\n");
    reset();
    act = act_remap_idt;
    act_at = HALF;
    user_run();
    ck_begin("IDT page -> a copy whose gate 0x80 points to the second handler, at call 500");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("calls of the second handler", h.which[1], N - HALF);
    ck_end();
    unremap();
    gate80_default();
    reset();
    act = act_remap_tss;
    act_at = HALF;
    user_run();
    ck_begin("TSS page -> a copy with another ESP0, at call 500: frames on it");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    unremap();
    set_esp0(KSL + 4096);
    user_ok("TSS page back");

    rt_puts("-- paging: frames wrapping around the top of the linear address space\n");
    memset(pt_top, 0, sizeof(pt_top));
    pt_top[1023] = (uint32_t)topframe | PTE_P | PTE_W;
    set_pde(1023, (uint32_t)pt_top | PTE_P | PTE_W | PTE_U);
    set_esp0(0);
    reset();
    user_run();
    ck_begin("TSS.ESP0 = 0: frame at 0xffffffec");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("CS slot at 0xfffffff0", *(uint32_t *)(topframe + 0xff0), SEL_UCODE);
    ck_end();
    set_esp0(8);
    reset();
    user_run();
    ck_begin("TSS.ESP0 = 8: frame from 0xfffffff4 to 0x7");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("CS slot at 0xfffffff8", *(uint32_t *)(topframe + 0xff8), SEL_UCODE);
    ck("SS slot at 0x4", low_dword(4), SEL_UDATA);
    ck_end();
    set_esp0(KSL + 4096);
    reset();
    PM_TRY("movl $12, %esp\n\tcall user_loop");
    ck_begin("ring 0 with ESP = 8 at the int: frame from 0xfffffffc to 0x7");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("EIP slot at 0xfffffffc", *(uint32_t *)(topframe + 0xffc), (uint32_t)int80_ret);
    ck_end();
    user_ok("TSS.ESP0 back on the kernel stack page");

    pm_gdt_set(SEL_KCODE2, pm_seg_desc(0, 0xfffff, ACC_CODE_XR | ACC_ACCESSED, FL_G | FL_DB));
    gate80(h80, SEL_KCODE2, SYS_INTGATE32, 3, 1);
    epoch();
    reset();
    ex_hcs = SEL_KCODE2;
    user_run();
    ck_begin("gate selector 0x48, under a new CR3");
    ck_std(PM_NONE, 0, 0, N, N);
    ck_end();
    reset();
    ex_hcs = SEL_KCODE2;
    act = act_remap_gdt;
    act_at = HALF;
    user_run();
    ck_begin("GDT page -> a copy where 0x48 is not present, at call 500: #NP(0048)");
    ck_std(PM_NP, SEL_KCODE2, (uint32_t)int80_site, HALF, HALF);
    ck_end();
    unremap();
    gate80_default();

    rt_puts("-- paging: gate 0x80 straddling two pages mapped to swapped frames\n");
    *pm_pte(IDTV) = (uint32_t)idtframe[1] | PTE_P | PTE_W;
    *pm_pte(IDTV + 4096) = (uint32_t)idtframe[0] | PTE_P | PTE_W;
    pm_invlpg(IDTV);
    pm_invlpg(IDTV + 4096);
    base = IDTV + 4096 - VEC * 8 - 4;
    memcpy((void *)base, pm_idt, sizeof(pm_idt));
    lidt_of(base, sizeof(pm_idt) - 1);
    epoch();
    user_ok("IDT at a page end - 0x404: 1000 calls");
    reset();
    act = act_idt_alias_dpl0;
    act_at = HALF;
    user_run();
    ck_begin("gate DPL set to 0 through the other mapping at call 500: #GP(0402)");
    ck_std(PM_GP, GP_ERR_VEC, (uint32_t)int80_site, HALF, HALF);
    ck_end();
    memcpy((void *)base, pm_idt, sizeof(pm_idt));
    reset();
    act = act_idt_alias_offset;
    act_at = HALF;
    user_run();
    ck_begin("gate offset changed through the other mapping at call 500: second handler");
    ck_std(PM_NONE, 0, 0, N, N);
    ck("calls of the second handler", h.which[1], N - HALF);
    ck("h80 and h80b in one 64 KiB", (uint32_t)h80 >> 16, (uint32_t)h80b >> 16);
    ck_end();
    lidt_of((uint32_t)pm_idt, sizeof(pm_idt) - 1);
    epoch();
    user_ok("IDT back, under a new CR3");

    rt_puts("-- paging: double faults through the task gate\n");
    *pte = 0;
    pm_invlpg(KSL);
    reset();
    user_run();
    cr2 = rd_cr2();
    __asm__ __volatile__("clts");
    ck_begin("kernel stack page not present (invlpg): #DF(0000) through the task gate");
    ck_std(PM_DF, 0, 0, 0, 0);
    ck("CR2 page", cr2 & ~0xfffu, KSL);
    ck_end();
    pm_use_task_gate(PM_DF);
    *pte = (uint32_t)kframe[0] | PTE_P | PTE_W;
    pm_invlpg(KSL);
    user_ok("kernel stack page present again (invlpg)");
    epoch();
    user_ok("the same, under a new CR3");

    *pte = (uint32_t)kframe[0] | PTE_P;
    pm_invlpg(KSL);
    user_ok("kernel stack page read-only, CR0.WP=0");
    wr_cr0(rd_cr0() | 0x10000);
    reset();
    user_run();
    cr2 = rd_cr2();
    __asm__ __volatile__("clts");
    wr_cr0(rd_cr0() & ~0x10000u);
    ck_begin("kernel stack page read-only, CR0.WP=1: #DF(0000)");
    ck_std(PM_DF, 0, 0, 0, 0);
    ck("CR2 page", cr2 & ~0xfffu, KSL);
    ck_end();
    pm_use_task_gate(PM_DF);
    *pte = (uint32_t)kframe[0] | PTE_P | PTE_W;
    pm_invlpg(KSL);
    epoch();
    user_ok("kernel stack page writable again, under a new CR3");
    pm_paging_off();
    paging_is_on = 0;
}

int main(void)
{
    pm_init();
    outb(0x21, 0xff); /* mask the PICs: IF=1 must not take interrupts */
    outb(0xa1, 0xff);
    rt_puts("pm_events: one int $0x80 site and one iret site, reused across changes\n");
    pm_name_range("int80_site", int80_site, 2);
    pm_name_range("iret_site", iret_site, 1);
    set_esp0((uint32_t)kstack1 + 4096);
    gate80_default();
    /* no descriptor-table or TR change before tables() */
    basics();
    control_regs();
    stacks();
    segments();
    rings();
    flags();
    smc();
    tables();
    paging();
    exceptions();
    rt_finish("pm_events");
}
