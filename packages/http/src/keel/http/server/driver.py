"""The connection driver: runs the sans-IO core over any backend Stream.

Why one driver: keel.runtime, asyncio and trio differ only in their Stream; request framing,
limits, timeouts, 100-continue, pipelining, draining unread bodies and the keep-alive decision
live here once. The driver is also the request's body source and its responder, so a request
costs no extra objects for either.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from typing import Any, Protocol, cast

from keel.http.config import ServerConfig
from keel.http.errors import ClientDisconnected, ProtocolError, ResponseError
from keel.http.protocol.core import (
    CONNECTION_CLOSED,
    END_OF_MESSAGE,
    NEED_DATA,
    HttpConnection,
    RequestHead,
)
from keel.http.protocol.writer import head_prefix
from keel.http.request import Request, split_target
from keel.http.response import (
    JSON_HEADERS,
    OK,
    TEXT_HEADERS,
    Responder,
    encode_json_unchecked,
    error_response,
)
from keel.http.server.backend import ReceiveTimeout, Stream

logger = logging.getLogger("keel.http")
access_logger = logging.getLogger("keel.http.access")

REQUEST_TIMEOUT = 408
INTERNAL_ERROR = 500

ConnectionApp = Callable[[Request, Responder], Awaitable[None]]
# Optional on a ConnectionApp (keel's App has both): the handler's coroutine to run directly
# for a request method and raw target (or None), and how to finish one whose result is not
# sent by the driver itself.
PlainCall = Callable[[str, bytes], Awaitable[Any] | None]
PlainRespond = Callable[[Awaitable[Any], str, str, Responder], Awaitable[None]]
# Stream.park (optional): (continuation, idle timeout, serve on arrival) -> taken over?
Park = Callable[[Callable[[], Coroutine[Any, Any, None]], float | None, Callable[[bytes], bool]],
                bool]
# The heads of the whole responses the driver builds itself (200, one content-type header).
TEXT_PREFIX = head_prefix(OK, *TEXT_HEADERS[0])
JSON_PREFIX = head_prefix(OK, *JSON_HEADERS[0])


class _Parked:
    """The stream took the idle connection over; no task waits for its next request."""


PARKED = _Parked()


class _AfterInline:
    """The inline requests are done and the connection may not carry more: just close it."""


AFTER_INLINE = _AfterInline()


class _ServedInline:
    """`_next_head` served what arrived inline and left the rest in `_leftover`."""


SERVED_INLINE = _ServedInline()
# What `_serve_parked` leaves for `_continue`: a request coroutine that started inline and
# then waited (with the value it yielded), an exception it raised, or AFTER_INLINE.
InlineLeftover = tuple[Coroutine[Any, Any, None], Any] | Exception | _AfterInline


async def _returned(value: Any) -> Any:
    return value


async def _raised(error: Exception) -> Any:
    raise error


@types.coroutine
def resume_started(coroutine: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Continue, inside whatever runs us, a coroutine that was started inline and then waited.

    The first value it yielded (e.g. an asyncio future still marked blocking) goes up to our
    runner as if the coroutine had yielded it there; afterwards values and exceptions pass
    through, and its result is ours."""
    while True:
        try:
            value = yield yielded
        except BaseException as error:
            try:
                yielded = coroutine.throw(error)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coroutine.send(value)
            except StopIteration as stop:
                return stop.value


class ConnectionRegistry(Protocol):
    """What a connection needs to know about the server it belongs to."""

    draining: bool

    def add(self, driver: ConnectionDriver) -> None: ...

    def discard(self, driver: ConnectionDriver) -> None: ...


