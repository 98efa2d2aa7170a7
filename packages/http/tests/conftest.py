"""Shared fixtures: a real keel server on 127.0.0.1 in a thread, and raw-socket clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from keel.http import Server, ServerConfig
from keel.http.server.backend import get_backend

BACKENDS = ["runtime", "asyncio", "trio"]


def _warm_up_uvloop() -> None:
    """uvloop opens one process-wide pipe with its first loop; open it before leak checks."""
    try:
        import uvloop
    except ImportError:
        return
    import asyncio

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.sleep(0))


_warm_up_uvloop()
STARTUP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 10.0


@contextmanager
def running_server(app: Any, backend: str | None = None, config: ServerConfig | None = None,
                   **options: Any) -> Iterator[tuple[Server, tuple[str, int]]]:
    """A Server on an ephemeral port, its loop in a thread; shut down and joined on exit."""
    server = Server(app, host="127.0.0.1", port=0,
                    backend=get_backend(backend) if backend else None, config=config, **options)
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.backend.run(lambda: server.serve(ready=lambda _: ready.set()))
        except BaseException as error:  # reported to the test below
            failure.append(error)
            ready.set()

    thread = threading.Thread(target=run, name=f"keel-http-test-{server.backend.name}")
    thread.start()
    try:
        assert ready.wait(STARTUP_TIMEOUT), "server did not start"
        if failure:
            raise failure[0]
        yield server, server.addresses[0]
    finally:
        server.shutdown_threadsafe()
        thread.join(STARTUP_TIMEOUT + server.config.timeouts.shutdown)
        assert not thread.is_alive(), "server thread did not stop"
    if failure:
        raise failure[0]


def connect(address: tuple[str, int], timeout: float = CLIENT_TIMEOUT) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_until_closed(sock: socket.socket, limit: int = 1 << 22) -> bytes:
    """Everything the server sends until it closes (bounded)."""
    parts: list[bytes] = []
    total = 0
    while total < limit:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        parts.append(data)
        total += len(data)
    return b"".join(parts)


class ResponseReader:
    """Parses responses off a socket, one at a time (Content-Length or chunked)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        while True:
            status_line = self._line()
            status = int(status_line.split()[1])
            headers: dict[str, str] = {}
            while True:
                line = self._line()
                if not line:
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if status >= 200 or status == 101:
                break
        if head_request or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int(self._line(), 16)
                if size == 0:
                    self._line()
                    break
                parts.append(self._exactly(size))
                self._line()
            return status, headers, b"".join(parts)
        if "content-length" in headers:
            return status, headers, self._exactly(int(headers["content-length"]))
        body = self.buffer + read_until_closed(self.sock)
        self.buffer = b""
        return status, headers, body


def request(address: tuple[str, int], raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(address) as sock:
        sock.sendall(raw)
        return ResponseReader(sock).read(head_request=raw.startswith(b"HEAD"))


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
