/* pagecross: code that straddles 4 KiB page boundaries (assembly guest).
 *  - a loop whose body starts in one page and ends in the next, with one
 *    instruction (xorl $imm32) split across the boundary;
 *  - the same loop after patching the split immediate (the patched bytes
 *    lie on both pages);
 *  - a loop whose backward jump ends exactly at a page boundary and whose
 *    target starts exactly at it;
 *  - a call whose return address is the first byte of the next page.
 * Each result is compared with the same computation laid out normally. */

    .section .text.pagecross, "ax"
    .balign 4096
/* uint32_t pc_loop(uint32_t n) */
    .globl pc_loop
pc_loop:
    xorl %eax, %eax
    movl 4(%esp), %ecx
    jmp 1f
    .org 0x1000 - 8
1:  addl %ecx, %eax                 /* 0xff8: 2 bytes */
    roll $3, %eax                   /* 0xffa: 3 bytes */
    .globl pc_straddle
pc_straddle:
    xorl $0x5a5a5a5a, %eax          /* 0xffd: 5 bytes, crosses 0x1000 */
    decl %ecx                       /* 0x1002 */
    jnz 1b
    ret

/* uint32_t pc_edge(uint32_t n): a jump that ends exactly at 0x2000 to a
 * loop head that starts exactly at 0x2000 */
    .globl pc_edge
pc_edge:
    movl 4(%esp), %ecx
    movl $7, %eax
    jmp 2f
    .org 0x2000 - 5
3:  imull $13, %eax, %eax           /* 0x1ffb: 3 bytes */
    .byte 0xeb, 0x00                /* 0x1ffe: jmp 0x2000 (rel8 = 0) */
    .org 0x2000
2:  addl $5, %eax                   /* 0x2000 */
    decl %ecx
    jnz 3b
    ret

/* uint32_t pc_call(void): a call as the last instruction of a page */
    .globl pc_call
pc_call:
    xorl %eax, %eax
    jmp 4f
    .org 0x3000 - 5
4:  call 5f                         /* 0x2ffb: 5 bytes, returns to 0x3000 */
    addl $1000, %eax                /* 0x3000 */
    ret
5:  addl $1, %eax
    ret

    .text
ref_loop:
    xorl %eax, %eax
    movl 4(%esp), %ecx
1:  addl %ecx, %eax
    roll $3, %eax
    xorl ref_imm, %eax
    decl %ecx
    jnz 1b
    ret
ref_edge:
    movl 4(%esp), %ecx
    movl $7, %eax
1:  addl $5, %eax
    decl %ecx
    jz 2f
    imull $13, %eax, %eax
    jmp 1b
2:  ret

/* check(name, got, want) */
check:
    movl 12(%esp), %eax
    movl 8(%esp), %ecx
    cmpl %eax, %ecx
    je 1f
    incl failures
1:  pushl %eax
    pushl %ecx
    pushl 12(%esp)
    pushl $fmt_line
    call rt_printf
    addl $16, %esp
    ret

    .globl main
main:
    pushl %ebx
    /* 1: straddling loop */
    pushl $1000
    call ref_loop
    movl %eax, %ebx
    call pc_loop
    addl $4, %esp
    pushl %ebx
    pushl %eax
    pushl $name_loop
    call check
    addl $12, %esp
    /* 2: patch the split immediate (bytes on both pages), run again */
    movl $0x13579bdf, %eax
    movl %eax, pc_straddle + 1
    movl %eax, ref_imm
    pushl $777
    call ref_loop
    movl %eax, %ebx
    call pc_loop
    addl $4, %esp
    pushl %ebx
    pushl %eax
    pushl $name_patch
    call check
    addl $12, %esp
    /* 3: loop edge exactly at the boundary */
    pushl $500
    call ref_edge
    movl %eax, %ebx
    call pc_edge
    addl $4, %esp
    pushl %ebx
    pushl %eax
    pushl $name_edge
    call check
    addl $12, %esp
    /* 4: call at the end of a page */
    call pc_call
    pushl $1001
    pushl %eax
    pushl $name_call
    call check
    addl $12, %esp
    /* addresses: the boundaries really are page boundaries */
    movl $pc_straddle + 3, %eax
    andl $0xfff, %eax
    pushl $0
    pushl %eax
    pushl $name_align
    call check
    addl $12, %esp
    cmpl $0, failures
    jne 9f
    pushl $msg_pass
    call rt_printf
    addl $4, %esp
    xorl %eax, %eax
    popl %ebx
    ret
9:  pushl failures
    pushl $msg_fail
    call rt_printf
    addl $8, %esp
    movl $1, %eax
    popl %ebx
    ret

    .data
ref_imm:  .long 0x5a5a5a5a
failures: .long 0
    .section .rodata
fmt_line:   .asciz "%-34s %08x (reference %08x)\n"
name_loop:  .asciz "loop across a page boundary"
name_patch: .asciz "after patching the split immediate"
name_edge:  .asciz "jump to exactly the boundary"
name_call:  .asciz "call returning to the next page"
name_align: .asciz "split insn offset in page"
msg_pass:   .asciz "pagecross: PASS\n"
msg_fail:   .asciz "pagecross: FAILED (%d)\n"
    .section .note.GNU-stack, "", @progbits
