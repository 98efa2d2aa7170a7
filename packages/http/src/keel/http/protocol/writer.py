"""Our own HTTP/1.1 response writer.

Why by hand: the response head is built on every request, so it is one `str.join` and one
`encode` with the status line and the Date header cached; header names and values are checked
for CR/LF so an application value can never split a response.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from email.utils import formatdate
from http import HTTPStatus

from keel.http.errors import ResponseError

CRLF = "\r\n"
CHUNKED_END = b"0\r\n\r\n"
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
MIN_STATUS = 100
MAX_STATUS = 999
INFORMATIONAL_END = 200
NO_CONTENT = 204
NOT_MODIFIED = 304

_status_lines: dict[int, str] = {}


def status_line(status: int) -> str:
    """'HTTP/1.1 200 OK\\r\\n', cached per status code."""
    line = _status_lines.get(status)
    if line is None:
        if not isinstance(status, int) or not MIN_STATUS <= status <= MAX_STATUS:
            raise ResponseError(f"status must be an int in 100..999, got {status!r}")
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = f"HTTP/1.1 {status} {reason}\r\n"
        _status_lines[status] = line
    return line


def status_allows_body(status: int) -> bool:
    """RFC 9112 6.3: 1xx, 204 and 304 responses never carry content."""
    return status >= INFORMATIONAL_END and status != NO_CONTENT and status != NOT_MODIFIED


class _DateCache:
    """The Date header line, formatted once per second instead of once per response."""

    __slots__ = ("line", "line_bytes", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = ""
        self.line_bytes = b""

    def current(self) -> str:
        now = time.time()
        if now >= self.second + 1 or now < self.second:
            self._refresh(now)
        return self.line

    def current_bytes(self) -> bytes:
        now = time.time()
        if now >= self.second + 1 or now < self.second:
            self._refresh(now)
        return self.line_bytes

    def _refresh(self, now: float) -> None:
        self.second = int(now)
        self.line = f"date: {formatdate(now, usegmt=True)}\r\n"
        self.line_bytes = self.line.encode("latin-1")


DATE = _DateCache()


def check_header(name: str, value: str) -> None:
    """Refuse names or values that would end the header line early (response splitting)."""
    if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
        raise ResponseError(f"response header {name!r}: {value!r} contains CR, LF or ':'")


def encode_head(status: int, headers: Sequence[tuple[str, str]], extra: str) -> bytes:
    """The full response head; `extra` holds the lines the writer itself adds."""
    parts = [status_line(status)]
    for name, value in headers:
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            check_header(name, value)
        parts.append(f"{name}: {value}\r\n")
    parts.append(extra)
    parts.append(CRLF)
    try:
        return "".join(parts).encode("latin-1")
    except UnicodeEncodeError as error:
        raise ResponseError(f"response headers must be latin-1 text: {error}") from None


# Heads of whole responses with one application header (the usual content-type), keyed by
# (status, name, value): the status line and that header line, encoded once. Bounded, since
# values come from applications; past the bound, heads are built the ordinary way.
MAX_CACHED_HEADS = 256
_simple_heads: dict[tuple[int, str, str], bytes] = {}


def simple_head_prefix(status: int, name: str, value: str,
                       framing_names: frozenset[str]) -> bytes | None:
    """The encoded status line plus `name: value`, or None if that header needs the slow path.

    None when the name is one the writer must look at (`framing_names`), or when the cache
    is full and the pair is new."""
    key = (status, name, value)
    prefix = _simple_heads.get(key)
    if prefix is not None:
        return prefix
    if len(_simple_heads) >= MAX_CACHED_HEADS or name.lower() in framing_names:
        return None
    prefix = head_prefix(status, name, value)
    _simple_heads[key] = prefix
    return prefix


def head_prefix(status: int, name: str, value: str) -> bytes:
    """The status line plus `name: value`, encoded and checked (not cached)."""
    check_header(name, value)
    try:
        return f"{status_line(status)}{name}: {value}\r\n".encode("latin-1")
    except UnicodeEncodeError as error:
        raise ResponseError(f"response headers must be latin-1 text: {error}") from None


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)
