"""virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2), as a sans-IO register model.

Why sans-IO: the register file is a state machine the guest drives with 32-bit MMIO reads and
writes; the machine maps it on its Bus (this class has the Bus's `read`/`write(offset, size)`
shape) and wires two edges: `interrupt` (a callable, normally a write to an irqfd) and queue
notifications, which arrive either as a QueueNotify write here or through an ioeventfd on
`notify_address(base)` that the machine's event loop turns into `device.notify(index)`.

Guest writes that break the protocol (features after FEATURES_OK, queue registers while the
queue is ready, status bits cleared without a reset) are ignored with a debug line; a driver
that accepts features the device never offered does not get FEATURES_OK, as the spec says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ClassVar

from keel.native._virtio import lib
from keel.vmm.virtio.constants import (
    F_VERSION_1,
    FEATURE_BITS,
    STATUS_ACKNOWLEDGE,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FAILED,
    STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
)
from keel.vmm.virtio.device import VirtioDevice
from keel.vmm.virtio.errors import VirtioConfigError
from keel.vmm.virtio.memory import GuestMemoryAccess
from keel.vmm.virtio.virtqueue import Virtqueue

logger = logging.getLogger("keel.vmm")

MAGIC_VALUE = int.from_bytes(b"virt", "little")  # 4.2.2: "0x74726976 (a Little Endian
# equivalent of the 'virt' string)"; not in the uapi headers.
VERSION = 2  # the modern (non-legacy) virtio-mmio register layout
VENDOR_ID = int.from_bytes(b"KEEL", "little")
REGISTER_SIZE = 4
WORD_BITS = 32
WORD_MASK = (1 << WORD_BITS) - 1
FEATURE_WORDS = FEATURE_BITS // WORD_BITS
CONFIG_OFFSET: int = lib.VIRTIO_MMIO_CONFIG
CONFIG_ACCESS_SIZES = (1, 2, 4, 8)
# One page per device, as Linux's virtio_mmio and Firecracker map them.
WINDOW_SIZE = 0x1000
KIBIBYTE = 1 << 10
# SHMLen/SHMBase read as all ones when the selected region does not exist (4.2.2).
NO_SHARED_MEMORY = WORD_MASK
INTERRUPT_VRING: int = lib.VIRTIO_MMIO_INT_VRING
INTERRUPT_CONFIG: int = lib.VIRTIO_MMIO_INT_CONFIG
NOTIFY_OFFSET: int = lib.VIRTIO_MMIO_QUEUE_NOTIFY
STATUS_ORDER = (STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK, STATUS_DRIVER_OK)
STATUS_BYTE_MASK = 0xFF  # device status is one byte (2.1); the register is 32 bits wide


def kernel_command_line_fragment(base: int, irq: int, size: int = WINDOW_SIZE) -> str:
    """`virtio_mmio.device=<size>@<base>:<irq>`: declares one device to Linux's virtio_mmio."""
    if base < 0 or irq < 0 or size <= 0:
        raise VirtioConfigError(f"virtio-mmio device at {base:#x} size {size} irq {irq}: "
                                "expected a non-negative base and irq and a positive size")
    size_text = f"{size // KIBIBYTE}K" if size % KIBIBYTE == 0 else f"{size:#x}"
    return f"virtio_mmio.device={size_text}@{base:#x}:{irq}"


def notify_address(base: int) -> int:
    """The guest-physical address of QueueNotify, for an ioeventfd (datamatch = queue index)."""
    return base + NOTIFY_OFFSET


def _replace_word(value: int, word: int, selector: int) -> int:
    shift = WORD_BITS * selector
    return (value & ~(WORD_MASK << shift)) | ((word & WORD_MASK) << shift)


