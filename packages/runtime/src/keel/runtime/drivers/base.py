"""The driver interface: what the scheduler and the I/O objects need from the kernel side.

Why an abstract class rather than two ad-hoc objects: the test suite runs once per driver,
and the I/O layer (net, fs, pipes) is written once against these coroutines. Every operation
returns its result or raises an OSError naming the call; none returns -errno.
"""

from __future__ import annotations

import abc
import errno
import functools
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from keel.native.errors import syscall_error

if TYPE_CHECKING:
    from keel.runtime._hotpath import Receiver
    from keel.runtime.scheduler import Runtime

# Plain ints: socket.MSG_* are IntFlag enums, and enum arithmetic is slow on a hot path.
DONT_WAIT = int(socket.MSG_DONTWAIT)
NO_SIGNAL = int(socket.MSG_NOSIGNAL)
Buffer = Any  # anything cffi.from_buffer / socket.recv_into accept (checked by callers)


class Driver(abc.ABC):
    """One thread's I/O engine. Not thread-safe except `wake()`."""

    name: str = "abstract"
    # Whether sockets handed to this driver must be in O_NONBLOCK mode.
    nonblocking_fds: bool = True

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        # Observable behaviour (FEATURES.md): loop turns, kernel entries (io_uring_enter or
        # epoll_wait, including early flushes) and completions/events reaped.
        self.turns = 0
        self.enters = 0
        self.completions = 0

    def attach(self, runtime: Runtime) -> None:
        self.runtime = runtime

    # The loop turn ------------------------------------------------------------------------
    @abc.abstractmethod
    def poll(self, timeout: float | None) -> None:
        """Submit what tasks prepared, wait up to `timeout` (None: forever), resume waiters."""

    @abc.abstractmethod
    def wake(self) -> None:
        """Make a blocked `poll` return soon (the one call safe from other threads)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Cancel anything still in flight, wait for the kernel to let go, release fds."""

    @abc.abstractmethod
    def in_flight(self) -> int:
        """Operations the kernel still holds (the runtime's leak check)."""

    # Readiness ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def wait_readable(self, fd: int) -> None: ...

    @abc.abstractmethod
    async def wait_writable(self, fd: int) -> None: ...

    @abc.abstractmethod
    def forget_fd(self, fd: int, busy: bool = True) -> None:
        """The fd is about to be closed: end every wait and operation on it."""

    # Sockets ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def recv_into(self, sock: socket.socket, buffer: Buffer, flags: int = 0) -> int: ...

    @abc.abstractmethod
    def recv_raw(self, sock: socket.socket, buffer: Buffer,
                 flags: int = 0) -> Awaitable[int] | int:
        """The hot path of `read`: the byte count (or -errno) now, or an awaitable of it.

        Returning -errno instead of raising lets the io_uring driver hand back its operation
        object itself (no coroutine frame per read); the caller raises.
        """

    def receiver(self, sock: socket.socket) -> Callable[[Buffer], Awaitable[int] | int]:
        """`recv_raw` bound to one connected socket, for its stream's reads."""
        return functools.partial(self.recv_raw, sock)

    def stream_receiver(self, sock: socket.socket) -> Receiver | None:
        """The socket's standing receiver (io_uring multishot recv), if this driver has one.

        A stream with a receiver reads through it in C (keel.runtime._hotpath); without
        one it reads through `receiver(sock)`.
        """
        return None

    @abc.abstractmethod
    async def send(self, sock: socket.socket, buffer: Buffer, flags: int = 0) -> int: ...

    @abc.abstractmethod
    async def accept(self, sock: socket.socket) -> int:
        """A new connected fd from the listening socket."""

    async def connect(self, sock: socket.socket, address: Any) -> None:
        """Non-blocking connect, then wait until writable (same for both drivers)."""
        sock.setblocking(False)
        try:
            error = sock.connect_ex(address)
            if error == 0:
                return
            if error not in (errno.EINPROGRESS, errno.EAGAIN):
                raise syscall_error(error, "connect", address=address)
            await self.wait_writable(sock.fileno())
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise syscall_error(error, "connect", address=address)
        finally:
            sock.setblocking(not self.nonblocking_fds)

    async def recvfrom_into(self, sock: socket.socket, buffer: Buffer,
                            flags: int = 0) -> tuple[int, Any]:
        """Datagrams go through readiness on both drivers (no sockaddr juggling in Python)."""
        while True:
            try:
                return sock.recvfrom_into(buffer, 0, flags | DONT_WAIT)
            except BlockingIOError:
                await self.wait_readable(sock.fileno())

    async def sendto(self, sock: socket.socket, buffer: Buffer, address: Any,
                     flags: int = 0) -> int:
        while True:
            try:
                if address is None:  # connected socket
                    return sock.send(buffer, flags | DONT_WAIT)
                return sock.sendto(buffer, flags | DONT_WAIT, address)
            except BlockingIOError:
                await self.wait_writable(sock.fileno())

    # Files and pipes ----------------------------------------------------------------------
    @abc.abstractmethod
    async def read_at(self, fd: int, buffer: Buffer, offset: int) -> int:
        """pread; offset -1 means the current position (pipes)."""

    @abc.abstractmethod
    async def write_at(self, fd: int, buffer: Buffer, offset: int) -> int: ...

    @abc.abstractmethod
    async def fsync(self, fd: int) -> None: ...

    @abc.abstractmethod
    async def open(self, path: str, flags: int, mode: int) -> int: ...

    def statistics(self) -> dict[str, int]:
        return {"turns": self.turns, "enters": self.enters, "completions": self.completions,
                "in_flight": self.in_flight()}
