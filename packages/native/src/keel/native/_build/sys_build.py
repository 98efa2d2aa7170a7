"""cffi out-of-line API build of TUN/TAP, eventfd, epoll, namespaces and signals (`keel.native._sys`)."""

from __future__ import annotations

import os
import sys

from cffi import FFI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from header_macros import cdef_defines, integer_macros, read_helper  # type: ignore[import-not-found]  # noqa: E402

HEADERS = ["net/if.h", "linux/if_tun.h", "sys/eventfd.h", "sys/epoll.h", "sched.h", "linux/virtio_net.h"]
PREFIXES = (
    "TUN",
    "IFF_TUN",
    "IFF_TAP",
    "IFF_NO_PI",
    "IFF_VNET_HDR",
    "IFF_MULTI_QUEUE",
    "IFF_ONE_QUEUE",
    "IFF_PERSIST",
    "IFF_NAPI",
    "IFF_NO_CARRIER",
    "IFNAMSIZ",
    "EFD_",
    "EPOLL",
    "CLONE_NEW",
    "VIRTIO_NET_HDR_",
)
EXCLUDE = frozenset({"TUN_READQ_SIZE"})

DECLARATIONS = """
struct virtio_net_hdr { uint8_t flags; uint8_t gso_type; uint16_t hdr_len; uint16_t gso_size;
                        uint16_t csum_start; uint16_t csum_offset; };
struct virtio_net_hdr_mrg_rxbuf { struct virtio_net_hdr hdr; uint16_t num_buffers; };

/* All return a non-negative result, or -errno. */
int keel_tun_set_iff(int fd, const char *name, int flags, char *name_out, size_t name_out_size);
int keel_tun_get_iff(int fd, char *name_out, size_t name_out_size, int *flags_out);
long keel_ioctl_ptr(int fd, unsigned long request, void *argument);
long keel_ioctl_int(int fd, unsigned long request, unsigned long argument);
int keel_eventfd(unsigned initial_value, int flags);
int keel_epoll_create(int flags);
int keel_epoll_ctl(int epoll_fd, int operation, int fd, uint32_t events, uint64_t data);
int keel_epoll_wait(int epoll_fd, uint64_t *datas, uint32_t *events, int capacity, int timeout_ms);
int keel_setns(int fd, int namespace_type);
int keel_unshare(int flags);
int keel_signal_realtime_min(void);
int keel_signal_realtime_max(void);
int keel_install_interrupting_handler(int signal_number);
"""


def _ffibuilder() -> FFI:
    builder = FFI()
    macros = integer_macros(HEADERS, PREFIXES, EXCLUDE)
    builder.cdef(DECLARATIONS + cdef_defines(macros))
    builder.set_source(
        "keel.native._sys", read_helper("ioctl_helpers.h") + read_helper("sys_helpers.h")
    )
    return builder


ffibuilder = _ffibuilder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
