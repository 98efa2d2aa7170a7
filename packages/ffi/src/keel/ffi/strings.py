"""Pointers to a str's UTF-8 bytes without copying them.

Why: passing a str to Go should not encode a copy of it. CPython keeps an ASCII str's
characters as UTF-8 right after the object header, and caches the UTF-8 form of any other
str inside the object once asked for it (PyUnicode_AsUTF8AndSize); both stay valid while the
str lives, which the call guarantees. The layout is verified once at import; on an
interpreter where it does not hold, str arguments are encoded (a copy) instead.
"""

from __future__ import annotations

import ctypes
import sys

_PROBE = "keel-ffi probe"


def _ascii_offset() -> int | None:
    if sys.implementation.name != "cpython":
        return None
    offset = sys.getsizeof("") - 1  # the header; the empty string is its terminating NUL
    probe = "".join(reversed(_PROBE))  # built at run time: not an interned constant
    if ctypes.string_at(id(probe) + offset, len(probe)) != probe.encode():
        return None
    return offset


ASCII_DATA_OFFSET = _ascii_offset()
_as_utf8 = None
if ASCII_DATA_OFFSET is not None:
    _as_utf8 = ctypes.pythonapi.PyUnicode_AsUTF8AndSize
    _as_utf8.argtypes = [ctypes.py_object, ctypes.POINTER(ctypes.c_ssize_t)]
    _as_utf8.restype = ctypes.c_void_p


def utf8_address(text: str) -> tuple[int, int] | None:
    """(address, byte length) of text's UTF-8 bytes inside the str object, or None."""
    if ASCII_DATA_OFFSET is None or _as_utf8 is None:
        return None
    if text.isascii():
        return id(text) + ASCII_DATA_OFFSET, len(text)
    size = ctypes.c_ssize_t()
    address = _as_utf8(text, ctypes.byref(size))
    if not address:
        return None  # lone surrogates: no UTF-8 form; the caller encodes (and reports)
    return int(address), size.value
