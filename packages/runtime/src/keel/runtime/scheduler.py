"""The scheduler: tasks as coroutines, one ready queue, the loop turn.

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
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from keel.runtime._hotpath import register_task_class, run_ready
from keel.runtime.cancel import (
    CancelScope,
    FailAfter,
    fail_after,
    move_on_after,
    move_on_at,
)
from keel.runtime.context import (
    TRAP_CLASSES,
    CheckpointTrap,
    Trap,
    Wait,
    current_runtime,
    current_task,
    is_trap,
    register_trap_class,
    thread_state,
)
from keel.runtime.errors import Cancelled, LeakError, RuntimeError_
from keel.runtime.timers import TimerHeap

if TYPE_CHECKING:
    from keel.runtime.drivers.base import Driver
    from keel.runtime.taskgroup import TaskGroup

logger = logging.getLogger("keel.runtime")

T = TypeVar("T")
SHUTDOWN_GRACE_SECONDS = 5.0
DRAIN_TURNS = 20
DRAIN_POLL_SECONDS = 0.01

__all__ = [
    "TRAP_CLASSES", "CancelScope", "FailAfter", "Runtime", "Task", "TaskCancelledError", "Trap",
    "Wait", "checkpoint", "current_runtime", "current_task", "fail_after", "move_on_after",
    "move_on_at", "register_trap_class", "run", "sleep", "sleep_until", "spawn",
]


async def checkpoint() -> None:
    """Let other tasks run and deliver a pending cancellation (`await sleep(0)`)."""
    current_runtime()
    await CheckpointTrap()


async def sleep(seconds: float) -> None:
    """Suspend this task for `seconds` (0 is a checkpoint)."""
    if seconds < 0:
        raise ValueError(f"sleep needs seconds >= 0, got {seconds}")
    runtime = current_runtime()
    if seconds == 0:
        await CheckpointTrap()
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
    # The common step (send a value, park on the yielded trap) is keel.runtime._hotpath's
    # run_ready; it calls `_park`, `_finish` and (to throw an error in) `_step` here.
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
        self._park(trap)

    def _park(self, trap: Any) -> None:
        """Park on the trap the coroutine yielded (or fail it if it is not a trap)."""
        if trap.__class__ not in TRAP_CLASSES and not is_trap(trap):
            kind = type(trap).__name__
            self.runtime._ready.append((self, None, TypeError(
                f"keel.runtime cannot await a {kind}: only keel awaitables (and coroutines "
                "built on them) run here; use keel.runtime.asyncio_loop for asyncio code")))
            return
        trap.task = self
        self._trap = trap
        if self._scope._effective:
            self._deliver_cancel()
        elif trap.__class__ is CheckpointTrap:
            self._trap = None
            self.runtime._ready.append((self, None, None))

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
register_task_class(Task)  # the C ready loop reads its slots directly


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
            if not isinstance(coro, Awaitable):
                raise TypeError(f"spawn needs an async function, got {function!r} returning "
                                f"{type(coro).__name__}")
            coro = _awaiting(coro)  # e.g. a stream's read (a C awaitable, not a coroutine)
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
        run_ready(ready, self)
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
        if getattr(thread_state, "runtime", None) is not None:
            raise RuntimeError_("a keel runtime is already running on this thread")
        thread_state.runtime = self
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
                try:
                    self._shutdown(strict)
                except LeakError as leak:
                    # The main task's own failure is the news; the leak is likely its
                    # consequence, so it rides along as a note instead of replacing it.
                    if not main.done or main._error is None:
                        raise
                    main._error.add_note(f"keel.runtime shutdown also found: {leak}")
            if interrupted and (main._error is None or isinstance(main._error, Cancelled)):
                raise KeyboardInterrupt
            if main._error is not None:
                raise main._error
            return main._result  # type: ignore[return-value]
        finally:
            thread_state.runtime = None
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


async def _awaiting(awaitable: Awaitable[T]) -> T:
    return await awaitable


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
