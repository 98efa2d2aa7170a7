"""Place virtio-mmio devices on a machine: address window, interrupt line, command line.

Why one place: every device needs the same three things, and they must agree: a page of MMIO
space on the Bus, an interrupt line the guest learns from `virtio_mmio.device=` on the kernel
command line, and the edge that raises that line (an irqfd write, or a KVM_IRQ_LINE pulse).
Windows follow the boot timer's page, one page per device; lines start at 5, after the PIT
(0), the i8042 (1) and COM1 (4), and stop at the I/O APIC's last pin (23), as Firecracker's do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from keel.vmm.boot.layout import MMIO_DEVICES_START
from keel.vmm.virtio.device import VirtioDevice
from keel.vmm.virtio.errors import VirtioConfigError
from keel.vmm.virtio.memory import GuestMemoryAccess
from keel.vmm.virtio.mmio import WINDOW_SIZE, MmioTransport, kernel_command_line_fragment

FIRST_DEVICE_ADDRESS = MMIO_DEVICES_START + WINDOW_SIZE
FIRST_IRQ = 5
LAST_IRQ = 23


class MmioSpace(Protocol):
    def register(self, base: int, length: int, device: MmioTransport, name: str) -> None: ...


@dataclass(frozen=True)
class MmioSlot:
    """One placed device: its window, its line, and the transport serving the window."""

    base: int
    irq: int
    transport: MmioTransport

    @property
    def command_line(self) -> str:
        return kernel_command_line_fragment(self.base, self.irq)


class VirtioMmioDevices:
    """Allocates windows and lines and wires each device's interrupt to `raise_irq(line)`."""

    def __init__(self, mmio: MmioSpace, memory: GuestMemoryAccess,
                 raise_irq: Callable[[int], None],
                 first_address: int = FIRST_DEVICE_ADDRESS, first_irq: int = FIRST_IRQ) -> None:
        self._mmio = mmio
        self._memory = memory
        self._raise_irq = raise_irq
        self._next_address = first_address
        self._next_irq = first_irq
        self.slots: list[MmioSlot] = []

    def add(self, device: VirtioDevice, name: str | None = None) -> MmioSlot:
        if self._next_irq > LAST_IRQ:
            raise VirtioConfigError(f"no interrupt line left for {device.name}: lines "
                                    f"{FIRST_IRQ}-{LAST_IRQ} are taken")
        base, irq = self._next_address, self._next_irq
        label = name or f"{device.name}@{base:#x}"
        transport = MmioTransport(device, self._memory, lambda: self._raise_irq(irq), label)
        self._mmio.register(base, WINDOW_SIZE, transport, label)
        self._next_address += WINDOW_SIZE
        self._next_irq += 1
        slot = MmioSlot(base, irq, transport)
        self.slots.append(slot)
        return slot

    def command_line(self) -> str:
        """The `virtio_mmio.device=` parameters for every placed device, space-separated."""
        return " ".join(slot.command_line for slot in self.slots)
