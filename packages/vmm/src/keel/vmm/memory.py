"""Guest memory: anonymous mappings registered as KVM memory slots, with checked access.

Why every access goes through here: guest-physical addresses and lengths come from the guest
(boot parameters, device registers) and are hostile. Each read, write or translation is checked
against the regions; anything outside is refused with GuestMemoryError and logged, never a
crash or an out-of-bounds host access.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from keel.native._kvm import ffi
from keel.vmm.errors import GuestMemoryError

logger = logging.getLogger("keel.vmm")

PAGE_SIZE = mmap.PAGESIZE
# x86 PCs keep a hole below 4 GiB for MMIO devices; RAM above it continues at 4 GiB.
MMIO_HOLE_START = 0xC000_0000
FOUR_GIB = 1 << 32
ADDRESS_LIMIT = 1 << 52  # x86-64's architectural maximum physical address width


@dataclass
class MemoryRegion:
    """One contiguous range of guest-physical RAM backed by one host mapping."""

    guest_address: int
    mapping: mmap.mmap

    @property
    def size(self) -> int:
        return len(self.mapping)

    @property
    def end(self) -> int:
        return self.guest_address + self.size

    def contains(self, address: int, length: int) -> bool:
        return self.guest_address <= address and address + length <= self.end


def layout_for(total_size: int) -> list[tuple[int, int]]:
    """(guest address, size) of the RAM regions for `total_size` bytes, around the MMIO hole."""
    if total_size <= 0 or total_size % PAGE_SIZE:
        raise GuestMemoryError(
            f"guest memory size must be a positive multiple of {PAGE_SIZE}, got {total_size}")
    if total_size <= MMIO_HOLE_START:
        return [(0, total_size)]
    return [(0, MMIO_HOLE_START), (FOUR_GIB, total_size - MMIO_HOLE_START)]


class GuestMemory:
    """All guest RAM regions; owns their mappings (a context manager)."""

    def __init__(self, total_size: int) -> None:
        self.regions: list[MemoryRegion] = []
        try:
            for address, size in layout_for(total_size):
                self.regions.append(MemoryRegion(address, mmap.mmap(-1, size)))
        except BaseException:
            self.close()
            raise
        self.total_size = total_size

    def close(self) -> None:
        for region in self.regions:
            region.mapping.close()
        self.regions.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __iter__(self) -> Iterator[MemoryRegion]:
        return iter(self.regions)

    @property
    def end(self) -> int:
        """One past the highest guest-physical RAM address."""
        return max(region.end for region in self.regions)

    def _locate(self, address: int, length: int) -> tuple[MemoryRegion, int]:
        if not isinstance(address, int) or not isinstance(length, int):
            raise GuestMemoryError(f"guest address and length must be ints, got "
                                   f"{address!r}, {length!r}")
        if address < 0 or length < 0 or address + length > ADDRESS_LIMIT:
            self._refuse(address, length)
        for region in self.regions:
            if region.contains(address, length):
                return region, address - region.guest_address
        self._refuse(address, length)
        raise AssertionError("unreachable")

    def _refuse(self, address: int, length: int) -> None:
        ranges = ", ".join(f"[{r.guest_address:#x}, {r.end:#x})" for r in self.regions)
        message = (f"guest access of {length} bytes at {address:#x} is outside guest memory "
                   f"(RAM: {ranges})")
        logger.error("%s", message)
        raise GuestMemoryError(message)

    def contains(self, address: int, length: int = 1) -> bool:
        return any(region.contains(address, length) for region in self.regions)

    def read(self, address: int, length: int) -> bytes:
        region, offset = self._locate(address, length)
        return region.mapping[offset : offset + length]

    def write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        region, offset = self._locate(address, len(data))
        region.mapping[offset : offset + len(data)] = bytes(data)

    def view(self, address: int, length: int) -> memoryview:
        """A writable view of guest RAM (guest-physical to host translation, zero copy)."""
        region, offset = self._locate(address, length)
        return memoryview(region.mapping)[offset : offset + length]

    def host_address(self, address: int, length: int) -> int:
        """The host virtual address of guest-physical [address, address + length), for
        syscalls that take pointers (readv/writev iovecs, io_uring). Valid while this
        GuestMemory is open; the range is checked like any access."""
        region, offset = self._locate(address, length)
        anchor = ffi.from_buffer(region.mapping)
        try:
            return int(ffi.cast("uintptr_t", anchor)) + offset
        finally:
            ffi.release(anchor)

    def read_int(self, address: int, size: int) -> int:
        return int.from_bytes(self.read(address, size), "little")

    def write_int(self, address: int, size: int, value: int) -> None:
        self.write(address, value.to_bytes(size, "little"))

    def read_c_string(self, address: int, limit: int) -> bytes:
        """Bytes up to the first NUL, at most `limit` of them (the guest controls both)."""
        region, offset = self._locate(address, 1)
        available = min(limit, region.end - address)
        data = region.mapping[offset : offset + available]
        end = data.find(b"\0")
        return data if end < 0 else data[:end]
