/* The simplest guest: greets from CPL 3, reports boot time (Firecracker's protocol), echoes
   one line of serial input back, and exits with status 42. */
#include "guest.h"

void guest_main(u64 info, u64 magic) {
    (void)info; (void)magic;
    serial_puts("hello from keel guest at CPL ");
    serial_put_decimal(current_privilege_level());
    serial_puts("\n");
    mmio_write32(BOOT_TIMER_ADDRESS, BOOT_TIMER_MAGIC);
    serial_puts("type a line:\n");
    char line[80];
    u64 length = 0;
    for (;;) {
        int c = serial_getc();
        if (c == '\n' || c == '\r' || length == sizeof line) break;
        line[length++] = (char)c;
    }
    serial_puts("echo: ");
    serial_write(line, length);
    serial_puts("\n");
    debug_exit(42);
}
