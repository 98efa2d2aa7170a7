"""TUN/TAP devices: the host end of a guest's virtio-net.

Why: a TAP device with IFF_VNET_HDR carries virtio-net headers unchanged between the guest and
the host kernel, which is what lets a VMM offload checksums and segmentation. The device is
created in the network namespace of the thread that opens /dev/net/tun (see keel.native.netns).
"""

from __future__ import annotations

import os

from keel.native._sys import ffi, lib
from keel.native.checks import UINT32_MAX, require_int
from keel.native.errors import check_result, syscall_error
from keel.native.fd import FdResource, OwnedFd

TUN_DEVICE_PATH = "/dev/net/tun"
IFF_TAP = lib.IFF_TAP
IFF_TUN = lib.IFF_TUN
IFF_NO_PI = lib.IFF_NO_PI
IFF_VNET_HDR = lib.IFF_VNET_HDR
IFF_MULTI_QUEUE = lib.IFF_MULTI_QUEUE
INTERFACE_NAME_MAX = lib.IFNAMSIZ - 1
VIRTIO_NET_HDR_SIZE = ffi.sizeof("struct virtio_net_hdr")
VIRTIO_NET_HDR_MRG_RXBUF_SIZE = ffi.sizeof("struct virtio_net_hdr_mrg_rxbuf")
# TUNSETOFFLOAD flags (TUN_F_*), from <linux/if_tun.h>.
OFFLOAD_CSUM = lib.TUN_F_CSUM
OFFLOAD_TSO4 = lib.TUN_F_TSO4
OFFLOAD_TSO6 = lib.TUN_F_TSO6
OFFLOAD_TSO_ECN = lib.TUN_F_TSO_ECN
OFFLOAD_UFO = lib.TUN_F_UFO


def _check_interface_name(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"interface name must be a str, not {type(name).__name__}")
    encoded = name.encode()
    if len(encoded) > INTERFACE_NAME_MAX or "/" in name or any(c.isspace() for c in name):
        raise ValueError(
            f"interface name {name!r} must be at most {INTERFACE_NAME_MAX} bytes with no '/' "
            "or white space (an empty name lets the kernel pick one)"
        )
    return encoded


class Tap(FdResource):
    """A TAP (or TUN) device opened on /dev/net/tun; closing it removes a non-persistent device."""

    def __init__(
        self,
        name: str = "",
        *,
        flags: int = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        nonblocking: bool = False,
        path: str = TUN_DEVICE_PATH,
    ) -> None:
        encoded = _check_interface_name(name)
        flags = require_int("flags", flags, 0, 0xFFFF)
        open_flags = os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0)
        try:
            fd = os.open(path, open_flags)
        except OSError as error:
            raise syscall_error(error.errno or 0, "open", path=path) from None
        owned = OwnedFd(fd, f"TAP {name or '(unnamed)'}")
        name_out = ffi.new("char[]", lib.IFNAMSIZ)
        try:
            check_result(lib.keel_tun_set_iff(fd, encoded, flags, name_out, lib.IFNAMSIZ),
                         "TUNSETIFF", name=name, flags=hex(flags))
        except BaseException:
            owned.close()
            raise
        super().__init__(owned)
        chosen_name = ffi.string(name_out)
        self.name = chosen_name.decode() if isinstance(chosen_name, bytes) else chosen_name
        self.flags = flags

    def features(self) -> int:
        """TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports."""
        value = ffi.new("unsigned int *")
        check_result(lib.keel_ioctl_ptr(self.fileno(), lib.TUNGETFEATURES, value),
                     "TUNGETFEATURES", device=self.name)
        return int(value[0])

    def set_vnet_header_size(self, size: int) -> None:
        """TUNSETVNETHDRSZ: 10 for virtio_net_hdr, 12 with the num_buffers field."""
        size = require_int("size", size, VIRTIO_NET_HDR_SIZE, 1 << 10)
        value = ffi.new("int *", size)
        check_result(lib.keel_ioctl_ptr(self.fileno(), lib.TUNSETVNETHDRSZ, value),
                     "TUNSETVNETHDRSZ", device=self.name, size=size)

    def vnet_header_size(self) -> int:
        value = ffi.new("int *")
        check_result(lib.keel_ioctl_ptr(self.fileno(), lib.TUNGETVNETHDRSZ, value),
                     "TUNGETVNETHDRSZ", device=self.name)
        return int(value[0])

    def set_offload(self, flags: int) -> None:
        """TUNSETOFFLOAD with TUN_F_* flags (what the guest can take unsegmented/unsummed)."""
        flags = require_int("flags", flags, 0, UINT32_MAX)
        check_result(lib.keel_ioctl_int(self.fileno(), lib.TUNSETOFFLOAD, flags),
                     "TUNSETOFFLOAD", device=self.name, flags=hex(flags))

    def write(self, frame: bytes | bytearray | memoryview) -> int:
        """Send one frame (with its vnet header when IFF_VNET_HDR is set) to the host stack."""
        return os.write(self.fileno(), frame)

    def read(self, capacity: int) -> bytes:
        """Receive one frame from the host stack (at most `capacity` bytes)."""
        capacity = require_int("capacity", capacity, 1, 1 << 20)
        return os.read(self.fileno(), capacity)
