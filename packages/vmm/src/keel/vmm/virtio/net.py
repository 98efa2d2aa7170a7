"""virtio-net (virtio 1.2 section 5.1): a sans-IO core over a NetBackend (a TAP device).

Why the frame keeps its header end to end: with VIRTIO_F_VERSION_1 every frame on either
queue starts with the 12-byte struct virtio_net_hdr (with num_buffers), and a TAP opened with
IFF_VNET_HDR and a vnet header size of 12 speaks exactly that format, so checksum and
segmentation offloads pass between the guest and the host kernel untouched: no copy, no
parsing. The core only checks sizes and sets num_buffers (1: mergeable buffers are not
offered).

RX has back-pressure: when the guest has posted no receive buffer, the frame waits in the
device (one frame) and the backend is not read again until the driver adds buffers and kicks
the RX queue.
"""

from __future__ import annotations

import logging
from typing import Protocol

from keel.native._virtio import ffi, lib
from keel.native.tun import VIRTIO_NET_HDR_MRG_RXBUF_SIZE, VIRTIO_NET_HDR_SIZE
from keel.vmm.virtio.chain import DescriptorChain
from keel.vmm.virtio.constants import DEVICE_ID_NET
from keel.vmm.virtio.device import VirtioDevice
from keel.vmm.virtio.errors import VirtioConfigError

logger = logging.getLogger("keel.vmm")

NET_QUEUE_SIZE = 256
RX_QUEUE = 0
TX_QUEUE = 1
# struct virtio_net_hdr_v1 is virtio_net_hdr_mrg_rxbuf's layout: 10 bytes, then num_buffers.
HEADER_SIZE: int = VIRTIO_NET_HDR_MRG_RXBUF_SIZE
NUM_BUFFERS_OFFSET: int = VIRTIO_NET_HDR_SIZE
NUM_BUFFERS_SIZE = HEADER_SIZE - NUM_BUFFERS_OFFSET
MAC_SIZE = 6
MAC_OFFSET: int = ffi.offsetof("struct virtio_net_config", "mac")
CONFIG_SIZE: int = ffi.sizeof("struct virtio_net_config")
# The largest frame either way: a 64 KiB GSO packet behind an Ethernet + 802.1Q header.
ETHERNET_HEADER_LIMIT = 18
IP_PACKET_LIMIT = 1 << 16
FRAME_LIMIT = HEADER_SIZE + ETHERNET_HEADER_LIMIT + IP_PACKET_LIMIT
# Frames moved per call before the device yields its thread.
RX_BATCH_LIMIT = 256

F_MAC: int = 1 << lib.VIRTIO_NET_F_MAC
F_CSUM: int = 1 << lib.VIRTIO_NET_F_CSUM
F_GUEST_CSUM: int = 1 << lib.VIRTIO_NET_F_GUEST_CSUM
F_GUEST_TSO4: int = 1 << lib.VIRTIO_NET_F_GUEST_TSO4
F_GUEST_TSO6: int = 1 << lib.VIRTIO_NET_F_GUEST_TSO6
F_GUEST_ECN: int = 1 << lib.VIRTIO_NET_F_GUEST_ECN
F_HOST_TSO4: int = 1 << lib.VIRTIO_NET_F_HOST_TSO4
F_HOST_TSO6: int = 1 << lib.VIRTIO_NET_F_HOST_TSO6
F_HOST_ECN: int = 1 << lib.VIRTIO_NET_F_HOST_ECN


def parse_mac(mac: str | bytes) -> bytes:
    """`02:00:00:00:00:01` or 6 raw bytes; refuses multicast addresses (bit 0 of byte 0)."""
    if isinstance(mac, str):
        parts = mac.split(":")
        try:
            if len(parts) != MAC_SIZE or any(len(part) != 2 for part in parts):
                raise ValueError(mac)
            raw = bytes(int(part, 16) for part in parts)
        except ValueError:
            raise VirtioConfigError(f"MAC address {mac!r} is not six colon-separated hex "
                                    "bytes like 02:00:00:00:00:01") from None
    else:
        raw = bytes(mac)
    if len(raw) != MAC_SIZE:
        raise VirtioConfigError(f"MAC address {raw.hex(':')} has {len(raw)} bytes, expected 6")
    if raw[0] & 1:
        raise VirtioConfigError(f"MAC address {raw.hex(':')} is a multicast address")
    return raw


