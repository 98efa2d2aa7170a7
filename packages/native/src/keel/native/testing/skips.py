"""Skip markers shared by keel's suites; each reason names the missing capability."""

from __future__ import annotations

import os
import shutil

import pytest

requires_kvm = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="needs /dev/kvm (KVM not available on this machine)"
)
requires_tap = pytest.mark.skipif(
    not (os.path.exists("/dev/net/tun") and os.geteuid() == 0 and shutil.which("ip")),
    reason="needs /dev/net/tun, root and iproute2 to create TAP devices in a namespace",
)
