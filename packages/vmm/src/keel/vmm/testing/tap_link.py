"""A quiet test link: a TAP (virtio-net's backend) and a raw socket on its host side.

Why quiet: with IPv6 on, the host kernel sends router solicitations and MLD reports on every
new link, and tests that count or compare frames would see them; the link carries only what a
test sends. Both ends live in the namespace the caller created.
"""

from __future__ import annotations

import socket
import subprocess

from keel.native.netns import NetworkNamespace
from keel.vmm.virtio.net_tap import TapBackend

ETH_P_ALL = 0x0003  # <linux/if_ether.h>: every protocol, for a packet socket
SETUP_TIMEOUT_SECONDS = 10.0


def open_test_link(namespace: NetworkNamespace, name: str) -> tuple[TapBackend, socket.socket]:
    """Create TAP `name` in `namespace`, IPv6 off, link up; a packet socket bound to it."""

    def setup() -> tuple[TapBackend, socket.socket]:
        backend = TapBackend.open(name)
        try:
            subprocess.run(["ip", "netns", "exec", namespace.name, "sysctl", "-qw",
                            f"net.ipv6.conf.{backend.name}.disable_ipv6=1"], check=True,
                           timeout=SETUP_TIMEOUT_SECONDS)
            namespace.ip("link", "set", backend.name, "up")
            host = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except BaseException:
            backend.close()
            raise
        try:
            host.bind((backend.name, 0))
        except BaseException:
            host.close()
            backend.close()
            raise
        return backend, host

    return namespace.run(setup)
