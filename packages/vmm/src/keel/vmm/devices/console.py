"""Where the serial console goes: stdout, a file, or a socket; and where its input comes from.

Why a thread with a wake-up pipe: host input (stdin, a socket) arrives whenever it likes and
must reach the UART without the vCPU thread polling; `select` on the input plus a pipe lets
close() stop the reader at once, so no thread outlives the console.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import BinaryIO, Self

from keel.vmm.errors import VmmError

logger = logging.getLogger("keel.vmm")

READ_CHUNK = 4096
CONSOLE_SPECS = "stdout, none, file:PATH, unix:PATH or tcp:PORT (127.0.0.1)"


class Console:
    """A console endpoint: `write` takes guest output; input goes to `deliver` once started."""

    def __init__(self, output: BinaryIO | socket.socket | None, input_fd: int | None,
                 owned: list[BinaryIO | socket.socket]) -> None:
        self._output = output
        self._input_fd = input_fd
        self._owned = owned
        self._thread: threading.Thread | None = None
        self._wake_read, self._wake_write = os.pipe()
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        output = self._output
        if output is None:
            return
        try:
            if isinstance(output, socket.socket):
                output.sendall(data)
            else:
                output.write(data)
                output.flush()
        except OSError as error:
            logger.warning("console output failed, dropping it from now on: %s", error)
            self._output = None

    def start_input(self, deliver: Callable[[bytes], int]) -> None:
        """Forward input bytes to `deliver` (e.g. Serial16550.feed_input) on a thread."""
        if self._input_fd is None:
            return
        self._thread = threading.Thread(target=self._pump, args=(self._input_fd, deliver),
                                        name="keel-console-input", daemon=True)
        self._thread.start()

    def _pump(self, fd: int, deliver: Callable[[bytes], int]) -> None:
        while True:
            ready, _, _ = select.select([fd, self._wake_read], [], [])
            if self._wake_read in ready:
                return
            try:
                data = os.read(fd, READ_CHUNK)
            except OSError:
                return
            if not data:
                return
            deliver(data)

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._wake_write, b"x")
            self._thread.join()
            self._thread = None
        for endpoint in self._owned:
            endpoint.close()
        self._owned.clear()
        self._output = None
        for fd in (self._wake_read, self._wake_write):
            if fd >= 0:
                os.close(fd)
        self._wake_read = self._wake_write = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def open_console(spec: str, *, read_stdin: bool = True) -> Console:
    """A console from a spec: stdout, none, file:PATH, unix:PATH (connect), tcp:PORT (connect)."""
    if spec == "none":
        return Console(None, None, [])
    if spec == "stdout":
        stdin_fd = sys.stdin.fileno() if read_stdin and not sys.stdin.closed else None
        return Console(sys.stdout.buffer, stdin_fd, [])
    kind, _, target = spec.partition(":")
    if kind == "file" and target:
        handle = open(target, "ab")  # noqa: SIM115 - owned by the Console, closed by it
        return Console(handle, None, [handle])
    if kind in ("unix", "tcp") and target:
        try:
            if kind == "unix":
                connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                address: str | tuple[str, int] = target
            else:
                connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                address = ("127.0.0.1", int(target))
        except ValueError:
            raise VmmError(f"console spec {spec!r}: tcp needs a port number") from None
        try:
            connection.connect(address)
        except OSError as error:
            connection.close()
            raise VmmError(f"console {spec!r}: cannot connect: {error}") from None
        return Console(connection, connection.fileno(), [connection])
    raise VmmError(f"console spec {spec!r} not understood; expected {CONSOLE_SPECS}")
