"""The virtio-test guest: its own CPL 3 virtio-mmio driver against keel's devices, end to end.

The guest (guests/sources/virtio_test.c + virtio_mmio_driver.c) finds its devices through the
`virtio_mmio.device=` words keel appends to its command line, negotiates, sets up split
queues and polls them. Here it echoes frames that the host sends through a TAP inside a
namespace this test creates (checked byte for byte), streams frames through many laps of the
ring, and writes and reads sectors of a file checked on the host afterwards. QEMU's microvm
runs the same guest, with the command line QEMU writes itself.
"""

from __future__ import annotations

import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.native._virtio import lib as mmio
from keel.native.netns import NetworkNamespace
from keel.native.testing.skips import requires_kvm, requires_tap
from keel.vmm.boot.loader import KernelFormat, load_kernel
from keel.vmm.guests.build import guest_path
from keel.vmm.machine import Vm
from keel.vmm.memory import GuestMemory
from keel.vmm.virtio.mmio import MAGIC_VALUE
from keel.vmm.virtio.net_tap import TapBackend

pytestmark = [requires_kvm, pytest.mark.kvm]

MEMORY = 64 << 20
DEADLINE_SECONDS = 20.0
ETH_P_ALL = 0x0003
TEST_ETHERTYPE = 0x88B5   # the guest echoes only these
STOP_ETHERTYPE = 0x88B6   # and stops at this one
GUEST_MAC = bytes.fromhex("024b45454c07")
HOST_MAC = bytes.fromhex("020000000099")
BROADCAST = b"\xff" * 6
MAC_SIZE = 6
ETHERNET_HEADER_SIZE = 14
SECTOR_SIZE = 512
DISK_SECTORS = 64
SECTOR_ZERO = b"KEELDISK" * (SECTOR_SIZE // 8)
EXIT_OK = 0
TAP_NAME = "keelvt0"
# SO_RCVBUFFORCE (asm-generic/socket.h; Python lacks the name): past rmem_max, as root, so
# a slow test thread drops nothing.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RECEIVE_BUFFER_BYTES = 16 << 20
# Malformed or empty windows before the real device: the guest must skip them.
DECOY_WINDOWS = ("virtio_mmio.device=junk virtio_mmio.device=4K@ virtio_mmio.device=4K@0xd0100000:9"
                 " virtio_mmio.device=0x1000@0xd0200000:10:3")
QEMU_EXIT_OK = EXIT_OK << 1 | 1   # isa-debug-exit reports (value << 1) | 1


def pattern_byte(sector: int, offset: int) -> int:
    """What the guest writes at `offset` of `sector` (virtio_test.c, pattern_byte)."""
    return (sector * 31 + offset * 7 + 0x5A) & 0xFF


def expected_sectors(first: int, count: int) -> bytes:
    return bytes(pattern_byte(first + index // SECTOR_SIZE, index % SECTOR_SIZE)
                 for index in range(count * SECTOR_SIZE))


@pytest.fixture(scope="module")
def virtio_guest() -> bytes:
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("needs gcc and binutils to build the test guests")
    return guest_path("virtio-test").read_bytes()


class SerialLog:
    """The guest's serial output, searchable while the guest runs."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._changed = threading.Condition()

    def write(self, data: bytes) -> None:
        with self._changed:
            self._data += data
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return self._data.decode(errors="replace")

    def wait_for(self, marker: str, timeout: float = DEADLINE_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while marker.encode() not in self._data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the guest never printed {marker!r}; it printed:\n"
                                       f"{self._data.decode(errors='replace')}")
                self._changed.wait(remaining)


def start_guest(vm: Vm, image: bytes, arguments: str) -> None:
    command_line = f"{arguments} {DECOY_WINDOWS} {vm.virtio_command_line()}"
    vm.load(load_kernel(vm.memory, image, command_line=command_line,
                        kernel_format=KernelFormat.PVH))
    vm.start()


@pytest.fixture
def tap_link() -> Iterator[tuple[TapBackend, socket.socket]]:
    """A TAP (keel's backend) and a raw socket on it, both in a namespace made here."""
    with NetworkNamespace() as namespace:
        def setup() -> tuple[TapBackend, socket.socket]:
            backend = TapBackend.open(TAP_NAME)
            subprocess.run(["ip", "netns", "exec", namespace.name, "sysctl", "-qw",
                            f"net.ipv6.conf.{backend.name}.disable_ipv6=1"], check=True,
                           timeout=DEADLINE_SECONDS)
            namespace.ip("link", "set", backend.name, "up")
            host = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            host.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
            host.bind((backend.name, 0))
            return backend, host

        backend, host = namespace.run(setup)
        with backend, host:
            yield backend, host


def receive_frame(host: socket.socket, wanted: bytes, deadline: float) -> bytes:
    """The next frame from the guest to `wanted` (the host's MAC, or broadcast)."""
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([host], [], [], remaining)
        if readable:
            data, address = host.recvfrom(65536)
            if address[2] != socket.PACKET_OUTGOING and data[:MAC_SIZE] == wanted:
                return data
    raise TimeoutError("no frame came back from the guest")


@requires_tap
@pytest.mark.tap
def test_frames_are_echoed_byte_for_byte(
        virtio_guest: bytes, tap_link: tuple[TapBackend, socket.socket]) -> None:
    backend, host = tap_link
    log = SerialLog()
    with Vm(MEMORY, serial_output=log.write) as vm:
        vm.add_virtio_net(backend, GUEST_MAC)
        start_guest(vm, virtio_guest, "mode=echo")
        log.wait_for(f"net: ready at 0xd0001000 mac {GUEST_MAC.hex(':')} queues 256")
        deadline = time.monotonic() + DEADLINE_SECONDS
        # Every size from the minimum frame to a full 1500-byte MTU frame, some twice round
        # the 256-entry RX ring.
        sizes = [60, 61, 64, 127, 128, 256, 511, 1000, 1499, 1514] * 60
        for index, size in enumerate(sizes):
            payload = bytes((index + offset) & 0xFF
                            for offset in range(size - ETHERNET_HEADER_SIZE))
            frame = GUEST_MAC + HOST_MAC + struct.pack("!H", TEST_ETHERTYPE) + payload
            host.send(frame)
            echoed = receive_frame(host, HOST_MAC, deadline)
            assert echoed == HOST_MAC + GUEST_MAC + frame[2 * MAC_SIZE:], f"frame {index}"
        host.send(GUEST_MAC + HOST_MAC + struct.pack("!H", STOP_ETHERTYPE) + bytes(46))
        outcome = vm.wait(DEADLINE_SECONDS)
    assert (outcome.reason, outcome.status) == ("debug-exit", EXIT_OK), log.text
    assert f"echo: done {len(sizes)} dropped 0" in log.text


@requires_tap
@pytest.mark.tap
@pytest.mark.parametrize("batch", [1, 1000])
def test_a_stream_laps_the_transmit_ring_in_order(
        virtio_guest: bytes, tap_link: tuple[TapBackend, socket.socket], batch: int) -> None:
    """batch=1000 queues more frames than the 256-entry ring holds before its kick: the
    driver must notify before it waits for free descriptors, or the guest hangs."""
    backend, host = tap_link
    frames, size = 3000, 200
    log = SerialLog()
    with Vm(MEMORY, serial_output=log.write) as vm:
        vm.add_virtio_net(backend, GUEST_MAC)
        start_guest(vm, virtio_guest, f"mode=bench-tx frames={frames} size={size} batch={batch}")
        deadline = time.monotonic() + DEADLINE_SECONDS
        payload_tail = bytes(offset & 0xFF for offset in range(ETHERNET_HEADER_SIZE + 8, size))
        for sequence in range(frames):
            frame = receive_frame(host, BROADCAST, deadline)
            assert frame == (BROADCAST + GUEST_MAC + struct.pack("!H", TEST_ETHERTYPE)
                             + struct.pack("<Q", sequence) + payload_tail), f"frame {sequence}"
        outcome = vm.wait(DEADLINE_SECONDS)
    assert (outcome.reason, outcome.status) == ("debug-exit", EXIT_OK), log.text
    assert f"bench: end {frames}" in log.text


def make_disk(path: Path) -> None:
    path.write_bytes(SECTOR_ZERO + bytes(SECTOR_SIZE * (DISK_SECTORS - 1)))


def test_sectors_are_written_and_read_back(virtio_guest: bytes, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    make_disk(disk)
    first, count = 5, 40
    log = SerialLog()
    with Vm(MEMORY, serial_output=log.write) as vm:
        vm.add_virtio_block(disk)
        start_guest(vm, virtio_guest, f"mode=blk sector={first} count={count}")
        outcome = vm.wait(DEADLINE_SECONDS)
    assert (outcome.reason, outcome.status) == ("debug-exit", EXIT_OK), log.text
    assert f"capacity {DISK_SECTORS} read-write" in log.text
    assert f"blk: sector 0 {SECTOR_ZERO[:16].hex()}" in log.text
    assert "blk: beyond the end refused" in log.text
    assert f"blk: wrote and verified {count} sectors from {first}" in log.text
    data = disk.read_bytes()
    assert data[:SECTOR_SIZE] == SECTOR_ZERO
    assert data[SECTOR_SIZE : first * SECTOR_SIZE] == bytes((first - 1) * SECTOR_SIZE)
    assert data[first * SECTOR_SIZE : (first + count) * SECTOR_SIZE] == expected_sectors(first,
                                                                                     count)
    assert data[(first + count) * SECTOR_SIZE :] == bytes((DISK_SECTORS - first - count)
                                                          * SECTOR_SIZE)


def test_a_read_only_disk_refuses_writes(virtio_guest: bytes, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    make_disk(disk)
    before = disk.read_bytes()
    log = SerialLog()
    with Vm(MEMORY, serial_output=log.write) as vm:
        vm.add_virtio_block(disk, read_only=True)
        start_guest(vm, virtio_guest, "mode=blk")
        outcome = vm.wait(DEADLINE_SECONDS)
    assert (outcome.reason, outcome.status) == ("debug-exit", EXIT_OK), log.text
    assert "read-only" in log.text and "blk: write refused (read-only)" in log.text
    assert disk.read_bytes() == before


def qemu_command(command_line: str, *devices: str) -> list[str]:
    """microvm without ACPI appends `virtio_mmio.device=` words itself; force-legacy=false
    makes its transports virtio-mmio version 2."""
    return ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-global",
            "virtio-mmio.force-legacy=false", "-enable-kvm", "-cpu", "host", "-m", "64M",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-display", "none",
            "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", str(guest_path("virtio-test")), "-append", command_line, *devices]


requires_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                   reason="needs qemu-system-x86_64 (Debian qemu-system-x86)")


@requires_qemu
def test_qemu_microvm_runs_the_same_guest(tmp_path: Path) -> None:
    """QEMU places the device and writes the `virtio_mmio.device=` word itself."""
    disk = tmp_path / "disk.img"
    make_disk(disk)
    completed = subprocess.run(
        qemu_command("mode=blk sector=3 count=2",
                     "-drive", f"id=disk0,file={disk},format=raw,if=none",
                     "-device", "virtio-blk-device,drive=disk0"),
        capture_output=True, text=True, timeout=DEADLINE_SECONDS, check=False)
    assert completed.returncode == QEMU_EXIT_OK, completed.stdout + completed.stderr
    assert "virtio_mmio.device=512@0x" in completed.stdout
    assert "blk: wrote and verified 2 sectors from 3" in completed.stdout
    assert disk.read_bytes()[3 * SECTOR_SIZE : 5 * SECTOR_SIZE] == expected_sectors(3, 2)



@requires_qemu
@requires_tap
@pytest.mark.tap
def test_qemu_microvm_streams_frames_from_the_same_guest(virtio_guest: bytes) -> None:
    """The guest's net driver against QEMU's virtio-net, on a TAP in a namespace made here."""
    frames, size = 300, 100
    with NetworkNamespace() as namespace:
        namespace.ip("tuntap", "add", "dev", TAP_NAME, "mode", "tap", "vnet_hdr")
        subprocess.run(["ip", "netns", "exec", namespace.name, "sysctl", "-qw",
                        f"net.ipv6.conf.{TAP_NAME}.disable_ipv6=1"], check=True,
                       timeout=DEADLINE_SECONDS)
        namespace.ip("link", "set", TAP_NAME, "up")

        def bound_socket() -> socket.socket:
            host = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            host.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
            host.bind((TAP_NAME, 0))
            return host

        with namespace.run(bound_socket) as host:
            qemu = subprocess.Popen(
                ["ip", "netns", "exec", namespace.name,
                 *qemu_command(f"mode=bench-tx frames={frames} size={size} batch=7",
                               "-netdev", f"tap,id=net0,ifname={TAP_NAME},script=no,"
                               "downscript=no,vhost=off",
                               "-device", f"virtio-net-device,netdev=net0,"
                               f"mac={GUEST_MAC.hex(':')}")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                deadline = time.monotonic() + DEADLINE_SECONDS
                tail = bytes(offset & 0xFF for offset in range(ETHERNET_HEADER_SIZE + 8, size))
                for sequence in range(frames):
                    assert receive_frame(host, BROADCAST, deadline) == (
                        BROADCAST + GUEST_MAC + struct.pack("!H", TEST_ETHERTYPE)
                        + struct.pack("<Q", sequence) + tail), f"frame {sequence}"
                output, _ = qemu.communicate(timeout=DEADLINE_SECONDS)
            finally:
                if qemu.poll() is None:
                    qemu.kill()
                    qemu.communicate()
    assert qemu.returncode == QEMU_EXIT_OK, output
    assert f"bench: end {frames}" in output


class HostileNetDevice:
    """A virtio-mmio v2 "net device" that answers the handshake honestly and then lies in
    its used ring: the guest's driver must notice, give up on it and exit, never hang."""

    QUEUE_SIZE = 256
    USED_INDEX_OFFSET = 2
    USED_RING_OFFSET = 4
    WORD = 32
    WORD_MASK = (1 << 32) - 1

    def __init__(self, memory: GuestMemory, lie: str) -> None:
        self.memory = memory
        self.lie = lie
        self.status = 0
        self.features_select = 0
        self.queue = 0
        self.used: dict[int, int] = {}   # queue -> used ring address (from QueueDevice*)

    def read(self, offset: int, size: int) -> int:
        registers: dict[int, int] = {
            mmio.VIRTIO_MMIO_MAGIC_VALUE: MAGIC_VALUE,
            mmio.VIRTIO_MMIO_VERSION: MMIO_VERSION,
            mmio.VIRTIO_MMIO_DEVICE_ID: mmio.VIRTIO_ID_NET,
            mmio.VIRTIO_MMIO_DEVICE_FEATURES: (1 << (mmio.VIRTIO_F_VERSION_1 - self.WORD)
                                               if self.features_select == 1 else 0),
            mmio.VIRTIO_MMIO_QUEUE_NUM_MAX: self.QUEUE_SIZE,
            mmio.VIRTIO_MMIO_STATUS: self.status,
        }
        return registers.get(offset, 0)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == mmio.VIRTIO_MMIO_DEVICE_FEATURES_SEL:
            self.features_select = value
        elif offset == mmio.VIRTIO_MMIO_QUEUE_SEL:
            self.queue = value
        elif offset == mmio.VIRTIO_MMIO_STATUS:
            self.status = value
        elif offset == mmio.VIRTIO_MMIO_QUEUE_USED_LOW:
            self.used[self.queue] = self.used.get(self.queue, 0) & ~self.WORD_MASK | value
        elif offset == mmio.VIRTIO_MMIO_QUEUE_USED_HIGH:
            self.used[self.queue] = (self.used.get(self.queue, 0) & self.WORD_MASK
                                     | value << self.WORD)
        elif offset == mmio.VIRTIO_MMIO_QUEUE_NOTIFY and value in self.used:
            self._lie(self.used[value])

    def _lie(self, used: int) -> None:
        write = self.memory.write
        if self.lie == "index-runs-ahead":
            write(used + self.USED_INDEX_OFFSET, struct.pack("<H", 300))
        elif self.lie == "id-out-of-range":
            write(used + self.USED_RING_OFFSET, struct.pack("<II", 9999, 0))
            write(used + self.USED_INDEX_OFFSET, struct.pack("<H", 1))
        elif self.lie == "length-beyond-buffer":
            write(used + self.USED_RING_OFFSET, struct.pack("<II", 0, 100_000))
            write(used + self.USED_INDEX_OFFSET, struct.pack("<H", 1))


HOSTILE_BASE = 0xD0010000
HOSTILE_WINDOW = 0x1000
MMIO_VERSION = 2
EXIT_DRIVER_ERROR = 3
DEVICE_ERROR = -4


@pytest.mark.parametrize("lie", ["index-runs-ahead", "id-out-of-range",
                                 "length-beyond-buffer"])
def test_a_lying_device_is_dropped_not_trusted(virtio_guest: bytes, lie: str) -> None:
    log = SerialLog()
    with Vm(MEMORY, serial_output=log.write) as vm:
        vm.bus.mmio.register(HOSTILE_BASE, HOSTILE_WINDOW, HostileNetDevice(vm.memory, lie), "liar")
        # RX is kicked once at open, TX after every frame: either queue carries the lie.
        mode = "mode=echo" if lie == "length-beyond-buffer" else "mode=bench-tx frames=400"
        vm.load(load_kernel(vm.memory, virtio_guest, kernel_format=KernelFormat.PVH,
                            command_line=f"{mode} virtio_mmio.device=4K@{HOSTILE_BASE:#x}:5"))
        vm.start()
        outcome = vm.wait(DEADLINE_SECONDS)
    assert (outcome.reason, outcome.status) == ("debug-exit", EXIT_DRIVER_ERROR), log.text
    assert f"failed: {DEVICE_ERROR}" in log.text
