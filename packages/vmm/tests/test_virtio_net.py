"""virtio-net on a real TAP inside a namespace the test creates: frames cross both ways."""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from keel.native.netns import NetworkNamespace
from keel.native.testing.skips import requires_tap
from keel.vmm.memory import GuestMemory
from keel.vmm.testing.tap_link import open_test_link
from keel.vmm.virtio.constants import STATUS_NEEDS_RESET
from keel.vmm.virtio.driver import MmioDriver, SplitQueueDriver, UsedBuffer
from keel.vmm.virtio.errors import VirtioConfigError
from keel.vmm.virtio.mmio import MmioTransport
from keel.vmm.virtio.net import (
    F_GUEST_CSUM,
    F_GUEST_TSO4,
    F_MAC,
    HEADER_SIZE,
    NUM_BUFFERS_OFFSET,
    RX_QUEUE,
    TX_QUEUE,
    NetDevice,
    parse_mac,
)
from keel.vmm.virtio.net_tap import TapBackend, tun_offload_flags

pytestmark = [requires_tap, pytest.mark.tap]

MEMORY_SIZE = 4 << 20
RX_BASE = 0x2000
TX_BASE = 0x8000
RX_BUFFERS = 0x100000
TX_BUFFERS = 0x200000
BUFFER_AREA = 0x100000
QUEUE_SIZE = 16
TEST_ETHERTYPE = 0x88B5  # IEEE 802 local experimental: nothing else in the namespace sends it
GUEST_MAC = "02:00:00:00:00:01"
HOST_MAC = bytes.fromhex("02000000aa02")
BROADCAST = b"\xff" * 6
FRAME_BUFFER = HEADER_SIZE + 1514
DEADLINE_SECONDS = 5.0


def ethernet_frame(source: bytes, payload: bytes) -> bytes:
    return BROADCAST + source + struct.pack("!H", TEST_ETHERTYPE) + payload


@dataclass
class Link:
    namespace: NetworkNamespace
    backend: TapBackend
    host: socket.socket
    memory: GuestMemory
    device: NetDevice
    driver: MmioDriver
    rx: SplitQueueDriver
    tx: SplitQueueDriver
    interrupts: list[int] = field(default_factory=list)

    def host_receive(self) -> bytes:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.host], [], [], remaining)
            if not readable:
                break
            data = self.host.recv(65536)
            if data[12:14] == struct.pack("!H", TEST_ETHERTYPE):
                return data
        raise AssertionError("no test frame reached the host interface")

    def guest_receive(self) -> UsedBuffer:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            select.select([self.backend], [], [], remaining)
            self.device.receive_from_backend()
            for used in self.rx.used():
                self.rx.add(writable=[FRAME_BUFFER])
                if used.data[HEADER_SIZE + 12 : HEADER_SIZE + 14] == \
                        struct.pack("!H", TEST_ETHERTYPE):
                    return used
        raise AssertionError("no test frame reached the guest's RX buffers")


@pytest.fixture
def link() -> Iterator[Link]:
    with NetworkNamespace() as namespace:

        backend, host = open_test_link(namespace, "keelvnet0")
        with backend, host, GuestMemory(MEMORY_SIZE) as memory:
            interrupts: list[int] = []
            device = NetDevice(backend, GUEST_MAC)
            transport = MmioTransport(device, memory, lambda: interrupts.append(1), name="net0")
            driver = MmioDriver(transport)
            assert driver.negotiate(driver.device_features())
            rx = SplitQueueDriver(memory, RX_BASE, QUEUE_SIZE, RX_BUFFERS, BUFFER_AREA)
            tx = SplitQueueDriver(memory, TX_BASE, QUEUE_SIZE, TX_BUFFERS, BUFFER_AREA)
            driver.setup_queue(RX_QUEUE, rx)
            driver.setup_queue(TX_QUEUE, tx)
            driver.driver_ok()
            yield Link(namespace, backend, host, memory, device, driver, rx, tx, interrupts)


