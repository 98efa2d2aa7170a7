"""A descriptor chain the virtqueue walked and checked: where the driver's buffers are.

Why segments rather than bytes: a chain describes guest memory the device reads from
(device-readable) and writes into (device-writable); copying happens only when a device asks,
and at most as many bytes as it asks for. Every segment was checked against guest memory when
the chain was walked, so the accesses here cannot fall outside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.vmm.virtio.memory import GuestMemoryAccess


@dataclass(frozen=True, slots=True)
class Segment:
    """One descriptor's buffer: `length` bytes of guest memory at `address`."""

    address: int
    length: int


@dataclass(frozen=True, slots=True)
class DescriptorChain:
    """A chain from the available ring: head index, readable then writable segments."""

    head: int
    readable: tuple[Segment, ...]
    writable: tuple[Segment, ...]

    @property
    def readable_length(self) -> int:
        return sum(segment.length for segment in self.readable)

    @property
    def writable_length(self) -> int:
        return sum(segment.length for segment in self.writable)

    def read(self, memory: GuestMemoryAccess, limit: int, offset: int = 0) -> bytes:
        """Up to `limit` device-readable bytes, starting `offset` bytes into the chain."""
        parts: list[bytes] = []
        remaining = limit
        for segment in self.readable:
            if remaining <= 0:
                break
            if segment.length == 0:
                continue
            if offset >= segment.length:
                offset -= segment.length
                continue
            take = min(segment.length - offset, remaining)
            parts.append(memory.read(segment.address + offset, take))
            remaining -= take
            offset = 0
        return b"".join(parts)

    def write(self, memory: GuestMemoryAccess, data: bytes | bytearray | memoryview,
              offset: int = 0) -> int:
        """Scatter `data` into the writable segments from `offset`; returns bytes written."""
        view = memoryview(data)
        written = 0
        for segment in self.writable:
            if written >= len(view):
                break
            if segment.length == 0:
                continue
            if offset >= segment.length:
                offset -= segment.length
                continue
            take = min(segment.length - offset, len(view) - written)
            memory.write(segment.address + offset, view[written : written + take])
            written += take
            offset = 0
        return written
