"""A channel from any thread into one runtime, its receiver woken through eventfd.

Why through the driver's eventfd: the receiving runtime may be blocked in io_uring_enter
(or epoll_wait); writing the eventfd the ring polls wakes exactly that thread with one
syscall, and values travel through a lock-free deque (append/popleft are atomic in CPython).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Generic, TypeVar

from keel.runtime.errors import ClosedResourceError, EndOfChannel, RuntimeError_
from keel.runtime.scheduler import Runtime, Task, Wait, current_runtime, current_task

T = TypeVar("T")


class ThreadChannel(Generic[T]):
    """Unbounded: `send()` from any thread, `await receive()` in the owning runtime."""

    def __init__(self) -> None:
        self._runtime: Runtime = current_runtime()
        self._values: deque[T] = deque()
        self._waiter: Task[Any] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def send(self, value: T) -> None:
        """Thread-safe; never blocks."""
        if self._closed:
            raise ClosedResourceError("send on a closed ThreadChannel")
        self._values.append(value)
        if threading.get_ident() == self._runtime.thread_id:
            self._wake_local()
        else:
            self._runtime.call_soon_threadsafe(self._wake_local)

    def _wake_local(self) -> None:
        waiter = self._waiter
        if waiter is not None and (self._values or self._closed):
            self._waiter = None
            waiter.runtime.resume(waiter, None)

    async def receive(self) -> T:
        while True:
            if self._values:
                return self._values.popleft()
            if self._closed:
                raise EndOfChannel("ThreadChannel closed")
            if self._waiter is not None:
                raise RuntimeError_("another task is already receiving from this channel")
            task = current_task()
            if task.runtime is not self._runtime:
                raise RuntimeError_("receive from the runtime that created the channel")
            self._waiter = task

            def abort() -> bool:
                self._waiter = None
                return True

            await Wait(abort)

    def close(self) -> None:
        """Thread-safe: the receiver drains what was sent, then sees EndOfChannel."""
        self._closed = True
        if threading.get_ident() == self._runtime.thread_id:
            self._wake_local()
        else:
            self._runtime.call_soon_threadsafe(self._wake_local)
