"""Start a vCPU in real, 32-bit protected or 64-bit long mode.

Why the VMM does it: boot protocols name the mode the kernel expects (real mode for the
16-bit Linux entry, flat 32-bit protected mode for PVH and multiboot, long mode with identity
paging for the 64-bit Linux entry). The GDT and page tables are written into guest memory at
the places boot/layout.py names; the segment registers get the matching hidden parts.
The page tables carry the user bit so that test guests can drop to CPL 3 on them.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

from keel.native.kvm import Vcpu
from keel.vmm import x86
from keel.vmm.boot import layout
from keel.vmm.errors import LoaderError
from keel.vmm.memory import GuestMemory


class CpuMode(enum.Enum):
    REAL = "real"
    PROTECTED = "protected"
    LONG = "long"


@dataclass(frozen=True)
class EntryPoint:
    """Where and how a loaded guest starts: the mode, the first instruction, register values."""

    mode: CpuMode
    address: int
    registers: dict[str, int] = field(default_factory=dict)


# Boot GDT selectors (index * 8): the same layout as Linux's boot GDT and Firecracker's.
SELECTOR_CODE = 0x08
SELECTOR_DATA = 0x10
SELECTOR_TSS = 0x18
DESCRIPTOR_SIZE = 8
GDT_ENTRIES = 4
PAGE_TABLE_SIZE = x86.PAGE_TABLE_ENTRIES * x86.PAGE_TABLE_ENTRY_SIZE
PAGE_SHIFT = 12
PAGE_SIZE_4K = 1 << PAGE_SHIFT


@dataclass(frozen=True)
class Segment:
    """A segment register's selector and hidden part, as both KVM and the GDT need them."""

    selector: int
    type: int
    base: int = 0
    limit: int = x86.FLAT_LIMIT_PAGES
    code_or_data: bool = True  # the descriptor's S bit: 0 for system segments (TSS)
    long_code: bool = False
    default_32bit: bool = True
    granularity_4k: bool = True

    def descriptor(self) -> int:
        """The 8-byte GDT descriptor encoding this segment (the field split is the SDM's:
        limit 15:0 and base 23:0 low, access byte at bit 40, limit 19:16 and flags at 48,
        base 31:24 at 56)."""
        flags = ((1 if self.granularity_4k else 0) << 3 | (1 if self.default_32bit else 0) << 2
                 | (1 if self.long_code else 0) << 1)
        access = 1 << 7 | (1 if self.code_or_data else 0) << 4 | self.type
        return ((self.base & 0xFF000000) << 32 | flags << 52 | (self.limit & 0xF0000) << 32
                | access << 40 | (self.base & 0x00FFFFFF) << 16 | self.limit & 0xFFFF)

    def load_into(self, kvm_segment: Any) -> None:
        kvm_segment.selector = self.selector
        kvm_segment.type = self.type
        kvm_segment.base = self.base
        limit = self.limit
        if self.granularity_4k:  # KVM wants the limit in bytes
            limit = (limit << PAGE_SHIFT) | (PAGE_SIZE_4K - 1)
        kvm_segment.limit = limit
        kvm_segment.present = 1
        kvm_segment.dpl = 0
        kvm_segment.db = 1 if self.default_32bit else 0
        kvm_segment.s = 1 if self.code_or_data else 0
        kvm_segment.l = 1 if self.long_code else 0
        kvm_segment.g = 1 if self.granularity_4k else 0
        kvm_segment.avl = 0
        kvm_segment.unusable = 0


def _segments(long_mode: bool) -> tuple[Segment, Segment, Segment]:
    code = Segment(SELECTOR_CODE, x86.SEGMENT_TYPE_CODE_EXECUTE_READ_ACCESSED,
                   long_code=long_mode, default_32bit=not long_mode)
    data = Segment(SELECTOR_DATA, x86.SEGMENT_TYPE_DATA_READ_WRITE_ACCESSED)
    tss = Segment(SELECTOR_TSS, x86.SEGMENT_TYPE_TSS_BUSY, limit=x86.TSS_LIMIT,
                  code_or_data=False, default_32bit=False, granularity_4k=False)
    return code, data, tss


