"""Real Linux on keel.vmm: keel's guest kernel, probed by the Linux virtio drivers, pinged.

One boot per test session (a module fixture): the kernel built by `keel vmm guest
build-kernel` (cached), an initramfs whose /init makes no system calls (on machines whose KVM
emulates supervisor code, the guest's first `syscall` faults; ENVIRONMENT.md), 1 vCPU with the
emulation-safe CPU template, virtio-net on a TAP inside a network namespace this test creates
(the guest's traffic cannot leave it) and virtio-blk on an 8 MiB image. The boot takes
minutes where supervisor code is emulated, so progress goes to the terminal as it happens.
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.native.netns import NetworkNamespace
from keel.native.testing.skips import requires_kvm, requires_tap
from keel.vmm.boot.loader import load_kernel
from keel.vmm.guest_kernel import build_initramfs, build_kernel
from keel.vmm.guest_kernel.command_line import emulation_safe_parameters
from keel.vmm.machine import Vm
from keel.vmm.virtio.net import NetDevice
from keel.vmm.virtio.net_tap import TapBackend

pytestmark = [requires_kvm, requires_tap, pytest.mark.kvm, pytest.mark.tap,
              pytest.mark.timeout(2400)]

MEMORY = 256 << 20
DISK_SIZE = 8 << 20
SECTOR_SIZE = 512
HOST_ADDRESS = "10.200.0.1"
GUEST_ADDRESS = "10.200.0.2"
PREFIX_LENGTH = 24
NETMASK = "255.255.255.0"
GUEST_MAC = "02:4b:45:45:4c:02"
BOOT_DEADLINE_SECONDS = 1500.0
PROGRESS_EVERY_SECONDS = 30.0
PINGS = 3
# Echo requests sent at most to get PINGS replies: with every guest kernel instruction
# emulated on a loaded host, a softirq can wait seconds for the CPU, so one slow answer is
# the host's load, not a lost frame (a broken data path answers none).
PING_ATTEMPTS = 10
PING_TIMEOUT_SECONDS = 10.0
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
PING_IDENTIFIER = 0x4B45
# The /init: a static program with no system call at all, so it runs on any KVM.
IDLE_INIT_SOURCE = 'void _start(void) { for (;;) __asm__ volatile("pause"); }\n'
READY_MARKERS = ("Run /init as init process",)
IP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class LinuxBoot:
    serial: str
    ping_replies: int
    boot_seconds: float
    # Where the frames went, taken right after the pings (shown when they failed).
    network_state: str = ""


def network_state(vm: Vm, net: NetDevice, namespace: NetworkNamespace, tap_name: str) -> str:
    """The device's counters and rings, the device loop's health and the host's view of the
    TAP, so a failed ping says which side lost the frames."""
    lines = [f"device loop running={vm.virtio.loop.running} failure={vm.virtio.loop.failure!r}",
             f"{net.label}: active={net.active} broken={net.broken} "
             f"holding_a_frame={net.waiting_for_buffers} received={net.frames_received} "
             f"sent={net.frames_sent} dropped={net.frames_dropped}"]
    for slot in vm.virtio.placement.slots:
        status, acks = slot.transport.pending_interrupt()
        lines.append(f"{slot.transport.name}: line {slot.irq} InterruptStatus={status} "
                     f"InterruptACK writes={acks}")
    for queue in net.queues:
        try:
            pending: int | str = queue.pending()
        except Exception as error:  # a diagnostic never hides the failure it describes
            pending = repr(error)
        lines.append(f"  queue {queue.index}: last_avail={queue.last_avail_index} "
                     f"next_used={queue.next_used_index} pending={pending}")
    for command in (("-s", "link", "show", tap_name), ("neigh", "show")):
        shown = subprocess.run(["ip", "-n", namespace.name, *command], capture_output=True,
                               text=True, timeout=IP_TIMEOUT_SECONDS, check=False)
        lines.append((shown.stdout + shown.stderr).strip())
    return "\n".join(lines)


def icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(address: str, wanted: int, attempts: int) -> int:
    """Echo requests over a raw ICMP socket (run inside the namespace) until `wanted` replies
    came back or `attempts` requests went out; returns the replies received."""
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for sequence in range(attempts):
            if replies >= wanted:
                break
            body = b"keel ping %d" % sequence
            header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, PING_IDENTIFIER, sequence)
            checksum = icmp_checksum(header + body)
            sock.sendto(struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum, PING_IDENTIFIER,
                                    sequence) + body, (address, 0))
            deadline = time.monotonic() + PING_TIMEOUT_SECONDS
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([sock], [], [], remaining)
                if not readable:
                    break
                packet, (source, _) = sock.recvfrom(2048)
                icmp = packet[(packet[0] & 0x0F) * 4 :]
                kind, _, _, identifier, echoed = struct.unpack("!BBHHH", icmp[:8])
                if (source, kind, identifier) == (address, ICMP_ECHO_REPLY, PING_IDENTIFIER) \
                        and echoed <= sequence:
                    replies += 1  # a late reply to an earlier request counts too
                    if echoed == sequence:
                        break
    return replies


def build_idle_init(directory: Path) -> Path:
    source = directory / "idle_init.c"
    source.write_text(IDLE_INIT_SOURCE)
    binary = directory / "init"
    subprocess.run(["gcc", "-static", "-nostdlib", "-O2", "-o", str(binary), str(source)],
                   check=True, timeout=60)
    return binary


def boot_and_ping(directory: Path, say: Callable[[str], None]) -> LinuxBoot:
    say("building (or finding in the cache) keel's guest kernel")
    kernel = build_kernel(progress=say).vmlinux
    initrd = build_initramfs(build_idle_init(directory), busybox=None,
                             output=directory / "initrd.gz").read_bytes()
    disk = directory / "disk.img"
    disk.write_bytes(bytes(DISK_SIZE))
    serial = bytearray()
    lock = threading.Lock()

    def collect(data: bytes) -> None:
        with lock:
            serial.extend(data)

    def text() -> str:
        with lock:
            return serial.decode(errors="replace")

    with NetworkNamespace() as namespace:
        def make_tap() -> TapBackend:
            backend = TapBackend.open("keellinux0")
            namespace.ip("addr", "add", f"{HOST_ADDRESS}/{PREFIX_LENGTH}", "dev", backend.name)
            namespace.ip("link", "set", backend.name, "up")
            return backend

        with namespace.run(make_tap) as tap, Vm(MEMORY, 1, serial_output=collect) as vm:
            net = vm.add_virtio_net(tap, GUEST_MAC)
            vm.add_virtio_block(disk)
            command_line = " ".join((
                "console=ttyS0", emulation_safe_parameters(), vm.virtio_command_line(),
                f"ip={GUEST_ADDRESS}::{HOST_ADDRESS}:{NETMASK}::eth0:off"))
            vm.load(load_kernel(vm.memory, kernel.read_bytes(), command_line=command_line,
                                initrd=initrd))
            started = time.monotonic()
            vm.start()
            say(f"booting Linux under keel.vmm: {command_line}")
            next_report = started + PROGRESS_EVERY_SECONDS
            while not all(marker in text() for marker in READY_MARKERS):
                now = time.monotonic()
                if vm.exit is not None:
                    raise AssertionError(f"the guest ended early ({vm.exit}); serial log:\n"
                                         f"{text()}")
                if now - started > BOOT_DEADLINE_SECONDS:
                    raise AssertionError(f"no 'Run /init' after {BOOT_DEADLINE_SECONDS} s; "
                                         f"serial log:\n{text()}")
                if now >= next_report:
                    lines = text().splitlines()
                    say(f"  {now - started:5.0f} s: {lines[-1] if lines else '(no output yet)'}")
                    next_report = now + PROGRESS_EVERY_SECONDS
                time.sleep(0.5)
            boot_seconds = time.monotonic() - started
            say(f"reached /init after {boot_seconds:.0f} s; pinging {GUEST_ADDRESS}")
            replies = namespace.run(lambda: ping(GUEST_ADDRESS, PINGS, PING_ATTEMPTS))
            say(f"{replies} echo replies (wanted {PINGS}, at most {PING_ATTEMPTS} requests)")
            state = network_state(vm, net, namespace, tap.name)
            if replies < PINGS:
                say(f"network state:\n{state}")
            vm.stop()
            vm.wait(PING_TIMEOUT_SECONDS)
            return LinuxBoot(text(), replies, boot_seconds, state)


@pytest.fixture(scope="module")
def linux(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinuxBoot]:
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(message: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"[linux boot] {message}", flush=True)

    yield boot_and_ping(tmp_path_factory.mktemp("linux"), say)


def test_the_kernel_reaches_init(linux: LinuxBoot) -> None:
    assert "Run /init as init process" in linux.serial
    assert "Kernel panic" not in linux.serial


def test_linux_virtio_net_binds_keels_device_and_eth0_comes_up(linux: LinuxBoot) -> None:
    assert "IP-Config: Complete" in linux.serial, linux.serial
    assert f"device=eth0, hwaddr={GUEST_MAC}, ipaddr={GUEST_ADDRESS}" in linux.serial


def test_the_host_pings_the_guest_over_the_tap(linux: LinuxBoot) -> None:
    assert linux.ping_replies >= PINGS, f"{linux.network_state}\n{linux.serial[-2000:]}"


def test_linux_virtio_blk_reports_the_disk_capacity(linux: LinuxBoot) -> None:
    sectors = DISK_SIZE // SECTOR_SIZE
    assert f"[vda] {sectors} 512-byte logical blocks" in linux.serial, linux.serial
