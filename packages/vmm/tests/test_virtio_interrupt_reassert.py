"""An interrupt the driver never acknowledges is asserted again; an acknowledged one is not.

Why: an irqfd gives an edge, and KVM's I/O APIC drops an edge that meets a masked pin, while
virtio-mmio's InterruptStatus stays set until acknowledged (level-like). With event indexes a
lost edge would stall a queue for good. Here the loop runs for real (keel.runtime thread, real
eventfds); the only stand-in is the KVM registration, recorded instead of made, so the test
can read the very eventfd KVM would have been handed and count the assertions on it.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from typing import Any

import pytest

from keel.native._virtio import lib
from keel.native.eventfd import EventFd
from keel.vmm.devices.bus import Bus
from keel.vmm.memory import GuestMemory
from keel.vmm.virtio.attach import VirtioMmioDevices
from keel.vmm.virtio.driver import MmioDriver
from keel.vmm.virtio.event_loop import INTERRUPT_REASSERT_SECONDS, DeviceEventLoop
from keel.vmm.virtio.mmio import INTERRUPT_VRING
from keel.vmm.virtio.rng import RngDevice

MEMORY_SIZE = 1 << 20
EVENTFD_COUNTER_SIZE = 8
# Long enough for several re-assertions, short enough to keep the test quick.
WATCH_SECONDS = INTERRUPT_REASSERT_SECONDS * 6


class RecordingRegistrar:
    """Takes the loop's irqfd and ioeventfd registrations without a VM (see module doc)."""

    def __init__(self) -> None:
        self.irqfds: dict[int, Any] = {}

    def irqfd(self, eventfd: Any, gsi: int, deassign: bool = False) -> None:
        if deassign:
            self.irqfds.pop(gsi, None)
        else:
            self.irqfds[gsi] = eventfd

    def ioeventfd(self, eventfd: Any, address: int, length: int, *,
                  datamatch: int | None = None, port_io: bool = False,
                  deassign: bool = False) -> None:
        return None


def assertions_within(eventfd: EventFd, seconds: float) -> int:
    """How many times the line was asserted (eventfd writes) during `seconds`."""
    total = 0
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([eventfd.fileno()], [], [], remaining)
        if readable:
            total += int.from_bytes(os.read(eventfd.fileno(), EVENTFD_COUNTER_SIZE), "little")
    return total


@pytest.fixture
def loop_with_rng() -> Iterator[tuple[DeviceEventLoop, RecordingRegistrar, Any]]:
    registrar = RecordingRegistrar()
    with GuestMemory(MEMORY_SIZE) as memory, DeviceEventLoop(registrar) as loop:
        devices = VirtioMmioDevices(Bus().mmio, memory, loop.raise_irq)
        slot = devices.add(RngDevice(), "rng0")
        loop.attach(slot)
        loop.start()
        yield loop, registrar, slot


def test_an_unacknowledged_interrupt_is_asserted_again_until_acknowledged(
        loop_with_rng: tuple[DeviceEventLoop, RecordingRegistrar, Any]) -> None:
    loop, registrar, slot = loop_with_rng
    line = registrar.irqfds[slot.irq]
    assert loop.running
    slot.transport.device.interrupt_used()  # the device's one edge
    assert slot.transport.pending_interrupt() == (INTERRUPT_VRING, 0)
    first = assertions_within(line, WATCH_SECONDS)
    assert first >= 3, f"{first} assertions in {WATCH_SECONDS} s while unacknowledged"

    MmioDriver(slot.transport).write(lib.VIRTIO_MMIO_INTERRUPT_ACK, INTERRUPT_VRING)
    assert slot.transport.pending_interrupt() == (0, 1)
    assertions_within(line, INTERRUPT_REASSERT_SECONDS)  # one may have been on its way
    assert assertions_within(line, WATCH_SECONDS) == 0


def test_a_promptly_acknowledged_interrupt_is_never_repeated(
        loop_with_rng: tuple[DeviceEventLoop, RecordingRegistrar, Any]) -> None:
    loop, registrar, slot = loop_with_rng
    line = registrar.irqfds[slot.irq]
    driver = MmioDriver(slot.transport)
    edges = 0
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:  # a driver that acknowledges every interrupt at once
        slot.transport.device.interrupt_used()
        edges += 1
        driver.write(lib.VIRTIO_MMIO_INTERRUPT_ACK, INTERRUPT_VRING)
        time.sleep(INTERRUPT_REASSERT_SECONDS / 10)
    assert assertions_within(line, INTERRUPT_REASSERT_SECONDS) == edges
    assert loop.failure is None
