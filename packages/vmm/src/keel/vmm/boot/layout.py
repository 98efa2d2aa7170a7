"""Where the VMM puts its boot structures in guest-physical memory (one map, one place).

Why these addresses: they follow the conventions Linux and Firecracker use, below the 640 KiB
mark where no kernel is loaded: GDT low, zero page at 0x7000, page tables from 0x9000, the
command line at 128 KiB, kernels at 1 MiB.
"""

from __future__ import annotations

BOOT_GDT_ADDRESS = 0x500
BOOT_IDT_ADDRESS = 0x520
START_INFO_ADDRESS = 0x6000  # PVH hvm_start_info or multiboot info, and their tables
START_INFO_LIMIT = 0x7000
ZERO_PAGE_ADDRESS = 0x7000  # Linux boot_params
PML4_ADDRESS = 0x9000
PDPT_ADDRESS = 0xA000
PAGE_DIRECTORY_ADDRESS = 0xB000  # four page directories: 0xB000..0xEFFF map 4 GiB
IDENTITY_MAPPED_GIB = 4
COMMAND_LINE_ADDRESS = 0x20000
COMMAND_LINE_CAPACITY = 0x10000
EBDA_START = 0x9FC00  # RAM below this is usable; above up to 1 MiB is legacy (VGA, BIOS)
HIGH_MEMORY_START = 0x100000  # 1 MiB: where kernels load
KERNEL_LOAD_ADDRESS = HIGH_MEMORY_START
# KVM needs three pages for the real-mode TSS and one for the EPT identity map, in a range
# the guest does not use as RAM: just below the 4 GiB BIOS area (what Firecracker uses).
KVM_TSS_ADDRESS = 0xFFFB_D000
KVM_IDENTITY_MAP_ADDRESS = 0xFFFB_C000
# MMIO devices live in the hole below 4 GiB.
MMIO_DEVICES_START = 0xD000_0000
BOOT_TIMER_ADDRESS = MMIO_DEVICES_START
