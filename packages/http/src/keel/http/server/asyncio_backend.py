"""The asyncio backend (uvloop's loop is used when installed and asked for).

Why a Protocol instead of asyncio streams: data arrives through `data_received` straight into
a small buffer, so a keep-alive request costs one future and no epoll_ctl churn; reading pauses
when the buffer passes the high-water mark and `send` waits on `pause_writing`, which is the
backpressure in both directions.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar, cast

from keel.http.errors import ClientDisconnected
from keel.http.server.backend import ConnectionHandler, Event, ReceiveTimeout, TaskGroup
from keel.http.server.driver import resume_started

T = TypeVar("T")


class WriteBatch:
    """Whole responses written during one loop iteration go to their transports together,
    once the iteration's I/O callbacks are done.

    Why: the loop serves every connection that became readable in one poll; sending each
    answer at once wakes the client for every single response (on loopback the sender pays
    for that wake-up, and so does the client), while sending them after the batch lets the
    client find many answers per wake-up, and send its next requests together too. Each
    connection's deferred bytes are bounded by its write high-water mark."""

    __slots__ = ("_loop", "_scheduled", "_streams")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._streams: list[AsyncioStream] = []
        self._scheduled = False

    def add(self, stream: AsyncioStream) -> None:
        self._streams.append(stream)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        streams, self._streams = self._streams, []
        for stream in streams:
            stream.flush()


