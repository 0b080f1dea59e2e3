/* Entry for the native back end (static i386 Linux program).  Switches to
 * the runtime stack (same address as in the guest build, so addresses and
 * stack depth behave identically), calls main() and exits with its result. */
    .text
    .globl _start
    .type _start, @function
_start:
    cld
    movl $__stack_top, %esp
    xorl %ebp, %ebp
    call rt_serial_init
    call main
    pushl %eax
    call rt_exit
1:  jmp 1b

    .section .note.GNU-stack, "", @progbits
