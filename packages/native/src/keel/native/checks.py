"""Argument checks done in Python before anything reaches the kernel.

Why: a wrong type or an out-of-range number passed to cffi either raises an obscure
OverflowError from deep inside a call or, worse, is truncated silently into a valid but
wrong ioctl argument. Checking first lets every message name the parameter.
"""

from __future__ import annotations

from typing import Any

UINT8_MAX = (1 << 8) - 1
UINT16_MAX = (1 << 16) - 1
UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1
INT32_MAX = (1 << 31) - 1


def require_int(name: str, value: Any, minimum: int = 0, maximum: int = UINT64_MAX) -> int:
    """`value` as an int within [minimum, maximum], or TypeError/ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum or value > maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], got {value}")
    return value


def require_aligned(name: str, value: int, alignment: int) -> int:
    """`value` if it is a multiple of `alignment`, else ValueError naming `name`."""
    if value % alignment:
        raise ValueError(f"{name} must be a multiple of {alignment:#x}, got {value:#x}")
    return value


def require_fd(name: str, value: Any) -> int:
    """A file descriptor number from an int or an object with fileno()."""
    if hasattr(value, "fileno") and not isinstance(value, int):
        value = value.fileno()
    return require_int(name, value, 0, INT32_MAX)


def require_writable_buffer(name: str, value: Any) -> memoryview:
    """A writable, C-contiguous byte view of `value`, or TypeError naming `name`."""
    try:
        view = memoryview(value)
    except TypeError:
        kind = type(value).__name__
        raise TypeError(f"{name} must support the buffer protocol, not {kind}") from None
    if view.readonly:
        raise TypeError(f"{name} must be writable ({type(value).__name__} is read-only)")
    if not view.c_contiguous:
        raise TypeError(f"{name} must be C-contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def require_buffer(name: str, value: Any) -> memoryview:
    """A C-contiguous byte view of `value` (read-only allowed), or TypeError naming `name`."""
    try:
        view = memoryview(value)
    except TypeError:
        kind = type(value).__name__
        raise TypeError(f"{name} must support the buffer protocol, not {kind}") from None
    if not view.c_contiguous:
        raise TypeError(f"{name} must be C-contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view
