"""The split virtqueue against rings laid out as Linux lays them out, and every hostile shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keel.vmm.memory import GuestMemory
from keel.vmm.virtio.constants import (
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    DESCRIPTOR_SIZE,
    F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC,
    F_VERSION_1,
)
from keel.vmm.virtio.driver import SplitQueueDriver
from keel.vmm.virtio.errors import VirtqueueError
from keel.vmm.virtio.virtqueue import INDIRECT_TABLE_LIMIT, Virtqueue, need_event

MEMORY_SIZE = 1 << 20
QUEUE_BASE = 0x1000
BUFFERS = 0x10000
BUFFER_AREA = 0x40000
QUEUE_SIZE = 8
ALL_FEATURES = F_VERSION_1 | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory(MEMORY_SIZE) as guest_memory:
        yield guest_memory


def make_queue(memory: GuestMemory, features: int = ALL_FEATURES, size: int = QUEUE_SIZE,
               max_size: int = QUEUE_SIZE) -> tuple[Virtqueue, SplitQueueDriver]:
    driver = SplitQueueDriver(memory, QUEUE_BASE, size, BUFFERS, BUFFER_AREA)
    queue = Virtqueue(memory, 0, max_size)
    queue.size = size
    queue.descriptor_table_address = driver.descriptor_table_address
    queue.avail_ring_address = driver.avail_ring_address
    queue.used_ring_address = driver.used_ring_address
    queue.ready = True
    queue.activate(features)
    return queue, driver


def pop(queue: Virtqueue) -> object:
    chain = queue.pop()
    assert chain is not None
    return chain


def test_empty_ring_pops_nothing(memory: GuestMemory) -> None:
    queue, _ = make_queue(memory)
    assert queue.pop() is None
    assert queue.pending() == 0


@pytest.mark.parametrize("indirect", [False, True])
def test_chain_round_trip(memory: GuestMemory, indirect: bool) -> None:
    queue, driver = make_queue(memory)
    head = driver.add([b"hello ", b"world"], [4, 6], indirect=indirect)
    chain = queue.pop()
    assert chain is not None
    assert chain.head == head
    assert [segment.length for segment in chain.readable] == [6, 5]
    assert [segment.length for segment in chain.writable] == [4, 6]
    assert chain.read(memory, 100) == b"hello world"
    assert chain.read(memory, 4, offset=4) == b"o wo"
    assert chain.write(memory, b"0123456789ABC") == 10
    queue.push(chain.head, 10)
    assert queue.pop() is None
    (used,) = driver.used()
    assert (used.head, used.length, used.data) == (head, 10, b"0123456789")
    # Descriptors went back to the free list: the ring can be filled again, many times over.
    for round_number in range(3 * QUEUE_SIZE):
        driver.add([bytes([round_number])], [1], indirect=indirect)
        chain = queue.pop()
        assert chain is not None and chain.read(memory, 1) == bytes([round_number])
        queue.push(chain.head, 0)
        assert len(driver.used()) == 1


def test_ring_indices_wrap_at_65536(memory: GuestMemory) -> None:
    queue, driver = make_queue(memory)
    start = (1 << 16) - 3
    queue.last_avail_index = queue.next_used_index = start
    driver.avail_index = driver.last_used_index = start
    driver.set_avail_index(start)
    for _ in range(6):
        driver.add([b"x"])
        chain = queue.pop()
        assert chain is not None
        queue.push(chain.head, 0)
        assert len(driver.used()) == 1
    assert queue.last_avail_index == 3


def test_event_index_suppresses_interrupts_until_used_event(memory: GuestMemory) -> None:
    queue, driver = make_queue(memory)
    driver.set_used_event(1)  # interrupt once the used index passes 1, i.e. reaches 2
    for expected in (False, True, False):
        driver.add([b"x"])
        chain = queue.pop()
        assert chain is not None
        queue.push(chain.head, 0)
        assert queue.needs_interrupt() is expected
    assert queue.needs_interrupt() is False  # nothing new pushed


def test_event_index_avail_event_asks_for_the_next_kick(memory: GuestMemory) -> None:
    queue, driver = make_queue(memory)
    driver.add([b"a"])
    driver.add([b"b"])
    assert pop(queue) and pop(queue)
    assert queue.enable_notifications() is False
    assert driver.avail_event() == 2
    driver.add([b"c"])
    assert queue.enable_notifications() is True  # arrived meanwhile: drain again


def test_without_event_index_flags_suppress(memory: GuestMemory) -> None:
    queue, driver = make_queue(memory, features=F_VERSION_1 | F_RING_INDIRECT_DESC)
    driver.add([b"x"])
    chain = queue.pop()
    assert chain is not None
    queue.push(chain.head, 0)
    driver.set_no_interrupt(True)
    assert queue.needs_interrupt() is False
    driver.add([b"y"])
    chain = queue.pop()
    assert chain is not None
    queue.push(chain.head, 0)
    driver.set_no_interrupt(False)
    assert queue.needs_interrupt() is True
    queue.disable_notifications()
    assert not driver.device_wants_kicks()
    queue.enable_notifications()
    assert driver.device_wants_kicks()


def test_need_event_matches_linux() -> None:
    # vring_need_event(event, new, old) from include/uapi/linux/virtio_ring.h
    assert need_event(0, 1, 0)
    assert not need_event(1, 1, 0)
    assert need_event(65535, 0, 65535)
    assert need_event(5, 10, 3)
    assert not need_event(10, 10, 3)


# -- hostile shapes: each raises VirtqueueError naming what was wrong -------------------------


def hostile(memory: GuestMemory, features: int = ALL_FEATURES) -> tuple[Virtqueue,
                                                                         SplitQueueDriver]:
    return make_queue(memory, features)


def expect_fault(queue: Virtqueue, pattern: str) -> None:
    with pytest.raises(VirtqueueError, match=pattern):
        queue.pop()


def test_head_outside_the_table(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    driver.publish_head(QUEUE_SIZE)
    expect_fault(queue, "chain head 8 is outside the descriptor table of 8 entries")


def test_next_outside_the_table(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    driver.write_descriptor(0, BUFFERS, 16, DESC_F_NEXT, QUEUE_SIZE + 3)
    driver.publish_head(0)
    expect_fault(queue, "links to 11, outside its descriptor table of 8 entries")


def test_loop_in_the_table(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    driver.write_descriptor(0, BUFFERS, 16, DESC_F_NEXT, 1)
    driver.write_descriptor(1, BUFFERS, 16, DESC_F_NEXT, 0)
    driver.publish_head(0)
    expect_fault(queue, "longer than the 8 entries of its descriptor table")


def test_self_loop(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    driver.write_descriptor(3, BUFFERS, 16, DESC_F_NEXT, 3)
    driver.publish_head(3)
    expect_fault(queue, "a loop")


@pytest.mark.parametrize("address,length", [
    (MEMORY_SIZE - 8, 16),           # runs off the end
    (MEMORY_SIZE, 1),                # starts past the end
    ((1 << 64) - 8, 16),             # wraps around 2**64
    (0xC000_0000, 4096),             # in the MMIO hole
])
def test_buffer_outside_guest_memory(memory: GuestMemory, address: int, length: int) -> None:
    queue, driver = hostile(memory)
    driver.write_descriptor(0, address, length)
    driver.publish_head(0)
    expect_fault(queue, "outside guest memory")


def test_readable_after_writable(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    driver.write_descriptor(0, BUFFERS, 16, DESC_F_WRITE | DESC_F_NEXT, 1)
    driver.write_descriptor(1, BUFFERS, 16)
    driver.publish_head(0)
    expect_fault(queue, "device-readable descriptor after a device-writable one")


def test_avail_index_jumping_past_the_queue(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    driver.set_avail_index(QUEUE_SIZE + 1)
    expect_fault(queue, "available index 9 is 9 entries ahead")


def test_indirect_without_the_feature(memory: GuestMemory) -> None:
    queue, driver = hostile(memory, features=F_VERSION_1)
    driver.write_descriptor(0, BUFFERS, DESCRIPTOR_SIZE, DESC_F_INDIRECT)
    driver.publish_head(0)
    expect_fault(queue, "VIRTIO_RING_F_INDIRECT_DESC was not negotiated")


def test_indirect_inside_indirect(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    table = BUFFERS
    driver.write_descriptor(0, BUFFERS + 0x100, DESCRIPTOR_SIZE, DESC_F_INDIRECT, table=table)
    driver.write_descriptor(0, table, DESCRIPTOR_SIZE, DESC_F_INDIRECT)
    driver.publish_head(0)
    expect_fault(queue, "indirect descriptor inside an indirect table")


def test_indirect_with_next(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    driver.write_descriptor(0, BUFFERS, DESCRIPTOR_SIZE, DESC_F_INDIRECT | DESC_F_NEXT, 1)
    driver.publish_head(0)
    expect_fault(queue, "also has NEXT set")


@pytest.mark.parametrize("length", [0, 8, DESCRIPTOR_SIZE + 1])
def test_indirect_bad_length(memory: GuestMemory, length: int) -> None:
    queue, driver = hostile(memory)
    driver.write_descriptor(0, BUFFERS, length, DESC_F_INDIRECT)
    driver.publish_head(0)
    expect_fault(queue, f"indirect table length {length} is not a positive multiple of 16")


def test_indirect_table_too_large(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    driver.write_descriptor(0, BUFFERS, DESCRIPTOR_SIZE * (INDIRECT_TABLE_LIMIT + 1),
                            DESC_F_INDIRECT)
    driver.publish_head(0)
    expect_fault(queue, "exceeds the limit of 1024")


def test_indirect_table_outside_memory(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    driver.write_descriptor(0, MEMORY_SIZE - DESCRIPTOR_SIZE, 2 * DESCRIPTOR_SIZE,
                            DESC_F_INDIRECT)
    driver.publish_head(0)
    expect_fault(queue, "indirect table of 32 bytes at 0xffff0 is outside guest memory")


def test_indirect_table_needs_no_alignment(memory: GuestMemory) -> None:
    # Linux kmallocs indirect tables: 8-byte alignment is all it guarantees.
    queue, driver = hostile(memory)
    table = BUFFERS + 8
    driver.write_descriptor(0, BUFFERS + 0x1000, 4, DESC_F_NEXT, 1, table=table)
    driver.write_descriptor(1, BUFFERS + 0x2000, 1, DESC_F_WRITE, table=table)
    driver.write_descriptor(0, table, 2 * DESCRIPTOR_SIZE, DESC_F_INDIRECT)
    driver.publish_head(0)
    chain = queue.pop()
    assert chain is not None
    assert (chain.readable_length, chain.writable_length) == (4, 1)


def test_loop_inside_an_indirect_table(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    table = BUFFERS
    for index in range(4):
        driver.write_descriptor(index, BUFFERS + 0x1000, 8, DESC_F_NEXT, (index + 1) % 4,
                                table=table)
    driver.write_descriptor(0, table, 4 * DESCRIPTOR_SIZE, DESC_F_INDIRECT)
    driver.publish_head(0)
    expect_fault(queue, f"longer than the 4 entries of its indirect table at {table:#x}")


def test_indirect_next_outside_its_table(memory: GuestMemory) -> None:
    queue, driver = hostile(memory)
    table = BUFFERS
    driver.write_descriptor(0, BUFFERS + 0x1000, 8, DESC_F_NEXT, 2, table=table)
    driver.write_descriptor(0, table, 2 * DESCRIPTOR_SIZE, DESC_F_INDIRECT)
    driver.publish_head(0)
    expect_fault(queue, "links to 2, outside its indirect table")


# -- activation: the queue configuration itself is checked --------------------------------


@pytest.mark.parametrize("size", [0, 3, 16])
def test_activation_refuses_bad_sizes(memory: GuestMemory, size: int) -> None:
    with pytest.raises(VirtqueueError, match=f"size {size} is not a power of two"):
        _activate_with_size(memory, size)


def _activate_with_size(memory: GuestMemory, size: int) -> None:
    queue = Virtqueue(memory, 0, QUEUE_SIZE)
    queue.size = size
    queue.descriptor_table_address = QUEUE_BASE
    queue.avail_ring_address = QUEUE_BASE + 0x400
    queue.used_ring_address = QUEUE_BASE + 0x800
    queue.activate(ALL_FEATURES)


@pytest.mark.parametrize("field,address,message", [
    ("descriptor_table_address", QUEUE_BASE + 8, "descriptor table at 0x1008 is not 16-byte"),
    ("avail_ring_address", QUEUE_BASE + 1, "available ring at 0x1001 is not 2-byte"),
    ("used_ring_address", QUEUE_BASE + 2, "used ring at 0x1002 is not 4-byte"),
    ("used_ring_address", MEMORY_SIZE - 16, "used ring of 70 bytes at 0xffff0 is outside"),
    ("descriptor_table_address", 1 << 40, "descriptor table of 128 bytes at 0x10000000000"),
])
def test_activation_refuses_bad_ring_placement(memory: GuestMemory, field: str, address: int,
                                               message: str) -> None:
    queue = Virtqueue(memory, 0, QUEUE_SIZE)
    queue.descriptor_table_address = QUEUE_BASE
    queue.avail_ring_address = QUEUE_BASE + 0x400
    queue.used_ring_address = QUEUE_BASE + 0x800
    setattr(queue, field, address)
    with pytest.raises(VirtqueueError, match=message):
        queue.activate(ALL_FEATURES)


def test_maximum_size_must_be_a_power_of_two(memory: GuestMemory) -> None:
    with pytest.raises(ValueError, match="power of two"):
        Virtqueue(memory, 0, 100)
