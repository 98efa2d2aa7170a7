"""The keel.runtime backend (io_uring, or epoll where io_uring is missing).

Why keep it (selectable with `--backend runtime`; asyncio is the default, being faster for
keel apps today): keel.runtime completes reads and writes in the kernel with one
`io_uring_enter` per loop turn. Reads use one buffer per connection, handed to the kernel and
back (`count, buffer = await stream.read(buffer)`); writes return once the kernel took every
byte, which is the backpressure. TLS runs the ssl module over memory BIOs, since the runtime
moves plain bytes.
"""

from __future__ import annotations

import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import keel.runtime as kr
from keel.http.config import DEFAULT_READ_SIZE
from keel.http.errors import ClientDisconnected
from keel.http.server.backend import ConnectionHandler, Event, ReceiveTimeout, TaskGroup
from keel.runtime.signals import open_signal_receiver
from keel.runtime.sync import Event as RuntimeEvent

T = TypeVar("T")
TLS_READ_SIZE = 16 * 1024
NO_DEADLINE = float("inf")
SWEEP_INTERVAL = 0.1  # seconds; read timeouts are enforced to within this
_CLOSED_ERRORS = (OSError, kr.ClosedResourceError, kr.BusyResourceError)
DONT_WAIT = int(socket.MSG_DONTWAIT)  # a plain int: flag-enum arithmetic is slow per call


class RuntimeStream:
    """A Stream over a keel.runtime TcpStream."""

    def __init__(self, stream: kr.TcpStream, read_size: int = DEFAULT_READ_SIZE,
                 registry: set[RuntimeStream] | None = None) -> None:
        self._stream = stream
        self._registry = registry
        if registry is not None:
            registry.add(self)
        self.deadline = NO_DEADLINE
        self._expired = False
        self._socket = stream.socket
        self._buffer = bytearray(read_size)
        self._closed = False
        self.tls = False
        try:
            peer = stream.peer_address
            self.peer: tuple[str, int] | None = (str(peer[0]), int(peer[1]))
        except (OSError, IndexError, TypeError):
            self.peer = None

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        if self._closed:
            return b""
        size: int | None = max_bytes if max_bytes < len(self._buffer) else None
        # No cancel scope or timer per read: the sweeper ends reads past their deadline.
        self.deadline = time.monotonic() + timeout if timeout is not None else NO_DEADLINE
        try:
            count, self._buffer = await self._stream.read(self._buffer, size)
        except _CLOSED_ERRORS:
            count = 0
        finally:
            self.deadline = NO_DEADLINE
        if count == 0 and self._expired:
            raise ReceiveTimeout(f"no bytes from {self.peer} within {timeout} s")
        return bytes(memoryview(self._buffer)[:count])

    def expire(self) -> None:
        """The read deadline passed: end the pending read (SHUT_RD completes it with 0)."""
        self._expired = True
        try:
            self._socket.shutdown(socket.SHUT_RD)
        except OSError:
            self.abort()

    def send_now(self, data: bytes) -> int:
        """The bytes the socket takes right now (one non-blocking send, no await); 0 when
        it takes none or is closed. The caller sends the rest with `send`, which waits for
        the slow reader, times out, or reports the closed connection."""
        if self._closed:
            return 0
        try:
            return self._socket.send(data, DONT_WAIT)
        except OSError:  # full (BlockingIOError), or an error that `send` will report
            return 0

    async def send(self, data: bytes, timeout: float) -> None:
        if self._closed:
            raise ClientDisconnected(f"{self.peer} closed the connection")
        # Most responses fit the socket buffer: one non-blocking send, no ring round trip.
        try:
            sent = self._socket.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            raise ClientDisconnected(f"{self.peer} closed the connection: {error}") from None
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
        try:
            with kr.move_on_after(timeout):
                await self._stream.write(data)
                return
        except _CLOSED_ERRORS as error:
            raise ClientDisconnected(f"{self.peer} closed the connection: {error}") from None
        self.abort()
        raise ClientDisconnected(f"{self.peer} read nothing for {timeout} s")

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            if self._registry is not None:
                self._registry.discard(self)
            self._stream.close()


async def _sweep_deadlines(streams: set[RuntimeStream], stop: Event) -> None:
    """Every SWEEP_INTERVAL, end the reads whose deadline passed (timeouts without timers)."""
    while not stop.is_set():
        with kr.move_on_after(SWEEP_INTERVAL):
            await stop.wait()
        now = time.monotonic()
        for stream in list(streams):
            if stream.deadline < now:
                stream.expire()


