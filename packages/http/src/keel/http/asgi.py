"""ASGI both ways: serve any ASGI 3 app on keel's server, and run a keel app under any
ASGI server.

Why no extra task per request: `receive` reads straight from the connection and `send` writes
straight to it, so an ASGI app costs the server what a keel handler costs plus the message
dictionaries ASGI itself requires.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from keel.http.concurrency import Signal
from keel.http.errors import HttpError, ResponseError
from keel.http.request import Request
from keel.http.response import Responder
from keel.http.routing import App, Router

logger = logging.getLogger("keel.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}


class _AsgiExchange:
    """One request's receive/send pair, bound to the keel request and responder."""

    __slots__ = ("_body_done", "_done", "_headers", "_request", "_responder", "_started",
                 "_status", "response_complete")

    def __init__(self, request: Request, responder: Responder) -> None:
        self._request = request
        self._responder = responder
        self._body_done = False
        self._started = False
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self.response_complete = False
        self._done = Signal()

    async def receive(self) -> Message:
        if not self._body_done:
            chunk = await self._request._source.read_chunk()
            if chunk is not None:
                return {"type": "http.request", "body": chunk, "more_body": True}
            self._body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # After the body, receive() blocks until the exchange is over (ASGI semantics).
        await self._done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self._started:
                raise ResponseError("http.response.start was sent twice")
            self._started = True
            self._status = int(message["status"])
            self._headers = [(name.decode("latin-1"), value.decode("latin-1"))
                             for name, value in message.get("headers", ())]
        elif kind == "http.response.body":
            if not self._started or self.response_complete:
                raise ResponseError("http.response.body needs a started, unfinished response")
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if self._status:
                status, self._status = self._status, 0
                if not more:
                    self.response_complete = True
                    await self._responder.send_whole(status, self._headers, body)
                    self._done.set()
                    return
                await self._responder.start(status, self._headers,
                                            _declared_length(self._headers))
            await self._responder.write(body)
            if not more:
                self.response_complete = True
                await self._responder.end()
                self._done.set()
        else:
            raise ResponseError(f"unsupported ASGI message type {kind!r}")

    def finish(self) -> None:
        self._done.set()


def _declared_length(headers: Sequence[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return None


class AsgiAdapter:
    """Serves an ASGI 3 application with keel's server (a ConnectionApp)."""

    def __init__(self, app: AsgiApp, root_path: str = "") -> None:
        self.app = app
        self.root_path = root_path
        self.state: dict[str, Any] = {}

    async def __call__(self, request: Request, responder: Responder) -> None:
        scope: Scope = {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": request.http_version,
            "method": request.method,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.raw_path.encode("latin-1"),
            "query_string": request.query_string.encode("latin-1"),
            "root_path": self.root_path,
            "headers": request.raw_headers,
            "client": request.client,
            "server": None,
            "state": dict(self.state),
            "extensions": {},
        }
        exchange = _AsgiExchange(request, responder)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            exchange.finish()
        if not exchange.response_complete and not exchange._started:
            raise ResponseError("the ASGI application returned without sending a response")


class Lifespan:
    """Drives an ASGI app's lifespan protocol for the server: startup before the first
    connection is accepted, shutdown after the last one is done.

    Why events from the backend: the app's lifespan coroutine runs as one long task beside the
    connections; `receive` blocks on an event until the server asks for shutdown."""

    def __init__(self, adapter: AsgiAdapter, make_event: Callable[[], Any]) -> None:
        self.adapter = adapter
        self.started = make_event()
        self.finished = make_event()
        self._shutdown = make_event()
        self._startup_sent = False
        self.failure: str | None = None
        self.supported = True

    async def run(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.adapter.state}
        try:
            await self.adapter.app(scope, self._receive, self._send)
        except Exception as error:  # apps without lifespan support raise on the scope
            if not self.started.is_set():
                self.supported = False
                logger.debug("ASGI app does not support lifespan: %r", error)
        finally:
            self.started.set()
            self.finished.set()

    async def _receive(self) -> Message:
        if not self._startup_sent:
            self._startup_sent = True
            return {"type": "lifespan.startup"}
        await self._shutdown.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.failed":
            self.failure = str(message.get("message", "startup failed"))
            self.started.set()
        elif kind == "lifespan.startup.complete":
            self.started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self.finished.set()

    def request_shutdown(self) -> None:
        self._shutdown.set()


class _AsgiBody:
    """A keel body source over an ASGI `receive`."""

    __slots__ = ("_done", "_receive")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._done = False

    async def read_chunk(self) -> bytes | None:
        while not self._done:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                from keel.http.errors import ClientDisconnected

                raise ClientDisconnected("the ASGI server reported a disconnect")
            self._done = not message.get("more_body", False)
            body = message.get("body", b"")
            if body:
                return bytes(body)
        return None


class _AsgiResponder:
    __slots__ = ("_send",)

    def __init__(self, send: Send) -> None:
        self._send = send

    async def send_whole(self, status: int, headers: Sequence[tuple[str, str]],
                         body: bytes) -> None:
        encoded = _encode_headers(headers)
        if not any(name == b"content-length" for name, _ in encoded):
            encoded.append((b"content-length", str(len(body)).encode()))
        await self._send({"type": "http.response.start", "status": status, "headers": encoded})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def start(self, status: int, headers: Sequence[tuple[str, str]],
                    content_length: int | None) -> None:
        encoded = _encode_headers(headers)
        if content_length is not None and \
                not any(name == b"content-length" for name, _ in encoded):
            encoded.append((b"content-length", str(content_length).encode()))
        await self._send({"type": "http.response.start", "status": status, "headers": encoded})

    async def write(self, data: bytes) -> None:
        if data:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})


def _encode_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class KeelAsgi:
    """A keel Router as an ASGI 3 application (for uvicorn, granian, hypercorn...)."""

    def __init__(self, router: Router | App) -> None:
        self._app = router.build() if isinstance(router, Router) else router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            raise HttpError(f"keel.http serves ASGI 'http' scopes, not {kind!r}")
        client = scope.get("client")
        raw_path = scope.get("raw_path")
        path = scope["path"]
        request = Request(
            scope["method"], path, scope.get("query_string", b"").decode("latin-1"),
            [(bytes(name).lower(), bytes(value)) for name, value in scope.get("headers", ())],
            raw_path=raw_path.decode("latin-1").split("?", 1)[0] if raw_path else path,
            http_version=scope.get("http_version", "1.1"),
            client=(client[0], client[1]) if client else None,
            scheme=scope.get("scheme", "http"), body=_AsgiBody(receive))
        await self._app(request, _AsgiResponder(send))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def to_asgi(router: Router | App) -> KeelAsgi:
    return KeelAsgi(router)


