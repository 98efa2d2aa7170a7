"""Memory sizes as people write them ("256M", "1G", "65536")."""

from __future__ import annotations

from keel.vmm.errors import VmmError

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = cleaned[-1:] if cleaned[-1:] in UNITS and cleaned[-1:] else ""
    number = cleaned[: len(cleaned) - len(unit)]
    if not number.isdigit():
        raise VmmError(f"memory size {text!r} not understood; expected e.g. 512M, 2G or bytes")
    return int(number) * UNITS[unit]
