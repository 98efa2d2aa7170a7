"""The TAP edge of virtio-net: a NetBackend on keel.native.tun.Tap.

Why these settings: IFF_VNET_HDR with a vnet header size of 12 makes the TAP speak the
guest's virtio_net_hdr_v1 directly; TUNSETOFFLOAD tells the host kernel which offloads the
guest accepted (unsummed, unsegmented frames toward the guest), and the HOST_* offloads need
nothing but the header. The TAP is non-blocking: receive() never waits, and a full or downed
interface drops a TX frame (counted) as a real NIC would, instead of stalling the device.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Self

from keel.native.tun import (
    IFF_NO_PI,
    IFF_TAP,
    IFF_VNET_HDR,
    OFFLOAD_CSUM,
    OFFLOAD_TSO4,
    OFFLOAD_TSO6,
    OFFLOAD_TSO_ECN,
    Tap,
)
from keel.vmm.virtio.errors import VirtioConfigError
from keel.vmm.virtio.net import (
    F_CSUM,
    F_GUEST_CSUM,
    F_GUEST_ECN,
    F_GUEST_TSO4,
    F_GUEST_TSO6,
    F_HOST_ECN,
    F_HOST_TSO4,
    F_HOST_TSO6,
    FRAME_LIMIT,
    HEADER_SIZE,
)

logger = logging.getLogger("keel.vmm")

TAP_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
# Guest-side virtio-net feature -> the TUN_F_* flag that lets the TAP hand such frames over.
GUEST_OFFLOADS = {
    F_GUEST_CSUM: OFFLOAD_CSUM,
    F_GUEST_TSO4: OFFLOAD_TSO4,
    F_GUEST_TSO6: OFFLOAD_TSO6,
    F_GUEST_ECN: OFFLOAD_TSO_ECN,
}
# What keel offers when the TAP accepts every flag above.
ALL_OFFLOADS = (F_CSUM | F_HOST_TSO4 | F_HOST_TSO6 | F_HOST_ECN | F_GUEST_CSUM | F_GUEST_TSO4
                | F_GUEST_TSO6 | F_GUEST_ECN)


def tun_offload_flags(driver_features: int) -> int:
    """TUNSETOFFLOAD flags for what the driver accepted (TSO needs checksum offload)."""
    if not driver_features & F_GUEST_CSUM:
        return 0
    flags = 0
    for feature, flag in GUEST_OFFLOADS.items():
        if driver_features & feature:
            flags |= flag
    if not flags & (OFFLOAD_TSO4 | OFFLOAD_TSO6):
        flags &= ~OFFLOAD_TSO_ECN  # ECN only qualifies TSO; the tun driver refuses it alone
    return flags


class TapBackend:
    """A TAP device (opened here or handed in) as virtio-net's backend; a context manager."""

    def __init__(self, tap: Tap, *, offloads: bool = True) -> None:
        if not tap.flags & IFF_VNET_HDR:
            raise VirtioConfigError(f"TAP {tap.name!r} was opened without IFF_VNET_HDR; "
                                    "virtio-net needs the vnet header")
        self.tap = tap
        self.tap.set_vnet_header_size(HEADER_SIZE)
        self._offloads = ALL_OFFLOADS if offloads and self._tap_accepts_offloads() else 0
        self.tap.set_offload(0)
        self.dropped = 0

    @classmethod
    def open(cls, name: str, *, offloads: bool = True) -> TapBackend:
        """Create (or attach to a persistent) TAP named `name` in this thread's namespace."""
        tap = Tap(name, flags=TAP_FLAGS, nonblocking=True)
        try:
            return cls(tap, offloads=offloads)
        except BaseException:
            tap.close()
            raise

    def _tap_accepts_offloads(self) -> bool:
        try:
            self.tap.set_offload(tun_offload_flags(ALL_OFFLOADS))
        except OSError as error:
            logger.info("TAP %s refuses offloads (%s); offering none", self.tap.name, error)
            return False
        return True

    @property
    def name(self) -> str:
        return self.tap.name

    def fileno(self) -> int:
        return self.tap.fileno()

    def offload_features(self) -> int:
        return self._offloads

    def apply_offloads(self, driver_features: int) -> None:
        flags = tun_offload_flags(driver_features & self._offloads)
        try:
            self.tap.set_offload(flags)
        except OSError as error:
            logger.warning("TAP %s refused offload flags %#x (%s); using none", self.tap.name,
                           flags, error)
            self.tap.set_offload(0)

    def send(self, frame: bytes) -> None:
        """Hand one frame to the host; a refused frame is dropped and counted, never raised
        (the guest writes the vnet header, so EINVAL for a bad GSO type is its doing)."""
        try:
            self.tap.write(frame)
        except OSError as error:
            self.dropped += 1
            logger.debug("TAP %s dropped a %d-byte frame: %s", self.tap.name, len(frame), error)

    def receive(self) -> bytes | None:
        try:
            return self.tap.read(FRAME_LIMIT)
        except BlockingIOError:
            return None

    def close(self) -> None:
        self.tap.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
