"""Sockets: TCP and Unix streams and listeners, UDP and Unix datagram sockets.

Why ownership passing (`n, buf = await stream.read(buf)`): with io_uring the kernel writes
into the buffer after the call is issued; the buffer comes back only once the kernel is done
with it, so even a cancelled read can never scribble over memory the caller reuses.
"""

from __future__ import annotations

import socket
from typing import Any

from keel.native.errors import syscall_error
from keel.runtime._hotpath import StreamCore, configure
from keel.runtime.buffers import ReadableBuffer, WritableBuffer, readable_view, writable_view
from keel.runtime.closing import AsyncClosing
from keel.runtime.drivers.base import NO_SIGNAL, Driver
from keel.runtime.errors import BusyResourceError, ClosedResourceError
from keel.runtime.scheduler import current_runtime

DEFAULT_BACKLOG = 1024
SEND_FLAGS = NO_SIGNAL


def _read_error(count: int, fd: int, closed: bool) -> BaseException:
    """The exception of a failed read (-errno `count`) on socket `fd` (for the C path)."""
    error = syscall_error(-count, "recv", fd=fd)
    if closed:
        closing = ClosedResourceError("SocketStream was closed during the operation")
        closing.__cause__ = error
        return closing
    return error


configure(busy_error=BusyResourceError, read_error=_read_error)


def _driver() -> Driver:
    return current_runtime().driver


class _Socket(AsyncClosing):
    """Common life cycle: one socket, one driver, explicit close that ends pending waits."""

    def __init__(self, sock: socket.socket, driver: Driver) -> None:
        self._socket = sock
        self._driver = driver
        self._closed = False
        sock.setblocking(not driver.nonblocking_fds)

    @property
    def socket(self) -> socket.socket:
        """The underlying socket, for options; do not read or write it directly."""
        return self._socket

    def fileno(self) -> int:
        return self._socket.fileno()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def local_address(self) -> Any:
        return self._socket.getsockname()

    def _busy(self) -> bool:
        """Might an operation on this socket be in flight (so closing must cancel it)?"""
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedResourceError(f"{type(self).__name__} is closed")

    def close(self) -> None:
        """Close now; a task blocked on this socket gets ClosedResourceError."""
        if self._closed:
            return
        self._closed = True
        try:
            self._driver.forget_fd(self._socket.fileno(), self._busy())
        finally:
            self._socket.close()

    def _closed_error(self, error: OSError) -> BaseException:
        if self._closed:
            return ClosedResourceError(f"{type(self).__name__} was closed during the operation")
        return error


class SocketStream(StreamCore, _Socket):
    """A connected byte stream (TCP or Unix).

    `read` and `write` come from the C base (keel.runtime._hotpath.StreamCore): a read on
    a socket with a standing multishot recv parks on its receiver, a write sends at once;
    the rest goes through `_read_slow` and `_write_rest` below.
    """

    def __init__(self, sock: socket.socket, driver: Driver) -> None:
        super().__init__(sock, driver)
        self._fd = sock.fileno()
        self._reading = False
        self._writing = False
        self._receiver = driver.stream_receiver(sock)
        # Without a receiver: the driver's read entry point, resolved once.
        self._receive = driver.receiver(sock) if self._receiver is None else None

    def _busy(self) -> bool:
        return self._reading or self._writing

    @property
    def peer_address(self) -> Any:
        return self._socket.getpeername()

    async def _read_slow(self, buffer: WritableBuffer,
                         size: int | None = None) -> tuple[int, WritableBuffer]:
        """`read` for every case its C fast path leaves (see StreamCore.read)."""
        if self._closed:
            raise ClosedResourceError("read on a closed stream")
        view = writable_view("buffer", buffer, size)
        receiver = self._receiver
        if receiver is not None:
            result: tuple[int, WritableBuffer] = await receiver.start(view, len(view), buffer)
            return result
        if self._reading:
            raise BusyResourceError("another task is already reading this stream")
        assert self._receive is not None
        self._reading = True
        try:
            pending = self._receive(view)
            # An int: the driver had the bytes (or the end) already; no suspension.
            count = pending if isinstance(pending, int) else await pending
        finally:
            self._reading = False
        if count < 0:
            error = syscall_error(-count, "recv", fd=self._socket.fileno())
            raise self._closed_error(error) from error
        return count, buffer

    async def _write_rest(self, buffer: ReadableBuffer, size: int | None = None,
                          sent: int = 0) -> tuple[int, ReadableBuffer]:
        """`write` once its C fast path sent `sent` bytes (the socket buffer filled up), or
        for every case it leaves: a closed stream, a busy one, an unusual buffer or size."""
        if self._closed:
            raise ClosedResourceError("write on a closed stream")
        if self._writing:
            raise BusyResourceError("another task is already writing this stream")
        # A C-contiguous byte view: `sent` and `size` count bytes.
        whole = memoryview(readable_view("buffer", buffer)).cast("B")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ValueError(f"write size must be an int >= 0, got {size!r}")
            whole = whole[:size]
        total = len(whole)
        self._writing = True
        try:
            while sent < total:
                sent += await self._driver.send(self._socket, whole[sent:], SEND_FLAGS)
        except OSError as error:
            raise self._closed_error(error) from error
        finally:
            self._writing = False
        return total, buffer

    async def read_exactly(self, size: int) -> bytearray:
        """Read exactly `size` bytes (EOFError if the stream ends first)."""
        if size < 0:
            raise ValueError(f"read_exactly needs size >= 0, got {size}")
        result = bytearray(size)
        view = memoryview(result)
        done = 0
        while done < size:
            count, _ = await self.read(view[done:])
            if count == 0:
                raise EOFError(f"stream ended after {done} of {size} bytes")
            done += count
        return result

    def shutdown_write(self) -> None:
        self._check_open()
        self._socket.shutdown(socket.SHUT_WR)


