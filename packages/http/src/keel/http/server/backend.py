"""The small backend interface the server runs on.

Why our own: the server must run on keel.runtime, asyncio and trio with one connection driver.
A backend supplies only what the driver and the server need: byte streams with timeouts and
backpressure, an accept loop, a task group, an event, sleep and signal delivery.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Protocol, TypeVar

from keel.http.errors import HttpError

T = TypeVar("T")


class ReceiveTimeout(HttpError):
    """The peer sent nothing within the allowed time."""


class Stream(Protocol):
    """One accepted connection's byte stream."""

    peer: tuple[str, int] | None
    tls: bool

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        """Up to `max_bytes` (b'' once the peer closed); ReceiveTimeout after `timeout` s."""
        ...

    async def send(self, data: bytes, timeout: float) -> None:
        """Queue `data`; waits while the peer reads slowly, ClientDisconnected if it never does."""
        ...

    async def close(self) -> None:
        """Flush what is queued and close; idempotent."""
        ...

    def abort(self) -> None:
        """Close now, waking a pending `receive` (used to end idle connections on shutdown)."""
        ...

    # Optional: `park(continuation, idle_timeout) -> bool`. A stream that can run code when
    # bytes arrive may take an idle connection over: the driver's task ends, and on the next
    # bytes (or EOF, or after idle_timeout) the stream runs `continuation()` itself, inline
    # until it first waits. The asyncio backend does this; it saves a task wake-up and a
    # future per keep-alive request.


class Event(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


class TaskGroup(Protocol):
    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None: ...


ConnectionHandler = Callable[[Stream], Awaitable[None]]


class Backend(Protocol):
    """An event loop the server can run on."""

    name: str

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        """Run `main` to completion on a fresh loop of this backend."""
        ...

    def task_group(self) -> AbstractAsyncContextManager[TaskGroup]: ...

    def event(self) -> Event: ...

    async def sleep(self, seconds: float) -> None: ...

    def threadsafe_caller(self) -> Callable[[Callable[[], None]], None]:
        """Inside the loop: a function other threads use to run a callback in this loop."""
        ...

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[Any]:
        """Raise TimeoutError in the body if it runs longer than `seconds`."""
        ...

    def signal_handler(self, signals: list[int],
                       callback: Callable[[], None]) -> AbstractContextManager[None]:
        """While active, deliver each signal in `signals` as a call of `callback` in the loop."""
        ...

    async def serve_socket(self, listening: socket.socket, ssl_context: ssl.SSLContext | None,
                           group: TaskGroup, handler: ConnectionHandler, stop: Event,
                           config_read_high_water: int) -> None:
        """Accept on `listening` until `stop` is set; run `handler(stream)` in `group`."""
        ...


BACKEND_NAMES = ("runtime", "asyncio", "trio")
# keel.runtime is the default for keel apps (the platform's own runtime: io_uring, one
# system call per request or so). asyncio with uvloop costs less server CPU per request today
# (see the README and docs/benchmarks/http.md) and is one `--backend asyncio` away; ASGI apps
# default to asyncio (server.ASGI_DEFAULT_BACKEND).
DEFAULT_BACKEND = "runtime"


def get_backend(name: str | None = None) -> Backend:
    """The backend called `name` (keel.runtime by default)."""
    chosen = name or DEFAULT_BACKEND
    if chosen == "runtime":
        from keel.http.server.runtime_backend import RuntimeBackend

        return RuntimeBackend()
    if chosen == "asyncio":
        from keel.http.server.asyncio_backend import AsyncioBackend

        return AsyncioBackend()
    if chosen == "trio":
        from keel.http.server.trio_backend import TrioBackend

        return TrioBackend()
    raise ValueError(f"unknown backend {chosen!r}; expected one of {', '.join(BACKEND_NAMES)}")
