"""An HTTP/1.1 client on keel.runtime: one keep-alive connection, `await client.get(path)`.

Why its own client: the integration suite and the demos fetch from servers that only speak
plain HTTP/1.1 (a guest's lwIP stack, keel's own server), from inside keel.runtime tasks, and
must check every byte of what came back; httpx and aiohttp run on asyncio, not on keel.runtime.
The response is parsed by httptools (the same parser keel's server uses), which decodes
Content-Length and chunked bodies; this module adds the connection handling and the bounds.

Every byte from the server is hostile: the status line and headers, the header count and the
body are bounded (`ClientLimits`), each request runs under a deadline, and a response that
breaks the rules closes the connection with a `ClientProtocolError` that says what was wrong.
A request on a kept-alive connection that the server had already closed is retried once on a
fresh connection (only GET, which is idempotent), as browsers and curl do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httptools

import keel.runtime as kr
from keel.http.errors import HttpError

READ_SIZE = 65536
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
RETRYABLE_METHODS = frozenset({"GET"})


class ClientError(HttpError):
    """Base of the client's errors."""


class ClientProtocolError(ClientError):
    """The server's response broke HTTP/1.1 framing or one of the client's limits."""


class ClientConnectionError(ClientError):
    """The connection closed (or failed) before a whole response arrived."""


class ClientTimeout(ClientError, TimeoutError):
    """A request did not complete within the client's timeout."""


@dataclass(frozen=True)
class ClientLimits:
    """Bounds on what a server can make the client hold."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass(frozen=True)
class ClientResponse:
    """A complete response: status, headers (raw names and values, in order), body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    http_version: str = "1.1"
    keep_alive: bool = True

    def header(self, name: str) -> str | None:
        """The first header called `name` (any case), decoded as Latin-1, or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None


@dataclass
class _Incoming:
    """What httptools' callbacks collected for the response being read."""

    limits: ClientLimits
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    header_bytes: int = 0
    body: bytearray = field(default_factory=bytearray)
    headers_complete: bool = False
    complete: bool = False
    violation: str | None = None
    parser: Any = None              # httptools.HttpResponseParser (untyped)
    status: int = 0
    http_version: str = ""
    keep_alive: bool = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if len(self.headers) >= self.limits.max_headers:
            self.violation = f"more than {self.limits.max_headers} response headers"
        elif self.header_bytes > self.limits.max_header_bytes:
            self.violation = f"response headers over {self.limits.max_header_bytes} bytes"
        else:
            self.headers.append((bytes(name), bytes(value)))

    def on_headers_complete(self) -> None:
        # llhttp answers these only inside the callbacks, not after the message
        self.headers_complete = True
        self.status = self.parser.get_status_code()
        self.http_version = self.parser.get_http_version()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        if len(self.body) + len(data) > self.limits.max_body_bytes:
            self.violation = f"response body over {self.limits.max_body_bytes} bytes"
        else:
            self.body += data

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()


def _valid_token(text: str) -> bool:
    return bool(text) and all(33 <= ord(character) < 127 for character in text)


class HttpClient:
    """One keep-alive HTTP/1.1 connection to `host`:`port` (an async context manager)."""

    def __init__(self, host: str, port: int, *, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 limits: ClientLimits | None = None, host_header: str | None = None) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1-65535, got {port}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.limits = limits or ClientLimits()
        self._host_header = host_header or (f"[{host}]:{port}" if ":" in host
                                            else f"{host}:{port}")
        self._stream: kr.TcpStream | None = None
        self._buffer = bytearray(READ_SIZE)
        self.connections_opened = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    async def get(self, path: str, headers: list[tuple[str, str]] | None = None
                  ) -> ClientResponse:
        return await self.request("GET", path, headers)

    async def request(self, method: str, path: str, headers: list[tuple[str, str]] | None = None,
                      body: bytes = b"") -> ClientResponse:
        """Send one request and read its whole response (within `timeout` seconds)."""
        if method == "HEAD" or not _valid_token(method):
            raise ValueError(f"method must be an HTTP token other than HEAD, got {method!r}")
        if not path.startswith("/") or not _valid_token(path):
            raise ValueError(f"path must start with / and hold no spaces or controls: {path!r}")
        message = self._encode(method, path, headers or [], body)
        try:
            with kr.fail_after(self.timeout):
                reused = self._stream is not None
                try:
                    response = await self._exchange(message)
                except ClientConnectionError:
                    if not (reused and method in RETRYABLE_METHODS):
                        raise
                    response = await self._exchange(message)   # the kept-alive one had gone
        except kr.TooSlowError:
            self.close()
            raise ClientTimeout(f"{method} {path} to {self.host}:{self.port} took over "
                                f"{self.timeout} s") from None
        except BaseException:
            self.close()
            raise
        return response

    def _encode(self, method: str, path: str, headers: list[tuple[str, str]],
                body: bytes) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}"]
        for name, value in headers:
            if not _valid_token(name) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name!r}: {value!r} is not a valid header line")
            lines.append(f"{name}: {value}")
        if body or method not in RETRYABLE_METHODS:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def _exchange(self, message: bytes) -> ClientResponse:
        if self._stream is None:
            try:
                self._stream = await kr.TcpStream.connect(self.host, self.port)
            except OSError as error:
                raise ClientConnectionError(f"cannot connect to {self.host}:{self.port}: "
                                            f"{error}") from error
            self.connections_opened += 1
        stream = self._stream
        try:
            await stream.write(message)
        except OSError as error:
            self.close()
            raise ClientConnectionError(f"sending to {self.host}:{self.port} failed: "
                                        f"{error}") from error
        incoming = _Incoming(self.limits)
        parser = httptools.HttpResponseParser(incoming)
        incoming.parser = parser
        head_bytes = 0
        while not incoming.complete:
            try:
                count, self._buffer = await stream.read(self._buffer)
            except OSError as error:
                self.close()
                raise ClientConnectionError(f"reading from {self.host}:{self.port} failed: "
                                            f"{error}") from error
            if count == 0:
                if incoming.headers_complete and _delimited_by_close(incoming.headers):
                    incoming.complete = True
                    break
                self.close()
                raise ClientConnectionError(f"{self.host}:{self.port} closed the connection "
                                            "before the whole response arrived")
            if not incoming.headers_complete:
                head_bytes += count
            try:
                parser.feed_data(memoryview(self._buffer)[:count])
            except httptools.HttpParserUpgrade:
                incoming.violation = "the server switched protocols (upgrade)"
            except httptools.HttpParserError as error:
                incoming.violation = f"malformed response: {error}"
            if incoming.violation is None and not incoming.headers_complete and \
                    head_bytes > self.limits.max_header_bytes:
                incoming.violation = (f"response head over {self.limits.max_header_bytes} "
                                      "bytes")
            if incoming.violation is not None:
                self.close()
                raise ClientProtocolError(f"{self.host}:{self.port}: {incoming.violation}")
        keep_alive = incoming.keep_alive and not _delimited_by_close(incoming.headers)
        response = ClientResponse(incoming.status, incoming.headers, bytes(incoming.body),
                                  incoming.http_version, keep_alive)
        if not keep_alive:
            self.close()
        return response


def _delimited_by_close(headers: list[tuple[bytes, bytes]]) -> bool:
    """A response without Content-Length or chunked coding ends when the connection does."""
    names = {name.lower() for name, _ in headers}
    return b"content-length" not in names and b"transfer-encoding" not in names
