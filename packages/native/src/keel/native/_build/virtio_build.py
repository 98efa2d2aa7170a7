"""cffi out-of-line API build of the virtio definitions (`keel.native._virtio`).

Why a module of constants and layouts: keel.vmm's virtqueue walker, MMIO transport and devices
must agree bit for bit with the Linux drivers in the guest; taking every VIRTIO_*, VRING_* and
register offset from the same uapi headers the guest kernel was built from is how they do.
"""

from __future__ import annotations

import os
import sys

from cffi import FFI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from header_macros import (  # type: ignore[import-not-found]  # noqa: E402
    cdef_defines,
    integer_macros,
)

HEADERS = [
    "linux/virtio_config.h",
    "linux/virtio_ids.h",
    "linux/virtio_ring.h",
    "linux/virtio_mmio.h",
    "linux/virtio_net.h",
    "linux/virtio_blk.h",
    "linux/virtio_rng.h",
]
PREFIXES = ("VIRTIO_", "VRING_")
# Function-like or non-integer macros that share the prefixes.
EXCLUDE = frozenset({"VIRTIO_NET_HDR_GSO_NONE_", "VRING_AVAIL_ALIGN_SIZE_", "VIRTIO_NET_HDR_F_"})

DECLARATIONS = """
struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct vring_avail { uint16_t flags; uint16_t idx; uint16_t ring[]; };
struct vring_used_elem { uint32_t id; uint32_t len; };
struct vring_used { uint16_t flags; uint16_t idx; struct vring_used_elem ring[]; };
struct virtio_net_config { uint8_t mac[6]; uint16_t status; uint16_t max_virtqueue_pairs;
                           uint16_t mtu; ...; };
struct virtio_blk_config { uint64_t capacity; uint32_t size_max; uint32_t seg_max;
                           uint32_t blk_size; ...; };
struct virtio_blk_outhdr { uint32_t type; uint32_t ioprio; uint64_t sector; };
"""


def _ffibuilder() -> FFI:
    builder = FFI()
    builder.cdef(DECLARATIONS + cdef_defines(integer_macros(HEADERS, PREFIXES, EXCLUDE)))
    builder.set_source("keel.native._virtio", "".join(f"#include <{h}>\n" for h in HEADERS))
    return builder


ffibuilder = _ffibuilder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
