"""The sans-IO HTTP/1.1 connection core.

Why sans-IO: the same state machine runs under keel.runtime, asyncio, trio, the in-process test
client and the property tests. It takes bytes in (`receive_data`) and hands events out
(`next_event`); it builds response bytes (`start_response`, `body_bytes`, `end_response`) and
decides, following RFC 9112, whether the connection may carry another request.

Parsing is httptools (llhttp); its callbacks write into preallocated per-request state. llhttp
already refuses the smuggling shapes (CL+TE, duplicate Content-Length, obs-fold, bare CR, bad
chunk sizes); this module adds the configured limits and the rules llhttp leaves to servers
(Host, unknown transfer codings).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Final

import httptools

from keel.http.config import Limits
from keel.http.errors import ProtocolError, ResponseError
from keel.http.protocol.simple import parse_simple
from keel.http.protocol.writer import (
    CHUNKED_END,
    CONTINUE_RESPONSE,
    DATE,
    encode_chunk,
    encode_head,
    simple_head_prefix,
    status_allows_body,
)

BAD_REQUEST: Final = 400
PAYLOAD_TOO_LARGE: Final = 413
URI_TOO_LONG: Final = 414
HEADERS_TOO_LARGE: Final = 431
NOT_IMPLEMENTED: Final = 501
VERSION_NOT_SUPPORTED: Final = 505
EXPECTATION_FAILED: Final = 417
HTTP_11: Final = "1.1"
HTTP_10: Final = "1.0"
HEADER_LINE_OVERHEAD: Final = 4  # ": " and CRLF
# Request headers that decide framing and validity; kept aside while parsing.
_FRAMING_HEADERS: Final = frozenset((b"content-length", b"transfer-encoding", b"expect", b"host"))
# Response headers the writer must look at.
_RESPONSE_FRAMING: Final = frozenset(("content-length", "connection", "transfer-encoding"))


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = _Sentinel("NEED_DATA")
END_OF_MESSAGE: Final = _Sentinel("END_OF_MESSAGE")
CONNECTION_CLOSED: Final = _Sentinel("CONNECTION_CLOSED")

class RequestHead:
    """A parsed request line and header block."""

    __slots__ = ("chunked", "content_length", "expect_continue", "headers", "http_version",
                 "keep_alive", "method", "target", "upgrade")

    def __init__(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                 http_version: str, keep_alive: bool, content_length: int | None,
                 chunked: bool, expect_continue: bool) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.upgrade = False

    def __repr__(self) -> str:
        return f"RequestHead({self.method} {self.target!r} HTTP/{self.http_version})"


class _StopParsing(Exception):
    """Raised inside a parser callback to stop llhttp; the reason is kept on the core."""


class HttpConnection:
    """One server-side HTTP/1.1 connection, without I/O."""

    __slots__ = (
        "_body_received",
        "_failed",
        "_framing",
        "_header_bytes",
        "_headers",
        "_last_head",
        "_limits",
        "_max_header_bytes",
        "_max_header_count",
        "_max_request_line",
        "_parser",
        "_parser_open",
        "_peer_closed",
        "_url",
        "_url_length",
        "continue_sent",
        "current",
        "events",
        "keep_alive",
        "message_started",
        "response_chunked",
        "response_has_body",
        "response_started",
        "server_line",
        "server_line_bytes",
    )

    def __init__(self, limits: Limits | None = None, server_header: str = "keel") -> None:
        self._limits = limits or Limits()
        # Read by the parser callbacks on every request: kept as plain attributes.
        self._max_header_bytes = self._limits.max_header_bytes
        self._max_header_count = self._limits.max_header_count
        self._max_request_line = self._limits.max_request_line
        self._parser = httptools.HttpRequestParser(self)
        # Parsed, not yet taken: RequestHead, body bytes, END_OF_MESSAGE, ProtocolError,
        # CONNECTION_CLOSED. Public so the driver's hot path can test it for emptiness
        # without a call; take events only through the methods below.
        self.events: deque[object] = deque()
        self._headers: list[tuple[bytes, bytes]] = []
        self._framing: list[tuple[bytes, bytes]] = []
        self._url: list[bytes] = []
        self._url_length = 0
        self._header_bytes = 0
        self._body_received = 0
        self._failed = False
        self._peer_closed = False
        # llhttp is between messages and still accepts more (its last message kept the
        # connection alive): only then may whole simple requests skip it.
        self._parser_open = True
        self.server_line = f"server: {server_header}\r\n" if server_header else ""
        self.server_line_bytes = self.server_line.encode("latin-1")
        self.current: RequestHead | None = None
        self._last_head: RequestHead | None = None
        self.message_started = False
        self.keep_alive = True
        self.continue_sent = False
        self.response_started = False
        self.response_chunked = False
        self.response_has_body = True

    # ---- input side -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; b'' means the peer closed its sending side."""
        if self._failed:
            return
        if not data:
            self._peer_closed = True
            self.events.append(CONNECTION_CLOSED)
            return
        if self._parser_open and not self.message_started:
            simple = parse_simple(data, self._max_request_line, self._max_header_bytes,
                                  self._max_header_count)
            if simple is not None:
                events = self.events
                head = None
                for method, target, headers in simple:
                    head = RequestHead(method, target, headers, HTTP_11, True, None, False,
                                       False)
                    events.append(head)
                    events.append(END_OF_MESSAGE)
                self._last_head = head
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # We speak no other protocol: answer this request, then close.
            if self._last_head is not None:
                self._last_head.upgrade = True
            self.keep_alive = False
            self._failed = True
        except httptools.HttpParserCallbackError as error:
            self._fail(error.__context__ if isinstance(error.__context__, ProtocolError)
                       else ProtocolError(BAD_REQUEST, f"malformed request: {error}"))
        except httptools.HttpParserInvalidMethodError as error:
            self._fail(ProtocolError(BAD_REQUEST, f"invalid method: {error}"))
        except httptools.HttpParserInvalidURLError as error:
            self._fail(ProtocolError(BAD_REQUEST, f"invalid request target: {error}"))
        except httptools.HttpParserError as error:
            self._fail(ProtocolError(BAD_REQUEST, f"malformed request: {error}"))

    def _fail(self, error: ProtocolError | BaseException | None) -> None:
        if not isinstance(error, ProtocolError):
            error = ProtocolError(BAD_REQUEST, f"malformed request: {error}")
        self._failed = True
        self.keep_alive = False
        self.events.append(error)

    def next_event(self) -> object:
        """The next RequestHead, body bytes, END_OF_MESSAGE, ProtocolError or NEED_DATA."""
        if self.events:
            return self.events.popleft()
        if self._peer_closed or (self._failed and not self.events):
            return CONNECTION_CLOSED
        return NEED_DATA

    def peek_event(self) -> object:
        """The event `next_event` would return, without taking it (None if none is parsed)."""
        return self.events[0] if self.events else None

    def take_end_of_message(self) -> bool:
        """Take END_OF_MESSAGE if it is the next event: the request had no body (or all of it
        was taken already)."""
        events = self.events
        if events and events[0] is END_OF_MESSAGE:
            events.popleft()
            return True
        return False

    def take_bodiless_request(self) -> RequestHead | None:
        """The next request, begun, if its head and its end are both parsed (no body): both
        events taken. None, with nothing taken, for anything else."""
        events = self.events
        if len(events) >= 2 and type(events[0]) is RequestHead and events[1] is END_OF_MESSAGE:
            head: RequestHead = events.popleft()  # type: ignore[assignment]
            events.popleft()
            self.begin_request(head)
            return head
        return None

    def next_head(self) -> RequestHead | None:
        """The next parsed RequestHead, taken, if that is the next event (else None)."""
        events = self.events
        if events:
            head = events[0]
            if isinstance(head, RequestHead):
                events.popleft()
                return head
        return None

    @property
    def waiting_for_request(self) -> bool:
        """Nothing parsed and unserved, no request begun, the peer still there."""
        return not self.events and not self.message_started and not self._peer_closed \
            and not self._failed

    # httptools callbacks: state goes into per-request slots, never into per-call objects.

    def on_message_begin(self) -> None:
        self.message_started = True
        self._headers = []
        self._framing = []
        self._url = []
        self._url_length = 0
        self._header_bytes = 0
        self._body_received = 0

    def on_url(self, url: bytes) -> None:
        self._url_length += len(url)
        if self._url_length > self._max_request_line:
            raise ProtocolError(URI_TOO_LONG, f"request target is longer than "
                                f"{self._limits.max_request_line} bytes")
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._header_bytes + len(name) + len(value) + HEADER_LINE_OVERHEAD
        self._header_bytes = size
        headers = self._headers
        if size > self._max_header_bytes:
            raise ProtocolError(HEADERS_TOO_LARGE, f"request headers are larger than "
                                f"{self._max_header_bytes} bytes")
        if len(headers) >= self._max_header_count:
            raise ProtocolError(HEADERS_TOO_LARGE, f"more than "
                                f"{self._max_header_count} request headers")
        name = name.lower()
        headers.append((name, value))
        if name in _FRAMING_HEADERS:
            self._framing.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version != HTTP_11 and version != HTTP_10:
            raise ProtocolError(VERSION_NOT_SUPPORTED, f"HTTP/{version} is not supported; "
                                "expected HTTP/1.0 or HTTP/1.1")
        content_length: int | None = None
        chunked = False
        expect_continue = False
        hosts = 0
        for name, value in self._framing:
            if name == b"content-length":
                content_length = int(value)  # llhttp validated digits and uniqueness
            elif name == b"transfer-encoding":
                if value.strip().lower() != b"chunked":
                    raise ProtocolError(NOT_IMPLEMENTED, f"transfer coding {value!r} is not "
                                        "supported; expected 'chunked'")
                chunked = True
            elif name == b"expect":
                if value.lower() != b"100-continue":
                    raise ProtocolError(EXPECTATION_FAILED, f"Expect {value!r} is not supported; "
                                        "expected '100-continue'")
                expect_continue = True
            elif name == b"host":
                hosts += 1
        if version == HTTP_11 and hosts != 1:
            raise ProtocolError(BAD_REQUEST, f"HTTP/1.1 requires exactly one Host header, "
                                f"got {hosts}")
        if content_length is not None and content_length > self._limits.max_body_bytes:
            raise ProtocolError(PAYLOAD_TOO_LARGE, f"Content-Length {content_length} exceeds "
                                f"the limit of {self._limits.max_body_bytes} bytes")
        url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        keep_alive = parser.should_keep_alive()
        head = RequestHead(parser.get_method().decode("ascii"), url, self._headers, version,
                           keep_alive, content_length, chunked,
                           expect_continue and version == HTTP_11)
        self._parser_open = keep_alive
        self._last_head = head
        self.events.append(head)

    def on_body(self, body: bytes) -> None:
        self._body_received += len(body)
        if self._body_received > self._limits.max_body_bytes:
            raise ProtocolError(PAYLOAD_TOO_LARGE, f"request body exceeds the limit of "
                                f"{self._limits.max_body_bytes} bytes")
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.message_started = False
        self.events.append(END_OF_MESSAGE)

    # ---- output side ------------------------------------------------------------------

    def begin_request(self, head: RequestHead) -> None:
        """The driver starts serving `head`; response state resets."""
        self.current = head
        self.continue_sent = False
        self.response_started = False
        self.response_chunked = False
        self.response_has_body = True
        if not head.keep_alive:
            self.keep_alive = False

    def continue_bytes(self) -> bytes:
        """'100 Continue' the first time the application reads a body that expects it."""
        head = self.current
        if head is None or not head.expect_continue or self.continue_sent or \
                self.response_started:
            return b""
        self.continue_sent = True
        return CONTINUE_RESPONSE

    def start_response(self, status: int, headers: Sequence[tuple[str, str]],
                       content_length: int | None = None, body: bytes | None = None) -> bytes:
        """The response head (and `body`, if given whole); framing follows RFC 9112 6."""
        if self.response_started:
            raise ResponseError("the response was already started")
        head = self.current
        if head is None:
            raise ResponseError("no request is being served")
        self.response_started = True
        if head.expect_continue and not self.continue_sent:
            # The body was never asked for: it will not be read, so the connection ends.
            self.keep_alive = False
        if body is not None and len(headers) == 1 and self.keep_alive and \
                head.http_version == "1.1" and not head.upgrade and head.method != "HEAD" and \
                status_allows_body(status):
            # The common whole response (one content-type header): a cached head prefix.
            name, value = headers[0]
            prefix = simple_head_prefix(status, name, value, _RESPONSE_FRAMING)
            if prefix is not None:
                self.response_chunked = False
                self.response_has_body = True
                return b"%b%b%bcontent-length: %d\r\n\r\n%b" % (
                    prefix, DATE.current_bytes(), self.server_line_bytes, len(body), body)
        has_body = status_allows_body(status)
        is_head = head.method == "HEAD"
        extra = DATE.current() + self.server_line
        declared_length = False
        for name, value in headers:
            lowered = name.lower()
            if lowered not in _RESPONSE_FRAMING:
                continue
            if lowered == "content-length":
                declared_length = True
                if content_length is None:
                    try:
                        content_length = int(value)
                    except ValueError:
                        raise ResponseError(f"Content-Length {value!r} is not an integer") \
                            from None
            elif lowered == "connection" and "close" in value.lower():
                self.keep_alive = False
            elif lowered == "transfer-encoding":
                raise ResponseError("applications must not set Transfer-Encoding; "
                                    "the server frames the body")
        if body is not None:
            content_length = len(body)
        self.response_chunked = False
        if not has_body:
            self.response_has_body = False
        else:
            self.response_has_body = not is_head
            if content_length is not None:
                if not declared_length:
                    extra += f"content-length: {content_length}\r\n"
            elif head.http_version == "1.1":
                self.response_chunked = True
                if not is_head:
                    extra += "transfer-encoding: chunked\r\n"
            else:
                self.keep_alive = False  # HTTP/1.0 body ends when the connection does
        if not self.keep_alive or head.upgrade:
            self.keep_alive = False
            extra += "connection: close\r\n"
        elif head.http_version == "1.0":
            extra += "connection: keep-alive\r\n"
        encoded = encode_head(status, headers, extra)
        if body and self.response_has_body:
            return encoded + body
        return encoded

    def start_prefixed_response(self, prefix: bytes, body: bytes) -> bytes | None:
        """A whole response whose status line and application headers are `prefix` (encoded
        and checked by `simple_head_prefix`), when the request allows the plain keep-alive
        framing (HTTP/1.1, not HEAD, no upgrade, no unanswered 100-continue, staying open);
        else None and nothing changes: use `start_response`."""
        head = self.current
        if head is None or self.response_started or not self.keep_alive or \
                head.http_version != HTTP_11 or head.method == "HEAD" or head.upgrade or \
                head.expect_continue:
            return None
        self.response_started = True
        self.response_chunked = False
        self.response_has_body = True
        return b"%b%b%bcontent-length: %d\r\n\r\n%b" % (
            prefix, DATE.current_bytes(), self.server_line_bytes, len(body), body)

    def body_bytes(self, data: bytes) -> bytes:
        """Response body bytes framed for the wire (nothing for HEAD, 204, 304)."""
        if not self.response_has_body or not data:
            return b""
        if self.response_chunked:
            return encode_chunk(data)
        return data

    def end_response(self) -> bytes:
        """The bytes that end the response body."""
        if self.response_chunked and self.response_has_body:
            return CHUNKED_END
        return b""

    def finish_request(self, body_complete: bool) -> None:
        """The response is sent; reuse needs the whole request body to have been consumed."""
        if not body_complete:
            self.keep_alive = False
        self.current = None
