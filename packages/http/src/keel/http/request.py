"""The request object handlers and extractors see.

Why lazy: path, query, headers and cookies are decoded on first use, and the body stays in
the connection until someone reads it, so the plaintext hot path allocates almost nothing
beyond what the parser produced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import unquote

import httptools

from keel.http.errors import HttpError, HTTPException
from keel.http.headers import Headers, QueryParams, parse_cookies


class BodySource(Protocol):
    """Where request body bytes come from: the connection, an ASGI receive, a test client."""

    async def read_chunk(self) -> bytes | None:
        """The next body bytes, or None once the body has ended."""
        ...


class _EmptyBody:
    async def read_chunk(self) -> bytes | None:
        return None


EMPTY_BODY: BodySource = _EmptyBody()


class BytesBody:
    """A body that is already in memory (test client, ASGI with one message)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    async def read_chunk(self) -> bytes | None:
        data, self._data = self._data, None
        return data or None


def split_target(target: bytes) -> tuple[str, str, str]:
    """(decoded path, raw path, query string) of a request target."""
    if target[:1] != b"/":
        if target == b"*":
            return "*", "*", ""
        url = httptools.parse_url(target)  # absolute-form, RFC 9112 3.2.2
        raw_path = (url.path or b"/").decode("latin-1")
        query = (url.query or b"").decode("latin-1")
    else:
        question = target.find(b"?")
        if question < 0:
            raw_path = target.decode("latin-1")
            query = ""
        else:
            raw_path = target[:question].decode("latin-1")
            query = target[question + 1:].decode("latin-1")
    path = unquote(raw_path) if "%" in raw_path else raw_path
    return path, raw_path, query


class Request:
    """One HTTP request: line, headers, lazily decoded views and a body read on demand."""

    __slots__ = ("_body", "_body_consumed", "_cookies", "_headers", "_query", "_source",
                 "app_state", "client", "extensions", "http_version", "method", "path",
                 "path_params", "query_string", "raw_headers", "raw_path", "scheme")

    def __init__(self, method: str, path: str, query_string: str,
                 raw_headers: list[tuple[bytes, bytes]], *, raw_path: str | None = None,
                 http_version: str = "1.1", client: tuple[str, int] | None = None,
                 scheme: str = "http", body: BodySource = EMPTY_BODY) -> None:
        self.method = method
        self.path = path
        self.raw_path = path if raw_path is None else raw_path
        self.query_string = query_string
        self.raw_headers = raw_headers
        self.http_version = http_version
        self.client = client
        self.scheme = scheme
        self.path_params: dict[str, str] = {}
        self.app_state: Any = None
        self.extensions: dict[str, Any] = {}
        self._source = body
        self._body: bytes | None = None
        self._body_consumed = False
        self._headers: Headers | None = None
        self._query: QueryParams | None = None
        self._cookies: dict[str, str] | None = None

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.raw_headers)
        return self._headers

    @property
    def query(self) -> QueryParams:
        if self._query is None:
            self._query = QueryParams(self.query_string)
        return self._query

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            self._cookies = parse_cookies(self.headers)
        return self._cookies

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives; once only (a second consumer gets an error)."""
        if self._body is not None:
            yield self._body
            return
        if self._body_consumed:
            raise HttpError("the request body was already consumed")
        self._body_consumed = True
        while True:
            chunk = await self._source.read_chunk()
            if chunk is None:
                return
            yield chunk

    async def body(self, limit: int | None = None) -> bytes:
        """The whole body; over `limit` bytes answers 413 (the server limit always applies)."""
        if self._body is None:
            parts: list[bytes] = []
            total = 0
            async for chunk in self.stream():
                total += len(chunk)
                if limit is not None and total > limit:
                    raise HTTPException(413, f"request body exceeds {limit} bytes")
                parts.append(chunk)
            self._body = parts[0] if len(parts) == 1 else b"".join(parts)
        return self._body

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.raw_path}>"
