/* Serial input by interrupt: the UART raises IRQ 4, the PIC passes it through the local
   APIC's LINT0 (ExtINT), the CPU takes it at CPL 3 on vector 0x24 (irq_entry.S counts it).
   Reports each step; exits with the number of interrupts taken. */
#include "guest.h"

#define SERIAL_INTERRUPT_ENABLE (SERIAL_PORT + 1)
#define SERIAL_MODEM_CONTROL (SERIAL_PORT + 4)
#define IER_RECEIVED_DATA 0x01
#define MCR_OUT2 0x08  /* gates the UART's interrupt line on a PC */

extern volatile u32 interrupt_count;

void guest_main(u64 info, u64 magic) {
    (void)info; (void)magic;
    outb(SERIAL_MODEM_CONTROL, MCR_OUT2);
    outb(SERIAL_INTERRUPT_ENABLE, IER_RECEIVED_DATA);
    serial_puts("interrupts: waiting for input\n");
    while (interrupt_count == 0) {}
    serial_puts("interrupts: got ");
    char line[64];
    u64 length = 0;
    while (length < sizeof line && (inb(SERIAL_LINE_STATUS) & SERIAL_LINE_STATUS_DATA_READY))
        line[length++] = (char)inb(SERIAL_PORT);
    serial_write(line, length);
    serial_puts("\n");
    debug_exit(interrupt_count);
}
