/* The mode-switching guest: starts in real mode at 0000:8000 and makes every step itself,
   real -> 32-bit protected -> 64-bit long -> CPL 3, reporting each over the serial port.
   (Real, protected and CPL 0 long-mode code is emulated on PVM: keep it short.) */
#define SERIAL_PORT 0x3f8
#define KERNEL_DATA 0x10
#define KERNEL_CODE32 0x28

    .section .text.modes16, "ax"
    .code16
    .global _start16
_start16:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7c00, %sp
    mov $message_real, %si
    mov $SERIAL_PORT, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  lgdtl gdt_pointer
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $KERNEL_CODE32, $protected_mode

    .code32
protected_mode:
    mov $KERNEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $message_protected, %esi
    mov $SERIAL_PORT, %dx
3:  lodsb
    test %al, %al
    jz 4f
    out %al, %dx
    jmp 3b
4:  xor %esi, %esi
    mov $0x6d6f6465, %edi      /* magic "mode": tells guest_main it came through here */
    jmp enable_long_mode32

    .code64
    .global long_mode_entry
long_mode_entry:
    mov %esi, %r12d
    mov %edi, %r13d
    lea message_long(%rip), %rsi
    mov $SERIAL_PORT, %dx
5:  lodsb
    test %al, %al
    jz 6f
    out %al, %dx
    jmp 5b
6:  jmp enter_user

    .section .rodata.modes16, "a"
message_real: .asciz "mode: real\n"
message_protected: .asciz "mode: protected\n"
message_long: .asciz "mode: long (CPL 0)\n"
