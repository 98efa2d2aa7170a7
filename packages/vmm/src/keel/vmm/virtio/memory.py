"""The guest-memory interface the virtio layer needs, as a Protocol.

Why a Protocol: keel.vmm.memory.GuestMemory is the real thing, but the virtqueue only needs
these methods; tests and fuzzers can hand it any object that has them.
"""

from __future__ import annotations

from typing import Protocol


class GuestMemoryAccess(Protocol):
    def contains(self, address: int, length: int = 1) -> bool: ...

    def read(self, address: int, length: int) -> bytes: ...

    def write(self, address: int, data: bytes | bytearray | memoryview) -> None: ...

    def read_int(self, address: int, size: int) -> int: ...

    def write_int(self, address: int, size: int, value: int) -> None: ...
