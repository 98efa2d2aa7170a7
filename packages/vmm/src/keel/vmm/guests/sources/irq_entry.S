/* Set up interrupts before dropping to CPL 3: an IDT whose 16 PIC vectors (0x20-0x2f) go to
   one handler, the 8259 PICs initialised (master at vector 0x20, everything masked except
   IRQ 4, the COM1 line), and IF set in the RFLAGS that entry64.S gives user mode. The handler
   (CPL 0, so emulated on PVM: kept tiny) counts and acknowledges. Continues at _start64. */
#define PIC_MASTER_COMMAND 0x20
#define PIC_MASTER_DATA 0x21
#define PIC_SLAVE_COMMAND 0xa0
#define PIC_SLAVE_DATA 0xa1
#define PIC_ICW1_INIT_ICW4 0x11
#define PIC_MASTER_VECTOR 0x20
#define PIC_SLAVE_VECTOR 0x28
#define PIC_MASTER_HAS_SLAVE_ON_IRQ2 0x04
#define PIC_SLAVE_IDENTITY 0x02
#define PIC_ICW4_8086 0x01
#define PIC_MASK_ALL_BUT_IRQ4 0xef
#define PIC_MASK_ALL 0xff
#define PIC_END_OF_INTERRUPT 0x20
#define RFLAGS_IF 0x200
#define GATE_INTERRUPT_PRESENT 0x8e
#define KERNEL_CODE64 0x08
#define IDT_ENTRIES 0x30
#define GATE_SIZE 16

    .section .text.entry64, "ax"
    .code64
    .global _start_irq
_start_irq:
    lea irq_handler(%rip), %rax
    lea idt + PIC_MASTER_VECTOR * GATE_SIZE(%rip), %rdi
    mov $16, %ecx
1:  movw %ax, (%rdi)                 /* offset 15:0 */
    movw $KERNEL_CODE64, 2(%rdi)
    movb $0, 4(%rdi)
    movb $GATE_INTERRUPT_PRESENT, 5(%rdi)
    mov %rax, %rdx
    shr $16, %rdx
    movw %dx, 6(%rdi)                /* offset 31:16 */
    shr $16, %rdx
    movl %edx, 8(%rdi)               /* offset 63:32 */
    add $GATE_SIZE, %rdi
    dec %ecx
    jnz 1b
    lidt idt_pointer(%rip)
    mov $PIC_ICW1_INIT_ICW4, %al
    out %al, $PIC_MASTER_COMMAND
    out %al, $PIC_SLAVE_COMMAND
    mov $PIC_MASTER_VECTOR, %al
    out %al, $PIC_MASTER_DATA
    mov $PIC_SLAVE_VECTOR, %al
    out %al, $PIC_SLAVE_DATA
    mov $PIC_MASTER_HAS_SLAVE_ON_IRQ2, %al
    out %al, $PIC_MASTER_DATA
    mov $PIC_SLAVE_IDENTITY, %al
    out %al, $PIC_SLAVE_DATA
    mov $PIC_ICW4_8086, %al
    out %al, $PIC_MASTER_DATA
    out %al, $PIC_SLAVE_DATA
    mov $PIC_MASK_ALL_BUT_IRQ4, %al
    out %al, $PIC_MASTER_DATA
    mov $PIC_MASK_ALL, %al
    out %al, $PIC_SLAVE_DATA
    orq $RFLAGS_IF, user_rflags(%rip)
    jmp _start64

irq_handler:
    push %rax
    lock incl interrupt_count(%rip)
    mov $PIC_END_OF_INTERRUPT, %al
    out %al, $PIC_MASTER_COMMAND
    pop %rax
    iretq

    .section .data.idt, "aw"
    .align 16
idt_pointer:
    .word IDT_ENTRIES * GATE_SIZE - 1
    .quad idt
    .global interrupt_count
    .align 4
interrupt_count: .long 0

    .section .bss.idt, "aw", @nobits
    .align 16
idt: .space IDT_ENTRIES * GATE_SIZE
