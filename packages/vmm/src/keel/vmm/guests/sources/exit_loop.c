/* The exit round-trip benchmark guest: `iterations=N` VM exits at CPL 3, each a port write
   (`kind=port`), an MMIO write (`kind=mmio`) or one of each (`kind=both`, the default).
   Markers on the serial port let the host time the loop. Boots through multiboot, so keel,
   QEMU and the C floor all load it the same way. */
#include "guest.h"

#define BENCH_PORT 0x80            /* the POST port: a no-op device in every PC VMM */
#define BENCH_MMIO 0xd0001000ULL   /* unclaimed MMIO in the device hole */
#define DEFAULT_ITERATIONS 10000
#define MULTIBOOT_INFO_MAGIC 0x2badb002
#define MULTIBOOT_FLAG_CMDLINE (1 << 2)
#define PVH_START_INFO_MAGIC 0x336ec578
#define PVH_CMDLINE_OFFSET 24

struct multiboot_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };

void guest_main(u64 info, u64 magic) {
    u64 iterations = DEFAULT_ITERATIONS;
    int port = 1, mmio = 1;
    const char *cmdline = 0;
    if (magic == MULTIBOOT_INFO_MAGIC) {
        const struct multiboot_info *multiboot = (const struct multiboot_info *)info;
        if (multiboot->flags & MULTIBOOT_FLAG_CMDLINE) cmdline = (const char *)(u64)multiboot->cmdline;
    } else if (info && *(const u32 *)info == PVH_START_INFO_MAGIC) {
        cmdline = (const char *)*(const u64 *)(info + PVH_CMDLINE_OFFSET);
    }
    if (cmdline) {
        const char *value = find_word(cmdline, "iterations=");
        if (value) iterations = parse_decimal(value);
        if (find_word(cmdline, "kind=port")) mmio = 0;
        if (find_word(cmdline, "kind=mmio")) port = 0;
    }
    serial_puts("bench: start ");
    serial_put_decimal(iterations);
    serial_puts("\n");
    for (u64 i = 0; i < iterations; i++) {
        if (port) outb(BENCH_PORT, (u8)i);
        if (mmio) mmio_write32(BENCH_MMIO, (u32)i);
    }
    serial_puts("bench: end\n");
    debug_exit(0);
}
