"""Whole, bodiless requests in a strict subset of HTTP/1.1, recognised by one regex per request.

Why: llhttp calls back into Python five times for the plainest request (message begin, URL,
each header, headers complete, message complete) and the core then asks the parser three more
things; one compiled regex does the same work in C. The subset is deliberately narrower than
what llhttp accepts: an upper-case method llhttp knows, an origin-form target of RFC 3986
characters, exactly `HTTP/1.1`, token header names, `: ` then visible-ASCII values with single
spaces inside, no framing, Expect, Connection or Upgrade header, and every request complete.
Whatever falls outside it (or any byte that does not parse) goes to llhttp unchanged, so
hostile input meets llhttp exactly as before; for input inside it, llhttp produces the same
heads (tests/test_simple_parse.py checks both parsers against each other).
"""

from __future__ import annotations

import re
from typing import Final

# The subset, one request: request line, header lines, the empty line. The two header-value
# alternatives are disjoint (space / no space), so matching stays linear in the input.
_REQUEST: Final = re.compile(
    rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) "
    rb"(/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*) HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [\x21-\x7e]+(?: [\x21-\x7e]+)*\r\n)*)\r\n")
# Headers that decide framing, expectations or the connection's fate: llhttp's business.
_LEFT_TO_LLHTTP: Final = frozenset((b"content-length", b"transfer-encoding", b"expect",
                                    b"connection", b"upgrade", b"keep-alive"))
_METHOD_NAMES: Final = {name.encode("ascii"): name for name in
                        ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
HEADER_SEPARATOR: Final = b": "
LINE_END: Final = b"\r\n"
LINE_END_LENGTH: Final = len(LINE_END)
HOST: Final = b"host"

# (method, target, lower-cased headers) of one request.
SimpleRequest = tuple[str, bytes, list[tuple[bytes, bytes]]]


def parse_simple(data: bytes, max_target: int, max_header_bytes: int,
                 max_header_count: int) -> list[SimpleRequest] | None:
    """Every request in `data` if all of `data` is whole requests of the subset, within the
    limits (so none of them would have been refused); else None and nothing is consumed."""
    requests: list[SimpleRequest] = []
    match = _REQUEST.match
    position = 0
    end = len(data)
    while position < end:
        found = match(data, position)
        if found is None:
            return None
        method, target, block = found.groups()
        if len(target) > max_target or len(block) > max_header_bytes:
            return None  # llhttp's path answers 414 / 431
        headers: list[tuple[bytes, bytes]] = []
        hosts = 0
        if block:
            for line in block[:-LINE_END_LENGTH].split(LINE_END):
                name, value = line.split(HEADER_SEPARATOR, 1)
                name = name.lower()
                if name in _LEFT_TO_LLHTTP:
                    return None
                if name == HOST:
                    hosts += 1
                headers.append((name, value))
            if len(headers) > max_header_count:
                return None
        if hosts != 1:
            return None  # llhttp's path answers 400
        requests.append((_METHOD_NAMES[method], target, headers))
        position = found.end()
    return requests
