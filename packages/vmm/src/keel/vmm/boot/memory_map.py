"""The guest's physical memory map, as every boot protocol reports it (e820 types).

Why one function: the Linux zero page, PVH's memmap and multiboot's mmap all describe the
same layout; computing it once keeps the three protocols in agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.vmm.boot import layout
from keel.vmm.memory import GuestMemory

E820_RAM = 1
E820_RESERVED = 2


@dataclass(frozen=True)
class MemoryMapEntry:
    address: int
    size: int
    type: int


def memory_map(memory: GuestMemory) -> list[MemoryMapEntry]:
    """Low RAM below the EBDA, then RAM from 1 MiB in each region (the MMIO hole omitted)."""
    entries = [MemoryMapEntry(0, layout.EBDA_START, E820_RAM)]
    for region in memory:
        start = max(region.guest_address, layout.HIGH_MEMORY_START)
        if region.end > start:
            entries.append(MemoryMapEntry(start, region.end - start, E820_RAM))
    return entries


def highest_ram_below(memory: GuestMemory, limit: int) -> int:
    """One past the highest RAM byte under `limit` in a region reaching above 1 MiB."""
    best = 0
    for region in memory:
        if region.guest_address < limit:
            best = max(best, min(region.end, limit))
    return best
