/* The exit round-trip benchmark guest: `iterations=N` port writes and N MMIO writes, each a
   VM exit, at CPL 3. Markers on the serial port let the host time the loop. Boots through
   multiboot (keel and QEMU load it the same way) or as a flat binary. */
#include "guest.h"

#define BENCH_PORT 0x80            /* the POST port: a no-op device in every PC VMM */
#define BENCH_MMIO 0xd0001000ULL   /* unclaimed MMIO in the device hole */
#define DEFAULT_ITERATIONS 10000
#define MULTIBOOT_INFO_MAGIC 0x2badb002
#define MULTIBOOT_FLAG_CMDLINE (1 << 2)

struct multiboot_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };

void guest_main(u64 info, u64 magic) {
    u64 iterations = DEFAULT_ITERATIONS;
    if (magic == MULTIBOOT_INFO_MAGIC) {
        const struct multiboot_info *multiboot = (const struct multiboot_info *)info;
        if (multiboot->flags & MULTIBOOT_FLAG_CMDLINE) {
            const char *value = find_word((const char *)(u64)multiboot->cmdline, "iterations=");
            if (value) iterations = parse_decimal(value);
        }
    }
    serial_puts("bench: start ");
    serial_put_decimal(iterations);
    serial_puts("\n");
    for (u64 i = 0; i < iterations; i++) {
        outb(BENCH_PORT, (u8)i);
        mmio_write32(BENCH_MMIO, (u32)i);
    }
    serial_puts("bench: end\n");
    debug_exit(0);
}
