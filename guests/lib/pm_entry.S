/* Exception/interrupt stubs, recovery and the double-fault task for the
 * protected-mode test support (see pm.h). */
#include "pm.h"

/* One 16-byte stub per vector.  Vectors for which the CPU pushes an error
 * code push only (vector | PM_HAS_ERR); the others push a zero error code
 * and the vector, so every frame has the same layout (struct pm_frame). */
    .text
    .balign 16
    .globl pm_stubs
pm_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17)
    pushl $(vec | PM_HAS_ERR)
    .else
    pushl $0
    pushl $vec
    .endif
    jmp pm_common
    .set vec, vec + 1
    .endr

pm_common:
    pushal
    pushl %ds
    pushl %es
    pushl %fs
    pushl %gs
    movl $SEL_KDATA, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    cld
    movl %esp, %eax
    pushl %eax
    call pm_dispatch
    addl $4, %esp
    .globl pm_resume_frame
pm_resume_frame:
    popl %gs
    popl %fs
    popl %es
    popl %ds
    popal
    addl $8, %esp
    iretl

/* Back to the end of the running PM_TRY block, at ring 0 on its stack. */
    .globl pm_recover
pm_recover:
    movl $SEL_KDATA, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl pm_recov + PMR_ESP, %esp
    jmp *pm_recov + PMR_EIP

/* The fault task: entered through a task gate (pm_use_task_gate), with
 * the error code, if any, on its stack; pm_task_c records the event and
 * points the main task's saved state at the recovery point; iret (NT=1)
 * switches back.  The next switch to this task resumes after the iret. */
    .globl pm_fault_task_entry
pm_fault_task_entry:
    movl %esp, %eax
    movl $pm_tstack_top - 256, %esp /* below the error code, if any */
    pushl %eax
    call pm_task_c
    movl $pm_tstack_top, %esp       /* saved in the TSS by the switch */
    iretl
    jmp pm_fault_task_entry

    .bss
    .balign 16
    .globl pm_ustack_top, pm_kstack_top, pm_tstack_top
    .space 16384
pm_ustack_top:
    .space 16384
pm_kstack_top:
    .space 8192
pm_tstack_top:

    .section .note.GNU-stack, "", @progbits
