"""The driver's side of virtio, in Python: for tests, fuzzing and integration checks.

Why it exists: the device side must be exercised against rings laid out the way Linux's
virtio_ring lays them out (descriptor table, then the available ring, then the used ring on
the next page; free descriptors chained through `next`; indirect tables for multi-buffer
chains) and against the handshake Linux's virtio_mmio performs. This module does both over
any GuestMemoryAccess and an MmioTransport's register interface, so tests read like a driver.
It also offers raw writes (`write_descriptor`, `publish_head`, `set_avail_index`) to build
the hostile shapes a real driver never would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from keel.native._virtio import lib
from keel.vmm.virtio.constants import (
    AVAIL_ELEMENT_SIZE,
    AVAIL_F_NO_INTERRUPT,
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    DESCRIPTOR,
    DESCRIPTOR_SIZE,
    RING_HEADER_SIZE,
    RING_INDEX_MODULUS,
    RING_INDEX_OFFSET,
    STATUS_ACKNOWLEDGE,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
    USED_ELEMENT,
    USED_ELEMENT_SIZE,
    USED_F_NO_NOTIFY,
)
from keel.vmm.virtio.memory import GuestMemoryAccess
from keel.vmm.virtio.mmio import REGISTER_SIZE, WORD_BITS, WORD_MASK
from keel.vmm.virtio.virtqueue import avail_ring_size, descriptor_table_size, used_ring_size

# Linux's virtio_mmio aligns the used ring to a page (VIRTIO_MMIO_VRING_ALIGN).
LINUX_USED_RING_ALIGNMENT = 4096
FIELD_SIZE = 2
BUFFER_ALIGNMENT = 16


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


@dataclass
class UsedBuffer:
    """A chain the device returned: its head, the length it reported, the first `length`
    writable bytes, and the whole content of each writable buffer."""

    head: int
    length: int
    data: bytes
    writable: tuple[bytes, ...] = ()


@dataclass
class _Outstanding:
    descriptors: list[int]
    writable: list[tuple[int, int]] = field(default_factory=list)


class SplitQueueDriver:
    """Lays out one split virtqueue at `base` and a buffer area at `buffers` in guest memory."""

    def __init__(self, memory: GuestMemoryAccess, base: int, size: int, buffers: int,
                 buffer_area_size: int) -> None:
        self.memory = memory
        self.size = size
        self.descriptor_table_address = base
        self.avail_ring_address = base + descriptor_table_size(size)
        self.used_ring_address = _align(self.avail_ring_address + avail_ring_size(size),
                                        LINUX_USED_RING_ALIGNMENT)
        self.end = self.used_ring_address + used_ring_size(size)
        memory.write(base, bytes(self.end - base))
        self.buffer_start = buffers
        self.buffer_end = buffers + buffer_area_size
        self._next_buffer = buffers
        self.free = list(range(size))
        self.avail_index = 0
        self.last_used_index = 0
        self._outstanding: dict[int, _Outstanding] = {}

    # -- buffers ----------------------------------------------------------------------------

    def allocate(self, length: int) -> int:
        """Guest memory for one buffer (a bump allocator that wraps around; tests only)."""
        length = max(length, 1)
        if self._next_buffer + length > self.buffer_end:
            self._next_buffer = self.buffer_start
        if self._next_buffer + length > self.buffer_end:
            raise ValueError(f"buffer of {length} bytes does not fit the driver's buffer area")
        address = self._next_buffer
        self._next_buffer = _align(address + length, BUFFER_ALIGNMENT)
        return address

    # -- raw ring writes (hostile shapes too) -----------------------------------------------

    def write_descriptor(self, index: int, address: int, length: int, flags: int = 0,
                         next_index: int = 0, table: int | None = None) -> None:
        base = self.descriptor_table_address if table is None else table
        self.memory.write(base + DESCRIPTOR_SIZE * index,
                          DESCRIPTOR.pack(address, length, flags, next_index))

    def publish_head(self, head: int, kick_index: bool = True) -> None:
        """Put `head` in the next available slot and (by default) bump avail->idx."""
        slot = self.avail_index % self.size
        self.memory.write_int(self.avail_ring_address + RING_HEADER_SIZE
                              + AVAIL_ELEMENT_SIZE * slot, AVAIL_ELEMENT_SIZE, head)
        self.avail_index = (self.avail_index + 1) % RING_INDEX_MODULUS
        if kick_index:
            self.set_avail_index(self.avail_index)

    def set_avail_index(self, value: int) -> None:
        self.memory.write_int(self.avail_ring_address + RING_INDEX_OFFSET, FIELD_SIZE,
                              value % RING_INDEX_MODULUS)

    def set_used_event(self, value: int) -> None:
        self.memory.write_int(self.avail_ring_address + RING_HEADER_SIZE
                              + AVAIL_ELEMENT_SIZE * self.size, FIELD_SIZE, value)

    def set_no_interrupt(self, suppress: bool) -> None:
        self.memory.write_int(self.avail_ring_address, FIELD_SIZE,
                              AVAIL_F_NO_INTERRUPT if suppress else 0)

    def avail_event(self) -> int:
        return self.memory.read_int(self.used_ring_address + RING_HEADER_SIZE
                                    + USED_ELEMENT_SIZE * self.size, FIELD_SIZE)

    def device_wants_kicks(self) -> bool:
        """Without event idx: whether the device left VRING_USED_F_NO_NOTIFY clear."""
        return not self.memory.read_int(self.used_ring_address, FIELD_SIZE) & USED_F_NO_NOTIFY

    # -- what Linux's virtqueue_add does ----------------------------------------------------

    def add(self, readable: Sequence[bytes] = (), writable: Sequence[int] = (), *,
            indirect: bool = False) -> int:
        """Make a chain of readable buffers (these bytes) then writable ones (these sizes)."""
        buffers: list[tuple[int, int, int]] = []
        for data in readable:
            address = self.allocate(len(data))
            self.memory.write(address, data)
            buffers.append((address, len(data), 0))
        written: list[tuple[int, int]] = []
        for length in writable:
            address = self.allocate(length)
            self.memory.write(address, bytes(length))
            buffers.append((address, length, DESC_F_WRITE))
            written.append((address, length))
        if not buffers:
            raise ValueError("a chain needs at least one buffer")
        if indirect:
            table = self.allocate(DESCRIPTOR_SIZE * len(buffers))
            for position, (address, length, flags) in enumerate(buffers):
                last = position == len(buffers) - 1
                self.write_descriptor(position, address, length,
                                      flags | (0 if last else DESC_F_NEXT), position + 1, table)
            buffers = [(table, DESCRIPTOR_SIZE * len(buffers), DESC_F_INDIRECT)]
        if len(buffers) > len(self.free):
            raise ValueError(f"{len(buffers)} descriptors needed, {len(self.free)} free")
        descriptors = [self.free.pop(0) for _ in buffers]
        for position, (address, length, flags) in enumerate(buffers):
            last = position == len(buffers) - 1
            following = 0 if last else descriptors[position + 1]
            self.write_descriptor(descriptors[position], address, length,
                                  flags | (0 if last else DESC_F_NEXT), following)
        head = descriptors[0]
        self._outstanding[head] = _Outstanding(descriptors, written)
        self.publish_head(head)
        return head

    def used(self) -> list[UsedBuffer]:
        """Every entry the device added to the used ring since the last call."""
        device_index = self.memory.read_int(self.used_ring_address + RING_INDEX_OFFSET,
                                            FIELD_SIZE)
        returned: list[UsedBuffer] = []
        while self.last_used_index != device_index:
            slot = self.last_used_index % self.size
            head, length = USED_ELEMENT.unpack(self.memory.read(
                self.used_ring_address + RING_HEADER_SIZE + USED_ELEMENT_SIZE * slot,
                USED_ELEMENT_SIZE))
            self.last_used_index = (self.last_used_index + 1) % RING_INDEX_MODULUS
            outstanding = self._outstanding.pop(head, None)
            data = b""
            buffers: tuple[bytes, ...] = ()
            if outstanding is not None:
                self.free.extend(outstanding.descriptors)
                buffers = tuple(self.memory.read(address, size)
                                for address, size in outstanding.writable)
                data = b"".join(buffers)[:length]
            returned.append(UsedBuffer(head, length, data, buffers))
        return returned


class RegisterFile(Protocol):
    """What the driver needs of a transport: its MMIO register window."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


