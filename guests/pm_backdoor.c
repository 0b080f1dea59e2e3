/* pm_backdoor: the VMware backdoor from ring 0 and from ring 3 without I/O
 * privilege (nestmon: guest-only; nestmon: no-qemu: QEMU has no backdoor).
 * VMware answers the backdoor port at any CPL whatever IOPL and the TSS
 * I/O bitmap say (Tools run as user processes); with
 * monitor_control.restrict_backdoor = "TRUE" an access from CPL > 0 is an
 * ordinary port access, which IOPL 0 turns into #GP(0).  The expected
 * output is the unrestricted one; tests/backdoor.rs also runs the guest
 * restricted. */
#include "pm.h"

uint32_t r[2];

/* GETVERSION (command 10): EAX = magic, ECX = command, DX = port; the
 * backdoor answers with EBX = magic */
#define GETVERSION                                                          \
    "movl $0x564d5868, %eax\n\tmovl $10, %ecx\n\tmovl $0xffffffff, %ebx\n\t" \
    "movw $0x5658, %dx\n\t" AT "inl %dx, %eax\n\t"                          \
    "movl %ebx, r\n\tmovl %eax, r+4"

static void report(const char *what)
{
    rt_printf("%s: ", what);
    if (pm_last.vector != PM_NONE) {
        pm_print_trap(&pm_last);
        rt_putc('\n');
    } else if (r[0] == 0x564d5868) {
        rt_puts("answered (EBX = magic)\n");
    } else {
        rt_printf("no answer (EBX=%08x)\n", r[0]);
    }
}

int main(void)
{
    pm_init();
    rt_puts("pm_backdoor: GETVERSION from ring 0 and from ring 3 with IOPL 0\n");
    r[0] = 0;
    PM_TRY(GETVERSION);
    report("ring 0");
    r[0] = 0;
    pm_user_eflags = 0x2; /* IOPL 0; the TSS bitmap denies every port */
    PM_USER_TRY(GETVERSION);
    report("ring 3, IOPL 0");
    rt_finish("pm_backdoor");
}