class TcpStream(SocketStream):
    @classmethod
    async def connect(cls, host: str, port: int, *, nodelay: bool = True) -> TcpStream:
        driver = _driver()
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"cannot resolve {host!r}")
        family, kind, protocol, _, address = infos[0]
        sock = socket.socket(family, kind, protocol)
        try:
            if nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await driver.connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return cls(sock, driver)

    def set_nodelay(self, enabled: bool) -> None:
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))


class UnixStream(SocketStream):
    @classmethod
    async def connect(cls, path: str) -> UnixStream:
        driver = _driver()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await driver.connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return cls(sock, driver)

    @classmethod
    def pair(cls) -> tuple[UnixStream, UnixStream]:
        driver = _driver()
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return cls(left, driver), cls(right, driver)


class _Listener(_Socket):
    _stream_class: type[SocketStream] = SocketStream

    async def accept(self) -> tuple[Any, Any]:
        """The next connection as (stream, peer address)."""
        if self._closed:
            raise ClosedResourceError("accept on a closed listener")
        try:
            fd = await self._driver.accept(self._socket)
        except OSError as error:
            raise self._closed_error(error) from error
        sock = socket.socket(fileno=fd)
        try:
            peer = sock.getpeername()
            stream = self._make_stream(sock)
        except BaseException:
            sock.close()
            raise
        return stream, peer

    def _make_stream(self, sock: socket.socket) -> SocketStream:
        return self._stream_class(sock, self._driver)


class TcpListener(_Listener):
    """A listening TCP socket; `accept()` yields TcpStreams (nodelay on by default)."""

    def __init__(self, sock: socket.socket, driver: Driver, nodelay: bool = True) -> None:
        super().__init__(sock, driver)
        self._nodelay = nodelay

    @classmethod
    def bind(cls, host: str = "127.0.0.1", port: int = 0, *, reuseport: bool = False,
             backlog: int = DEFAULT_BACKLOG, nodelay: bool = True) -> TcpListener:
        driver = _driver()
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port must be in [0, 65535], got {port}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return cls(sock, driver, nodelay)

    @classmethod
    def from_socket(cls, sock: socket.socket, *, nodelay: bool = True) -> TcpListener:
        """Adopt a bound, listening socket (e.g. one shared by thread-per-core workers)."""
        return cls(sock, _driver(), nodelay)

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def _make_stream(self, sock: socket.socket) -> SocketStream:
        if self._nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return TcpStream(sock, self._driver)

    async def accept(self) -> tuple[TcpStream, Any]:
        stream, peer = await super().accept()
        return stream, peer


class UnixListener(_Listener):
    _stream_class = UnixStream

    @classmethod
    def bind(cls, path: str, *, backlog: int = DEFAULT_BACKLOG) -> UnixListener:
        driver = _driver()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return cls(sock, driver)

    async def accept(self) -> tuple[UnixStream, Any]:
        stream, peer = await super().accept()
        return stream, peer


class DatagramSocket(_Socket):
    """UDP or Unix datagram socket with ownership-passing receive."""

    async def recv_from(self, buffer: WritableBuffer) -> tuple[int, Any, WritableBuffer]:
        """(count, sender address, buffer)."""
        self._check_open()
        view = writable_view("buffer", buffer)
        try:
            count, address = await self._driver.recvfrom_into(self._socket, view)
        except OSError as error:
            raise self._closed_error(error) from error
        return count, address, buffer

    async def send(self, buffer: ReadableBuffer) -> int:
        """Send one datagram on a connected socket (a pair, or after `connect`)."""
        return await self.send_to(buffer, None)

    def connect(self, address: Any) -> None:
        """Fix the peer (datagram connect does no I/O)."""
        self._check_open()
        self._socket.connect(address)

    async def send_to(self, buffer: ReadableBuffer, address: Any) -> int:
        self._check_open()
        view = readable_view("buffer", buffer)
        try:
            return await self._driver.sendto(self._socket, view, address)
        except OSError as error:
            raise self._closed_error(error) from error


class UdpSocket(DatagramSocket):
    @classmethod
    def bind(cls, host: str = "127.0.0.1", port: int = 0, *,
             reuseport: bool = False) -> UdpSocket:
        driver = _driver()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        return cls(sock, driver)


class UnixDatagram(DatagramSocket):
    @classmethod
    def bind(cls, path: str) -> UnixDatagram:
        driver = _driver()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(path)
        except BaseException:
            sock.close()
            raise
        return cls(sock, driver)

    @classmethod
    def pair(cls) -> tuple[UnixDatagram, UnixDatagram]:
        driver = _driver()
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        return cls(left, driver), cls(right, driver)
