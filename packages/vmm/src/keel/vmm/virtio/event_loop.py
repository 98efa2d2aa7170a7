"""Device I/O for every virtio-mmio device of a VM, on one keel.runtime thread.

Why this shape (Firecracker's event manager, on keel.runtime instead of epoll): the vCPU
threads only ever see register reads and writes. A queue notification never reaches them: KVM
signals a per-queue ioeventfd (datamatch = queue index on QueueNotify), and a task here reads
it and runs the device. Interrupts go the other way through an irqfd per line, written from
whichever thread raised them. TAP frames are read and written through the runtime (io_uring
or epoll), so a guest spinning on its vCPU never holds up packets and a busy network never
holds up the vCPU. Everything a device does still happens under its own lock, so the register
accesses on the vCPU threads and the work here never interleave inside a device.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

import keel.runtime as kr
from keel.native.eventfd import EventFd
from keel.runtime.borrowed_fd import BorrowedFd
from keel.runtime.crossthread import ThreadChannel
from keel.runtime.fs import File
from keel.runtime.sync import Event
from keel.vmm.errors import VmStateError
from keel.vmm.virtio.attach import MmioSlot
from keel.vmm.virtio.block import (
    READ,
    REQUEST_QUEUE,
    STATUS_OK,
    WRITE,
    BlockDevice,
    BlockIo,
    BlockRequest,
)
from keel.vmm.virtio.block_file import FileBlockBackend
from keel.vmm.virtio.mmio import REGISTER_SIZE, notify_address
from keel.vmm.virtio.net import FRAME_LIMIT, RX_QUEUE, TX_QUEUE, NetDevice
from keel.vmm.virtio.net_tap import TapBackend

logger = logging.getLogger("keel.vmm")

EVENTFD_COUNTER_SIZE = 8
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
# How long an interrupt may stay unacknowledged (InterruptStatus non-zero, no InterruptACK)
# before the loop asserts its line again. See DeviceEventLoop._reassert_interrupts.
INTERRUPT_REASSERT_SECONDS = 0.25
# After a TAP read or write error (the interface vanished, say), wait this long before trying
# again, so a persistent error costs a log line a second, not a spinning thread.
TAP_ERROR_BACKOFF_SECONDS = 1.0


class EventRegistrar(Protocol):
    """The two KVM VM ioctls the loop needs (keel.native.kvm's VM has them)."""

    def irqfd(self, eventfd: Any, gsi: int, deassign: bool = False) -> None: ...

    def ioeventfd(self, eventfd: Any, address: int, length: int, *,
                  datamatch: int | None = None, port_io: bool = False,
                  deassign: bool = False) -> None: ...


@dataclass
class _Attached:
    slot: MmioSlot
    kicks: list[EventFd] = field(default_factory=list)


class DeviceEventLoop:
    """Owns the eventfds, the KVM registrations and the runtime thread (a context manager)."""

    def __init__(self, vm: EventRegistrar, driver: str | None = None) -> None:
        self._vm = vm
        self._driver = driver
        self._devices: list[_Attached] = []
        self._interrupts: dict[int, EventFd] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop_channel: ThreadChannel[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False

    # -- wiring (before start) ---------------------------------------------------------------

    def raise_irq(self, irq: int) -> None:
        """Edge on line `irq` through its irqfd (any thread; the transport's interrupt hook)."""
        interrupt = self._interrupts.get(irq)
        if interrupt is None:
            logger.warning("interrupt on line %d, which no attached device owns; dropped", irq)
            return
        interrupt.write(1)

    def attach(self, slot: MmioSlot) -> None:
        """Register the slot's irqfd and one ioeventfd per queue with KVM."""
        if self._thread is not None:
            raise VmStateError("attach virtio devices before the device loop starts")
        attached = _Attached(slot)
        self._devices.append(attached)
        if slot.irq not in self._interrupts:
            interrupt = EventFd()
            self._interrupts[slot.irq] = interrupt
            self._vm.irqfd(interrupt, slot.irq)
        for index in range(len(slot.transport.queues)):
            kick = EventFd()
            attached.kicks.append(kick)
            self._vm.ioeventfd(kick, notify_address(slot.base), REGISTER_SIZE, datamatch=index)

    def queue_eventfd(self, slot: MmioSlot, index: int) -> EventFd:
        """The eventfd KVM signals when the guest notifies queue `index` of `slot`'s device
        (writing it does what the guest's QueueNotify write does)."""
        for attached in self._devices:
            if attached.slot is slot and 0 <= index < len(attached.kicks):
                return attached.kicks[index]
        raise VmStateError(f"no queue {index} of a device at {slot.base:#x} on this loop")

    # -- running -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the loop's thread is serving devices now (False before start, after stop,
        and after a failure ended it: see `failure`)."""
        return self._thread is not None and self._thread.is_alive() and self._failure is None

    @property
    def failure(self) -> BaseException | None:
        """What ended the loop, if something did (the VM keeps running without device I/O)."""
        return self._failure

    def start(self) -> None:
        if self._closed:
            raise VmStateError("the device loop is closed")
        if self._thread is not None:
            raise VmStateError("the device loop is already running")
        self._thread = threading.Thread(target=self._run, name="keel-vmm-devices", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS):
            raise VmStateError("the virtio device loop did not start within "
                               f"{START_TIMEOUT_SECONDS} s")
        if self._failure is not None:
            raise VmStateError(f"the virtio device loop failed to start: {self._failure}")

    def stop(self) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        channel = self._stop_channel
        if channel is not None:
            channel.send(None)
        thread.join(STOP_TIMEOUT_SECONDS)
        if thread.is_alive():
            logger.error("the virtio device loop did not stop within %s s", STOP_TIMEOUT_SECONDS)

    def _run(self) -> None:
        try:
            kr.run(self._main, driver=self._driver)
        except BaseException as error:  # reported to start() or logged; the VM keeps running
            self._failure = error
            logger.error("virtio device loop ended with an error: %r", error)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._stop_channel = ThreadChannel()
        wires: list[_TapWire | _DiskWire] = []
        try:
            async with kr.TaskGroup() as group:
                for attached in self._devices:
                    wires += self._spawn_device(group, attached)
                if self._devices:
                    group.spawn(self._reassert_interrupts, name="interrupt re-assertion")
                self._ready.set()
                await self._stop_channel.receive()
                group.cancel()
        finally:
            for wire in wires:
                wire.close()
            self._stop_channel.close()

    async def _reassert_interrupts(self) -> None:
        """Assert again each line whose interrupt the driver left unacknowledged for a whole
        interval.

        Why: a virtio-mmio interrupt is level-like. InterruptStatus stays set until the
        driver writes InterruptACK, and a level-triggered line would fire again after the
        guest's EOI for as long as it is set. An irqfd gives one edge instead. An edge that
        reaches KVM's I/O APIC while the guest has that pin masked is dropped. With event
        indexes the device then raises nothing more, because the driver never re-arms, and
        the queue stalls. Re-asserting only a status that no InterruptACK has touched since
        the last look means the driver's handler always finds work.
        """
        seen: dict[int, int] = {}  # attached index -> InterruptACK count when seen pending
        while True:
            await kr.sleep(INTERRUPT_REASSERT_SECONDS)
            for number, attached in enumerate(self._devices):
                status, acks = attached.slot.transport.pending_interrupt()
                if not status:
                    seen.pop(number, None)
                elif seen.get(number) == acks:
                    logger.debug("%s: interrupt unacknowledged for %s s; asserting line %d "
                                 "again", attached.slot.transport.name,
                                 INTERRUPT_REASSERT_SECONDS, attached.slot.irq)
                    self.raise_irq(attached.slot.irq)
                else:
                    seen[number] = acks

    def _spawn_device(self, group: kr.TaskGroup,
                      attached: _Attached) -> list[_TapWire | _DiskWire]:
        device = attached.slot.transport.device
        after: dict[int, Callable[[], Awaitable[None]]] = {}
        wires: list[_TapWire | _DiskWire] = []
        if isinstance(device, BlockDevice) and isinstance(device.backend, FileBlockBackend):
            disk = _DiskWire(device, device.backend)
            wires.append(disk)
            after[REQUEST_QUEUE] = disk.serve
        elif isinstance(device, NetDevice) and isinstance(device.backend, TapBackend):
            wire = _TapWire(device, device.backend)
            wires.append(wire)
            group.spawn(wire.receive_frames, name=f"{device.label} rx")
            after[TX_QUEUE] = wire.send_frames
            after[RX_QUEUE] = wire.buffers_posted
        for index, kick in enumerate(attached.kicks):
            group.spawn(_serve_queue, attached.slot, index, kick, after.get(index),
                        name=f"{device.label} queue {index}")
        return wires

    # -- ownership ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the thread, then take every registration back from KVM and close the fds."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        for attached in self._devices:
            for index, kick in enumerate(attached.kicks):
                self._unregister(lambda kick=kick, index=index, attached=attached:  # type: ignore[misc]
                                 self._vm.ioeventfd(kick, notify_address(attached.slot.base),
                                                    REGISTER_SIZE, datamatch=index,
                                                    deassign=True))
                kick.close()
        for irq, interrupt in self._interrupts.items():
            self._unregister(lambda interrupt=interrupt, irq=irq:  # type: ignore[misc]
                             self._vm.irqfd(interrupt, irq, deassign=True))
            interrupt.close()

    @staticmethod
    def _unregister(call: Callable[[], None]) -> None:
        try:
            call()
        except OSError as error:  # the VM fd may already be gone; closing the fd suffices
            logger.debug("KVM deregistration failed: %s", error)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


async def _serve_queue(slot: MmioSlot, index: int, kick: EventFd,
                       after: Callable[[], Awaitable[None]] | None) -> None:
    """Each ioeventfd signal: run the queue (again while it left a backlog), then `after`."""
    device = slot.transport.device
    counter = bytearray(EVENTFD_COUNTER_SIZE)
    with BorrowedFd(kick.fileno(), f"{device.label} queue {index} ioeventfd") as kicks:
        while True:
            await kicks.read(counter)
            device.notify(index)
            while index in device.backlog:
                await kr.checkpoint()
                device.notify(index)
            if after is not None:
                await after()


class _TapWire:
    """virtio-net's two edges on the TAP: frames in (a task), frames out (after TX kicks)."""

    def __init__(self, device: NetDevice, backend: TapBackend) -> None:
        self.device = device
        self.backend = backend
        device.pulls_from_backend = False  # the loop reads the TAP, the device never does
        device.outbox = []
        self._room = Event()
        self._tap: BorrowedFd | None = None

    def _borrowed(self) -> BorrowedFd:
        if self._tap is None:
            self._tap = BorrowedFd(self.backend.fileno(), f"TAP {self.backend.name}")
        return self._tap

    async def receive_frames(self) -> None:
        tap = self._borrowed()
        buffer = bytearray(FRAME_LIMIT)
        while True:
            if self.device.waiting_for_buffers:
                await self._room.wait()
                self._room = Event()
                self.device.receive_from_backend()
                continue
            try:
                count, _ = await tap.read(buffer)
            except OSError as error:
                logger.warning("%s: TAP %s read failed: %s", self.device.label,
                               self.backend.name, error)
                await kr.sleep(TAP_ERROR_BACKOFF_SECONDS)
                continue
            self.device.deliver(bytes(buffer[:count]))

    def close(self) -> None:
        if self._tap is not None:
            self._tap.close()
            self._tap = None

    async def buffers_posted(self) -> None:
        """The driver kicked RX: a held frame may have gone in; let the reader go on."""
        if not self.device.waiting_for_buffers:
            self._room.set()

    async def send_frames(self) -> None:
        frames = self.device.take_outbox()
        if not frames:
            return
        tap = self._borrowed()
        for frame in frames:
            try:
                await tap.write(frame)
            except OSError as error:
                self.backend.dropped += 1
                logger.debug("%s: TAP %s dropped a %d-byte frame: %s", self.device.label,
                             self.backend.name, len(frame), error)


class _DiskWire:
    """virtio-blk's I/O on the image file through keel.runtime (io_uring reads, writes and
    fsync on the io_uring driver): the device checks requests, this does their I/O."""

    def __init__(self, device: BlockDevice, backend: FileBlockBackend) -> None:
        self.device = device
        self.backend = backend
        device.defers_io = True
        self._file: File | None = None

    def _image(self) -> File:
        if self._file is None:
            # A duplicate: the runtime's File closes its fd, the backend closes the original.
            self._file = File(os.dup(self.backend.fileno()), kr.current_runtime().driver,
                              f"disk image {self.backend.path!r}")
        return self._file

    async def serve(self) -> None:
        """Everything the driver queued, batch by batch, until the ring stays empty."""
        while requests := self.device.take_requests():
            results = [(request, *await self._execute(request)) for request in requests]
            self.device.finish(results)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def _execute(self, request: BlockRequest) -> tuple[int, bytes]:
        step = self.device.plan(request)
        if not isinstance(step, BlockIo):
            return step
        try:
            return STATUS_OK, await self._run(step)
        except OSError as error:
            return self.device.failed(request, error)

    async def _run(self, step: BlockIo) -> bytes:
        image = self._image()
        if step.kind == READ:
            buffer = bytearray(step.length)
            done = 0
            while done < step.length:
                count, _ = await image.read_at(memoryview(buffer)[done:], step.offset + done)
                if count == 0:
                    raise OSError(errno.EIO, f"{self.backend.path!r} ended at "
                                  f"{step.offset + done}, inside the disk's capacity")
                done += count
            return bytes(buffer)
        if step.kind == WRITE:
            await image.write_at(step.data, step.offset)
        else:
            await image.fsync()
        return b""
