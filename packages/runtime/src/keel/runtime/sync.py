"""Lock, Semaphore, Event for tasks of one runtime (not thread-safe; see crossthread).

Why FIFO waiter queues: fairness (a releasing task cannot starve a waiter by re-acquiring
in a loop: ownership is handed to the first waiter directly).
"""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import Any

from keel.runtime.errors import RuntimeError_, WouldBlock
from keel.runtime.scheduler import Task, Wait, checkpoint, current_task


class Event:
    """A flag tasks can wait for; once set, stays set."""

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[Task[Any]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, []
        for task in waiters:
            task.runtime.resume(task, None)

    async def wait(self) -> None:
        if self._set:
            await checkpoint()
            return
        task = current_task()
        self._waiters.append(task)

        def abort() -> bool:
            if task in self._waiters:
                self._waiters.remove(task)
            return True

        await Wait(abort)


class Semaphore:
    def __init__(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"Semaphore value must be >= 0, got {value}")
        self._value = value
        self._waiters: deque[Task[Any]] = deque()

    @property
    def value(self) -> int:
        return self._value

    def acquire_nowait(self) -> None:
        if self._value == 0 or self._waiters:
            raise WouldBlock("semaphore is at zero")
        self._value -= 1

    async def acquire(self) -> None:
        # An uncontended acquire is not a checkpoint: a cancellation between taking the
        # unit and returning would leak it.
        if self._value > 0 and not self._waiters:
            self._value -= 1
            return
        task = current_task()
        self._waiters.append(task)

        def abort() -> bool:
            # Only called while still queued: release() resumes (and un-traps) the task
            # it hands a unit to, so a granted unit is never withdrawn.
            self._waiters.remove(task)
            return True

        await Wait(abort)

    def release(self) -> None:
        if self._waiters:
            task = self._waiters.popleft()
            task.runtime.resume(task, None)  # the unit passes straight to the waiter
        else:
            self._value += 1

    async def __aenter__(self) -> Semaphore:
        await self.acquire()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.release()


class Lock:
    """A mutual-exclusion lock owned by one task at a time."""

    def __init__(self) -> None:
        self._owner: Task[Any] | None = None
        self._waiters: deque[Task[Any]] = deque()

    def locked(self) -> bool:
        return self._owner is not None

    async def acquire(self) -> None:
        task = current_task()
        if self._owner is task:
            raise RuntimeError_("Lock is not re-entrant: this task already holds it")
        if self._owner is None and not self._waiters:
            self._owner = task  # not a checkpoint, for the same reason as Semaphore
            return
        self._waiters.append(task)

        def abort() -> bool:
            if task in self._waiters:
                self._waiters.remove(task)
            return True

        await Wait(abort)

    def release(self) -> None:
        if self._owner is not current_task():
            raise RuntimeError_("Lock released by a task that does not hold it")
        if self._waiters:
            task = self._waiters.popleft()
            self._owner = task
            task.runtime.resume(task, None)
        else:
            self._owner = None

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.release()