class RuntimeTlsStream:
    """TLS over a RuntimeStream: the ssl module's SSLObject on memory BIOs."""

    def __init__(self, raw: RuntimeStream, context: ssl.SSLContext) -> None:
        self._raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._handshaken = False
        self.peer = raw.peer
        self.tls = True

    async def _flush(self, timeout: float) -> None:
        pending = self._outgoing.read()
        if pending:
            await self._raw.send(pending, timeout)

    async def _fill(self, timeout: float | None) -> None:
        data = await self._raw.receive(TLS_READ_SIZE, timeout)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def _handshake(self, timeout: float | None) -> None:
        while not self._handshaken:
            try:
                self._tls.do_handshake()
                self._handshaken = True
            except ssl.SSLWantReadError:
                await self._flush(timeout or TLS_HANDSHAKE_SEND_TIMEOUT)
                await self._fill(timeout)
            except (ssl.SSLError, ssl.SSLEOFError) as error:
                raise ClientDisconnected(f"TLS handshake with {self.peer} failed: {error}") \
                    from None
        await self._flush(timeout or TLS_HANDSHAKE_SEND_TIMEOUT)

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        try:
            await self._handshake(timeout)
            while True:
                try:
                    return self._tls.read(max_bytes)
                except ssl.SSLWantReadError:
                    await self._flush(timeout or TLS_HANDSHAKE_SEND_TIMEOUT)
                    await self._fill(timeout)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ClientDisconnected):
            return b""
        except ssl.SSLError:
            return b""

    async def send(self, data: bytes, timeout: float) -> None:
        await self._handshake(timeout)
        try:
            self._tls.write(data)
        except ssl.SSLError as error:
            raise ClientDisconnected(f"TLS write to {self.peer} failed: {error}") from None
        await self._flush(timeout)

    async def close(self) -> None:
        if self._handshaken:
            try:
                self._tls.unwrap()
                await self._flush(TLS_HANDSHAKE_SEND_TIMEOUT)
            except (ssl.SSLError, ClientDisconnected):
                pass
        await self._raw.close()

    def abort(self) -> None:
        self._raw.abort()


TLS_HANDSHAKE_SEND_TIMEOUT = 10.0


class _RuntimeTaskGroup:
    def __init__(self, group: kr.TaskGroup) -> None:
        self._group = group

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._group.spawn(function, *args)


class RuntimeBackend:
    """Runs the server on keel.runtime (`driver`: None probes, or "io_uring" / "epoll")."""

    name = "runtime"

    def __init__(self, driver: str | None = None) -> None:
        self.driver = driver

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        async def wrapper() -> T:
            return await main()

        result: T = kr.run(wrapper, driver=self.driver)
        return result

    @asynccontextmanager
    async def task_group(self) -> AsyncIterator[TaskGroup]:
        async with kr.TaskGroup() as group:
            yield _RuntimeTaskGroup(group)

    def event(self) -> Event:
        return RuntimeEvent()

    async def sleep(self, seconds: float) -> None:
        await kr.sleep(seconds)

    def threadsafe_caller(self) -> Callable[[Callable[[], None]], None]:
        runtime = kr.current_runtime()

        def call(callback: Callable[[], None]) -> None:
            runtime.call_soon_threadsafe(callback)
        return call

    @asynccontextmanager
    async def timeout(self, seconds: float) -> AsyncIterator[None]:
        with kr.fail_after(seconds):
            yield

    @contextmanager
    def signal_handler(self, signals: list[int], callback: Callable[[], None]) -> Iterator[None]:
        receiver = open_signal_receiver(*[signal.Signals(number) for number in signals])

        async def deliver() -> None:
            try:
                while True:
                    await receiver.receive()
                    callback()
            except kr.ClosedResourceError:
                return

        watcher = kr.spawn(deliver, name="keel-http-signals")
        try:
            yield
        finally:
            watcher.cancel()
            receiver.close()

    async def serve_socket(self, listening: socket.socket, ssl_context: ssl.SSLContext | None,
                           group: TaskGroup, handler: ConnectionHandler, stop: Event,
                           config_read_high_water: int) -> None:
        listener = kr.TcpListener.from_socket(listening)

        async def close_when_stopped() -> None:
            await stop.wait()
            listener.close()

        streams: set[RuntimeStream] = set()
        try:
            async with kr.TaskGroup() as watchers:
                watchers.spawn(close_when_stopped)
                watchers.spawn(_sweep_deadlines, streams, stop)
                while True:
                    try:
                        stream, _ = await listener.accept()
                    except _CLOSED_ERRORS:
                        if stop.is_set():
                            break
                        continue
                    raw = RuntimeStream(stream, registry=streams)
                    group.spawn(handler, raw if ssl_context is None
                                else RuntimeTlsStream(raw, ssl_context))
        finally:
            # Cancelled from outside (not stopped): the listener's armed accept must be
            # cancelled in the kernel too, which closing it through keel.runtime does.
            listener.close()
