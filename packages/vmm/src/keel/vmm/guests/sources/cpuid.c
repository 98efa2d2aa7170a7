/* Report the CPUID values cpuid_entry.S collected at CPL 0 (leaf, subleaf, eax, ebx, ecx,
   edx per line), so tests can check the CPU template from inside the guest. */
#include "guest.h"

extern const u32 cpuid_leaf_count;
extern const u32 cpuid_requests[][2];
extern const u32 cpuid_results[][4];

void guest_main(u64 info, u64 magic) {
    (void)info; (void)magic;
    for (u32 i = 0; i < cpuid_leaf_count; i++) {
        serial_puts("cpuid ");
        serial_put_hex(cpuid_requests[i][0]); serial_putc(' ');
        serial_put_hex(cpuid_requests[i][1]);
        for (int r = 0; r < 4; r++) { serial_putc(' '); serial_put_hex(cpuid_results[i][r]); }
        serial_putc('\n');
    }
    debug_exit(0);
}
