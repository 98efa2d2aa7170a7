"""Property tests: random rings over random memory never get past the virtqueue's checks.

Two properties. (1) Whatever the descriptor table, the available ring and the rest of guest
memory hold, pop() either returns a chain whose every buffer lies inside guest memory, with
readable buffers first and a bounded number of them, or raises VirtqueueError; nothing else.
(2) Any sequence of chains a well-behaved driver makes (direct or indirect, any mix of
readable and writable buffers) comes out exactly as it went in, and the used entries go back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

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
from keel.vmm.virtio.virtqueue import INDIRECT_TABLE_LIMIT, Virtqueue

MEMORY_SIZE = 1 << 16
QUEUE_BASE = 0x1000
BUFFERS = 0x4000
BUFFER_AREA = MEMORY_SIZE - BUFFERS
EXAMPLES = 300

FLAG_CHOICES = [0, 0, DESC_F_NEXT, DESC_F_NEXT, DESC_F_WRITE, DESC_F_WRITE | DESC_F_NEXT,
                DESC_F_INDIRECT, DESC_F_INDIRECT | DESC_F_NEXT, DESC_F_INDIRECT | DESC_F_WRITE,
                0xFFFF]
# Mostly plausible values (so chains get walked deep), some wild ones (so checks fire).
addresses = st.one_of(st.sampled_from([BUFFERS, BUFFERS + DESCRIPTOR_SIZE, QUEUE_BASE]),
                      st.integers(BUFFERS, MEMORY_SIZE - 256),
                      st.integers(0, MEMORY_SIZE + 64), st.integers(0, (1 << 64) - 1))
lengths = st.one_of(st.integers(0, 256), st.sampled_from([DESCRIPTOR_SIZE, 4 * DESCRIPTOR_SIZE]),
                    st.integers(0, (1 << 32) - 1))


def descriptors(size: int) -> st.SearchStrategy[tuple[int, int, int, int]]:
    return st.tuples(addresses, lengths, st.sampled_from(FLAG_CHOICES),
                     st.integers(0, size + 2))


@dataclass
class HostileRing:
    size: int
    seed: int
    features: int
    table: list[tuple[int, int, int, int]]
    indirect: list[tuple[int, int, int, int]]  # an indirect table at BUFFERS
    heads: list[int]
    avail_index: int
    start: int


@st.composite
def hostile_rings(draw: st.DrawFn) -> HostileRing:
    size = draw(st.sampled_from([1, 2, 4, 8, 16]))
    start = draw(st.integers(0, 0xFFFF))
    return HostileRing(
        size=size,
        seed=draw(st.integers(0, 2**32)),
        features=F_VERSION_1 | draw(st.sampled_from(
            [0, F_RING_INDIRECT_DESC, F_RING_EVENT_IDX | F_RING_INDIRECT_DESC])),
        table=draw(st.lists(descriptors(size), min_size=size, max_size=size)),
        indirect=draw(st.lists(descriptors(size), max_size=8)),
        heads=draw(st.lists(st.integers(0, size + 1), min_size=size, max_size=size)),
        start=start,
        avail_index=(start + draw(st.one_of(st.integers(0, size), st.integers(0, 0xFFFF))))
        % 0x10000,
    )


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ring=hostile_rings())
def test_random_rings_are_walked_or_refused(ring: HostileRing) -> None:
    size = ring.size
    with GuestMemory(MEMORY_SIZE) as memory:
        memory.write(0, random.Random(ring.seed).randbytes(MEMORY_SIZE))
        driver = SplitQueueDriver(memory, QUEUE_BASE, size, BUFFERS, BUFFER_AREA)
        for index, (address, length, flags, next_index) in enumerate(ring.table):
            driver.write_descriptor(index, address, length, flags, next_index)
        for index, (address, length, flags, next_index) in enumerate(ring.indirect):
            driver.write_descriptor(index, address, length, flags, next_index, table=BUFFERS)
        driver.avail_index = ring.start
        for head in ring.heads:
            driver.publish_head(head, kick_index=False)
        driver.set_avail_index(ring.avail_index)
        queue = Virtqueue(memory, 0, size)
        queue.descriptor_table_address = driver.descriptor_table_address
        queue.avail_ring_address = driver.avail_ring_address
        queue.used_ring_address = driver.used_ring_address
        queue.activate(ring.features)
        queue.last_avail_index = ring.start
        chains = 0
        try:
            while (chain := queue.pop()) is not None:
                chains += 1
                assert chains <= size
                assert 0 <= chain.head < size
                segments = chain.readable + chain.writable
                assert 1 <= len(segments) <= size + INDIRECT_TABLE_LIMIT
                for segment in segments:
                    assert segment.length == 0 or memory.contains(segment.address,
                                                                  segment.length)
                chain.read(memory, chain.readable_length)
                chain.write(memory, bytes(min(chain.writable_length, 4096)))
                queue.push(chain.head, 0)
        except VirtqueueError as error:
            assert str(error).startswith("queue 0")
            event("refused")
        event(f"chains walked: {min(chains, 2)}+" if chains else "no chain walked")


chain_shapes = st.lists(
    st.tuples(st.lists(st.binary(min_size=1, max_size=64), max_size=3),
              st.lists(st.integers(1, 64), max_size=3),
              st.booleans()).filter(lambda shape: bool(shape[0] or shape[1])),
    min_size=1, max_size=40)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=chain_shapes, size=st.sampled_from([8, 16]), event_index=st.booleans())
def test_well_formed_chains_round_trip(shapes: list[tuple[list[bytes], list[int], bool]],
                                       size: int, event_index: bool) -> None:
    features = F_VERSION_1 | F_RING_INDIRECT_DESC | (F_RING_EVENT_IDX if event_index else 0)
    with GuestMemory(MEMORY_SIZE) as memory:
        driver = SplitQueueDriver(memory, QUEUE_BASE, size, BUFFERS, BUFFER_AREA)
        queue = Virtqueue(memory, 0, size)
        queue.size = size
        queue.descriptor_table_address = driver.descriptor_table_address
        queue.avail_ring_address = driver.avail_ring_address
        queue.used_ring_address = driver.used_ring_address
        queue.activate(features)
        for readable, writable, indirect in shapes:
            head = driver.add(readable, writable, indirect=indirect)
            chain = queue.pop()
            assert chain is not None and chain.head == head
            assert chain.read(memory, 1 << 16) == b"".join(readable)
            assert [s.length for s in chain.writable] == writable
            answer = bytes(index % 251 for index in range(sum(writable)))
            assert chain.write(memory, answer) == len(answer)
            queue.push(chain.head, len(answer))
            (used,) = driver.used()
            assert (used.head, used.data) == (head, answer)
            assert queue.pop() is None
