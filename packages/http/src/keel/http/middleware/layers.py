"""The built-in layers: timeout, gzip compression, CORS, request id, concurrency and body
limits, and request tracing.

Why these live together: each is a few lines around `inner(request)`; all are plain
`Layer` callables, so they compose with `from_fn` layers in any order.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Sequence

from keel.http.concurrency import timeout as run_with_timeout
from keel.http.handler import Service
from keel.http.request import BodySource, Request
from keel.http.response import Response, StreamingResponse, error_response

GZIP_WINDOW_BITS = 31  # zlib: 16 + 15 selects the gzip container
DEFAULT_COMPRESSION_LEVEL = 6
DEFAULT_MINIMUM_SIZE = 512
REQUEST_TIMEOUT = 408
PAYLOAD_TOO_LARGE = 413
SERVICE_UNAVAILABLE = 503
NO_CONTENT = 204
MAX_REQUEST_ID_LENGTH = 200
COMPRESSIBLE_TYPES = ("text/", "application/json", "application/javascript", "application/xml",
                      "image/svg+xml", "+json", "+xml")

trace_logger = logging.getLogger("keel.http.trace")
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._\-]+")


class TimeoutLayer:
    """Answer `status` (408 by default) if the inner service takes longer than `seconds`."""

    def __init__(self, seconds: float, status: int = REQUEST_TIMEOUT) -> None:
        if seconds <= 0:
            raise ValueError(f"timeout must be positive, got {seconds}")
        self.seconds = seconds
        self.status = status

    def __call__(self, inner: Service) -> Service:
        seconds, status = self.seconds, self.status

        async def service(request: Request) -> Response:
            try:
                async with run_with_timeout(seconds):
                    return await inner(request)
            except TimeoutError:
                return error_response(status, f"the request took longer than {seconds} s")
        return service


def _accepts_gzip(request: Request) -> bool:
    for header in request.headers.get_all("accept-encoding"):
        for item in header.split(","):
            coding, _, parameters = item.strip().partition(";")
            if coding.strip().lower() in ("gzip", "*"):
                quality = parameters.strip().lower()
                return not (quality.startswith("q=") and float(quality[2:] or 0) == 0)
    return False


def _compressible(response: Response) -> bool:
    if response.status < 200 or response.status == NO_CONTENT or \
            response.header("content-encoding") is not None:
        return False
    content_type = (response.header("content-type") or "").split(";", 1)[0].lower()
    return any(content_type.startswith(kind) or content_type.endswith(kind)
               for kind in COMPRESSIBLE_TYPES)


async def _gzip_stream(source: AsyncIterator[bytes | str], level: int) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(level, zlib.DEFLATED, GZIP_WINDOW_BITS)
    async for piece in source:
        data = compressor.compress(piece.encode() if isinstance(piece, str) else piece)
        if data:
            yield data
    yield compressor.flush()


class CompressionLayer:
    """gzip responses of compressible types when the client accepts it."""

    def __init__(self, minimum_size: int = DEFAULT_MINIMUM_SIZE,
                 level: int = DEFAULT_COMPRESSION_LEVEL) -> None:
        self.minimum_size = minimum_size
        self.level = level

    def __call__(self, inner: Service) -> Service:
        minimum, level = self.minimum_size, self.level

        async def service(request: Request) -> Response:
            response = await inner(request)
            if not _accepts_gzip(request) or not _compressible(response):
                return response
            response.headers.append(("vary", "accept-encoding"))
            if isinstance(response, StreamingResponse):
                response.iterator = _gzip_stream(aiter(response.iterator), level)
                response.content_length = None
                response.set_header("content-encoding", "gzip")
                return response
            if type(response) is not Response or len(response.body) < minimum:
                return response
            compressor = zlib.compressobj(level, zlib.DEFLATED, GZIP_WINDOW_BITS)
            response.body = compressor.compress(response.body) + compressor.flush()
            response.headers = [(k, v) for k, v in response.headers
                                if k.lower() != "content-length"]
            response.headers.append(("content-encoding", "gzip"))
            return response
        return service


class CorsLayer:
    """Cross-origin resource sharing: preflight answers and response headers."""

    def __init__(self, allow_origins: Sequence[str] = ("*",),
                 allow_methods: Sequence[str] = ("GET", "POST", "PUT", "PATCH", "DELETE"),
                 allow_headers: Sequence[str] = (), expose_headers: Sequence[str] = (),
                 allow_credentials: bool = False, max_age: int = 600) -> None:
        if allow_credentials and "*" in allow_origins:
            raise ValueError("CORS with credentials needs explicit origins, not '*'")
        self.any_origin = "*" in allow_origins
        self.origins = frozenset(allow_origins)
        self.methods = ", ".join(method.upper() for method in allow_methods)
        self.headers = ", ".join(allow_headers)
        self.expose = ", ".join(expose_headers)
        self.credentials = allow_credentials
        self.max_age = str(max_age)

    def _allowed(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    def __call__(self, inner: Service) -> Service:
        async def service(request: Request) -> Response:
            origin = request.headers.get("origin")
            if origin is None:
                return await inner(request)
            if request.method == "OPTIONS" and \
                    "access-control-request-method" in request.headers:
                if not self._allowed(origin):
                    return error_response(403, f"origin {origin!r} is not allowed")
                headers = [("access-control-allow-origin", "*" if self.any_origin else origin),
                           ("access-control-allow-methods", self.methods),
                           ("access-control-max-age", self.max_age), ("vary", "origin")]
                requested = request.headers.get("access-control-request-headers")
                if self.headers or requested:
                    headers.append(("access-control-allow-headers", self.headers or
                                    (requested or "")))
                if self.credentials:
                    headers.append(("access-control-allow-credentials", "true"))
                return Response(b"", NO_CONTENT, headers)
            response = await inner(request)
            if self._allowed(origin):
                response.headers.append(("access-control-allow-origin",
                                         "*" if self.any_origin else origin))
                if not self.any_origin:
                    response.headers.append(("vary", "origin"))
                if self.credentials:
                    response.headers.append(("access-control-allow-credentials", "true"))
                if self.expose:
                    response.headers.append(("access-control-expose-headers", self.expose))
            return response
        return service


class RequestIdLayer:
    """Keep a well-formed incoming request id or make one; echo it on the response."""

    def __init__(self, header: str = "x-request-id") -> None:
        self.header = header.lower()

    def __call__(self, inner: Service) -> Service:
        header = self.header

        async def service(request: Request) -> Response:
            incoming = request.headers.get(header)
            if incoming is None or len(incoming) > MAX_REQUEST_ID_LENGTH or \
                    not _REQUEST_ID_PATTERN.fullmatch(incoming):
                incoming = uuid.uuid4().hex
            request.extensions["request_id"] = incoming
            response = await inner(request)
            response.headers.append((header, incoming))
            return response
        return service


class ConcurrencyLimitLayer:
    """At most `limit` requests inside at once; others get 503 at once (no queue to grow)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.active = 0

    def __call__(self, inner: Service) -> Service:
        async def service(request: Request) -> Response:
            if self.active >= self.limit:
                return error_response(SERVICE_UNAVAILABLE, f"more than {self.limit} requests "
                                      "in progress", [("retry-after", "1")])
            self.active += 1
            try:
                return await inner(request)
            finally:
                self.active -= 1
        return service


