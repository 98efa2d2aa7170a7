"""The split virtqueue, device side, sans-IO (virtio 1.2, section 2.7).

Why sans-IO: walking rings is pure logic over guest memory; it is tested with hypothesis on
random rings and random memory, with no KVM and no threads. Devices pop chains, do their I/O,
push used entries and ask whether the driver wants an interrupt.

Every value in the rings comes from the guest and is hostile. Each one is checked before use:
queue size and ring placement when the queue is activated; the available index (it may not run
more than the queue size ahead of the device); heads and `next` fields (inside their table);
chains (at most as many descriptors as their table holds, so a loop ends as "too long"); each
buffer (inside guest memory, total length bounded); indirect tables (feature negotiated, not
nested, not combined with NEXT, a whole number of descriptors, at most
INDIRECT_TABLE_LIMIT of them); the order of readable and writable buffers. A violation raises
VirtqueueError; the device turns that into NEEDS_RESET (see device.py), never a crash.
"""

from __future__ import annotations

from keel.vmm.virtio.barrier import full_barrier
from keel.vmm.virtio.chain import DescriptorChain, Segment
from keel.vmm.virtio.constants import (
    AVAIL_ALIGNMENT,
    AVAIL_ELEMENT_SIZE,
    AVAIL_F_NO_INTERRUPT,
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    DESCRIPTOR,
    DESCRIPTOR_ALIGNMENT,
    DESCRIPTOR_SIZE,
    EVENT_FIELD_SIZE,
    F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC,
    QUEUE_SIZE_LIMIT,
    RING_HEADER_SIZE,
    RING_INDEX_MODULUS,
    RING_INDEX_OFFSET,
    USED_ALIGNMENT,
    USED_ELEMENT,
    USED_ELEMENT_SIZE,
    USED_F_NO_NOTIFY,
)
from keel.vmm.virtio.errors import VirtqueueError
from keel.vmm.virtio.memory import GuestMemoryAccess

RING_FIELD_SIZE = 2  # flags and idx are le16
# The largest indirect table keel accepts (QEMU's VIRTQUEUE_MAX_SIZE; Linux never needs more
# than MAX_SKB_FRAGS + 2 or the block layer's segment limit).
INDIRECT_TABLE_LIMIT = 1024
# used->len is le32, so a chain can never describe more than this many bytes usefully.
CHAIN_BYTES_LIMIT = (1 << 32) - 1


def descriptor_table_size(queue_size: int) -> int:
    return DESCRIPTOR_SIZE * queue_size


def avail_ring_size(queue_size: int) -> int:
    """flags, idx, ring[queue_size], used_event (always reserved, as Linux lays it out)."""
    return RING_HEADER_SIZE + AVAIL_ELEMENT_SIZE * queue_size + EVENT_FIELD_SIZE


def used_ring_size(queue_size: int) -> int:
    """flags, idx, ring[queue_size] of {id, len}, avail_event."""
    return RING_HEADER_SIZE + USED_ELEMENT_SIZE * queue_size + EVENT_FIELD_SIZE


def need_event(event: int, new: int, old: int) -> bool:
    """vring_need_event: did the index move from `old` to `new` past `event`?"""
    mask = RING_INDEX_MODULUS - 1
    return ((new - event - 1) & mask) < ((new - old) & mask)


