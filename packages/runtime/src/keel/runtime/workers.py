"""Thread-per-core: N workers, one runtime (one ring) each, pinned to cores.

Why share nothing: each worker owns its ring, its tasks and its sockets; connections are
spread across workers by the kernel through SO_REUSEPORT (every worker binds its own
listener to the same port), so no lock or queue sits between workers on the hot path.
Workers are threads (cheap, share memory, but share the GIL) or processes (true parallelism
for Python code). SIGINT/SIGTERM stop every worker: their main tasks are cancelled, so
cleanup runs in task context, and `run()` returns.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from keel.runtime.errors import Cancelled, RuntimeError_
from keel.runtime.scheduler import Runtime, current_runtime, run

logger = logging.getLogger("keel.runtime")
JOIN_POLL_SECONDS = 0.1
PROCESS_STOP_SECONDS = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
WorkerMain = Callable[..., Awaitable[Any]]


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def reserve_port(host: str = "127.0.0.1") -> int:
    """A free TCP port that SO_REUSEPORT listeners of the workers can all bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class _WorkerError(RuntimeError_):
    """A worker's main raised; the message names the worker."""


def _pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})  # pid 0: the calling thread only


async def _worker_root(pool: WorkerPool, index: int, main: WorkerMain,
                       args: tuple[Any, ...]) -> Any:
    runtime = current_runtime()
    with pool._lock:
        pool._runtimes[index] = runtime
        stopping = pool._stopping
    if stopping:
        return None
    return await main(index, *args)


def _run_worker(pool: WorkerPool | None, index: int, core: int | None, main: WorkerMain,
                args: tuple[Any, ...], driver: str | None) -> Any:
    _pin(core)
    local_pool = pool if pool is not None else WorkerPool(main, workers=1)
    try:
        return run(_worker_root, local_pool, index, main, args, driver=driver)
    except Cancelled:
        return None  # stopped by the pool


def _process_entry(index: int, core: int | None, main: WorkerMain, args: tuple[Any, ...],
                   driver: str | None, results: Any) -> None:
    pool = WorkerPool(main, workers=1)
    for number in STOP_SIGNALS:
        signal.signal(number, lambda *_: pool.stop())
    try:
        results.put((index, "ok", _run_worker(pool, index, core, main, args, driver)))
    except BaseException as error:  # reported to the parent, which raises
        results.put((index, "error", repr(error)))


class WorkerPool:
    """`WorkerPool(main, *args, workers=N).run()` runs `main(index, *args)` on N workers."""

    def __init__(self, main: WorkerMain, *args: Any, workers: int | None = None,
                 mode: str = "threads", pin: bool = True, driver: str | None = None) -> None:
        cores = available_cores()
        self.workers = workers if workers is not None else len(cores)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if mode not in ("threads", "processes"):
            raise ValueError(f"mode must be 'threads' or 'processes', got {mode!r}")
        self.mode = mode
        self._main = main
        self._args = args
        self._driver = driver
        self._cores: list[int | None] = [
            cores[index % len(cores)] if pin else None for index in range(self.workers)]
        self._runtimes: dict[int, Runtime] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._processes: list[Any] = []

    @property
    def cores(self) -> list[int | None]:
        return list(self._cores)

    def stop(self) -> None:
        """Ask every worker to stop (thread-safe and signal-safe)."""
        with self._lock:
            self._stopping = True
            runtimes = list(self._runtimes.values())
        for runtime in runtimes:
            main = runtime.main_task
            if main is not None:
                runtime.call_soon_threadsafe(main.cancel)
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    def run(self, *, handle_signals: bool = True) -> list[Any]:
        """Start the workers, block until all end; SIGINT/SIGTERM stop them cleanly."""
        previous: dict[signal.Signals, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                previous[number] = signal.signal(number, lambda *_: self.stop())
        try:
            if self.mode == "threads":
                return self._run_threads()
            return self._run_processes()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _run_threads(self) -> list[Any]:
        results: list[Any] = [None] * self.workers
        errors: list[BaseException] = []

        def body(index: int) -> None:
            try:
                results[index] = _run_worker(self, index, self._cores[index], self._main,
                                             self._args, self._driver)
            except BaseException as error:
                errors.append(error)
                self.stop()

        threads = [threading.Thread(target=body, args=(index,), name=f"keel-worker-{index}")
                   for index in range(self.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(JOIN_POLL_SECONDS)  # short joins let signal handlers run
        if errors:
            raise BaseExceptionGroup("keel workers failed", errors)
        return results

    def _run_processes(self) -> list[Any]:
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        self._processes = [
            context.Process(target=_process_entry, name=f"keel-worker-{index}",
                            args=(index, self._cores[index], self._main, self._args,
                                  self._driver, queue))
            for index in range(self.workers)]
        for process in self._processes:
            process.start()
        results: list[Any] = [None] * self.workers
        failures: list[str] = []
        received = 0
        try:
            while received < self.workers:
                try:
                    index, status, value = queue.get(timeout=JOIN_POLL_SECONDS)
                except Exception:  # queue.Empty: check the children are alive
                    if not any(p.is_alive() for p in self._processes) and queue.empty():
                        break
                    continue
                received += 1
                if status == "ok":
                    results[index] = value
                else:
                    failures.append(f"worker {index}: {value}")
        finally:
            for process in self._processes:
                process.join(PROCESS_STOP_SECONDS)
                if process.is_alive():
                    process.kill()
                    process.join()
            queue.close()
            queue.join_thread()
        if failures:
            raise _WorkerError("; ".join(failures))
        return results