class _CountingBody:
    __slots__ = ("_limit", "_received", "_source")

    def __init__(self, source: BodySource, limit: int) -> None:
        self._source = source
        self._limit = limit
        self._received = 0

    async def read_chunk(self) -> bytes | None:
        from keel.http.errors import HTTPException

        chunk = await self._source.read_chunk()
        if chunk is not None:
            self._received += len(chunk)
            if self._received > self._limit:
                raise HTTPException(PAYLOAD_TOO_LARGE, f"request body exceeds {self._limit} "
                                    "bytes")
        return chunk


class BodyLimitLayer:
    """A tighter request body limit than the server's, for the routes it wraps (413)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes

    def __call__(self, inner: Service) -> Service:
        limit = self.max_bytes

        async def service(request: Request) -> Response:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                return error_response(PAYLOAD_TOO_LARGE, f"Content-Length {declared} exceeds "
                                      f"{limit} bytes")
            request._source = _CountingBody(request._source, limit)
            return await inner(request)
        return service


class TraceLayer:
    """Log each request with its status and duration on `keel.http.trace`."""

    def __call__(self, inner: Service) -> Service:
        async def service(request: Request) -> Response:
            started = time.monotonic()
            response = await inner(request)
            trace_logger.info("%s %s -> %d in %.2f ms", request.method, request.raw_path,
                              response.status, (time.monotonic() - started) * 1000)
            return response
        return service
