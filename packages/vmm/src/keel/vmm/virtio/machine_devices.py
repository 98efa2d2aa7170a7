"""A VM's virtio devices: placement, backends, and the event loop that runs their I/O.

Why one owner: a device is four resources that must come and go together (its MMIO window and
interrupt line, its backend's fd, its eventfd registrations with KVM, its tasks on the device
loop), and the VM closes them in one call after its vCPUs have stopped.
"""

from __future__ import annotations

import os

from keel.native.fd import Closing
from keel.vmm.virtio.attach import MmioSlot, MmioSpace, VirtioMmioDevices
from keel.vmm.virtio.block import BlockDevice
from keel.vmm.virtio.block_file import FileBlockBackend
from keel.vmm.virtio.device import VirtioDevice
from keel.vmm.virtio.errors import VirtioConfigError
from keel.vmm.virtio.event_loop import DeviceEventLoop, EventRegistrar
from keel.vmm.virtio.memory import GuestMemoryAccess
from keel.vmm.virtio.net import NetDevice
from keel.vmm.virtio.net_tap import TapBackend
from keel.vmm.virtio.rng import RngDevice

# Locally administered, unicast: 02:"KEEL":<index>, one per virtio-net device of a VM.
DEFAULT_MAC_PREFIX = "02:4b:45:45:4c"
MAC_INDEX_LIMIT = 0x100


class MachineDevices(Closing):
    """Adds devices before the VM starts; `start()` launches their I/O; `close()` ends it."""

    def __init__(self, vm: EventRegistrar, mmio: MmioSpace, memory: GuestMemoryAccess,
                 driver: str | None = None) -> None:
        self.loop = DeviceEventLoop(vm, driver)
        self.placement = VirtioMmioDevices(mmio, memory, self.loop.raise_irq)
        self.devices: list[VirtioDevice] = []
        self._owned: list[TapBackend | FileBlockBackend] = []
        self._net_count = 0
        self._started = False

    def add(self, device: VirtioDevice, name: str | None = None) -> MmioSlot:
        if self._started:
            raise VirtioConfigError(f"{device.name}: devices are added before the VM starts")
        slot = self.placement.add(device, name)
        self.loop.attach(slot)
        self.devices.append(device)
        return slot

    def add_net(self, tap: str | TapBackend, mac: str | bytes | None = None) -> NetDevice:
        """virtio-net on a TAP: a name opens (or creates) it in this thread's namespace."""
        if mac is None:
            if self._net_count >= MAC_INDEX_LIMIT:
                raise VirtioConfigError("give each virtio-net device beyond the 256th a MAC")
            mac = f"{DEFAULT_MAC_PREFIX}:{self._net_count:02x}"
        backend = TapBackend.open(tap) if isinstance(tap, str) else tap
        if isinstance(tap, str):
            self._owned.append(backend)
        device = NetDevice(backend, mac)
        self.add(device, f"net{self._net_count}")
        self._net_count += 1
        return device

    def add_block(self, path: str | os.PathLike[str], *, read_only: bool = False,
                  serial: str = "keel") -> BlockDevice:
        backend = FileBlockBackend(path, read_only=read_only)
        self._owned.append(backend)
        device = BlockDevice(backend, read_only=read_only, serial=serial)
        self.add(device, f"disk{sum(isinstance(d, BlockDevice) for d in self.devices)}")
        return device

    def add_rng(self) -> RngDevice:
        device = RngDevice()
        self.add(device, "rng")
        return device

    def command_line(self) -> str:
        """The `virtio_mmio.device=` parameters Linux needs to find every device."""
        return self.placement.command_line()

    def start(self) -> None:
        self._started = True
        if self.devices:
            self.loop.start()

    def close(self) -> None:
        """After the vCPUs stopped: end the loop, drop KVM registrations, close backends."""
        self.loop.close()
        while self._owned:
            self._owned.pop().close()