class MmioDriver:
    """Linux's virtio_mmio probe sequence, through a transport's `read`/`write` registers."""

    def __init__(self, transport: RegisterFile) -> None:
        self.transport = transport

    def read(self, offset: int) -> int:
        return self.transport.read(offset, REGISTER_SIZE)

    def write(self, offset: int, value: int) -> None:
        self.transport.write(offset, REGISTER_SIZE, value)

    def device_features(self) -> int:
        features = 0
        for selector in range(2):
            self.write(lib.VIRTIO_MMIO_DEVICE_FEATURES_SEL, selector)
            features |= self.read(lib.VIRTIO_MMIO_DEVICE_FEATURES) << (WORD_BITS * selector)
        return features

    def negotiate(self, features: int) -> bool:
        """Reset, ACKNOWLEDGE, DRIVER, write `features`, FEATURES_OK; True if it stuck."""
        self.write(lib.VIRTIO_MMIO_STATUS, 0)
        self.write(lib.VIRTIO_MMIO_STATUS, STATUS_ACKNOWLEDGE)
        self.write(lib.VIRTIO_MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER)
        for selector in range(2):
            self.write(lib.VIRTIO_MMIO_DRIVER_FEATURES_SEL, selector)
            self.write(lib.VIRTIO_MMIO_DRIVER_FEATURES,
                       (features >> (WORD_BITS * selector)) & WORD_MASK)
        self.write(lib.VIRTIO_MMIO_STATUS,
                   STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)
        return bool(self.read(lib.VIRTIO_MMIO_STATUS) & STATUS_FEATURES_OK)

    def setup_queue(self, index: int, queue: SplitQueueDriver) -> None:
        self.write(lib.VIRTIO_MMIO_QUEUE_SEL, index)
        self.write(lib.VIRTIO_MMIO_QUEUE_NUM, queue.size)
        for low, high, address in (
            (lib.VIRTIO_MMIO_QUEUE_DESC_LOW, lib.VIRTIO_MMIO_QUEUE_DESC_HIGH,
             queue.descriptor_table_address),
            (lib.VIRTIO_MMIO_QUEUE_AVAIL_LOW, lib.VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
             queue.avail_ring_address),
            (lib.VIRTIO_MMIO_QUEUE_USED_LOW, lib.VIRTIO_MMIO_QUEUE_USED_HIGH,
             queue.used_ring_address),
        ):
            self.write(low, address & WORD_MASK)
            self.write(high, address >> WORD_BITS)
        self.write(lib.VIRTIO_MMIO_QUEUE_READY, 1)

    def driver_ok(self) -> None:
        self.write(lib.VIRTIO_MMIO_STATUS, self.read(lib.VIRTIO_MMIO_STATUS) | STATUS_DRIVER_OK)

    def status(self) -> int:
        return self.read(lib.VIRTIO_MMIO_STATUS)

    def notify(self, index: int) -> None:
        self.write(lib.VIRTIO_MMIO_QUEUE_NOTIFY, index)

    def acknowledge_interrupts(self) -> int:
        pending = self.read(lib.VIRTIO_MMIO_INTERRUPT_STATUS)
        if pending:
            self.write(lib.VIRTIO_MMIO_INTERRUPT_ACK, pending)
        return pending

    def config(self, offset: int, size: int) -> int:
        return self.transport.read(lib.VIRTIO_MMIO_CONFIG + offset, size)
