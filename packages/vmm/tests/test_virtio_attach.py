"""Placing virtio-mmio devices: windows after the boot timer, lines from 5, command line."""

from __future__ import annotations

import pytest

from keel.native._virtio import lib
from keel.native.testing.skips import requires_kvm
from keel.vmm.boot.layout import BOOT_TIMER_ADDRESS
from keel.vmm.devices.bus import Bus
from keel.vmm.machine import Vm
from keel.vmm.memory import GuestMemory
from keel.vmm.virtio.attach import FIRST_DEVICE_ADDRESS, LAST_IRQ, VirtioMmioDevices
from keel.vmm.virtio.driver import MmioDriver, SplitQueueDriver
from keel.vmm.virtio.errors import VirtioConfigError
from keel.vmm.virtio.mmio import MAGIC_VALUE, WINDOW_SIZE
from keel.vmm.virtio.rng import RngDevice

MEBIBYTE = 1 << 20


def test_windows_lines_and_command_line() -> None:
    raised: list[int] = []
    bus = Bus()
    with GuestMemory(MEBIBYTE) as memory:
        devices = VirtioMmioDevices(bus.mmio, memory, raised.append)
        first = devices.add(RngDevice())
        second = devices.add(RngDevice(), "rng1")
        assert first.base == FIRST_DEVICE_ADDRESS > BOOT_TIMER_ADDRESS
        assert second.base == first.base + WINDOW_SIZE
        assert (first.irq, second.irq) == (5, 6)
        assert devices.command_line() == (
            "virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6")
        assert bus.mmio.read(second.base + lib.VIRTIO_MMIO_MAGIC_VALUE, 4) == MAGIC_VALUE
        # A used buffer on the second device raises the second device's line.
        driver = MmioDriver(second.transport)
        assert driver.negotiate(driver.device_features())
        queue = SplitQueueDriver(memory, 0x1000, 8, 0x8000, 0x1000)
        driver.setup_queue(0, queue)
        driver.driver_ok()
        queue.add(writable=[4])
        driver.notify(0)
        assert raised == [6]


def test_lines_run_out() -> None:
    with GuestMemory(MEBIBYTE) as memory:
        devices = VirtioMmioDevices(Bus().mmio, memory, lambda irq: None)
        for _ in range(5, LAST_IRQ + 1):
            devices.add(RngDevice())
        with pytest.raises(VirtioConfigError, match="no interrupt line left for virtio-rng"):
            devices.add(RngDevice())


@requires_kvm
@pytest.mark.kvm
def test_on_a_real_machine() -> None:
    with Vm(16 * MEBIBYTE) as vm:
        def pulse(irq: int) -> None:
            vm.irq_line(irq, True)
            vm.irq_line(irq, False)

        devices = VirtioMmioDevices(vm.bus.mmio, vm.memory, pulse)
        slot = devices.add(RngDevice())
        assert vm.bus.mmio.read(slot.base + lib.VIRTIO_MMIO_VERSION, 4) == 2
        slot.transport.device.config_changed()  # raises the line through KVM_IRQ_LINE
        assert slot.transport.read(lib.VIRTIO_MMIO_INTERRUPT_STATUS, 4)
