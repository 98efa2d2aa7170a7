"""The MP table as Linux's mpparse reads it: found by its signature, checksums, entries."""

from __future__ import annotations

import struct

import pytest

from keel.native.testing.skips import requires_kvm
from keel.vmm.boot import mptable
from keel.vmm.boot.mptable import build_mptable, write_mptable
from keel.vmm.errors import LoaderError
from keel.vmm.memory import GuestMemory

SCAN_START, SCAN_END = 0x9FC00, 0xA0000  # the last KiB of base memory, which Linux scans


def find_floating_pointer(memory: GuestMemory) -> int:
    for address in range(SCAN_START, SCAN_END, 16):
        if memory.read(address, 4) == b"_MP_":
            return address
    raise AssertionError("no _MP_ signature where Linux looks")


def parse(memory: GuestMemory) -> list[tuple[int, bytes]]:
    pointer = find_floating_pointer(memory)
    floating = memory.read(pointer, 16)
    assert sum(floating) % 256 == 0 and floating[8] == 1 and floating[9] == 4
    table_address = struct.unpack_from("<I", floating, 4)[0]
    header = memory.read(table_address, 44)
    assert header[:4] == b"PCMP"
    length, count = struct.unpack_from("<H", header, 4)[0], struct.unpack_from("<H", header, 34)[0]
    table = memory.read(table_address, length)
    assert sum(table) % 256 == 0
    assert struct.unpack_from("<I", header, 36)[0] == mptable.LOCAL_APIC_ADDRESS
    entries, offset = [], 44
    for _ in range(count):
        size = 20 if table[offset] == mptable.ENTRY_PROCESSOR else 8
        entries.append((table[offset], table[offset : offset + size]))
        offset += size
    assert offset == length
    return entries


@pytest.mark.parametrize("vcpus", [1, 2, 32])
def test_table_lists_every_vcpu_the_bus_ioapic_and_routes(vcpus: int) -> None:
    with GuestMemory(1 << 20) as memory:
        write_mptable(memory, vcpus)
        entries = parse(memory)
    processors = [body for kind, body in entries if kind == mptable.ENTRY_PROCESSOR]
    assert [body[1] for body in processors] == list(range(vcpus))  # APIC ids
    assert [body[3] for body in processors] == [3] + [1] * (vcpus - 1)  # enabled, BP first
    assert [body[2:8] for kind, body in entries if kind == mptable.ENTRY_BUS] == [b"ISA   "]
    (ioapic,) = [body for kind, body in entries if kind == mptable.ENTRY_IOAPIC]
    assert ioapic[1] == vcpus and struct.unpack_from("<I", ioapic, 4)[0] == 0xFEC00000
    routes = [(body[5], body[7]) for kind, body in entries if kind == mptable.ENTRY_IO_INTERRUPT]
    assert routes == [(irq, irq) for irq in range(24)]
    local = [(body[1], body[7]) for kind, body in entries
             if kind == mptable.ENTRY_LOCAL_INTERRUPT]
    assert local == [(mptable.INTERRUPT_EXTINT, 0), (mptable.INTERRUPT_NMI, 1)]


def test_too_many_vcpus_for_the_ebda_kilobyte_are_refused() -> None:
    assert len(build_mptable(32)) <= SCAN_END - SCAN_START
    with GuestMemory(1 << 20) as memory, pytest.raises(LoaderError, match="does not fit"):
        write_mptable(memory, 64)


@requires_kvm
@pytest.mark.kvm
def test_every_vm_carries_one() -> None:
    from keel.vmm.machine import Vm

    with Vm(16 << 20, vcpu_count=3) as vm:
        processors = [e for e in parse(vm.memory) if e[0] == mptable.ENTRY_PROCESSOR]
        assert len(processors) == 3
