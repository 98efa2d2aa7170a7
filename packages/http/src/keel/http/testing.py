"""A test client that calls the application in-process, without sockets.

Why: handler tests should be fast and deterministic; the client builds a Request, runs the
app's connection entry point and collects what it would have written, applying HEAD and
Content-Length the way the server does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import msgspec

from keel.http.app_adapter import as_connection_app
from keel.http.errors import ResponseError
from keel.http.headers import Headers
from keel.http.request import BytesBody, Request, split_target
from keel.http.response import encode_json
from keel.http.server.driver import ConnectionApp


class TestResponse:
    """What the application answered."""

    __test__ = False

    def __init__(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.status = status
        self.status_code = status
        self.headers = Headers.from_pairs(headers)
        self.header_list = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return msgspec.json.decode(self.content)

    def __repr__(self) -> str:
        return f"<TestResponse {self.status}>"


class _Collector:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.parts: list[bytes] = []
        self.ended = False

    async def send_whole(self, status: int, headers: Sequence[tuple[str, str]],
                         body: bytes) -> None:
        await self.start(status, headers, len(body))
        await self.write(body)
        await self.end()

    async def start(self, status: int, headers: Sequence[tuple[str, str]],
                    content_length: int | None) -> None:
        if self.status:
            raise ResponseError("the response was already started")
        self.status = status
        self.headers = list(headers)
        if content_length is not None and \
                not any(name.lower() == "content-length" for name, _ in headers):
            self.headers.append(("content-length", str(content_length)))

    async def write(self, data: bytes) -> None:
        self.parts.append(data)

    async def end(self) -> None:
        self.ended = True


class TestClient:
    """`with TestClient(app) as client: client.get("/")` (or `await client.arequest(...)`)."""

    __test__ = False

    def __init__(self, app: Any, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self.app: ConnectionApp = as_connection_app(app)
        self.client = client
        self._runner: asyncio.Runner | None = None

    def __enter__(self) -> Self:
        self._runner = asyncio.Runner()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    async def arequest(self, method: str, url: str, *,
                       headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
                       query: Mapping[str, Any] | None = None, json: Any = None,
                       data: Mapping[str, Any] | None = None,
                       content: bytes | str | None = None) -> TestResponse:
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        body = b""
        if json is not None:
            body = encode_json(json)
            pairs.append(("content-type", "application/json"))
        elif data is not None:
            body = urlencode(data, doseq=True).encode()
            pairs.append(("content-type", "application/x-www-form-urlencoded"))
        elif content is not None:
            body = content.encode() if isinstance(content, str) else content
        if body:
            pairs.append(("content-length", str(len(body))))
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query, doseq=True)
        path, raw_path, query_string = split_target(url.encode())
        request = Request(method.upper(), path, query_string, Headers.from_pairs(pairs).raw,
                          raw_path=raw_path, client=self.client, body=BytesBody(body))
        collector = _Collector()
        await self.app(request, collector)
        if not collector.ended:
            raise ResponseError(f"{method} {url}: the application did not finish its response")
        content_bytes = b"" if method.upper() == "HEAD" else b"".join(collector.parts)
        return TestResponse(collector.status, collector.headers, content_bytes)

    def request(self, method: str, url: str, **options: Any) -> TestResponse:
        if self._runner is None:
            with asyncio.Runner() as runner:
                return runner.run(self.arequest(method, url, **options))
        return self._runner.run(self.arequest(method, url, **options))

    def get(self, url: str, **options: Any) -> TestResponse:
        return self.request("GET", url, **options)

    def head(self, url: str, **options: Any) -> TestResponse:
        return self.request("HEAD", url, **options)

    def post(self, url: str, **options: Any) -> TestResponse:
        return self.request("POST", url, **options)

    def put(self, url: str, **options: Any) -> TestResponse:
        return self.request("PUT", url, **options)

    def patch(self, url: str, **options: Any) -> TestResponse:
        return self.request("PATCH", url, **options)

    def delete(self, url: str, **options: Any) -> TestResponse:
        return self.request("DELETE", url, **options)

    def options(self, url: str, **options: Any) -> TestResponse:
        return self.request("OPTIONS", url, **options)
