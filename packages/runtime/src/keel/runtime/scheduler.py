"""The scheduler: tasks as coroutines, one ready queue, cancel scopes, the loop turn.

Why this shape (trio's): a task suspends only by yielding a *trap* object, which knows how to
abort what it waits for. Every wait in the runtime (an io_uring operation, an epoll readiness
wait, a timer, a lock) is such a trap, so cancellation works the same everywhere: the scope
marks itself cancelled, each parked task inside it is asked to abort, and a trap that cannot
abort at once (an in-flight io_uring operation) resumes the task only when the kernel is done
with its buffer.

The loop turn is: run every ready task once, then one `driver.poll(timeout)` (for io_uring:
one io_uring_enter that submits the SQEs the tasks prepared and waits), then fire due timers.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from keel.runtime.errors import (
    Cancelled,
    LeakError,
    NoRuntimeError,
    RuntimeError_,
    TooSlowError,
)
from keel.runtime.timers import Timer, TimerHeap

if TYPE_CHECKING:
    from keel.runtime.drivers.base import Driver
    from keel.runtime.taskgroup import TaskGroup

logger = logging.getLogger("keel.runtime")

T = TypeVar("T")
SHUTDOWN_GRACE_SECONDS = 5.0
DRAIN_TURNS = 20
DRAIN_POLL_SECONDS = 0.01
_local = threading.local()

# Classes known to be traps (drivers register theirs): the per-step check is one set lookup.
TRAP_CLASSES: set[type] = set()


def register_trap_class(kind: type) -> type:
    TRAP_CLASSES.add(kind)
    return kind


def _is_trap(candidate: object) -> bool:
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
class _Checkpoint:
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
    runtime: Runtime | None = getattr(_local, "runtime", None)
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


async def checkpoint() -> None:
    """Let other tasks run and deliver a pending cancellation (`await sleep(0)`)."""
    current_runtime()
    await _Checkpoint()


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


async def sleep(seconds: float) -> None:
    """Suspend this task for `seconds` (0 is a checkpoint)."""
    if seconds < 0:
        raise ValueError(f"sleep needs seconds >= 0, got {seconds}")
    runtime = current_runtime()
    if seconds == 0:
        await _Checkpoint()
        return
    await sleep_until(runtime, time.monotonic() + seconds)


async def sleep_until(runtime: Runtime, deadline: float) -> None:
    task = runtime.current_task
    assert task is not None
    timer = runtime.timers.add(deadline, lambda: runtime.resume(task, None))

    def abort() -> bool:
        timer.cancel()
        return True

    await Wait(abort)


class TaskCancelledError(RuntimeError_):
    """`join()` on a task that ended by cancellation."""


class Task(Generic[T]):
    """A coroutine driven by the runtime; also its own join handle.

    `await task` (or `await task.join()`) returns its result or raises its exception;
    `task.cancel()` cancels it (the canceller does not wait).
    """

    __slots__ = ("_error", "_group", "_joiners", "_own_scope", "_result", "_scope", "_trap",
                 "coro", "done", "name", "runtime")

    def __init__(self, runtime: Runtime, coro: Coroutine[Any, Any, T], name: str,
                 parent_scope: CancelScope, group: TaskGroup | None) -> None:
        self.runtime = runtime
        self.coro = coro
        self.name = name
        self.done = False
        self._result: T | None = None
        self._error: BaseException | None = None
        self._trap: Trap | None = None
        self._joiners: list[Task[Any]] = []
        self._group = group
        self._own_scope = CancelScope()
        self._own_scope._attach(parent_scope, runtime)
        self._own_scope._entered = True
        self._own_scope._owner = self
        self._own_scope._tasks.add(self)
        self._scope = self._own_scope

    def __repr__(self) -> str:
        state = "done" if self.done else ("parked" if self._trap else "ready")
        return f"<Task {self.name} {state}>"

    # Driving ------------------------------------------------------------------------------
    def _step(self, value: Any, error: BaseException | None) -> None:
        runtime = self.runtime
        runtime.current_task = self
        try:
            trap = self.coro.send(value) if error is None else self.coro.throw(error)
        except StopIteration as stop:
            runtime.current_task = None
            self._finish(stop.value, None)
            return
        except BaseException as failure:  # delivered to joiners / the group
            runtime.current_task = None
            self._finish(None, failure)
            return
        runtime.current_task = None
        if trap.__class__ not in TRAP_CLASSES and not _is_trap(trap):
            kind = type(trap).__name__
            runtime._ready.append((self, None, TypeError(
                f"keel.runtime cannot await a {kind}: only keel awaitables (and coroutines "
                "built on them) run here; use keel.runtime.asyncio_loop for asyncio code")))
            return
        trap.task = self
        self._trap = trap
        if self._scope._effective:
            self._deliver_cancel()
        elif trap.__class__ is _Checkpoint:
            self._trap = None
            runtime._ready.append((self, None, None))

    def _deliver_cancel(self) -> None:
        trap = self._trap
        if trap is None:
            return  # running or already resumed: it sees the cancel at its next checkpoint
        self._trap = None
        if trap.abort():
            self.runtime._ready.append((self, None, Cancelled()))

    def _finish(self, result: Any, error: BaseException | None) -> None:
        self.done = True
        self._result = result
        self._error = error
        self._scope._tasks.discard(self)
        self._own_scope._detach()
        runtime = self.runtime
        runtime._tasks.discard(self)
        for joiner in self._joiners:
            runtime.resume(joiner, None)
        joined = bool(self._joiners)
        self._joiners.clear()
        if self._group is not None:
            self._group._child_done(self)
        elif (error is not None and not joined and not isinstance(error, Cancelled)
              and self is not runtime.main_task):
            logger.error("task %s failed and nobody joined it", self.name, exc_info=error)

    # Public -------------------------------------------------------------------------------
    def cancel(self) -> None:
        self._own_scope.cancel()

    def result(self) -> T:
        """The result of a finished task (raises its exception)."""
        if not self.done:
            raise RuntimeError_(f"task {self.name} has not finished")
        if self._error is not None:
            if isinstance(self._error, Cancelled):
                raise TaskCancelledError(f"task {self.name} was cancelled")
            raise self._error
        return self._result  # type: ignore[return-value]

    @property
    def exception(self) -> BaseException | None:
        return self._error

    async def join(self) -> T:
        if not self.done:
            me = current_task()
            if me is self:
                raise RuntimeError_(f"task {self.name} cannot join itself")
            self._joiners.append(me)

            def abort() -> bool:
                if me in self._joiners:
                    self._joiners.remove(me)
                return True

            await Wait(abort)
        return self.result()

    def __await__(self) -> Generator[Any, Any, T]:
        return self.join().__await__()


JoinHandle = Task


class Runtime:
    """One thread's scheduler over one driver. Use `keel.runtime.run`, not this directly."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.timers = TimerHeap()
        self._ready: deque[tuple[Task[Any], Any, BaseException | None]] = deque()
        self._tasks: set[Task[Any]] = set()
        self._threadsafe: deque[Callable[[], object]] = deque()
        self.current_task: Task[Any] | None = None
        self.main_task: Task[Any] | None = None
        self.root_scope = CancelScope()
        self.root_scope._attach(None, self)
        self.thread_id = threading.get_ident()
        self._task_counter = 0
        driver.attach(self)

    # Used by traps and drivers ------------------------------------------------------------
    def resume(self, task: Task[Any], value: Any) -> None:
        task._trap = None
        self._ready.append((task, value, None))

    def resume_error(self, task: Task[Any], error: BaseException) -> None:
        task._trap = None
        self._ready.append((task, None, error))

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the runtime's thread at its next turn (callable from any thread)."""
        self._threadsafe.append(callback)
        self.driver.wake()

    # Tasks -------------------------------------------------------------------------------
    def spawn_task(self, function: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                   parent_scope: CancelScope, group: TaskGroup | None = None,
                   name: str | None = None) -> Task[T]:
        coro = function(*args)
        if not isinstance(coro, Coroutine):
            raise TypeError(f"spawn needs an async function, got {function!r} returning "
                            f"{type(coro).__name__}")
        self._task_counter += 1
        label = name or str(getattr(function, "__qualname__", "task"))
        task: Task[T] = Task(self, coro, label,
                             parent_scope, group)
        self._tasks.add(task)
        self._ready.append((task, None, None))
        return task

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    # The loop -----------------------------------------------------------------------------
    def _turn(self, finished: Callable[[], bool]) -> None:
        ready = self._ready
        for _ in range(len(ready)):
            task, value, error = ready.popleft()
            task._step(value, error)
        if self._threadsafe:
            self._run_threadsafe()
        if finished():
            return
        if ready:
            timeout: float | None = 0.0
        else:
            deadline = self.timers.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.driver.poll(timeout)
        if self.timers._heap:
            self.timers.fire_due(time.monotonic())

    def _no_tasks(self) -> bool:
        return not self._tasks

    def _run_threadsafe(self) -> None:
        pending = self._threadsafe
        for _ in range(len(pending)):
            callback = pending.popleft()
            try:
                callback()
            except Exception:
                logger.exception("thread-safe callback %r failed", callback)

    def run(self, function: Callable[..., Awaitable[T]], args: tuple[Any, ...],
            strict: bool = False) -> T:
        if getattr(_local, "runtime", None) is not None:
            raise RuntimeError_("a keel runtime is already running on this thread")
        _local.runtime = self
        interrupted: list[bool] = []
        previous_handler = self._catch_interrupt(interrupted)
        try:
            main = self.spawn_task(function, args, self.root_scope, name="main")
            self.main_task = main
            try:
                finished = _done_checker(main)
                while not main.done:
                    self._turn(finished)
            finally:
                self._shutdown(strict)
            if interrupted and (main._error is None or isinstance(main._error, Cancelled)):
                raise KeyboardInterrupt
            if main._error is not None:
                raise main._error
            return main._result  # type: ignore[return-value]
        finally:
            _local.runtime = None
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)

    def _catch_interrupt(self, interrupted: list[bool]) -> Any:
        """Turn Ctrl-C into a cancellation of the main task (then KeyboardInterrupt).

        Why: Python raises KeyboardInterrupt wherever the main thread happens to be, which
        could be the middle of the scheduler. Instead the handler only queues a cancel (a
        deque append and an eventfd write, both safe there); every task unwinds through its
        `finally` blocks and `run` raises KeyboardInterrupt once shutdown is complete.
        Only when SIGINT still has Python's default handler, on the main thread.
        """
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            return None

        def on_interrupt(number: int, frame: Any) -> None:
            if interrupted:
                raise KeyboardInterrupt  # a second Ctrl-C: the user insists
            interrupted.append(True)
            main = self.main_task
            if main is not None:
                self.call_soon_threadsafe(main.cancel)

        return signal.signal(signal.SIGINT, on_interrupt)

    def _shutdown(self, strict: bool) -> None:
        """Cancel every remaining task, wait (bounded) for them, then close the driver.

        The leak check: tasks that do not end, and (with `strict`) kernel operations still
        in flight once every task ended, which means a resource was never closed.
        """
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        try:
            self.root_scope.cancel()
            while self._tasks and time.monotonic() < deadline:
                self._turn(self._no_tasks)
            stuck = sorted(task.name for task in self._tasks)
            # Cancellations submitted by the last closes complete within a few turns.
            for _ in range(DRAIN_TURNS):
                if not self.driver.in_flight():
                    break
                self.driver.poll(DRAIN_POLL_SECONDS)
            open_operations = self.driver.in_flight()
        finally:
            self.driver.close()
        if stuck:
            raise LeakError(f"tasks still running {SHUTDOWN_GRACE_SECONDS} s after shutdown "
                            f"began: {stuck}")
        if open_operations:
            message = (f"{open_operations} I/O operations were still in flight after every "
                       "task ended (a listener, stream or file left open?)")
            if strict:
                raise LeakError(message)
            logger.warning(message)


def _done_checker(task: Task[Any]) -> Callable[[], bool]:
    return lambda: task.done


def run(function: Callable[..., Awaitable[T]], *args: Any, driver: str | Driver | None = None,
        ring_entries: int | None = None, strict: bool = False) -> T:
    """Run `function(*args)` as the main task of a new runtime on this thread.

    `driver` is "io_uring", "epoll", a Driver instance, or None for the probe's choice
    (overridden by the KEEL_RUNTIME_DRIVER environment variable). `strict` turns the
    shutdown leak check's warning (operations still in flight) into a LeakError.
    """
    from keel.runtime.drivers import create_driver

    chosen = create_driver(driver, ring_entries=ring_entries)
    return Runtime(chosen).run(function, args, strict)


def spawn(function: Callable[..., Awaitable[T]], *args: Any, name: str | None = None) -> Task[T]:
    """Start a detached task (cancelled when the main task ends); returns its JoinHandle."""
    runtime = current_runtime()
    return runtime.spawn_task(function, args, runtime.root_scope, name=name)