def write_gdt(memory: GuestMemory, long_mode: bool) -> None:
    code, data, tss = _segments(long_mode)
    table = [0, code.descriptor(), data.descriptor(), tss.descriptor()]
    memory.write(layout.BOOT_GDT_ADDRESS, struct.pack(f"<{GDT_ENTRIES}Q", *table))
    memory.write(layout.BOOT_IDT_ADDRESS, bytes(DESCRIPTOR_SIZE))


def write_identity_page_tables(memory: GuestMemory) -> int:
    """Identity-map the low 4 GiB with 2 MiB pages (user-accessible); returns CR3."""
    flags = x86.PTE_PRESENT | x86.PTE_WRITABLE | x86.PTE_USER
    memory.write(layout.PML4_ADDRESS,
                 struct.pack("<Q", layout.PDPT_ADDRESS | flags).ljust(PAGE_TABLE_SIZE, b"\0"))
    pdpt = b"".join(
        struct.pack("<Q", (layout.PAGE_DIRECTORY_ADDRESS + gib * PAGE_TABLE_SIZE) | flags)
        for gib in range(layout.IDENTITY_MAPPED_GIB)
    )
    memory.write(layout.PDPT_ADDRESS, pdpt.ljust(PAGE_TABLE_SIZE, b"\0"))
    for gib in range(layout.IDENTITY_MAPPED_GIB):
        directory = b"".join(
            struct.pack("<Q", (gib * x86.GIB + entry * x86.LARGE_PAGE_SIZE)
                        | flags | x86.PTE_LARGE_PAGE)
            for entry in range(x86.PAGE_TABLE_ENTRIES)
        )
        memory.write(layout.PAGE_DIRECTORY_ADDRESS + gib * PAGE_TABLE_SIZE, directory)
    return layout.PML4_ADDRESS


def _set_registers(vcpu: Vcpu, entry: EntryPoint, rip: int) -> None:
    regs = vcpu.get_regs()
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp"):
        setattr(regs, name, 0)
    for name, value in entry.registers.items():
        if not hasattr(regs, name) or name in ("rip", "rflags"):
            raise LoaderError(f"entry point names unknown register {name!r}")
        setattr(regs, name, value)
    regs.rip = rip
    regs.rflags = x86.RFLAGS_RESERVED_ONE
    vcpu.set_regs(regs)


def enter(vcpu: Vcpu, memory: GuestMemory, entry: EntryPoint) -> None:
    """Put `vcpu` in `entry.mode` at `entry.address` with `entry.registers`."""
    sregs = vcpu.get_sregs()
    if entry.mode is CpuMode.REAL:
        if not 0 <= entry.address < x86.REAL_MODE_ADDRESS_LIMIT:
            raise LoaderError(f"real-mode entry {entry.address:#x} is not below 1 MiB")
        # CS:IP with the largest segment that still reaches the entry (IP < 64 KiB).
        selector = (entry.address >> x86.REAL_MODE_SEGMENT_SHIFT) & 0xF000
        base = selector << x86.REAL_MODE_SEGMENT_SHIFT
        for segment in (sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
            segment.selector = selector
            segment.base = base
            segment.limit = x86.REAL_MODE_SEGMENT_LIMIT
        sregs.cr0 = x86.CR0_ET
        sregs.cr4 = 0
        sregs.efer = 0
        vcpu.set_sregs(sregs)
        _set_registers(vcpu, entry, entry.address - base)
        return
    long_mode = entry.mode is CpuMode.LONG
    write_gdt(memory, long_mode)
    code, data, tss = _segments(long_mode)
    sregs.gdt.base = layout.BOOT_GDT_ADDRESS
    sregs.gdt.limit = GDT_ENTRIES * DESCRIPTOR_SIZE - 1
    sregs.idt.base = layout.BOOT_IDT_ADDRESS
    sregs.idt.limit = DESCRIPTOR_SIZE - 1
    code.load_into(sregs.cs)
    for segment in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        data.load_into(segment)
    tss.load_into(sregs.tr)
    sregs.cr0 = x86.CR0_PE | x86.CR0_ET
    sregs.cr4 = 0
    sregs.efer = 0
    if long_mode:
        sregs.cr3 = write_identity_page_tables(memory)
        sregs.cr4 = x86.CR4_PAE
        sregs.cr0 |= x86.CR0_PG
        sregs.efer = x86.EFER_LME | x86.EFER_LMA
    vcpu.set_sregs(sregs)
    _set_registers(vcpu, entry, entry.address)
