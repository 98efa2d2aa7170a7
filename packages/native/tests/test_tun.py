"""A real TAP device in a namespace the test creates: frames cross in both directions."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from keel.native.netns import NetworkNamespace
from keel.native.testing.skips import requires_tap
from keel.native.tun import (
    IFF_NO_PI,
    IFF_TAP,
    IFF_VNET_HDR,
    OFFLOAD_CSUM,
    OFFLOAD_TSO4,
    OFFLOAD_TSO6,
    VIRTIO_NET_HDR_MRG_RXBUF_SIZE,
    VIRTIO_NET_HDR_SIZE,
    Tap,
)

pytestmark = [requires_tap, pytest.mark.tap]

ETH_P_ALL = 0x0003
# IEEE 802 "local experimental" EtherType: nothing else in the namespace sends it.
TEST_ETHERTYPE = 0x88B5
BROADCAST = b"\xff" * 6
SOURCE_MAC = bytes.fromhex("02000000aa01")
RECEIVE_DEADLINE_SECONDS = 5.0


def _frame(payload: bytes) -> bytes:
    return BROADCAST + SOURCE_MAC + struct.pack("!H", TEST_ETHERTYPE) + payload


def _receive_test_frame(receive: socket.socket | Tap, strip: int = 0) -> bytes:
    deadline = time.monotonic() + RECEIVE_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            data = receive.recv(2048) if isinstance(receive, socket.socket) else receive.read(2048)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        data = data[strip:]
        if data[12:14] == struct.pack("!H", TEST_ETHERTYPE):
            return data
    raise AssertionError("the test frame did not arrive")


def test_frames_cross_a_tap_in_a_test_namespace() -> None:
    with NetworkNamespace() as namespace:

        def setup() -> tuple[Tap, socket.socket]:
            tap = Tap("keeltap0", nonblocking=True)
            namespace.ip("link", "set", tap.name, "up")
            packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            packet.bind((tap.name, 0))
            packet.setblocking(False)
            return tap, packet

        tap, packet = namespace.run(setup)
        with tap, packet:
            assert tap.features() & IFF_VNET_HDR
            assert tap.vnet_header_size() == VIRTIO_NET_HDR_SIZE
            # Guest to host: a frame written to the TAP fd arrives on the interface.
            outbound = _frame(b"from the guest side")
            tap.write(bytes(VIRTIO_NET_HDR_SIZE) + outbound)
            assert _receive_test_frame(packet)[: len(outbound)] == outbound
            # Host to guest: a frame sent on the interface comes out of the TAP fd.
            inbound = _frame(b"from the host side")
            packet.send(inbound)
            got = _receive_test_frame(tap, strip=VIRTIO_NET_HDR_SIZE)
            assert got[: len(inbound)] == inbound


def test_vnet_header_size_and_offloads_are_accepted() -> None:
    with NetworkNamespace() as namespace:
        tap = namespace.run(lambda: Tap("keeltap2"))
        with tap:
            tap.set_vnet_header_size(VIRTIO_NET_HDR_MRG_RXBUF_SIZE)
            assert tap.vnet_header_size() == VIRTIO_NET_HDR_MRG_RXBUF_SIZE
            tap.set_offload(OFFLOAD_CSUM | OFFLOAD_TSO4 | OFFLOAD_TSO6)
            with pytest.raises(OSError, match=r"TUNSETOFFLOAD\(device='keeltap2'"):
                tap.set_offload(1 << 30)
            with pytest.raises(ValueError, match="size must be in"):
                tap.set_vnet_header_size(2)


def test_tap_without_vnet_header() -> None:
    with NetworkNamespace() as namespace:
        tap = namespace.run(lambda: Tap("", flags=IFF_TAP | IFF_NO_PI))
        with tap:
            assert tap.name.startswith("tap")


def test_bad_names_and_missing_device() -> None:
    with pytest.raises(ValueError, match="at most 15 bytes"):
        Tap("x" * 16)
    with pytest.raises(TypeError, match="must be a str"):
        Tap(3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="/dev/net/missing"):
        Tap("keeltap1", path="/dev/net/missing")
