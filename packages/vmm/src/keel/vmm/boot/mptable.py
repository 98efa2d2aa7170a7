"""The Intel MultiProcessor table (MP spec 1.4), so Linux finds every vCPU and the I/O APIC.

Why: without ACPI a Linux guest learns its processors, buses and interrupt routing from this
table; with none it boots one CPU in PIC mode whatever --cpus says. The layout follows
Firecracker's: the floating pointer at the start of the EBDA (0x9fc00, a place Linux scans),
the configuration table right after it; ISA bus, one I/O APIC, IRQs 0-23 routed 1:1, ExtINT on
LINT0 and NMI on LINT1.
"""

from __future__ import annotations

import struct

from keel.vmm.boot import layout
from keel.vmm.errors import LoaderError
from keel.vmm.memory import GuestMemory

MP_TABLE_ADDRESS = layout.EBDA_START
MP_TABLE_LIMIT = 0xA0000  # the EBDA's first KiB ends at 640 KiB
FLOATING_POINTER = struct.Struct("<4sIBBB5s")
CONFIGURATION_HEADER = struct.Struct("<4sHBB8s12sIHHIHBB")
PROCESSOR_ENTRY = struct.Struct("<BBBBII8x")
BUS_ENTRY = struct.Struct("<BB6s")
IOAPIC_ENTRY = struct.Struct("<BBBBI")
INTERRUPT_ENTRY = struct.Struct("<BBHBBBB")
SIGNATURE_FLOATING = b"_MP_"
SIGNATURE_CONFIGURATION = b"PCMP"
SPEC_REVISION = 4  # MP spec 1.4
OEM_ID = b"KEEL    "
PRODUCT_ID = b"KEEL VMM    "
LOCAL_APIC_ADDRESS = 0xFEE0_0000
IOAPIC_ADDRESS = 0xFEC0_0000
LOCAL_APIC_VERSION = 0x14
IOAPIC_VERSION = 0x11
ENTRY_PROCESSOR, ENTRY_BUS, ENTRY_IOAPIC, ENTRY_IO_INTERRUPT, ENTRY_LOCAL_INTERRUPT = range(5)
CPU_ENABLED = 0x01
CPU_BOOT_PROCESSOR = 0x02
CPU_SIGNATURE = 0x600  # family 6
CPU_FEATURES = 0x201  # FPU and on-chip APIC
BUS_ISA = b"ISA   "
IOAPIC_ENABLED = 0x01
INTERRUPT_VECTORED = 0
INTERRUPT_NMI = 1
INTERRUPT_EXTINT = 3
POLARITY_CONFORMING = 0
IOAPIC_PINS = 24
ALL_LOCAL_APICS = 0xFF
LINT0, LINT1 = 0, 1
ISA_BUS_ID = 0
CHECKSUM_MODULUS = 256
CONFIGURATION_CHECKSUM_OFFSET = 7
FLOATING_CHECKSUM_OFFSET = 10


def _checksum(data: bytes) -> int:
    return (-sum(data)) % CHECKSUM_MODULUS


def build_mptable(vcpu_count: int) -> bytes:
    """The floating pointer followed by the configuration table, checksummed."""
    ioapic_id = vcpu_count  # the next id after the local APICs
    entries = [PROCESSOR_ENTRY.pack(ENTRY_PROCESSOR, cpu, LOCAL_APIC_VERSION,
                                    CPU_ENABLED | (CPU_BOOT_PROCESSOR if cpu == 0 else 0),
                                    CPU_SIGNATURE, CPU_FEATURES) for cpu in range(vcpu_count)]
    entries.append(BUS_ENTRY.pack(ENTRY_BUS, ISA_BUS_ID, BUS_ISA))
    entries.append(IOAPIC_ENTRY.pack(ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, IOAPIC_ENABLED,
                                     IOAPIC_ADDRESS))
    entries += [INTERRUPT_ENTRY.pack(ENTRY_IO_INTERRUPT, INTERRUPT_VECTORED, POLARITY_CONFORMING,
                                     ISA_BUS_ID, irq, ioapic_id, irq)
                for irq in range(IOAPIC_PINS)]
    entries.append(INTERRUPT_ENTRY.pack(ENTRY_LOCAL_INTERRUPT, INTERRUPT_EXTINT,
                                        POLARITY_CONFORMING, ISA_BUS_ID, 0, ALL_LOCAL_APICS,
                                        LINT0))
    entries.append(INTERRUPT_ENTRY.pack(ENTRY_LOCAL_INTERRUPT, INTERRUPT_NMI,
                                        POLARITY_CONFORMING, ISA_BUS_ID, 0, ALL_LOCAL_APICS,
                                        LINT1))
    body = b"".join(entries)
    length = CONFIGURATION_HEADER.size + len(body)
    configuration_address = MP_TABLE_ADDRESS + FLOATING_POINTER.size
    header = CONFIGURATION_HEADER.pack(SIGNATURE_CONFIGURATION, length, SPEC_REVISION, 0,
                                       OEM_ID, PRODUCT_ID, 0, 0, len(entries),
                                       LOCAL_APIC_ADDRESS, 0, 0, 0)
    table = bytearray(header + body)
    table[CONFIGURATION_CHECKSUM_OFFSET] = _checksum(bytes(table))
    pointer = bytearray(FLOATING_POINTER.pack(SIGNATURE_FLOATING, configuration_address,
                                              FLOATING_POINTER.size // 16, SPEC_REVISION, 0,
                                              bytes(5)))
    pointer[FLOATING_CHECKSUM_OFFSET] = _checksum(bytes(pointer))
    return bytes(pointer + table)


def write_mptable(memory: GuestMemory, vcpu_count: int) -> int:
    """Write the MP table for `vcpu_count` vCPUs; returns the floating pointer's address."""
    table = build_mptable(vcpu_count)
    if MP_TABLE_ADDRESS + len(table) > MP_TABLE_LIMIT:
        raise LoaderError(f"an MP table for {vcpu_count} vCPUs ({len(table)} bytes) does not "
                          f"fit in [{MP_TABLE_ADDRESS:#x}, {MP_TABLE_LIMIT:#x})")
    memory.write(MP_TABLE_ADDRESS, table)
    return MP_TABLE_ADDRESS
