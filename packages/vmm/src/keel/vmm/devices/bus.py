"""The Bus: routes port I/O and MMIO exits to devices by address range.

Why ranges in a sorted list: a guest may touch any address; lookup is a bisect over the
registered ranges (few, and fixed after boot), overlaps are refused when a device registers,
and an access nobody claims is answered like an open bus (reads all ones, writes dropped).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Protocol

from keel.vmm.errors import BusError

logger = logging.getLogger("keel.vmm")

PORT_SPACE_END = 1 << 16
MMIO_SPACE_END = 1 << 64
PORT_ACCESS_SIZES = (1, 2, 4)
MMIO_ACCESS_SIZES = (1, 2, 4, 8)


class Device(Protocol):
    """What a Bus calls: offsets are relative to the device's base address."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


@dataclass(frozen=True)
class Mapping:
    base: int
    length: int
    device: Device
    name: str

    @property
    def end(self) -> int:
        return self.base + self.length


class AddressSpace:
    """One address space (ports or MMIO): non-overlapping ranges, each owned by a device."""

    def __init__(self, name: str, end: int, access_sizes: tuple[int, ...]) -> None:
        self.name = name
        self._end = end
        self._sizes = access_sizes
        self._bases: list[int] = []
        self._mappings: list[Mapping] = []
        self.unclaimed_accesses = 0

    def register(self, base: int, length: int, device: Device, name: str) -> None:
        if length <= 0 or base < 0 or base + length > self._end:
            raise BusError(f"{self.name} range for {name!r} at {base:#x} length {length} is not "
                           f"inside [0, {self._end:#x})")
        index = bisect.bisect_left(self._bases, base)
        for neighbour in self._mappings[max(0, index - 1) : index + 1]:
            if base < neighbour.end and neighbour.base < base + length:
                raise BusError(
                    f"{self.name} range [{base:#x}, {base + length:#x}) for {name!r} overlaps "
                    f"{neighbour.name!r} at [{neighbour.base:#x}, {neighbour.end:#x})")
        self._bases.insert(index, base)
        self._mappings.insert(index, Mapping(base, length, device, name))

    def mappings(self) -> list[Mapping]:
        return list(self._mappings)

    def find(self, address: int, size: int) -> Mapping | None:
        index = bisect.bisect_right(self._bases, address) - 1
        if index < 0:
            return None
        mapping = self._mappings[index]
        return mapping if address + size <= mapping.end else None

    def _check_size(self, address: int, size: int) -> None:
        if size not in self._sizes:
            raise BusError(f"{self.name} access of {size} bytes at {address:#x}; expected one "
                           f"of {self._sizes}")

    def read(self, address: int, size: int) -> int:
        self._check_size(address, size)
        mapping = self.find(address, size)
        if mapping is None:
            self.unclaimed_accesses += 1
            logger.debug("unclaimed %s read of %d bytes at %#x", self.name, size, address)
            return (1 << (8 * size)) - 1
        return mapping.device.read(address - mapping.base, size) & ((1 << (8 * size)) - 1)

    def write(self, address: int, size: int, value: int) -> None:
        self._check_size(address, size)
        mapping = self.find(address, size)
        if mapping is None:
            self.unclaimed_accesses += 1
            logger.debug("unclaimed %s write of %d bytes at %#x", self.name, size, address)
            return
        mapping.device.write(address - mapping.base, size, value)


class Bus:
    """Both address spaces of a PC: 64 KiB of I/O ports and the 64-bit MMIO space."""

    def __init__(self) -> None:
        self.ports = AddressSpace("port", PORT_SPACE_END, PORT_ACCESS_SIZES)
        self.mmio = AddressSpace("MMIO", MMIO_SPACE_END, MMIO_ACCESS_SIZES)
