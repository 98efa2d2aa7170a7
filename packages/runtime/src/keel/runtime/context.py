"""What a task yields, and which runtime and task are current on this thread.

Why a module of its own: the scheduler, cancel scopes, drivers and sync primitives all park
tasks through the same traps and ask for the current task; keeping these few definitions
below all of them avoids import cycles.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

from keel.runtime.errors import NoRuntimeError

if TYPE_CHECKING:
    from keel.runtime.scheduler import Runtime, Task

# `runtime` attribute: the Runtime running on this thread, if any.
thread_state = threading.local()

# Classes known to be traps (drivers register theirs): the per-step check is one set lookup.
TRAP_CLASSES: set[type] = set()


def register_trap_class(kind: type) -> type:
    TRAP_CLASSES.add(kind)
    return kind


def is_trap(candidate: object) -> bool:
    """Duck-typed check for traps from elsewhere: a writable `task` and an `abort()`."""
    if not callable(getattr(candidate, "abort", None)):
        return False
    try:
        candidate.task = None  # type: ignore[attr-defined]
    except AttributeError:
        return False
    return True


class Trap(Protocol):
    """What a task yields to park: `abort()` is True if the wait ended at once on cancel."""

    task: Task[Any] | None

    def abort(self) -> bool: ...


@register_trap_class
class CheckpointTrap:
    """Yielded by `checkpoint()`: resume next turn (or raise Cancelled if cancelled)."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task: Task[Any] | None = None

    def abort(self) -> bool:
        return True

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self)


@register_trap_class
class Wait:
    """A generic trap: park until someone calls `runtime.resume(task, value)`.

    `on_abort` undoes the registration (removes the task from a waiter list) and returns
    True when the task may be cancelled right away.
    """

    __slots__ = ("on_abort", "task")

    def __init__(self, on_abort: Callable[[], bool]) -> None:
        self.on_abort = on_abort
        self.task: Task[Any] | None = None

    def abort(self) -> bool:
        return self.on_abort()

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self)


def current_runtime() -> Runtime:
    """The runtime running on this thread, or NoRuntimeError."""
    runtime: Runtime | None = getattr(thread_state, "runtime", None)
    if runtime is None:
        raise NoRuntimeError(
            "no keel runtime is running on this thread: call this from a task started by "
            "keel.runtime.run(main)"
        )
    return runtime


def current_task() -> Task[Any]:
    task = current_runtime().current_task
    if task is None:
        raise NoRuntimeError("not inside a keel task (called from a runtime callback?)")
    return task


