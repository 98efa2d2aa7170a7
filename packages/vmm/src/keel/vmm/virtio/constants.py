"""Virtio numbers and ring layouts, taken from the uapi headers through keel.native._virtio.

Why one module: the virtqueue, the MMIO transport and the devices must agree bit for bit with
the Linux drivers in the guest; every value here comes from the same headers the guest kernel
is built from, or is named after the section of the virtio 1.2 specification that fixes it.
"""

from __future__ import annotations

import struct

from keel.native._virtio import ffi, lib

# Split virtqueue layout (virtio 1.2, 2.7).
DESCRIPTOR = struct.Struct("<QIHH")  # struct vring_desc: addr, len, flags, next
DESCRIPTOR_SIZE: int = ffi.sizeof("struct vring_desc")
RING_HEADER_SIZE: int = ffi.sizeof("struct vring_avail")  # flags + idx, same for used
RING_INDEX_OFFSET: int = ffi.offsetof("struct vring_avail", "idx")
AVAIL_ELEMENT_SIZE: int = ffi.sizeof("uint16_t")
USED_ELEMENT = struct.Struct("<II")  # struct vring_used_elem: id, len
USED_ELEMENT_SIZE: int = ffi.sizeof("struct vring_used_elem")
EVENT_FIELD_SIZE: int = ffi.sizeof("uint16_t")  # used_event / avail_event
DESCRIPTOR_ALIGNMENT: int = lib.VRING_DESC_ALIGN_SIZE
AVAIL_ALIGNMENT: int = lib.VRING_AVAIL_ALIGN_SIZE
USED_ALIGNMENT: int = lib.VRING_USED_ALIGN_SIZE
# "The maximum Queue Size value is 32768" (2.7); ring indices wrap at 2**16.
QUEUE_SIZE_LIMIT = 1 << 15
RING_INDEX_MODULUS = 1 << 16

DESC_F_NEXT: int = lib.VRING_DESC_F_NEXT
DESC_F_WRITE: int = lib.VRING_DESC_F_WRITE
DESC_F_INDIRECT: int = lib.VRING_DESC_F_INDIRECT
AVAIL_F_NO_INTERRUPT: int = lib.VRING_AVAIL_F_NO_INTERRUPT
USED_F_NO_NOTIFY: int = lib.VRING_USED_F_NO_NOTIFY

# Feature bits (bit numbers in the headers, masks here).
F_VERSION_1: int = 1 << lib.VIRTIO_F_VERSION_1
F_RING_EVENT_IDX: int = 1 << lib.VIRTIO_RING_F_EVENT_IDX
F_RING_INDIRECT_DESC: int = 1 << lib.VIRTIO_RING_F_INDIRECT_DESC
FEATURE_BITS = 64

# Device status (2.1).
STATUS_ACKNOWLEDGE: int = lib.VIRTIO_CONFIG_S_ACKNOWLEDGE
STATUS_DRIVER: int = lib.VIRTIO_CONFIG_S_DRIVER
STATUS_FEATURES_OK: int = lib.VIRTIO_CONFIG_S_FEATURES_OK
STATUS_DRIVER_OK: int = lib.VIRTIO_CONFIG_S_DRIVER_OK
STATUS_NEEDS_RESET: int = lib.VIRTIO_CONFIG_S_NEEDS_RESET
STATUS_FAILED: int = lib.VIRTIO_CONFIG_S_FAILED

# Device ids (5).
DEVICE_ID_NET: int = lib.VIRTIO_ID_NET
DEVICE_ID_BLOCK: int = lib.VIRTIO_ID_BLOCK
DEVICE_ID_RNG: int = lib.VIRTIO_ID_RNG