class MmioTransport:
    """The registers of one virtio-mmio device window."""

    def __init__(self, device: VirtioDevice, memory: GuestMemoryAccess,
                 interrupt: Callable[[], None], name: str | None = None) -> None:
        self.device = device
        self.memory = memory
        self.interrupt = interrupt
        self.name = name or device.name
        device.label = self.name
        device.interrupt_used = lambda: self._raise_interrupt(INTERRUPT_VRING)
        device.interrupt_config = lambda: self._raise_interrupt(INTERRUPT_CONFIG)
        device.on_needs_reset = self._needs_reset
        self.queues = [Virtqueue(memory, index, size)
                       for index, size in enumerate(device.queue_max_sizes)]
        # InterruptACK writes so far: lets an event loop tell an interrupt the driver has
        # not acknowledged for a while from a new one (see DeviceEventLoop).
        self.interrupt_acks = 0
        self._clear()

    def _clear(self) -> None:
        self.status = 0
        self.device_features_select = 0
        self.driver_features_select = 0
        self.driver_features = 0
        self.queue_select = 0
        self.interrupt_status = 0
        self.shared_memory_select = 0
        for queue in self.queues:
            queue.reset()

    @property
    def lock(self) -> object:
        return self.device.lock

    def _selected_queue(self) -> Virtqueue | None:
        if 0 <= self.queue_select < len(self.queues):
            return self.queues[self.queue_select]
        return None

    # -- interrupts -------------------------------------------------------------------------

    def pending_interrupt(self) -> tuple[int, int]:
        """(InterruptStatus, InterruptACK writes so far), read together under the lock."""
        with self.device.lock:
            return self.interrupt_status, self.interrupt_acks

    def _raise_interrupt(self, reason: int) -> None:
        with self.device.lock:
            self.interrupt_status |= reason
        self.interrupt()

    def _needs_reset(self) -> None:
        with self.device.lock:
            self.status |= STATUS_NEEDS_RESET
        if self.status & STATUS_DRIVER_OK:
            self._raise_interrupt(INTERRUPT_CONFIG)

    # -- the Bus interface ------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        with self.device.lock:
            if offset >= CONFIG_OFFSET:
                return self._read_config(offset - CONFIG_OFFSET, size)
            if size != REGISTER_SIZE or offset % REGISTER_SIZE:
                logger.debug("%s: %d-byte register read at %#x ignored", self.name, size, offset)
                return 0
            return self._read_register(offset) & WORD_MASK

    def write(self, offset: int, size: int, value: int) -> None:
        with self.device.lock:
            if offset >= CONFIG_OFFSET:
                self._write_config(offset - CONFIG_OFFSET, size, value)
                return
            if size != REGISTER_SIZE or offset % REGISTER_SIZE:
                logger.debug("%s: %d-byte register write at %#x ignored", self.name, size,
                             offset)
                return
            notify = self._write_register(offset, value & WORD_MASK)
        if notify is not None:
            self.device.notify(notify)

    def _read_register(self, offset: int) -> int:
        queue = self._selected_queue()
        registers: dict[int, Callable[[], int]] = {
            lib.VIRTIO_MMIO_MAGIC_VALUE: lambda: MAGIC_VALUE,
            lib.VIRTIO_MMIO_VERSION: lambda: VERSION,
            lib.VIRTIO_MMIO_DEVICE_ID: lambda: self.device.device_id,
            lib.VIRTIO_MMIO_VENDOR_ID: lambda: VENDOR_ID,
            lib.VIRTIO_MMIO_DEVICE_FEATURES: self._device_features_word,
            lib.VIRTIO_MMIO_QUEUE_NUM_MAX: lambda: queue.max_size if queue else 0,
            lib.VIRTIO_MMIO_QUEUE_READY: lambda: int(queue.ready) if queue else 0,
            lib.VIRTIO_MMIO_INTERRUPT_STATUS: lambda: self.interrupt_status,
            lib.VIRTIO_MMIO_STATUS: lambda: self.status,
            lib.VIRTIO_MMIO_CONFIG_GENERATION: lambda: self.device.config_generation,
            lib.VIRTIO_MMIO_SHM_LEN_LOW: lambda: NO_SHARED_MEMORY,
            lib.VIRTIO_MMIO_SHM_LEN_HIGH: lambda: NO_SHARED_MEMORY,
            lib.VIRTIO_MMIO_SHM_BASE_LOW: lambda: NO_SHARED_MEMORY,
            lib.VIRTIO_MMIO_SHM_BASE_HIGH: lambda: NO_SHARED_MEMORY,
        }
        reader = registers.get(offset)
        if reader is None:
            logger.debug("%s: read of write-only or unknown register %#x", self.name, offset)
            return 0
        return reader()

    def _device_features_word(self) -> int:
        if self.device_features_select >= FEATURE_WORDS:
            return 0
        return (self.device.device_features >> (WORD_BITS * self.device_features_select)) \
            & WORD_MASK

    def _write_register(self, offset: int, value: int) -> int | None:
        """Apply a register write; returns a queue index when the write is a notification."""
        if offset == lib.VIRTIO_MMIO_QUEUE_NOTIFY:
            return value if self.status & STATUS_DRIVER_OK else None
        if offset == lib.VIRTIO_MMIO_STATUS:
            self._write_status(value)
        elif offset == lib.VIRTIO_MMIO_INTERRUPT_ACK:
            self.interrupt_status &= ~value
            self.interrupt_acks += 1
        elif offset == lib.VIRTIO_MMIO_DEVICE_FEATURES_SEL:
            self.device_features_select = value
        elif offset == lib.VIRTIO_MMIO_DRIVER_FEATURES_SEL:
            self.driver_features_select = value
        elif offset == lib.VIRTIO_MMIO_DRIVER_FEATURES:
            self._write_driver_features(value)
        elif offset == lib.VIRTIO_MMIO_QUEUE_SEL:
            self.queue_select = value
        elif offset == lib.VIRTIO_MMIO_SHM_SEL:
            self.shared_memory_select = value
        else:
            self._write_queue_register(offset, value)
        return None

    def _write_driver_features(self, value: int) -> None:
        if self.status & STATUS_FEATURES_OK or not self.status & STATUS_DRIVER:
            logger.debug("%s: driver features written in status %#x ignored", self.name,
                         self.status)
            return
        if self.driver_features_select >= FEATURE_WORDS:
            return
        self.driver_features = _replace_word(self.driver_features, value,
                                             self.driver_features_select)

    _QUEUE_ADDRESS_REGISTERS: ClassVar[dict[int, tuple[str, int]]] = {
        lib.VIRTIO_MMIO_QUEUE_DESC_LOW: ("descriptor_table_address", 0),
        lib.VIRTIO_MMIO_QUEUE_DESC_HIGH: ("descriptor_table_address", 1),
        lib.VIRTIO_MMIO_QUEUE_AVAIL_LOW: ("avail_ring_address", 0),
        lib.VIRTIO_MMIO_QUEUE_AVAIL_HIGH: ("avail_ring_address", 1),
        lib.VIRTIO_MMIO_QUEUE_USED_LOW: ("used_ring_address", 0),
        lib.VIRTIO_MMIO_QUEUE_USED_HIGH: ("used_ring_address", 1),
    }

    def _write_queue_register(self, offset: int, value: int) -> None:
        queue = self._selected_queue()
        known = offset == lib.VIRTIO_MMIO_QUEUE_NUM or offset == lib.VIRTIO_MMIO_QUEUE_READY \
            or offset in self._QUEUE_ADDRESS_REGISTERS
        if not known:
            logger.debug("%s: write of read-only or unknown register %#x", self.name, offset)
            return
        if queue is None:
            logger.debug("%s: queue register %#x written for missing queue %d", self.name,
                          offset, self.queue_select)
            return
        if offset == lib.VIRTIO_MMIO_QUEUE_READY:
            queue.ready = bool(value & 1)
            return
        if queue.ready or self.status & STATUS_DRIVER_OK:
            logger.debug("%s: queue %d register %#x written while the queue is live", self.name,
                         queue.index, offset)
            return
        if offset == lib.VIRTIO_MMIO_QUEUE_NUM:
            queue.size = value  # checked at activation (power of two, at most QueueNumMax)
            return
        attribute, selector = self._QUEUE_ADDRESS_REGISTERS[offset]
        setattr(queue, attribute, _replace_word(getattr(queue, attribute), value, selector))

    def _write_status(self, value: int) -> None:
        value &= STATUS_BYTE_MASK & ~STATUS_NEEDS_RESET  # NEEDS_RESET is the device's to set
        if value == 0:
            self.reset()
            return
        current = self.status & ~STATUS_NEEDS_RESET
        if value & current != current:
            logger.debug("%s: status %#x would clear bits of %#x without a reset; ignored",
                         self.name, value, self.status)
            return
        added = value & ~current
        if added & STATUS_FAILED:
            logger.info("%s: the driver gave up on the device (status FAILED)", self.name)
        for bit in STATUS_ORDER:
            if added & bit and any(not value & earlier
                                   for earlier in STATUS_ORDER[: STATUS_ORDER.index(bit)]):
                logger.debug("%s: status bit %#x set out of order (status %#x)", self.name, bit,
                             value)
                return
        if added & STATUS_FEATURES_OK and not self._features_acceptable():
            # Refused: the driver reads FEATURES_OK back as clear (and cannot go live).
            value &= ~(STATUS_FEATURES_OK | STATUS_DRIVER_OK)
        self.status = value | (self.status & STATUS_NEEDS_RESET)
        if value & ~current & STATUS_DRIVER_OK:
            self.device.activate(self.memory, self.queues, self.driver_features)

    def _features_acceptable(self) -> bool:
        offered = self.device.device_features
        extra = self.driver_features & ~offered
        if extra:
            logger.warning("%s: driver accepted features %#x the device does not offer "
                           "(offered %#x); FEATURES_OK refused", self.name, extra, offered)
            return False
        if not self.driver_features & F_VERSION_1:
            logger.warning("%s: driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are "
                           "not supported); FEATURES_OK refused", self.name)
            return False
        return True

    def reset(self) -> None:
        """Writing 0 to Status: back to the state after power-on."""
        with self.device.lock:
            self.device.reset()
            self._clear()

    # -- config space -----------------------------------------------------------------------

    def _read_config(self, offset: int, size: int) -> int:
        config = self.device.config_space()
        if size not in CONFIG_ACCESS_SIZES or offset + size > len(config):
            logger.debug("%s: config read of %d bytes at %#x outside %d bytes", self.name, size,
                         offset, len(config))
            return 0
        return int.from_bytes(config[offset : offset + size], "little")

    def _write_config(self, offset: int, size: int, value: int) -> None:
        config_size = len(self.device.config_space())
        if size not in CONFIG_ACCESS_SIZES or offset + size > config_size:
            logger.debug("%s: config write of %d bytes at %#x outside %d bytes", self.name,
                         size, offset, config_size)
            return
        self.device.write_config(offset, value.to_bytes(size, "little"))
