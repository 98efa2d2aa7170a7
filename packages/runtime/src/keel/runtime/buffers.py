"""Buffer checks for ownership-passing I/O.

Why: the kernel writes into a read buffer after the Python call returned, so it must be a
writable, contiguous, fixed-size buffer (bytearray, memoryview of one, array, mmap) that we
pin with a memoryview for as long as the operation is in flight.
"""

from __future__ import annotations

from typing import Any, TypeVar

from keel.native.checks import require_buffer, require_writable_buffer

WritableBuffer = TypeVar("WritableBuffer", bound=bytearray | memoryview)
ReadableBuffer = TypeVar("ReadableBuffer", bound=bytes | bytearray | memoryview)


def writable_view(name: str, buffer: Any, limit: int | None = None) -> Any:
    """A byte view the kernel may write into (bytearray itself on the fast path)."""
    if type(buffer) is bytearray and limit is None:
        return buffer
    view = require_writable_buffer(name, buffer)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"{name}: size must be >= 0, got {limit}")
        view = view[:limit]
    return view


def readable_view(name: str, buffer: Any) -> Any:
    kind = type(buffer)
    if kind is bytes or kind is bytearray:
        return buffer
    if kind is memoryview and buffer.c_contiguous and buffer.format == "B" and buffer.ndim == 1:
        return buffer
    return require_buffer(name, buffer)