class Virtqueue:
    """One split virtqueue: configuration written by the transport, state kept by the device."""

    def __init__(self, memory: GuestMemoryAccess, index: int, max_size: int) -> None:
        if not 1 <= max_size <= QUEUE_SIZE_LIMIT or max_size & (max_size - 1):
            raise ValueError(f"queue {index}: maximum size {max_size} must be a power of two "
                             f"in [1, {QUEUE_SIZE_LIMIT}]")
        self.memory = memory
        self.index = index
        self.max_size = max_size
        self.reset()

    def reset(self) -> None:
        """Forget everything the driver configured (device reset)."""
        self.size = self.max_size
        self.ready = False
        self.descriptor_table_address = 0
        self.avail_ring_address = 0
        self.used_ring_address = 0
        self.event_index = False
        self.indirect = False
        self.last_avail_index = 0
        self.next_used_index = 0
        self._signalled_used_index = 0

    # -- activation -------------------------------------------------------------------------

    def activate(self, features: int) -> None:
        """Check the driver's queue configuration against guest memory and the spec."""
        size = self.size
        if not 1 <= size <= self.max_size or size & (size - 1):
            raise VirtqueueError(f"queue {self.index}: size {size} is not a power of two in "
                                 f"[1, {self.max_size}]")
        areas = (
            ("descriptor table", self.descriptor_table_address, descriptor_table_size(size),
             DESCRIPTOR_ALIGNMENT),
            ("available ring", self.avail_ring_address, avail_ring_size(size), AVAIL_ALIGNMENT),
            ("used ring", self.used_ring_address, used_ring_size(size), USED_ALIGNMENT),
        )
        for name, address, length, alignment in areas:
            if address % alignment:
                raise VirtqueueError(f"queue {self.index}: {name} at {address:#x} is not "
                                     f"{alignment}-byte aligned")
            if not self.memory.contains(address, length):
                raise VirtqueueError(f"queue {self.index}: {name} of {length} bytes at "
                                     f"{address:#x} is outside guest memory")
        self.event_index = bool(features & F_RING_EVENT_IDX)
        self.indirect = bool(features & F_RING_INDIRECT_DESC)
        self.last_avail_index = 0
        self.next_used_index = 0
        self._signalled_used_index = 0

    # -- ring fields (areas checked at activation) ------------------------------------------

    def _avail_index(self) -> int:
        return self.memory.read_int(self.avail_ring_address + RING_INDEX_OFFSET, RING_FIELD_SIZE)

    def _avail_flags(self) -> int:
        return self.memory.read_int(self.avail_ring_address, RING_FIELD_SIZE)

    def _used_event(self) -> int:
        address = self.avail_ring_address + RING_HEADER_SIZE + AVAIL_ELEMENT_SIZE * self.size
        return self.memory.read_int(address, EVENT_FIELD_SIZE)

    def _set_avail_event(self, value: int) -> None:
        address = self.used_ring_address + RING_HEADER_SIZE + USED_ELEMENT_SIZE * self.size
        self.memory.write_int(address, EVENT_FIELD_SIZE, value)

    def _set_used_flags(self, flags: int) -> None:
        self.memory.write_int(self.used_ring_address, RING_FIELD_SIZE, flags)

    # -- the device's side of the protocol --------------------------------------------------

    def pending(self) -> int:
        """How many chains the driver has made available and the device not yet taken."""
        available = self._avail_index()
        count = (available - self.last_avail_index) % RING_INDEX_MODULUS
        if count > self.size:
            raise VirtqueueError(
                f"queue {self.index}: available index {available} is {count} entries ahead of "
                f"the device's {self.last_avail_index}; at most the queue size {self.size} "
                "is possible")
        return count

    def pop(self) -> DescriptorChain | None:
        """The next available chain, walked and checked, or None when the ring is empty."""
        if self.pending() == 0:
            return None
        # Barrier (1): avail->idx was read above, before the entry and descriptors below.
        slot = self.last_avail_index % self.size
        head = self.memory.read_int(
            self.avail_ring_address + RING_HEADER_SIZE + AVAIL_ELEMENT_SIZE * slot,
            AVAIL_ELEMENT_SIZE)
        chain = self._walk(head)
        self.last_avail_index = (self.last_avail_index + 1) % RING_INDEX_MODULUS
        return chain

    def _read_descriptor(self, table: int, index: int) -> tuple[int, int, int, int]:
        address, length, flags, next_index = DESCRIPTOR.unpack(
            self.memory.read(table + DESCRIPTOR_SIZE * index, DESCRIPTOR_SIZE))
        return address, length, flags, next_index

    def _walk(self, head: int) -> DescriptorChain:
        if head >= self.size:
            raise VirtqueueError(f"queue {self.index}: chain head {head} is outside the "
                                 f"descriptor table of {self.size} entries")
        readable: list[Segment] = []
        writable: list[Segment] = []
        total = 0
        table = self.descriptor_table_address
        table_entries = self.size
        where = "descriptor table"
        index = head
        visited = 0
        in_indirect = False
        while True:
            visited += 1
            if visited > table_entries:
                raise VirtqueueError(
                    f"queue {self.index}: chain from head {head} is longer than the "
                    f"{table_entries} entries of its {where} (a loop?)")
            address, length, flags, next_index = self._read_descriptor(table, index)
            if flags & DESC_F_INDIRECT:
                table, table_entries = self._indirect_table(head, index, address, length, flags,
                                                            in_indirect)
                where = f"indirect table at {table:#x}"
                in_indirect = True
                index = 0
                visited = 0
                continue
            if length and not self.memory.contains(address, length):
                raise VirtqueueError(
                    f"queue {self.index}: descriptor {index} of chain {head} points at "
                    f"{length} bytes at {address:#x}, outside guest memory")
            total += length
            if total > CHAIN_BYTES_LIMIT:
                raise VirtqueueError(f"queue {self.index}: chain {head} describes more than "
                                     f"{CHAIN_BYTES_LIMIT} bytes")
            if flags & DESC_F_WRITE:
                writable.append(Segment(address, length))
            elif writable:
                raise VirtqueueError(f"queue {self.index}: chain {head} has a device-readable "
                                     "descriptor after a device-writable one")
            else:
                readable.append(Segment(address, length))
            if not flags & DESC_F_NEXT:
                return DescriptorChain(head, tuple(readable), tuple(writable))
            if next_index >= table_entries:
                raise VirtqueueError(f"queue {self.index}: descriptor {index} of chain {head} "
                                     f"links to {next_index}, outside its {where} of "
                                     f"{table_entries} entries")
            index = next_index

    def _indirect_table(self, head: int, index: int, address: int, length: int, flags: int,
                        in_indirect: bool) -> tuple[int, int]:
        prefix = f"queue {self.index}: chain {head}"
        if not self.indirect:
            raise VirtqueueError(f"{prefix} uses an indirect descriptor but "
                                 "VIRTIO_RING_F_INDIRECT_DESC was not negotiated")
        if in_indirect:
            raise VirtqueueError(f"{prefix} has an indirect descriptor inside an indirect table")
        if flags & DESC_F_NEXT:
            raise VirtqueueError(f"{prefix}: indirect descriptor {index} also has NEXT set")
        if length == 0 or length % DESCRIPTOR_SIZE:
            raise VirtqueueError(f"{prefix}: indirect table length {length} is not a positive "
                                 f"multiple of {DESCRIPTOR_SIZE}")
        entries = length // DESCRIPTOR_SIZE
        if entries > INDIRECT_TABLE_LIMIT:
            raise VirtqueueError(f"{prefix}: indirect table of {entries} descriptors exceeds "
                                 f"the limit of {INDIRECT_TABLE_LIMIT}")
        # No alignment check: the spec sets none for indirect tables, and Linux's come from
        # kmalloc (8-byte aligned; found when Linux's virtio_blk was put in NEEDS_RESET).
        if not self.memory.contains(address, length):
            raise VirtqueueError(f"{prefix}: indirect table of {length} bytes at {address:#x} "
                                 "is outside guest memory")
        return address, entries

    def push(self, head: int, written: int) -> None:
        """Return chain `head` to the driver with `written` bytes put in its buffers."""
        slot = self.next_used_index % self.size
        self.memory.write(
            self.used_ring_address + RING_HEADER_SIZE + USED_ELEMENT_SIZE * slot,
            USED_ELEMENT.pack(head, written))
        # Barrier (2): the entry is stored before the index that publishes it.
        self.next_used_index = (self.next_used_index + 1) % RING_INDEX_MODULUS
        self.memory.write_int(self.used_ring_address + RING_INDEX_OFFSET, RING_FIELD_SIZE,
                              self.next_used_index)

    def needs_interrupt(self) -> bool:
        """Whether the driver asked to hear about the entries pushed since the last call."""
        # Barrier (3): used->idx must be visible before used_event / flags are read.
        full_barrier()
        old = self._signalled_used_index
        new = self.next_used_index
        if old == new:
            return False
        self._signalled_used_index = new
        if self.event_index:
            return need_event(self._used_event(), new, old)
        return not self._avail_flags() & AVAIL_F_NO_INTERRUPT

    def disable_notifications(self) -> None:
        """Ask the driver not to kick while the device is already draining the ring."""
        if not self.event_index:
            self._set_used_flags(USED_F_NO_NOTIFY)

    def enable_notifications(self) -> bool:
        """Ask for a kick on the next buffer; True if buffers arrived meanwhile (drain again)."""
        if self.event_index:
            self._set_avail_event(self.last_avail_index)
        else:
            self._set_used_flags(0)
        # Barrier (3) again: the request is stored before avail->idx is read once more.
        full_barrier()
        return self.pending() != 0
