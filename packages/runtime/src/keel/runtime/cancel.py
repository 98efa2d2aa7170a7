"""Cancel scopes and timeouts (trio's model).

Why scopes rather than cancelling tasks: a deadline belongs to a block of code, not to a
task; nested scopes let an inner timeout end quietly while an outer one still applies, and a
task group's children inherit the scope the group lives in.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from keel.runtime.context import current_task
from keel.runtime.errors import Cancelled, RuntimeError_, TooSlowError

if TYPE_CHECKING:
    from keel.runtime.scheduler import Runtime, Task
    from keel.runtime.timers import Timer


class CancelScope:
    """A region of code that can be cancelled as a unit, optionally at a deadline.

    Scopes nest per task; a task group's children live inside the group's scope, so
    cancelling an outer scope reaches every task below it unless a scope is `shield`ed.
    """

    def __init__(self, *, deadline: float | None = None, shield: bool = False) -> None:
        self.cancel_called = False
        self.cancelled_caught = False
        self._shield = shield
        self._deadline = deadline
        self._timer: Timer | None = None
        self._parent: CancelScope | None = None
        self._children: set[CancelScope] = set()
        self._tasks: set[Task[Any]] = set()
        self._effective = False
        self._owner: Task[Any] | None = None
        self._runtime: Runtime | None = None
        self._entered = False

    # Tree ---------------------------------------------------------------------------------
    def _attach(self, parent: CancelScope | None, runtime: Runtime) -> None:
        self._parent = parent
        self._runtime = runtime
        if parent is not None:
            parent._children.add(self)
        self._effective = self.cancel_called or (
            parent is not None and parent._effective and not self._shield)
        self._arm_deadline()

    def _detach(self) -> None:
        if self._parent is not None:
            self._parent._children.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm_deadline(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deadline is not None and self._runtime is not None and not self.cancel_called:
            self._timer = self._runtime.timers.add(self._deadline, self.cancel)

    def _update(self) -> None:
        parent = self._parent
        effective = self.cancel_called or (
            parent is not None and parent._effective and not self._shield)
        if effective == self._effective:
            return
        self._effective = effective
        if effective:
            for task in list(self._tasks):
                task._deliver_cancel()
        for child in list(self._children):
            child._update()

    # Public -------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Cancel everything inside (idempotent, callable from any task of this runtime)."""
        if self.cancel_called:
            return
        self.cancel_called = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._update()

    @property
    def deadline(self) -> float | None:
        return self._deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._deadline = value
        self._arm_deadline()

    @property
    def shield(self) -> bool:
        return self._shield

    @shield.setter
    def shield(self, value: bool) -> None:
        self._shield = value
        self._update()

    @property
    def cancelled(self) -> bool:
        """True if code inside would see Cancelled at its next checkpoint."""
        return self._effective

    def __enter__(self) -> CancelScope:
        if self._entered:
            raise RuntimeError_("a CancelScope can be entered only once")
        task = current_task()
        self._entered = True
        self._owner = task
        parent = task._scope
        self._attach(parent, task.runtime)
        parent._tasks.discard(task)
        self._tasks.add(task)
        task._scope = self
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        task = self._owner
        if task is None or task._scope is not self:
            raise RuntimeError_("CancelScope exited out of order or from another task")
        parent = self._parent
        assert parent is not None
        self._tasks.discard(task)
        parent._tasks.add(task)
        task._scope = parent
        self._detach()
        if exc is None or not self.cancel_called:
            return False
        if isinstance(exc, Cancelled):
            self.cancelled_caught = True
            return True
        if isinstance(exc, BaseExceptionGroup):
            rest = exc.subgroup(lambda error: not isinstance(error, Cancelled))
            if rest is None:
                self.cancelled_caught = True
                return True
            if rest is not exc:
                raise rest from exc.__cause__
        return False


def move_on_after(seconds: float, *, shield: bool = False) -> CancelScope:
    """A scope cancelled `seconds` from now; leaving it by cancellation is not an error."""
    if seconds < 0:
        raise ValueError(f"move_on_after needs seconds >= 0, got {seconds}")
    return CancelScope(deadline=time.monotonic() + seconds, shield=shield)


def move_on_at(deadline: float) -> CancelScope:
    return CancelScope(deadline=deadline)


class FailAfter:
    """`with fail_after(s):` raises TooSlowError if the block is cancelled by its deadline."""

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"fail_after needs seconds >= 0, got {seconds}")
        self._seconds = seconds
        self.scope: CancelScope | None = None

    def __enter__(self) -> CancelScope:
        self.scope = CancelScope(deadline=time.monotonic() + self._seconds)
        return self.scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        assert self.scope is not None
        swallowed = self.scope.__exit__(exc_type, exc, traceback)
        if self.scope.cancelled_caught:
            raise TooSlowError(f"block did not finish within {self._seconds} s") from exc
        return swallowed


def fail_after(seconds: float) -> FailAfter:
    return FailAfter(seconds)


