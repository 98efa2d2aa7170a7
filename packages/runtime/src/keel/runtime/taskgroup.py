"""Task groups: structured concurrency with error propagation (trio's nursery).

Why: a child that fails must not fail silently, and a parent must not return while its
children still run. The group waits for every child in `__aexit__`; the first error cancels
the siblings, and all errors come out together as an ExceptionGroup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

from keel.runtime.errors import Cancelled, RuntimeError_
from keel.runtime.scheduler import CancelScope, Runtime, Task, Wait, current_runtime

T = TypeVar("T")


class TaskGroup:
    """`async with TaskGroup() as group: group.spawn(fn, *args)`."""

    def __init__(self) -> None:
        self.cancel_scope = CancelScope()
        self._runtime: Runtime | None = None
        self._parent: Task[Any] | None = None
        self._children: set[Task[Any]] = set()
        self._errors: list[BaseException] = []
        self._waiting = False
        self._open = False

    async def __aenter__(self) -> TaskGroup:
        runtime = current_runtime()
        self._runtime = runtime
        self._parent = runtime.current_task
        self.cancel_scope.__enter__()
        self._open = True
        return self

    def spawn(self, function: Callable[..., Awaitable[T]], *args: Any,
              name: str | None = None) -> Task[T]:
        """Start `function(*args)` inside the group; returns its JoinHandle."""
        if not self._open or self._runtime is None:
            raise RuntimeError_("this TaskGroup is not open: spawn inside its `async with`")
        task = self._runtime.spawn_task(function, args, self.cancel_scope, group=self, name=name)
        self._children.add(task)
        return task

    def cancel(self) -> None:
        self.cancel_scope.cancel()

    def _child_done(self, task: Task[Any]) -> None:
        self._children.discard(task)
        error = task.exception
        if error is not None and not isinstance(error, Cancelled):
            self._errors.append(error)
            self.cancel_scope.cancel()
        if not self._children and self._waiting and self._parent is not None:
            self._waiting = False
            assert self._runtime is not None
            self._runtime.resume(self._parent, None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc is not None and not isinstance(exc, Cancelled):
            self._errors.append(exc)
            self.cancel_scope.cancel()
        while self._children:
            self._waiting = True
            # Cancelling the parent here only cancels the children (they are inside our
            # scope); we keep waiting for them, so abort never ends the wait early.
            await Wait(_keep_waiting)
        self._open = False
        errors, self._errors = self._errors, []
        if errors:
            self.cancel_scope.__exit__(None, None, None)
            if exc is not None and len(errors) == 1 and errors[0] is exc:
                raise BaseExceptionGroup("a task group's body failed", errors) from None
            raise BaseExceptionGroup("tasks in a task group failed", errors) from None
        return self.cancel_scope.__exit__(exc_type, exc, traceback)


def _keep_waiting() -> bool:
    return False