def test_mac_and_offloads_in_features_and_config(link: Link) -> None:
    features = link.driver.device_features()
    assert features & F_MAC
    assert features & F_GUEST_CSUM and features & F_GUEST_TSO4  # this kernel's tun takes them
    mac = bytes(link.driver.config(index, 1) for index in range(6))
    assert mac == parse_mac(GUEST_MAC)


@pytest.mark.parametrize("indirect", [False, True])
def test_guest_tx_frames_come_out_on_the_host_interface(link: Link, indirect: bool) -> None:
    for number in range(3):
        frame = ethernet_frame(parse_mac(GUEST_MAC), f"from the guest {number}".encode())
        # Linux puts the header and the frame in separate buffers (or one, with ANY_LAYOUT).
        link.tx.add([bytes(HEADER_SIZE), frame], indirect=indirect)
        link.driver.notify(TX_QUEUE)
        assert link.host_receive()[: len(frame)] == frame
        (used,) = link.tx.used()
        assert used.length == 0
    assert link.device.frames_sent == 3


def test_host_frames_land_in_rx_buffers(link: Link) -> None:
    for _ in range(4):
        link.rx.add(writable=[FRAME_BUFFER])
    link.driver.notify(RX_QUEUE)
    frame = ethernet_frame(HOST_MAC, b"from the host side")
    link.host.send(frame)
    used = link.guest_receive()
    header, received = used.data[:HEADER_SIZE], used.data[HEADER_SIZE:]
    assert received[: len(frame)] == frame
    assert int.from_bytes(header[NUM_BUFFERS_OFFSET:], "little") == 1
    assert link.interrupts


def test_rx_waits_for_buffers(link: Link) -> None:
    frame = ethernet_frame(HOST_MAC, b"early")
    link.host.send(frame)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not link.device.waiting_for_buffers and time.monotonic() < deadline:
        select.select([link.backend], [], [], DEADLINE_SECONDS)
        link.device.receive_from_backend()
    assert link.device.waiting_for_buffers  # held in the device, not dropped
    link.rx.add(writable=[FRAME_BUFFER])
    link.driver.notify(RX_QUEUE)  # the driver's kick delivers the held frame
    (used,) = link.rx.used()
    assert used.data[HEADER_SIZE : HEADER_SIZE + len(frame)] == frame
    assert not link.device.waiting_for_buffers


def test_short_tx_chain_is_dropped_not_fatal(link: Link) -> None:
    link.tx.add([b"tiny"])
    link.driver.notify(TX_QUEUE)
    assert len(link.tx.used()) == 1
    assert link.device.frames_dropped == 1
    assert not link.driver.status() & STATUS_NEEDS_RESET


def test_malformed_vnet_header_is_dropped_by_the_tap(link: Link,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    bad_header = bytes([0, 0x7F]) + bytes(HEADER_SIZE - 2)  # unknown GSO type
    with caplog.at_level(logging.WARNING, logger="keel.vmm"):
        link.tx.add([bad_header + ethernet_frame(parse_mac(GUEST_MAC), b"bad gso")])
        link.driver.notify(TX_QUEUE)
    assert len(link.tx.used()) == 1
    assert link.backend.dropped == 1
    assert not caplog.records
    assert not link.driver.status() & STATUS_NEEDS_RESET


def test_offload_flags_follow_the_driver() -> None:
    assert tun_offload_flags(F_GUEST_TSO4) == 0  # TSO without checksum offload is refused
    assert tun_offload_flags(F_GUEST_CSUM | F_GUEST_TSO4) != 0


@pytest.mark.parametrize("mac,message", [
    ("02:00:00:00:00", "not six colon-separated"),
    ("zz:00:00:00:00:01", "not six colon-separated"),
    ("01:00:5e:00:00:01", "multicast"),
    (b"\x02\x00", "has 2 bytes"),
])
def test_bad_mac_addresses(mac: str | bytes, message: str) -> None:
    with pytest.raises(VirtioConfigError, match=message):
        parse_mac(mac)
