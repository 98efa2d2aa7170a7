"""The trio backend.

Why: trio's `send_all` only returns once the kernel took the bytes, which is backpressure for
free; timeouts are cancel scopes; signals arrive through the trio token, which is signal-safe.
"""

from __future__ import annotations

import signal
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar, cast

import trio

from keel.http.errors import ClientDisconnected
from keel.http.server.backend import ConnectionHandler, Event, ReceiveTimeout, TaskGroup

T = TypeVar("T")


class TrioStream:
    """A Stream over a trio SocketStream (or an SSLStream around one)."""

    def __init__(self, stream: trio.abc.Stream, raw: trio.SocketStream, tls: bool) -> None:
        self._stream = stream
        self._raw = raw
        self.tls = tls
        self._closed = False
        try:
            peer = raw.socket.getpeername()
            self.peer: tuple[str, int] | None = (str(peer[0]), int(peer[1]))
        except OSError:
            self.peer = None

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        if self._closed:
            return b""
        try:
            if timeout is None:
                return bytes(await self._stream.receive_some(max_bytes))
            with trio.move_on_after(timeout):
                return bytes(await self._stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""
        raise ReceiveTimeout(f"no bytes from {self.peer} within {timeout} s")

    async def send(self, data: bytes, timeout: float) -> None:
        if self._closed:
            raise ClientDisconnected(f"{self.peer} closed the connection")
        try:
            with trio.move_on_after(timeout):
                await self._stream.send_all(data)
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise ClientDisconnected(f"{self.peer} closed the connection: {error}") from None
        self.abort()
        raise ClientDisconnected(f"{self.peer} read nothing for {timeout} s")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await self._stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        self._raw.socket.close()

    def abort(self) -> None:
        self._closed = True
        self._raw.socket.close()


class _TrioTaskGroup:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._nursery.start_soon(function, *args)


class TrioBackend:
    name = "trio"

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        async def wrapper() -> T:
            return await main()

        result: T = trio.run(wrapper)
        return result

    @asynccontextmanager
    async def task_group(self) -> AsyncIterator[TaskGroup]:
        async with trio.open_nursery() as nursery:
            yield _TrioTaskGroup(nursery)

    def event(self) -> Event:
        return cast(Event, trio.Event())

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    def threadsafe_caller(self) -> Callable[[Callable[[], None]], None]:
        token = trio.lowlevel.current_trio_token()

        def call(callback: Callable[[], None]) -> None:
            token.run_sync_soon(callback)
        return call

    @asynccontextmanager
    async def timeout(self, seconds: float) -> AsyncIterator[None]:
        try:
            with trio.fail_after(seconds):
                yield
        except trio.TooSlowError:
            raise TimeoutError(f"took longer than {seconds} s") from None

    @contextmanager
    def signal_handler(self, signals: list[int], callback: Callable[[], None]) -> Iterator[None]:
        token = trio.lowlevel.current_trio_token()
        previous = {number: signal.getsignal(number) for number in signals}
        for number in signals:
            signal.signal(number, lambda *_: token.run_sync_soon(callback))
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    async def serve_socket(self, listening: socket.socket, ssl_context: ssl.SSLContext | None,
                           group: TaskGroup, handler: ConnectionHandler, stop: Event,
                           config_read_high_water: int) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(listening))

        async def accept_until_stopped(cancel: trio.CancelScope) -> None:
            await stop.wait()
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_until_stopped, nursery.cancel_scope)
            while True:
                try:
                    raw = await listener.accept()
                except (trio.ClosedResourceError, OSError):
                    break
                try:
                    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
                stream: trio.abc.Stream = raw
                if ssl_context is not None:
                    stream = trio.SSLStream(raw, ssl_context, server_side=True)
                group.spawn(handler, TrioStream(stream, raw, ssl_context is not None))
        await listener.aclose()
