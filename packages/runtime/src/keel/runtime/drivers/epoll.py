"""The epoll driver: readiness plus non-blocking syscalls, for kernels without io_uring.

Why one-shot registrations: a fd is armed only while a task waits on it, for exactly the
directions it waits for, so an idle connection costs nothing per turn and a wake-up always
has a waiter. Regular files cannot be polled; their reads and writes run synchronously
(the legacy trade-off: io_uring is the driver that makes file I/O asynchronous).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Generator
from typing import Any

from keel.native import epoll as ep
from keel.native.epoll import Epoll
from keel.native.eventfd import EventFd
from keel.runtime.drivers.base import Buffer, Driver
from keel.runtime.errors import BusyResourceError, ClosedResourceError
from keel.runtime.scheduler import register_trap_class

MILLISECONDS = 1000
READ_EVENTS = ep.IN | ep.ERR | ep.HUP | ep.RDHUP
WRITE_EVENTS = ep.OUT | ep.ERR | ep.HUP
WAKE_TOKEN = (1 << 63)


@register_trap_class
class _Readiness:
    """A task parked until one fd is ready in one direction."""

    __slots__ = ("driver", "fd", "reading", "task")

    def __init__(self, driver: EpollDriver, fd: int, reading: bool) -> None:
        self.driver = driver
        self.fd = fd
        self.reading = reading
        self.task: Any = None

    def __await__(self) -> Generator[Any, Any, None]:
        return (yield self)  # type: ignore[no-any-return]

    def abort(self) -> bool:
        self.driver._drop(self)
        return True


class _Registration:
    __slots__ = ("armed", "reader", "writer")

    def __init__(self) -> None:
        self.reader: _Readiness | None = None
        self.writer: _Readiness | None = None
        self.armed = False


class EpollDriver(Driver):
    name = "epoll"
    nonblocking_fds = True

    def __init__(self) -> None:
        super().__init__()
        self._epoll = Epoll()
        try:
            self._wake = EventFd(nonblocking=True)
            self._epoll.register(self._wake.fileno(), ep.IN, WAKE_TOKEN)
        except BaseException:
            self._epoll.close()
            raise
        self._fds: dict[int, _Registration] = {}

    # Registrations ------------------------------------------------------------------------
    def _arm(self, fd: int, registration: _Registration) -> None:
        events = ep.ONESHOT
        if registration.reader is not None:
            events |= READ_EVENTS
        if registration.writer is not None:
            events |= WRITE_EVENTS
        if registration.armed:
            self._epoll.modify(fd, events, fd)
        else:
            self._epoll.register(fd, events, fd)
            registration.armed = True

    def _drop(self, waiter: _Readiness) -> None:
        registration = self._fds.get(waiter.fd)
        if registration is None:
            return
        if registration.reader is waiter:
            registration.reader = None
        if registration.writer is waiter:
            registration.writer = None

    async def _wait(self, fd: int, reading: bool) -> None:
        registration = self._fds.get(fd)
        if registration is None:
            registration = self._fds[fd] = _Registration()
        waiter = _Readiness(self, fd, reading)
        if reading:
            if registration.reader is not None:
                raise BusyResourceError(f"another task is already waiting to read fd {fd}")
            registration.reader = waiter
        else:
            if registration.writer is not None:
                raise BusyResourceError(f"another task is already waiting to write fd {fd}")
            registration.writer = waiter
        try:
            self._arm(fd, registration)
        except BaseException:
            self._drop(waiter)
            raise
        await waiter

    async def wait_readable(self, fd: int) -> None:
        await self._wait(fd, True)

    async def wait_writable(self, fd: int) -> None:
        await self._wait(fd, False)

    def forget_fd(self, fd: int, busy: bool = True) -> None:
        registration = self._fds.pop(fd, None)
        if registration is None:
            return
        if registration.armed:
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass
        for waiter in (registration.reader, registration.writer):
            if waiter is not None and waiter.task is not None:
                waiter.task.runtime.resume_error(
                    waiter.task, ClosedResourceError(f"fd {fd} was closed while a task waited"))

    # The loop turn ------------------------------------------------------------------------
    def poll(self, timeout: float | None) -> None:
        if timeout is None:
            milliseconds = -1
        else:
            milliseconds = min(ep.MAX_TIMEOUT_MS, math.ceil(timeout * MILLISECONDS))
        epoll = self._epoll
        self.turns += 1
        self.enters += 1
        try:
            count = epoll.wait(milliseconds)
        except InterruptedError:
            return
        self.completions += count
        registrations = self._fds
        for index in range(count):
            token, events = epoll.event(index)
            if token == WAKE_TOKEN:
                try:
                    self._wake.read()
                except BlockingIOError:
                    pass
                continue
            registration = registrations.get(token)
            if registration is None:
                continue
            reader, writer = registration.reader, registration.writer
            if reader is not None and events & READ_EVENTS:
                registration.reader = None
                reader.task.runtime.resume(reader.task, None)
            if writer is not None and events & WRITE_EVENTS:
                registration.writer = None
                writer.task.runtime.resume(writer.task, None)
            if registration.reader is not None or registration.writer is not None:
                self._arm(token, registration)

    def wake(self) -> None:
        try:
            self._wake.write(1)
        except (BlockingIOError, ValueError, OSError):
            pass

    def in_flight(self) -> int:
        return sum((r.reader is not None) + (r.writer is not None) for r in self._fds.values())

    def close(self) -> None:
        if self._epoll.closed:
            return
        self._fds.clear()
        self._epoll.close()
        self._wake.close()

    # Operations ---------------------------------------------------------------------------
    async def recv_into(self, sock: socket.socket, buffer: Buffer, flags: int = 0) -> int:
        while True:
            try:
                return sock.recv_into(buffer, 0, flags)
            except BlockingIOError:
                await self._wait(sock.fileno(), True)

    async def recv_raw(self, sock: socket.socket, buffer: Buffer, flags: int = 0) -> int:
        try:
            return await self.recv_into(sock, buffer, flags)
        except OSError as error:
            if error.errno is None:
                raise
            return -error.errno

    async def send(self, sock: socket.socket, buffer: Buffer, flags: int = 0) -> int:
        while True:
            try:
                return sock.send(buffer, flags)
            except BlockingIOError:
                await self._wait(sock.fileno(), False)

    async def accept(self, sock: socket.socket) -> int:
        while True:
            try:
                connection, _address = sock.accept()
                return connection.detach()
            except BlockingIOError:
                await self._wait(sock.fileno(), True)

    async def read_at(self, fd: int, buffer: Buffer, offset: int) -> int:
        while True:
            try:
                if offset < 0:
                    return os.readv(fd, [buffer])
                return os.preadv(fd, [buffer], offset)
            except BlockingIOError:
                await self._wait(fd, True)

    async def write_at(self, fd: int, buffer: Buffer, offset: int) -> int:
        while True:
            try:
                if offset < 0:
                    return os.writev(fd, [buffer])
                return os.pwritev(fd, [buffer], offset)
            except BlockingIOError:
                await self._wait(fd, False)

    async def fsync(self, fd: int) -> None:
        os.fsync(fd)

    async def open(self, path: str, flags: int, mode: int) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)
