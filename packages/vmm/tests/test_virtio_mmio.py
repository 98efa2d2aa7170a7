"""The virtio-mmio v2 register model, driven the way Linux's virtio_mmio drives it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.native._virtio import lib
from keel.native.eventfd import EventFd
from keel.vmm.devices.bus import Bus
from keel.vmm.memory import GuestMemory
from keel.vmm.virtio.constants import (
    DESC_F_NEXT,
    DEVICE_ID_RNG,
    F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC,
    F_VERSION_1,
    STATUS_ACKNOWLEDGE,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
)
from keel.vmm.virtio.driver import MmioDriver, SplitQueueDriver
from keel.vmm.virtio.errors import VirtioConfigError
from keel.vmm.virtio.mmio import (
    INTERRUPT_CONFIG,
    INTERRUPT_VRING,
    MAGIC_VALUE,
    VENDOR_ID,
    WINDOW_SIZE,
    MmioTransport,
    kernel_command_line_fragment,
    notify_address,
)
from keel.vmm.virtio.rng import RngDevice

MEMORY_SIZE = 1 << 20
QUEUE_BASE = 0x2000
BUFFERS = 0x20000
BUFFER_AREA = 0x10000
DEVICE_BASE = 0xD000_0000
QUEUE_SIZE = 16
ALL_FEATURES = F_VERSION_1 | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC
READY_STATUS = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK


@dataclass
class Rig:
    memory: GuestMemory
    transport: MmioTransport
    driver: MmioDriver
    interrupts: list[int] = field(default_factory=list)

    def queue(self, size: int = QUEUE_SIZE) -> SplitQueueDriver:
        return SplitQueueDriver(self.memory, QUEUE_BASE, size, BUFFERS, BUFFER_AREA)

    def bring_up(self, features: int = ALL_FEATURES) -> SplitQueueDriver:
        assert self.driver.negotiate(features)
        queue = self.queue()
        self.driver.setup_queue(0, queue)
        self.driver.driver_ok()
        assert self.driver.status() == READY_STATUS
        return queue


@pytest.fixture
def rig() -> Iterator[Rig]:
    with GuestMemory(MEMORY_SIZE) as memory:
        interrupts: list[int] = []
        transport = MmioTransport(RngDevice(), memory, lambda: interrupts.append(1),
                                  name="rng0")
        yield Rig(memory, transport, MmioDriver(transport), interrupts)


def test_identity_registers(rig: Rig) -> None:
    assert rig.driver.read(lib.VIRTIO_MMIO_MAGIC_VALUE) == MAGIC_VALUE == 0x74726976
    assert rig.driver.read(lib.VIRTIO_MMIO_VERSION) == 2
    assert rig.driver.read(lib.VIRTIO_MMIO_DEVICE_ID) == DEVICE_ID_RNG
    assert rig.driver.read(lib.VIRTIO_MMIO_VENDOR_ID) == VENDOR_ID


def test_feature_windows(rig: Rig) -> None:
    assert rig.driver.device_features() == ALL_FEATURES
    rig.driver.write(lib.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1)
    assert rig.driver.read(lib.VIRTIO_MMIO_DEVICE_FEATURES) == F_VERSION_1 >> 32
    rig.driver.write(lib.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7)
    assert rig.driver.read(lib.VIRTIO_MMIO_DEVICE_FEATURES) == 0


def test_features_ok_refused_for_features_not_offered(rig: Rig,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    unknown = 1 << 40
    with caplog.at_level(logging.WARNING, logger="keel.vmm"):
        assert not rig.driver.negotiate(ALL_FEATURES | unknown)
    assert "accepted features 0x10000000000 the device does not offer" in caplog.text
    assert rig.driver.status() == STATUS_ACKNOWLEDGE | STATUS_DRIVER
    assert rig.driver.negotiate(ALL_FEATURES)  # a reset and a fair offer work


def test_features_ok_refused_without_version_1(rig: Rig) -> None:
    assert not rig.driver.negotiate(F_RING_EVENT_IDX)


def test_driver_features_frozen_after_features_ok(rig: Rig) -> None:
    assert rig.driver.negotiate(F_VERSION_1)
    rig.driver.write(lib.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0)
    rig.driver.write(lib.VIRTIO_MMIO_DRIVER_FEATURES, F_RING_EVENT_IDX)
    assert rig.transport.driver_features == F_VERSION_1


def test_requests_flow_and_interrupts_are_acknowledged(rig: Rig) -> None:
    queue = rig.bring_up()
    queue.set_used_event(0)
    head = queue.add(writable=[32])
    rig.driver.notify(0)
    (used,) = queue.used()
    assert used.head == head and used.length == 32 and len(used.data) == 32
    assert rig.interrupts == [1]
    assert rig.driver.acknowledge_interrupts() == INTERRUPT_VRING
    assert rig.driver.read(lib.VIRTIO_MMIO_INTERRUPT_STATUS) == 0


def test_ioeventfd_path_is_the_same_notification(rig: Rig) -> None:
    queue = rig.bring_up()
    queue.add(writable=[8])
    rig.transport.device.notify(0)  # what the event loop calls when the ioeventfd fires
    assert len(queue.used()) == 1
    assert notify_address(DEVICE_BASE) == DEVICE_BASE + lib.VIRTIO_MMIO_QUEUE_NOTIFY


def test_interrupt_through_an_eventfd() -> None:
    with GuestMemory(MEMORY_SIZE) as memory, EventFd(nonblocking=True) as irqfd:
        transport = MmioTransport(RngDevice(), memory, irqfd.write)
        driver = MmioDriver(transport)
        assert driver.negotiate(ALL_FEATURES)
        queue = SplitQueueDriver(memory, QUEUE_BASE, QUEUE_SIZE, BUFFERS, BUFFER_AREA)
        driver.setup_queue(0, queue)
        driver.driver_ok()
        queue.add(writable=[4])
        driver.notify(0)
        assert irqfd.read() == 1


def test_config_generation_and_config_interrupt(rig: Rig) -> None:
    rig.bring_up()
    before = rig.driver.read(lib.VIRTIO_MMIO_CONFIG_GENERATION)
    rig.transport.device.config_changed()
    assert rig.driver.read(lib.VIRTIO_MMIO_CONFIG_GENERATION) == before + 1
    assert rig.driver.read(lib.VIRTIO_MMIO_INTERRUPT_STATUS) == INTERRUPT_CONFIG


def test_reset_by_writing_zero(rig: Rig) -> None:
    rig.bring_up()
    rig.driver.write(lib.VIRTIO_MMIO_STATUS, 0)
    assert rig.driver.status() == 0
    rig.driver.write(lib.VIRTIO_MMIO_QUEUE_SEL, 0)
    assert rig.driver.read(lib.VIRTIO_MMIO_QUEUE_READY) == 0
    assert rig.transport.driver_features == 0
    assert not rig.transport.device.active
    rig.bring_up()  # and it comes up again


def test_features_ok_and_driver_ok_in_one_write_without_features(rig: Rig) -> None:
    # Found by the register fuzzer: a refused FEATURES_OK must not leave DRIVER_OK set.
    rig.driver.write(lib.VIRTIO_MMIO_STATUS, READY_STATUS | 0x200)
    assert rig.driver.status() == STATUS_ACKNOWLEDGE | STATUS_DRIVER
    assert not rig.transport.device.active


def test_status_out_of_order_is_ignored(rig: Rig) -> None:
    rig.driver.write(lib.VIRTIO_MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER_OK)
    assert rig.driver.status() == 0
    rig.driver.write(lib.VIRTIO_MMIO_STATUS, STATUS_ACKNOWLEDGE)
    rig.driver.write(lib.VIRTIO_MMIO_STATUS, STATUS_DRIVER)  # clears ACKNOWLEDGE: refused
    assert rig.driver.status() == STATUS_ACKNOWLEDGE


def test_queue_registers(rig: Rig) -> None:
    rig.driver.write(lib.VIRTIO_MMIO_QUEUE_SEL, 0)
    assert rig.driver.read(lib.VIRTIO_MMIO_QUEUE_NUM_MAX) == 64
    rig.driver.write(lib.VIRTIO_MMIO_QUEUE_SEL, 1)
    assert rig.driver.read(lib.VIRTIO_MMIO_QUEUE_NUM_MAX) == 0  # no such queue
    rig.driver.write(lib.VIRTIO_MMIO_QUEUE_READY, 1)
    assert rig.driver.read(lib.VIRTIO_MMIO_QUEUE_READY) == 0
    assert rig.driver.negotiate(ALL_FEATURES)
    queue = rig.queue()
    rig.driver.setup_queue(0, queue)
    live = rig.transport.queues[0]
    assert (live.size, live.descriptor_table_address, live.avail_ring_address,
            live.used_ring_address) == (QUEUE_SIZE, queue.descriptor_table_address,
                                        queue.avail_ring_address, queue.used_ring_address)
    rig.driver.write(lib.VIRTIO_MMIO_QUEUE_NUM, 4)  # ignored: the queue is ready
    assert live.size == QUEUE_SIZE


def test_odd_sized_register_accesses_are_ignored(rig: Rig) -> None:
    assert rig.transport.read(lib.VIRTIO_MMIO_MAGIC_VALUE, 2) == 0
    assert rig.transport.read(lib.VIRTIO_MMIO_MAGIC_VALUE + 1, 4) == 0
    rig.transport.write(lib.VIRTIO_MMIO_STATUS, 1, STATUS_ACKNOWLEDGE)
    assert rig.driver.status() == 0
    assert rig.transport.read(lib.VIRTIO_MMIO_QUEUE_NOTIFY, 4) == 0  # write-only
    assert rig.transport.read(lib.VIRTIO_MMIO_SHM_LEN_LOW, 4) == 0xFFFF_FFFF
    assert rig.transport.read(lib.VIRTIO_MMIO_CONFIG, 4) == 0  # rng has no config space


def test_hostile_ring_means_needs_reset_and_one_log_line(rig: Rig,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    queue = rig.bring_up()
    queue.write_descriptor(0, BUFFERS, 16, DESC_F_NEXT, 0)  # a chain that loops on itself
    queue.publish_head(0)
    with caplog.at_level(logging.DEBUG, logger="keel.vmm"):
        rig.driver.notify(0)
        rig.driver.notify(0)
        rig.transport.device.notify(0)
    problems = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(problems) == 1
    assert problems[0].getMessage() == (
        "rng0: queue 0: chain from head 0 is longer than the 16 entries of its descriptor "
        "table (a loop?); device needs reset")
    assert rig.driver.status() == READY_STATUS | STATUS_NEEDS_RESET
    assert rig.driver.read(lib.VIRTIO_MMIO_INTERRUPT_STATUS) & INTERRUPT_CONFIG
    # The driver's way out: reset and start over.
    queue = rig.bring_up()
    queue.add(writable=[8])
    rig.driver.notify(0)
    assert len(queue.used()) == 1


def test_bad_queue_configuration_at_driver_ok(rig: Rig,
                                              caplog: pytest.LogCaptureFixture) -> None:
    assert rig.driver.negotiate(ALL_FEATURES)
    rig.driver.write(lib.VIRTIO_MMIO_QUEUE_SEL, 0)
    rig.driver.write(lib.VIRTIO_MMIO_QUEUE_NUM, QUEUE_SIZE)
    rig.driver.write(lib.VIRTIO_MMIO_QUEUE_DESC_HIGH, 0x10)  # 64 GiB: no such memory
    rig.driver.write(lib.VIRTIO_MMIO_QUEUE_READY, 1)
    with caplog.at_level(logging.ERROR, logger="keel.vmm"):
        rig.driver.driver_ok()
    assert rig.driver.status() & STATUS_NEEDS_RESET
    assert "descriptor table of 256 bytes at 0x1000000000 is outside guest memory" in caplog.text


def test_queue_not_ready_at_driver_ok(rig: Rig) -> None:
    assert rig.driver.negotiate(ALL_FEATURES)
    rig.driver.driver_ok()
    assert rig.driver.status() & STATUS_NEEDS_RESET


def test_mapped_on_the_bus(rig: Rig) -> None:
    bus = Bus()
    bus.mmio.register(DEVICE_BASE, WINDOW_SIZE, rig.transport, "virtio-rng")
    assert bus.mmio.read(DEVICE_BASE + lib.VIRTIO_MMIO_MAGIC_VALUE, 4) == MAGIC_VALUE
    bus.mmio.write(DEVICE_BASE + lib.VIRTIO_MMIO_STATUS, 4, STATUS_ACKNOWLEDGE)
    assert rig.driver.status() == STATUS_ACKNOWLEDGE


def test_kernel_command_line_fragment() -> None:
    assert kernel_command_line_fragment(DEVICE_BASE, 5) == "virtio_mmio.device=4K@0xd0000000:5"
    assert kernel_command_line_fragment(0x1000, 12, size=0x200) == \
        "virtio_mmio.device=0x200@0x1000:12"
    with pytest.raises(VirtioConfigError, match="irq -1"):
        kernel_command_line_fragment(DEVICE_BASE, -1)


register_offsets = st.one_of(st.sampled_from(
    [getattr(lib, name) for name in dir(lib) if name.startswith("VIRTIO_MMIO_")
     and not name.startswith("VIRTIO_MMIO_INT_")]), st.integers(0, WINDOW_SIZE - 1))
accesses = st.lists(st.tuples(st.booleans(), register_offsets, st.sampled_from([1, 2, 4, 8]),
                              st.integers(0, (1 << 32) - 1)), max_size=60)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accesses=accesses, seed_rings=st.booleans())
def test_random_register_traffic_never_raises(accesses: list[tuple[bool, int, int, int]],
                                              seed_rings: bool) -> None:
    with GuestMemory(MEMORY_SIZE) as memory:
        if seed_rings:
            memory.write(0, bytes(range(256)) * (MEMORY_SIZE // 256))
        transport = MmioTransport(RngDevice(), memory, lambda: None)
        for is_write, offset, size, value in accesses:
            if is_write:
                transport.write(offset, size, value & ((1 << (8 * size)) - 1))
            else:
                assert 0 <= transport.read(offset, size) < 1 << (8 * size)
        status = transport.status
        assert status & ~0xFF == 0
        assert not status & STATUS_DRIVER_OK or status & STATUS_FEATURES_OK


def test_without_event_idx_the_device_asks_for_no_kicks_while_it_drains() -> None:
    with GuestMemory(MEMORY_SIZE) as memory:
        queue = SplitQueueDriver(memory, QUEUE_BASE, QUEUE_SIZE, BUFFERS, BUFFER_AREA)
        seen_while_draining: list[bool] = []

        def source(size: int) -> bytes:
            seen_while_draining.append(queue.device_wants_kicks())
            return bytes(size)

        transport = MmioTransport(RngDevice(source), memory, lambda: None, name="rng0")
        driver = MmioDriver(transport)
        assert driver.negotiate(F_VERSION_1)
        driver.setup_queue(0, queue)
        driver.driver_ok()
        for _ in range(3):
            queue.add(writable=[8])
        driver.notify(0)
        assert len(queue.used()) == 3
        assert seen_while_draining == [False, False, False]  # VRING_USED_F_NO_NOTIFY set
        assert queue.device_wants_kicks()  # and cleared once the ring is empty
