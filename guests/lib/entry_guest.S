/* Multiboot v1 header and kernel entry for the guest back end.
 * Entered in 32-bit protected mode, paging off, EAX=0x2BADB002, EBX=info.
 * Loads a flat GDT (code 0x08, data 0x10), zeroes .bss, switches to the
 * runtime stack, enables x87/SSE (CR0.MP|NE, clear EM/TS, CR4.OSFXSR|
 * OSXMMEXCPT), then calls main() and passes its result to rt_exit(). */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .rodata
    .align 8
gdt:
    .quad 0x0000000000000000        /* null */
    .quad 0x00cf9a000000ffff        /* 0x08: flat 32-bit code, ring 0 */
    .quad 0x00cf92000000ffff        /* 0x10: flat 32-bit data, ring 0 */
gdt_end:
    .align 4
    .word 0
    .globl rt_gdt_desc
rt_gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt

    .text
    .globl _start
    .type _start, @function
_start:
    cli
    cld
    movl %eax, %esi                 /* multiboot magic */
    movl %ebx, %ebp                 /* multiboot info */
    lgdt rt_gdt_desc
    ljmp $0x08, $1f
1:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl $__stack_top, %esp
    pushl $2
    popfl                           /* clean EFLAGS: IF=0, DF=0, AC=0 */
    movl %esi, rt_mb_magic
    movl %ebp, rt_mb_info
    xorl %ebp, %ebp
    movl %cr0, %eax
    andl $~0x0c, %eax               /* clear EM (bit 2) and TS (bit 3) */
    orl $0x22, %eax                 /* set MP (bit 1) and NE (bit 5) */
    movl %eax, %cr0
    movl %cr4, %eax
    orl $0x600, %eax                /* OSFXSR | OSXMMEXCPT */
    movl %eax, %cr4
    fninit
    pushl $0x1f80
    ldmxcsr (%esp)
    addl $4, %esp
    call rt_serial_init
    call main
    pushl %eax
    call rt_exit
2:  cli
    hlt
    jmp 2b

    .bss
    .align 4
    .globl rt_mb_magic, rt_mb_info
rt_mb_magic: .long 0
rt_mb_info:  .long 0