class ConnectionDriver:
    """Serves the requests of one connection, one after another (pipelining included)."""

    __slots__ = (
        "_body_done",
        "_declared_length",
        "_leftover",
        "_park",
        "_pending_head",
        "_plain_call",
        "_plain_respond",
        "_registry",
        "_response_ended",
        "_send_now",
        "_sent_bytes",
        "_status",
        "app",
        "config",
        "core",
        "idle",
        "scheme",
        "stream",
    )

    def __init__(self, stream: Stream, app: ConnectionApp, config: ServerConfig,
                 registry: ConnectionRegistry | None = None) -> None:
        self.stream = stream
        self.app = app
        self.config = config
        self.core = HttpConnection(config.limits, config.server_header)
        self._registry = registry
        self.idle = True
        self.scheme = "https" if stream.tls else "http"
        self._body_done = True
        self._pending_head = b""
        self._response_ended = False
        self._declared_length: int | None = None
        self._sent_bytes = 0
        self._status = 0
        self._leftover: InlineLeftover | None = None
        # Streams that can write without awaiting (`send_now(data) -> bytes taken`: asyncio,
        # keel.runtime) save a coroutine per response.
        self._send_now: Callable[[bytes], int] | None = getattr(stream, "send_now", None)
        # Streams that can run code when bytes arrive (asyncio) take idle connections over.
        self._park: Park | None = getattr(stream, "park", None)
        self._plain_call: PlainCall | None = getattr(app, "plain_call", None)
        self._plain_respond: PlainRespond | None = getattr(app, "respond", None)
        if self._plain_respond is None or config.access_log:
            self._plain_call = None

    async def run(self) -> None:
        """Serve until the peer leaves, an error closes the connection or the server drains."""
        if self._registry is not None:
            self._registry.add(self)
        await self._continue()

    async def _continue(self) -> None:
        """The request loop; returns early, connection open, when the stream parks it."""
        registry = self._registry
        parked = False
        try:
            while True:
                leftover, self._leftover = self._leftover, None
                if leftover is not None:
                    if isinstance(leftover, Exception):
                        raise leftover
                    if isinstance(leftover, tuple):
                        await resume_started(*leftover)
                    if not self.core.keep_alive or (registry is not None and
                                                    registry.draining):
                        return
                head = await self._next_head()
                if head is SERVED_INLINE:
                    continue
                if isinstance(head, _Parked):
                    parked = True
                    return
                if head is None:
                    break
                await self._serve(head)  # type: ignore[arg-type]
                if not self.core.keep_alive or (registry is not None and registry.draining):
                    break
        except ClientDisconnected:
            pass
        except Exception:
            logger.exception("connection from %s failed", self.stream.peer)
        finally:
            if not parked:
                if registry is not None:
                    registry.discard(self)
                await self.stream.close()

    async def _next_head(self) -> RequestHead | _Parked | _ServedInline | None:
        core = self.core
        limits = self.config.limits
        timeouts = self.config.timeouts
        deadline = 0.0
        idle = False
        while True:
            event = core.next_event()
            if type(event) is RequestHead:
                self.idle = False
                return event
            if event is NEED_DATA:
                if core.message_started:
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + timeouts.header
                    timeout = deadline - now
                    self.idle = idle = False
                else:
                    timeout = timeouts.idle
                    self.idle = idle = True
                    if self._registry is not None and self._registry.draining:
                        return None
                    park = self._park
                    if park is not None and park(self._continue, timeout, self._serve_parked):
                        return PARKED
                try:
                    data = await self.stream.receive(limits.read_size, timeout)
                except ReceiveTimeout:
                    if core.message_started:
                        await self._send_error(REQUEST_TIMEOUT, "request headers took longer "
                                               f"than {timeouts.header} s")
                    return None
                if idle and data:
                    # On arrival, as the asyncio stream does from `data_received`: serve the
                    # requests these bytes complete right here, no coroutine per request
                    # unless one waits (it is left for `_continue`).
                    if not self._serve_parked(data) and self._leftover is not None:
                        return SERVED_INLINE
                    continue
                core.receive_data(data)
            elif isinstance(event, ProtocolError):
                await self._send_error(event.status, event.message)
                return None
            elif event is CONNECTION_CLOSED:
                return None
            # A body or end event without a head cannot happen; skip it defensively.

    def _serve_parked(self, data: bytes) -> bool:
        """Bytes for an idle connection: serve the requests they complete, inline.

        Why: most keep-alive requests arrive whole and are answered without waiting, so the
        request coroutine runs to its end right here, with no task, no read future and no
        trip through `_continue`; a bodiless request for a handler the app lets us call
        directly (`plain_call`) needs not even a Request. True: everything was served and
        the connection waits for the next request. False: `_continue` must pick up what is
        left (a request that waited, an error, a partial or failed request, or the close)."""
        core = self.core
        core.receive_data(data)
        registry = self._registry
        call = self._plain_call
        events = core.events
        while True:
            if registry is not None and registry.draining:
                return False
            if not events:
                return core.waiting_for_request
            head = core.take_bodiless_request() if call is not None else None
            if head is not None and call is not None:
                self.idle = False
                started = call(head.method, head.target)
                coroutine = self._serve(head, begun=True) if started is None \
                    else self._serve_plain(head, started)
            else:
                head = core.next_head()
                if head is None:
                    return core.waiting_for_request
                self.idle = False
                coroutine = self._serve(head)
            if coroutine is not None:
                try:
                    yielded = coroutine.send(None)
                except StopIteration:
                    pass
                except Exception as error:  # handled by _continue exactly as if raised there
                    self._leftover = error
                    return False
                else:
                    self._leftover = (coroutine, yielded)
                    return False
            self.idle = True
            if not core.keep_alive:
                self._leftover = AFTER_INLINE
                return False

    def _serve_plain(self, head: RequestHead,
                     started: Awaitable[Any]) -> Coroutine[Any, Any, None] | None:
        """A bodiless request (begun, its end taken) whose handler coroutine the app gave us:
        it runs here, and a `str`, dict or list it returns without waiting is sent with no
        Request, Service or Response object. None when that is done; otherwise the coroutine
        that finishes the request through the generic path (not started)."""
        coroutine = cast(Coroutine[Any, Any, Any], started)  # registration checked async def
        try:
            yielded = coroutine.send(None)
        except StopIteration as stop:
            result = stop.value
            kind = type(result)
            if kind is str:
                prefix, body = TEXT_PREFIX, result.encode()
            elif kind is dict or kind is list:
                try:
                    prefix, body = JSON_PREFIX, encode_json_unchecked(result)
                except Exception:  # the generic path meets it again, logs it, answers 500
                    return self._serve(head, _returned(result), begun=True)
            else:
                return self._serve(head, _returned(result), begun=True)
            core = self.core
            data = core.start_prefixed_response(prefix, body)
            if data is None:  # HEAD, HTTP/1.0, closing: the general framing
                data = core.start_response(OK, TEXT_HEADERS if prefix is TEXT_PREFIX
                                           else JSON_HEADERS, body=body)
            send_now = self._send_now
            if send_now is not None:
                sent = send_now(data)
                if sent == len(data):
                    core.finish_request(True)
                    return None
                data = data[sent:]
            return self._send_and_finish(data)
        except Exception as error:
            rest = _raised(error)
        else:
            rest = resume_started(coroutine, yielded)
        return self._serve(head, rest, begun=True)

    async def _send_and_finish(self, data: bytes) -> None:
        await self.stream.send(data, self.config.timeouts.send)
        self.core.finish_request(True)

    async def _send_error(self, status: int, message: str) -> None:
        """Answer a request we could not parse, then the connection closes."""
        logger.info("closing connection from %s: %d %s", self.stream.peer, status, message)
        core = self.core
        core.keep_alive = False
        if core.current is None:
            core.begin_request(RequestHead("GET", b"/", [], "1.1", False, None, False, False))
        if core.response_started:
            return
        response = error_response(status, message)
        try:
            await self.stream.send(core.start_response(status, response.headers,
                                                       body=response.body),
                                   self.config.timeouts.send)
        except ClientDisconnected:
            pass

    async def _serve(self, head: RequestHead, handled: Awaitable[Any] | None = None,
                     begun: bool = False) -> None:
        """One request. `begun`: `_serve_parked` began it and took its end (no body);
        `handled`: then also the plain handler's result, already on its way."""
        core = self.core
        if not begun:
            core.begin_request(head)
        self._pending_head = b""
        self._response_ended = False
        self._declared_length = None
        self._sent_bytes = 0
        self._status = 0
        # Requests without a body come with their end already parsed: settle it now.
        self._body_done = True if begun else core.take_end_of_message()
        path, raw_path, query = split_target(head.target)
        request = Request(head.method, path, query, head.headers, raw_path=raw_path,
                          http_version=head.http_version, client=self.stream.peer,
                          scheme=self.scheme, body=self)
        started = time.monotonic() if self.config.access_log else 0.0
        try:
            if handled is not None and self._plain_respond is not None:
                await self._plain_respond(handled, head.method, raw_path, self)
            else:
                await self.app(request, self)
        except ProtocolError as error:
            core.keep_alive = False
            if not core.response_started:
                await self._send_error(error.status, error.message)
        except ClientDisconnected:
            core.keep_alive = False
            raise
        except Exception:
            logger.exception("unhandled error while serving %s %s", head.method, raw_path)
            core.keep_alive = False
            if not core.response_started:
                await self._send_error(INTERNAL_ERROR, "internal server error")
        if not self._response_ended:
            if core.response_started:
                logger.error("%s %s: the response was started but never ended", head.method,
                             raw_path)
            else:
                logger.error("%s %s: the application sent no response", head.method, raw_path)
                await self._send_error(INTERNAL_ERROR, "the application sent no response")
            core.keep_alive = False
        if not self._body_done and core.keep_alive:
            await self._drain_body()
        core.finish_request(self._body_done)
        if started:
            access_logger.info('%s - "%s %s HTTP/%s" %d %d %.1fms',
                               self.stream.peer[0] if self.stream.peer else "-", head.method,
                               raw_path, head.http_version, self._status, self._sent_bytes,
                               (time.monotonic() - started) * 1000)

    async def _drain_body(self) -> None:
        """Read and discard an unread body (bounded) so the connection can carry more."""
        budget = self.config.limits.max_drain_bytes
        try:
            while not self._body_done:
                chunk = await self._read_body(send_continue=False)
                if chunk is None:
                    return
                budget -= len(chunk)
                if budget < 0:
                    return
        except (ProtocolError, ClientDisconnected):
            return

    # ---- BodySource ----------------------------------------------------------------------

    async def read_chunk(self) -> bytes | None:
        return await self._read_body(send_continue=True)

    async def _read_body(self, send_continue: bool) -> bytes | None:
        if self._body_done:
            return None
        core = self.core
        if send_continue and core.current is not None and core.current.expect_continue:
            interim = core.continue_bytes()
            if interim:
                await self.stream.send(interim, self.config.timeouts.send)
        while True:
            event = core.next_event()
            if type(event) is bytes:
                return event
            if event is END_OF_MESSAGE:
                self._body_done = True
                return None
            if event is NEED_DATA:
                try:
                    data = await self.stream.receive(self.config.limits.read_size,
                                                     self.config.timeouts.body)
                except ReceiveTimeout:
                    raise ProtocolError(REQUEST_TIMEOUT, "no request body bytes within "
                                        f"{self.config.timeouts.body} s") from None
                core.receive_data(data)
            elif isinstance(event, ProtocolError):
                raise event
            elif event is CONNECTION_CLOSED:
                raise ClientDisconnected("the client closed the connection mid-body")

    # ---- Responder -----------------------------------------------------------------------

    async def send_whole(self, status: int, headers: Sequence[tuple[str, str]],
                         body: bytes) -> None:
        data = self.core.start_response(status, headers, body=body)
        self._status = status
        self._sent_bytes = len(body)
        self._response_ended = True
        send_now = self._send_now
        if send_now is not None:
            sent = send_now(data)
            if sent == len(data):
                return
            data = data[sent:]
        await self.stream.send(data, self.config.timeouts.send)

    async def start(self, status: int, headers: Sequence[tuple[str, str]],
                    content_length: int | None) -> None:
        self._pending_head = self.core.start_response(status, headers, content_length)
        self._status = status
        self._declared_length = content_length

    async def write(self, data: bytes) -> None:
        if self._response_ended or not self.core.response_started:
            raise ResponseError("write() needs a started, unfinished response")
        if not data:
            return
        self._sent_bytes += len(data)
        if self._declared_length is not None and self._sent_bytes > self._declared_length:
            self.core.keep_alive = False
            raise ResponseError(f"the body is longer than its Content-Length "
                                f"{self._declared_length}")
        framed = self.core.body_bytes(data)
        if self._pending_head:
            framed = self._pending_head + framed
            self._pending_head = b""
        if framed:
            await self.stream.send(framed, self.config.timeouts.send)

    async def end(self) -> None:
        if self._response_ended:
            return
        if self._declared_length is not None and self._sent_bytes != self._declared_length \
                and self.core.response_has_body:
            self.core.keep_alive = False
            self._response_ended = True
            raise ResponseError(f"the body had {self._sent_bytes} bytes, its Content-Length "
                                f"said {self._declared_length}")
        data = self._pending_head + self.core.end_response()
        self._pending_head = b""
        self._response_ended = True
        if data:
            await self.stream.send(data, self.config.timeouts.send)
