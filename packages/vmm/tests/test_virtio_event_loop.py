"""Device I/O on keel.runtime: frames cross a real TAP while the vCPU thread is busy in KVM_RUN.

The guest spins at CPL 0 and, every few tens of milliseconds, writes the TX queue's index to
QueueNotify. KVM turns that write into an ioeventfd signal inside the kernel, so the vCPU
thread never comes back to Python; the device loop's task reads the eventfd and moves the
frames. Frames from the host arrive through the loop's TAP reader into the RX buffers the
test-side driver posted, and every interrupt goes out through an irqfd.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.native.netns import NetworkNamespace
from keel.native.testing.skips import requires_kvm, requires_tap
from keel.vmm.boot.modes import CpuMode, EntryPoint
from keel.vmm.machine import Vm
from keel.vmm.testing.tap_link import open_test_link
from keel.vmm.virtio.block import (
    HEADER,
    SECTOR_SIZE,
    STATUS_IOERR,
    STATUS_OK,
    TYPE_FLUSH,
    TYPE_IN,
    TYPE_OUT,
    BlockDevice,
)
from keel.vmm.virtio.driver import MmioDriver, SplitQueueDriver, UsedBuffer
from keel.vmm.virtio.mmio import notify_address
from keel.vmm.virtio.net import HEADER_SIZE, RX_QUEUE, TX_QUEUE
from keel.vmm.virtio.net_tap import TapBackend

pytestmark = [requires_kvm, requires_tap, pytest.mark.kvm, pytest.mark.tap]

MEMORY = 32 << 20
LOAD = 0x100000
RX_BASE = 0x200000
TX_BASE = 0x210000
RX_BUFFERS = 0x400000
TX_BUFFERS = 0x600000
BUFFER_AREA = 0x100000
QUEUE_SIZE = 16
FRAMES = 8
TEST_ETHERTYPE = 0x88B5  # IEEE 802 local experimental
GUEST_MAC = bytes.fromhex("024b45454c01")
BROADCAST = b"\xff" * 6
FRAME_BUFFER = HEADER_SIZE + 1514
DEADLINE_SECONDS = 10.0
KICK_DELAY_ITERATIONS = 20000
RUNTIME_DRIVERS = ["io_uring", "epoll"]


def kicking_guest(notify: int, queue: int) -> bytes:
    """mov eax, notify; loop: mov dword [rax], queue; mov ecx, N; dec ecx; jnz; jmp loop."""
    code = bytearray(b"\xb8" + struct.pack("<I", notify))
    loop = len(code)
    code += b"\xc7\x00" + struct.pack("<I", queue)
    code += b"\xb9" + struct.pack("<I", KICK_DELAY_ITERATIONS)
    code += b"\xff\xc9\x75\xfc"  # dec ecx; jnz -4
    code += b"\xeb" + struct.pack("<b", loop - (len(code) + 2))
    return bytes(code)


def make_frame(index: int) -> bytes:
    return BROADCAST + GUEST_MAC + struct.pack("!H", TEST_ETHERTYPE) + b"keel frame %03d" % index


@pytest.fixture(params=RUNTIME_DRIVERS)
def runtime_driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KEEL_RUNTIME_DRIVER", str(request.param))
    return str(request.param)


@pytest.fixture
def tap_link() -> Iterator[tuple[TapBackend, socket.socket]]:
    with NetworkNamespace() as namespace:
        backend, host = open_test_link(namespace, "keelloop0")
        with backend, host:
            yield backend, host


def receive_test_frames(host: socket.socket, count: int) -> list[bytes]:
    frames: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(frames) < count and (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([host], [], [], remaining)
        if readable:
            data = host.recv(65536)
            if data[12:14] == struct.pack("!H", TEST_ETHERTYPE):
                frames.append(data)
    return frames


def test_frames_flow_both_ways_while_the_vcpu_spins(
        runtime_driver: str, tap_link: tuple[TapBackend, socket.socket]) -> None:
    backend, host = tap_link
    with Vm(MEMORY) as vm:
        net = vm.add_virtio_net(backend, GUEST_MAC)
        # Observe (not replace) where the device runs: the loop's thread, never the vCPU's.
        threads: set[str] = set()
        process_queue = net.process_queue

        def observed(index: int) -> None:
            threads.add(threading.current_thread().name)
            process_queue(index)

        net.process_queue = observed  # type: ignore[method-assign]
        slot = vm.virtio.placement.slots[0]
        assert f"virtio_mmio.device=4K@{slot.base:#x}:{slot.irq}" == vm.virtio_command_line()
        driver = MmioDriver(slot.transport)
        assert driver.negotiate(driver.device_features())
        rx = SplitQueueDriver(vm.memory, RX_BASE, QUEUE_SIZE, RX_BUFFERS, BUFFER_AREA)
        tx = SplitQueueDriver(vm.memory, TX_BASE, QUEUE_SIZE, TX_BUFFERS, BUFFER_AREA)
        driver.setup_queue(RX_QUEUE, rx)
        driver.setup_queue(TX_QUEUE, tx)
        for _ in range(QUEUE_SIZE):
            rx.add(writable=[FRAME_BUFFER])
        driver.driver_ok()
        vm.memory.write(LOAD, kicking_guest(notify_address(slot.base), TX_QUEUE))
        vm.load(EntryPoint(CpuMode.LONG, LOAD))
        vm.start()

        # Host -> guest: the loop's TAP reader fills the posted RX buffers on its own.
        for index in range(FRAMES):
            host.send(make_frame(index))
        received: list[bytes] = []
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(received) < FRAMES and time.monotonic() < deadline:
            received += [used.data[HEADER_SIZE:] for used in rx.used()
                         if used.data[HEADER_SIZE + 12 : HEADER_SIZE + 14]
                         == struct.pack("!H", TEST_ETHERTYPE)]
            time.sleep(0.01)
        assert received == [make_frame(index) for index in range(FRAMES)]

        # Guest -> host: only the guest's own QueueNotify writes (ioeventfd) move these.
        header = bytes(HEADER_SIZE)
        for index in range(FRAMES):
            tx.add(readable=[header + make_frame(100 + index)])
        sent = receive_test_frames(host, FRAMES)
        assert sent == [make_frame(100 + index) for index in range(FRAMES)]
        assert net.frames_sent == FRAMES and net.frames_received >= FRAMES

        assert threads == {"keel-vmm-devices"}
        assert vm.exit is None  # the vCPU was busy in KVM_RUN the whole time
        vm.stop()
        assert vm.wait(DEADLINE_SECONDS).reason == "stopped"


DISK_SECTORS = 64
BLOCK_QUEUE = 0


def wait_used(queue: SplitQueueDriver, count: int) -> list[UsedBuffer]:
    used: list[UsedBuffer] = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(used) < count and time.monotonic() < deadline:
        used += queue.used()
        time.sleep(0.01)
    return used


def test_disk_requests_run_on_the_device_loop_while_the_vcpu_spins(
        runtime_driver: str, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(DISK_SECTORS * SECTOR_SIZE))
    pattern = bytes(range(256)) * (2 * SECTOR_SIZE // 256)
    with Vm(MEMORY) as vm:
        disk = vm.add_virtio_block(image)
        slot = vm.virtio.placement.slots[0]
        threads: set[str] = set()
        take_requests = disk.take_requests

        def observed() -> list[object]:
            threads.add(threading.current_thread().name)
            return take_requests()  # type: ignore[return-value]

        disk.take_requests = observed  # type: ignore[method-assign,assignment]
        driver = MmioDriver(slot.transport)
        assert driver.negotiate(driver.device_features())
        queue = SplitQueueDriver(vm.memory, RX_BASE, QUEUE_SIZE, RX_BUFFERS, BUFFER_AREA)
        driver.setup_queue(BLOCK_QUEUE, queue)
        driver.driver_ok()
        vm.memory.write(LOAD, kicking_guest(notify_address(slot.base), BLOCK_QUEUE))
        vm.load(EntryPoint(CpuMode.LONG, LOAD))
        vm.start()

        # Write two sectors at sector 5, flush, read them back, and read past the end.
        queue.add([HEADER.pack(TYPE_OUT, 0, 5), pattern], [1])
        queue.add([HEADER.pack(TYPE_FLUSH, 0, 0)], [1])
        (write, flush) = wait_used(queue, 2)
        queue.add([HEADER.pack(TYPE_IN, 0, 5)], [len(pattern), 1])
        queue.add([HEADER.pack(TYPE_IN, 0, DISK_SECTORS - 1)], [2 * SECTOR_SIZE, 1])
        (read, beyond) = wait_used(queue, 2)
        vm.stop()
        vm.wait(DEADLINE_SECONDS)

    assert write.writable[-1] == bytes([STATUS_OK]) == flush.writable[-1]
    assert read.writable == (pattern, bytes([STATUS_OK]))
    assert beyond.length == 1 and beyond.writable[-1] == bytes([STATUS_IOERR])
    assert image.read_bytes()[5 * SECTOR_SIZE : 7 * SECTOR_SIZE] == pattern
    assert threads == {"keel-vmm-devices"}
    assert isinstance(disk, BlockDevice) and disk.defers_io
