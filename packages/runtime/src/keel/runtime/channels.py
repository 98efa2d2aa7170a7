"""Channels between tasks of one runtime: mpsc (bounded), oneshot, broadcast.

Why bounded mpsc: a fast producer must feel backpressure (send waits when the buffer is
full) instead of growing memory without limit. Closing follows trio's memory channels:
receivers see EndOfChannel once every sender is closed and the buffer is drained; senders
see BrokenChannelError once the receiver is closed.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from keel.runtime.errors import (
    BrokenChannelError,
    ClosedResourceError,
    EndOfChannel,
    RuntimeError_,
    WouldBlock,
)
from keel.runtime.scheduler import Task, Wait, current_task

T = TypeVar("T")
MAX_CAPACITY = 1 << 24


class _State(Generic[T]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buffer: deque[T] = deque()
        self.senders = 0
        self.receiver_open = True
        self.send_waiters: deque[tuple[Task[Any], T]] = deque()
        self.receive_waiters: deque[Task[Any]] = deque()


class Sender(Generic[T]):
    """The sending end of an mpsc channel; `clone()` for more producers."""

    def __init__(self, state: _State[T]) -> None:
        self._state = state
        self._closed = False
        state.senders += 1

    def clone(self) -> Sender[T]:
        if self._closed:
            raise ClosedResourceError("cannot clone a closed sender")
        return Sender(self._state)

    def send_nowait(self, value: T) -> None:
        state = self._state
        if self._closed:
            raise ClosedResourceError("send on a closed sender")
        if not state.receiver_open:
            raise BrokenChannelError("the receiver is closed")
        if state.receive_waiters:
            task = state.receive_waiters.popleft()
            task.runtime.resume(task, (True, value))
            return
        if len(state.buffer) >= state.capacity:
            raise WouldBlock(f"channel buffer is full ({state.capacity})")
        state.buffer.append(value)

    async def send(self, value: T) -> None:
        """Send, waiting while the buffer is full."""
        try:
            self.send_nowait(value)
            return
        except WouldBlock:
            pass
        task = current_task()
        entry = (task, value)
        state = self._state
        state.send_waiters.append(entry)

        def abort() -> bool:
            state.send_waiters.remove(entry)
            return True

        error = await Wait(abort)
        if error is not None:
            raise error

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        state = self._state
        state.senders -= 1
        if state.senders == 0:
            while state.receive_waiters:
                task = state.receive_waiters.popleft()
                task.runtime.resume(task, (False, None))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class Receiver(Generic[T]):
    def __init__(self, state: _State[T]) -> None:
        self._state = state

    def receive_nowait(self) -> T:
        state = self._state
        if not state.receiver_open:
            raise ClosedResourceError("receive on a closed receiver")
        if state.buffer:
            value = state.buffer.popleft()
            self._admit_sender()
            return value
        if state.send_waiters:  # capacity 0: hand over directly
            task, value = state.send_waiters.popleft()
            task.runtime.resume(task, None)
            return value
        if state.senders == 0:
            raise EndOfChannel("every sender is closed")
        raise WouldBlock("channel is empty")

    def _admit_sender(self) -> None:
        state = self._state
        if state.send_waiters and len(state.buffer) < state.capacity:
            task, value = state.send_waiters.popleft()
            state.buffer.append(value)
            task.runtime.resume(task, None)

    async def receive(self) -> T:
        try:
            return self.receive_nowait()
        except WouldBlock:
            pass
        task = current_task()
        state = self._state
        state.receive_waiters.append(task)

        def abort() -> bool:
            state.receive_waiters.remove(task)
            return True

        ok, value = await Wait(abort)
        if not ok:
            raise EndOfChannel("every sender is closed")
        return value  # type: ignore[no-any-return]

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        state = self._state
        if not state.receiver_open:
            return
        state.receiver_open = False
        state.buffer.clear()
        while state.send_waiters:
            task, _ = state.send_waiters.popleft()
            task.runtime.resume(task, BrokenChannelError("the receiver was closed"))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def channel(capacity: int) -> tuple[Sender[Any], Receiver[Any]]:
    """A bounded multi-producer single-consumer channel (capacity 0: rendezvous)."""
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
    if not 0 <= capacity <= MAX_CAPACITY:
        raise ValueError(f"capacity must be in [0, {MAX_CAPACITY}], got {capacity}")
    state: _State[Any] = _State(capacity)
    return Sender(state), Receiver(state)


class Oneshot(Generic[T]):
    """One value, sent once, received once."""

    def __init__(self) -> None:
        self._has_value = False
        self._value: T | None = None
        self._waiter: Task[Any] | None = None
        self._sent = False

    def send(self, value: T) -> None:
        if self._sent:
            raise RuntimeError_("a oneshot channel can be sent to only once")
        self._sent = True
        self._has_value = True
        self._value = value
        if self._waiter is not None:
            task, self._waiter = self._waiter, None
            task.runtime.resume(task, None)

    async def receive(self) -> T:
        if not self._has_value:
            if self._waiter is not None:
                raise RuntimeError_("another task is already receiving this oneshot")
            task = current_task()
            self._waiter = task

            def abort() -> bool:
                self._waiter = None
                return True

            await Wait(abort)
        return self._value  # type: ignore[return-value]


class Lagged(RuntimeError_):
    """A broadcast receiver fell behind; `missed` values were dropped for it."""

    def __init__(self, missed: int) -> None:
        super().__init__(f"broadcast receiver lagged and missed {missed} values")
        self.missed = missed


class Broadcast(Generic[T]):
    """Every subscriber gets every value sent after it subscribed (bounded per subscriber)."""

    def __init__(self, capacity: int) -> None:
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be in [1, {MAX_CAPACITY}], got {capacity}")
        self.capacity = capacity
        self._subscribers: set[BroadcastReceiver[T]] = set()
        self._closed = False

    def subscribe(self) -> BroadcastReceiver[T]:
        receiver = BroadcastReceiver(self)
        self._subscribers.add(receiver)
        return receiver

    def send(self, value: T) -> int:
        """Deliver to every subscriber; returns how many got it."""
        if self._closed:
            raise ClosedResourceError("send on a closed broadcast channel")
        for receiver in self._subscribers:
            receiver._deliver(value)
        return len(self._subscribers)

    def close(self) -> None:
        self._closed = True
        for receiver in self._subscribers:
            receiver._wake()


class BroadcastReceiver(Generic[T]):
    def __init__(self, channel: Broadcast[T]) -> None:
        self._channel = channel
        self._queue: deque[T] = deque()
        self._missed = 0
        self._waiter: Task[Any] | None = None

    def _deliver(self, value: T) -> None:
        if len(self._queue) >= self._channel.capacity:
            self._queue.popleft()
            self._missed += 1
        self._queue.append(value)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            task, self._waiter = self._waiter, None
            task.runtime.resume(task, None)

    async def receive(self) -> T:
        while True:
            if self._missed:
                missed, self._missed = self._missed, 0
                raise Lagged(missed)
            if self._queue:
                return self._queue.popleft()
            if self._channel._closed:
                raise EndOfChannel("the broadcast channel is closed")
            task = current_task()
            self._waiter = task

            def abort() -> bool:
                self._waiter = None
                return True

            await Wait(abort)

    def close(self) -> None:
        self._channel._subscribers.discard(self)