class NetBackend(Protocol):
    """Where frames go and come from; every frame starts with the 12-byte vnet header."""

    def send(self, frame: bytes) -> None: ...

    def receive(self) -> bytes | None:
        """One frame, or None when none is waiting (never blocks)."""
        ...

    def offload_features(self) -> int:
        """The VIRTIO_NET_F_* offload bits this backend can carry."""
        ...

    def apply_offloads(self, driver_features: int) -> None:
        """The driver's choice: what the backend may hand the guest (GUEST_* bits)."""
        ...


class NetDevice(VirtioDevice):
    """One RX and one TX queue, a MAC address in config space, offloads from the backend."""

    device_id = DEVICE_ID_NET
    name = "virtio-net"

    def __init__(self, backend: NetBackend, mac: str | bytes) -> None:
        super().__init__([NET_QUEUE_SIZE, NET_QUEUE_SIZE])
        self.backend = backend
        self.mac = parse_mac(mac)
        self._pending: bytes | None = None
        # Set by an event loop that does the backend I/O itself: it reads frames and hands
        # them to deliver(), and takes TX frames from the outbox instead of backend.send().
        self.pulls_from_backend = True
        self.outbox: list[bytes] | None = None
        self.frames_sent = 0
        self.frames_received = 0
        self.frames_dropped = 0

    def specific_features(self) -> int:
        return F_MAC | self.backend.offload_features()

    def config_space(self) -> bytes:
        config = bytearray(CONFIG_SIZE)
        config[MAC_OFFSET : MAC_OFFSET + MAC_SIZE] = self.mac
        return bytes(config)

    def on_activate(self) -> None:
        self.backend.apply_offloads(self.driver_features)

    def on_reset(self) -> None:
        self._pending = None

    def process_queue(self, index: int) -> None:
        if index == TX_QUEUE:
            self.drain(self.queues[TX_QUEUE], self._transmit)
        elif index == RX_QUEUE:
            self._receive(self.pulls_from_backend)

    @property
    def waiting_for_buffers(self) -> bool:
        """A frame is held because the guest posted no RX buffer (stop reading the backend)."""
        return self._pending is not None

    def receive_from_backend(self) -> None:
        """The backend has frames (its fd is readable): move them into RX buffers."""
        self.guarded(lambda: self._receive(self.pulls_from_backend))

    def deliver(self, frame: bytes) -> None:
        """A frame the event loop read: into an RX buffer now, or held until the driver posts
        one (`waiting_for_buffers`; the caller stops reading until then). Dropped while the
        device is not live, as a NIC whose link is down drops it."""
        with self.lock:
            if not self.active or self.broken or self._pending is not None:
                self.frames_dropped += 1
                return
            self._pending = frame
            self._guarded(lambda: self._receive(False))

    def take_outbox(self) -> list[bytes]:
        """TX frames the guest queued since the last call, in order (event-loop mode)."""
        with self.lock:
            frames = self.outbox or []
            if self.outbox is not None:
                self.outbox = []
            return frames

    # -- TX ---------------------------------------------------------------------------------

    def _transmit(self, chain: DescriptorChain) -> int:
        length = chain.readable_length
        if not HEADER_SIZE <= length <= FRAME_LIMIT:
            self.frames_dropped += 1
            logger.debug("%s: TX chain %d of %d bytes dropped (expected %d to %d)", self.label,
                         chain.head, length, HEADER_SIZE, FRAME_LIMIT)
            return 0
        frame = chain.read(self.require_memory(), length)
        if self.outbox is not None:
            self.outbox.append(frame)
        else:
            self.backend.send(frame)
        self.frames_sent += 1
        return 0

    # -- RX ---------------------------------------------------------------------------------

    def _receive(self, pull: bool) -> None:
        memory = self.require_memory()
        queue = self.queues[RX_QUEUE]
        for _ in range(RX_BATCH_LIMIT):
            frame = self._pending
            if frame is None and pull:
                frame = self.backend.receive()
            if frame is None:
                break
            chain = queue.pop()
            if chain is None and queue.enable_notifications():
                chain = queue.pop()
            if chain is None:
                self._pending = frame
                break
            self._pending = None
            if not HEADER_SIZE <= len(frame) <= chain.writable_length:
                self.frames_dropped += 1
                logger.debug("%s: RX frame of %d bytes dropped (buffer %d bytes)", self.label,
                             len(frame), chain.writable_length)
                queue.push(chain.head, 0)
                continue
            header = bytearray(frame[:HEADER_SIZE])
            header[NUM_BUFFERS_OFFSET:HEADER_SIZE] = (1).to_bytes(NUM_BUFFERS_SIZE, "little")
            written = chain.write(memory, header)
            written += chain.write(memory, memoryview(frame)[HEADER_SIZE:], offset=HEADER_SIZE)
            queue.push(chain.head, written)
            self.frames_received += 1
        self.signal_used(queue)