class AsyncioStream(asyncio.Protocol):
    """A Stream over an asyncio transport."""

    def __init__(self, on_connect: Callable[[AsyncioStream], None], high_water: int,
                 batch: WriteBatch | None = None) -> None:
        self._on_connect = on_connect
        self._high_water = high_water
        self._batch = batch
        self._deferred: list[bytes] = []
        self._deferred_bytes = 0
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._receive_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._parked: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._serve_parked: Callable[[bytes], bool] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parked_at = 0.0
        self._idle_timeout = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._continuations: set[asyncio.Task[None]] = set()
        self.peer: tuple[str, int] | None = None
        self.tls = False

    # -- asyncio.Protocol callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.tls = transport.get_extra_info("sslcontext") is not None
        raw = transport.get_extra_info("socket")
        if raw is not None and raw.family in (socket.AF_INET, socket.AF_INET6):
            try:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        if self._parked is not None and self._serve_parked is not None and not self._buffer:
            # The common keep-alive case: the driver serves what these bytes complete inline.
            if self._serve_parked(data):
                if self._loop is not None:
                    self._parked_at = self._loop.time()
                return
            self._wake_parked()
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > self._high_water and not self._reading_paused:
            self._reading_paused = True
            if self._transport is not None:
                self._transport.pause_reading()
        if self._parked is not None:
            self._wake_parked()
            return
        waiter = self._receive_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_receiver()
        return True  # keep our sending side open: a half-closed client still gets its answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._deferred.clear()
        self._deferred_bytes = 0
        self._closed = True
        self._eof = True
        self._wake_receiver()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_receiver(self) -> None:
        if self._parked is not None:
            self._wake_parked()
            return
        waiter = self._receive_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- parking: idle keep-alive connections wait without a task --

    def park(self, continuation: Callable[[], Coroutine[Any, Any, None]],
             idle_timeout: float | None,
             serve_parked: Callable[[bytes], bool] | None = None) -> bool:
        if self._buffer or self._eof or self._closed or idle_timeout is None:
            return False
        loop = self._loop = asyncio.get_running_loop()
        self._parked = continuation
        self._serve_parked = serve_parked
        self._parked_at = loop.time()
        self._idle_timeout = idle_timeout
        if self._idle_timer is None:
            self._idle_timer = loop.call_at(self._parked_at + idle_timeout, self._check_idle)
        return True

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._parked is None:
            return
        loop = asyncio.get_running_loop()
        remaining = self._parked_at + self._idle_timeout - loop.time()
        if remaining > 0:
            self._idle_timer = loop.call_later(remaining, self._check_idle)
            return
        self.abort()  # idle too long: the continuation sees EOF and closes

    def _wake_parked(self) -> None:
        continuation, self._parked = self._parked, None
        self._serve_parked = None
        if continuation is None:
            return
        coroutine = continuation()
        try:
            yielded = coroutine.send(None)  # inline: most requests finish right here
        except StopIteration:
            return
        task = asyncio.ensure_future(resume_started(coroutine, yielded))
        self._continuations.add(task)
        task.add_done_callback(self._continuations.discard)

    # -- Stream --

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        if not self._buffer:
            if self._eof:
                return b""
            loop = asyncio.get_running_loop()
            waiter = self._receive_waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._receive_waiter = None
                if timer is not None:
                    timer.cancel()
            if not self._buffer:
                if self._eof:
                    return b""
                raise ReceiveTimeout(f"no bytes from {self.peer} within {timeout} s")
        data = self._buffer.popleft()
        if len(data) > max_bytes:
            self._buffer.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        self._buffered -= len(data)
        if self._reading_paused and self._buffered <= self._high_water // 2:
            self._reading_paused = False
            if self._transport is not None and not self._closed:
                self._transport.resume_reading()
        return data

    def send_now(self, data: bytes) -> int:
        """Take `data` for the transport if nothing needs waiting for (no await): the bytes
        taken, all of them or none.

        Taken bytes wait in the loop's WriteBatch until the iteration's I/O callbacks are
        done (or until they pass the write high-water mark); `send`, `close` and `abort`
        hand them over first, so the order on the wire is the order of the calls. None
        taken: the caller uses `send`, which waits or raises. Data that pushes the transport
        past its high-water mark is still accepted here, so at most about one mark's worth
        goes beyond it before `send` makes the writer wait."""
        transport = self._transport
        if self._writing_paused or self._closed or transport is None or \
                transport.is_closing():
            return 0
        batch = self._batch
        if batch is None:
            transport.write(data)
            return len(data)
        deferred = self._deferred
        if not deferred:
            batch.add(self)
        deferred.append(data)
        self._deferred_bytes += len(data)
        if self._deferred_bytes > self._high_water:
            self.flush()
        return len(data)

    def flush(self) -> None:
        """Hand the deferred bytes to the transport (they were already promised to it)."""
        deferred = self._deferred
        if not deferred:
            return
        data = deferred[0] if len(deferred) == 1 else b"".join(deferred)
        deferred.clear()
        self._deferred_bytes = 0
        transport = self._transport
        if not self._closed and transport is not None and not transport.is_closing():
            transport.write(data)

    async def send(self, data: bytes, timeout: float) -> None:
        if self._deferred:
            self.flush()  # what send_now took goes first
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            raise ClientDisconnected(f"{self.peer} closed the connection")
        transport.write(data)
        if self._writing_paused:
            loop = asyncio.get_running_loop()
            waiter = self._drain_waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._drain_waiter = None
                timer.cancel()
            if self._closed:
                raise ClientDisconnected(f"{self.peer} closed the connection")
            if self._writing_paused:
                self.abort()
                raise ClientDisconnected(f"{self.peer} read nothing for {timeout} s")

    async def close(self) -> None:
        self.flush()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        self.flush()  # answers already given still go out first, as they did unbatched
        transport = self._transport
        self._closed = True
        self._eof = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if transport is not None:
            transport.abort()
        self._wake_receiver()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _AsyncioTaskGroup:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        task = asyncio.ensure_future(function(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class AsyncioBackend:
    """Runs the server on asyncio (uvloop when `use_uvloop` and installed)."""

    name = "asyncio"

    def __init__(self, use_uvloop: bool = True) -> None:
        self.use_uvloop = use_uvloop

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        factory = None
        if self.use_uvloop:
            try:
                import uvloop

                factory = uvloop.new_event_loop
            except ImportError:
                factory = None

        async def wrapper() -> T:
            return await main()

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(wrapper())

    @asynccontextmanager
    async def task_group(self) -> AsyncIterator[TaskGroup]:
        group = _AsyncioTaskGroup()
        try:
            yield group
        except BaseException:
            group.cancel()
            raise
        finally:
            await group.wait()

    def event(self) -> Event:
        return asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def threadsafe_caller(self) -> Callable[[Callable[[], None]], None]:
        loop = asyncio.get_running_loop()

        def call(callback: Callable[[], None]) -> None:
            loop.call_soon_threadsafe(callback)
        return call

    def timeout(self, seconds: float) -> asyncio.Timeout:
        return asyncio.timeout(seconds)

    @contextmanager
    def signal_handler(self, signals: list[int], callback: Callable[[], None]) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for number in signals:
            loop.add_signal_handler(number, callback)
        try:
            yield
        finally:
            for number in signals:
                loop.remove_signal_handler(number)
                signal.signal(number, signal.default_int_handler if number == signal.SIGINT
                              else signal.SIG_DFL)

    async def serve_socket(self, listening: socket.socket, ssl_context: ssl.SSLContext | None,
                           group: TaskGroup, handler: ConnectionHandler, stop: Event,
                           config_read_high_water: int) -> None:
        loop = asyncio.get_running_loop()

        def connected(stream: AsyncioStream) -> None:
            group.spawn(handler, stream)

        batch = WriteBatch(loop)
        server = await loop.create_server(
            lambda: AsyncioStream(connected, config_read_high_water, batch),
            sock=listening, ssl=ssl_context, backlog=socket.SOMAXCONN)
        try:
            await stop.wait()
        finally:
            server.close()
