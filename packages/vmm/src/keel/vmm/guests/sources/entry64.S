/* 64-bit CPL 0 entry shared by every test guest: load our own GDT (with user segments) and
   drop to CPL 3 with IOPL 3 through iretq. Only these few instructions run emulated on PVM.
   Port I/O at CPL 3 is allowed by a TSS whose I/O bitmap permits every port (PVM checks the
   bitmap; IOPL 3 is set as well for hypervisors that honour it).
   _start64: the VMM entered long mode for us (flat binaries, the Linux 64-bit entry); rsi is
   the Linux zero page (or 0). enter_user: reached from boot32.S/modes.S with r12 = info and
   r13 = magic already set. guest_main(info, magic) then runs at CPL 3. */
#define KERNEL_CODE64 0x08
#define KERNEL_DATA 0x10
#define USER_CODE64 (0x18 | 3)
#define USER_DATA (0x20 | 3)
#define TSS_SELECTOR 0x30
#define RFLAGS_IOPL3 0x3002
#define TSS_IO_BITMAP_OFFSET 0x68
#define TSS_IO_BITMAP_BYTES 8192
#define TSS_LIMIT (TSS_IO_BITMAP_OFFSET + TSS_IO_BITMAP_BYTES)  /* + terminator - 1 */
#define TSS_TYPE_AVAILABLE_PRESENT 0x89
#define TSS_RSP0_OFFSET 4

    .section .text.entry64, "ax"
    .code64
    .global _start64
_start64:
    mov %rsi, %r12
    xor %r13, %r13
    .global enter_user
enter_user:
    lgdt gdt_pointer(%rip)
    lea kernel_stack_top(%rip), %rsp
    /* the 16-byte TSS descriptor, from the TSS's link address split into its fields */
    lea tss(%rip), %rax
    lea gdt_tss(%rip), %rdi
    movw $TSS_LIMIT, (%rdi)
    movw %ax, 2(%rdi)
    shr $16, %rax
    movb %al, 4(%rdi)
    movb $TSS_TYPE_AVAILABLE_PRESENT, 5(%rdi)
    movb $0, 6(%rdi)
    movb %ah, 7(%rdi)
    shr $16, %rax
    movl %eax, 8(%rdi)
    movl $0, 12(%rdi)
    mov $TSS_SELECTOR, %ax
    ltr %ax
    lea kernel_stack_top(%rip), %rax
    mov %rax, tss + TSS_RSP0_OFFSET(%rip)   /* the stack for interrupts taken at CPL 3 */
    push $USER_DATA
    lea user_stack_top(%rip), %rax
    push %rax
    pushq user_rflags(%rip)
    push $USER_CODE64
    lea user_start(%rip), %rax
    push %rax
    iretq
user_start:
    mov $USER_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %r12, %rdi
    mov %r13, %rsi
    call guest_main
    mov $0xff, %edi
    call debug_exit

    .section .data.gdt, "aw"
    .align 16
    .global gdt
gdt:
    .quad 0
    .quad 0x00af9a000000ffff   /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff   /* 0x10 kernel data */
    .quad 0x00affa000000ffff   /* 0x18 user code, 64-bit, DPL 3 */
    .quad 0x00cff2000000ffff   /* 0x20 user data, DPL 3 */
    .quad 0x00cf9a000000ffff   /* 0x28 kernel code, 32-bit (modes.S) */
gdt_tss:
    .quad 0, 0                 /* 0x30 TSS, filled in above */
gdt_end:
    .global gdt_pointer
gdt_pointer:
    .word gdt_end - gdt - 1
    .quad gdt

    .section .data.user_rflags, "aw"
    .align 8
    .global user_rflags
user_rflags: .quad RFLAGS_IOPL3    /* irq_entry.S adds IF */

    .section .data.tss, "aw"
    .align 16
tss:
    .space 0x66
    .word TSS_IO_BITMAP_OFFSET /* I/O map base: the bitmap follows the TSS */
    .space TSS_IO_BITMAP_BYTES /* all zero: every port allowed */
    .byte 0xff                 /* the bitmap's terminator */

    .section .bss.stacks, "aw", @nobits
    .align 4096
    .space 4096
kernel_stack_top:
    .space 16384
user_stack_top:
