"""Receive POSIX signals as values in a task.

Why the wakeup fd: Python runs signal handlers only between bytecodes of the main thread, and
a handler that touched the scheduler could run in the middle of a loop turn. Instead each
signal number is written (by the interpreter's C handler) to a socket that the runtime reads
like any other stream, so signals arrive in order, in task context.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable
from types import FrameType, TracebackType
from typing import Any, Self

from keel.runtime.errors import ClosedResourceError, RuntimeError_
from keel.runtime.net import UnixStream
from keel.runtime.scheduler import current_runtime

READ_BYTES = 64
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _ignore(number: int, frame: FrameType | None) -> None:
    """Installed so the default action (terminate) does not run; the wakeup fd reports."""


class SignalReceiver:
    """`with open_signal_receiver(SIGINT, SIGTERM) as signals: async for number in signals:`"""

    def __init__(self, numbers: tuple[int, ...]) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError_("signals can only be received on the main thread")
        if not numbers:
            raise ValueError("open_signal_receiver needs at least one signal")
        current_runtime()
        self._numbers = tuple(signal.Signals(number) for number in numbers)
        self._read, write = socket.socketpair()
        write.setblocking(False)
        self._write = write
        self._previous_wakeup = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
        self._previous: dict[int, Handler] = {}
        for number in self._numbers:
            self._previous[number] = signal.signal(number, _ignore)
        self._stream = UnixStream(self._read, current_runtime().driver)
        self._pending = bytearray()
        self._closed = False

    async def receive(self) -> int:
        """The next signal number delivered to this process."""
        while not self._pending:
            if self._closed:
                raise ClosedResourceError("signal receiver is closed")
            buffer = bytearray(READ_BYTES)
            count, buffer = await self._stream.read(buffer)
            if count == 0:
                raise ClosedResourceError("signal receiver is closed")
            self._pending += bytes(byte for byte in buffer[:count] if byte in self._numbers)
        number = self._pending.pop(0)
        return number

    def __aiter__(self) -> AsyncIterator[int]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[int]:
        while True:
            yield await self.receive()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        signal.set_wakeup_fd(self._previous_wakeup)
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._stream.close()
        self._write.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def open_signal_receiver(*numbers: int) -> SignalReceiver:
    return SignalReceiver(numbers)
