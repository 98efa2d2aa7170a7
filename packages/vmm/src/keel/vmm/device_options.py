"""What `keel vmm run --net ...` means: the option's small syntax, parsed and checked.

Why a spec string (`tap=NAME,mac=02:...`): it is the shape Firecracker's and QEMU's users know,
it leaves room for more keys without more options, and a mistake is reported with the key that
was wrong rather than as a Python traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.native.tun import INTERFACE_NAME_MAX
from keel.vmm.virtio.errors import VirtioConfigError
from keel.vmm.virtio.net import parse_mac

NET_KEYS = ("tap", "mac")


@dataclass(frozen=True)
class NetOption:
    tap: str
    mac: bytes | None = None


def parse_net_option(text: str) -> NetOption:
    """`tap=NAME[,mac=XX:XX:XX:XX:XX:XX]`."""
    values: dict[str, str] = {}
    for part in text.split(","):
        key, separator, value = part.partition("=")
        if not separator or key not in NET_KEYS:
            raise VirtioConfigError(f"--net {text!r}: {part!r} is not one of "
                                    f"{', '.join(k + '=...' for k in NET_KEYS)}")
        if key in values:
            raise VirtioConfigError(f"--net {text!r}: {key}= given twice")
        values[key] = value
    tap = values.get("tap", "")
    if not tap:
        raise VirtioConfigError(f"--net {text!r}: tap=NAME is required")
    if len(tap.encode()) > INTERFACE_NAME_MAX or "/" in tap or tap.strip() != tap:
        raise VirtioConfigError(f"--net {text!r}: {tap!r} is not a valid interface name "
                                f"(at most {INTERFACE_NAME_MAX} bytes, no '/' or spaces)")
    mac = parse_mac(values["mac"]) if "mac" in values else None
    return NetOption(tap, mac)
