"""Issue 8, point 3: a keel.http app on keel.runtime whose handlers await Go through keel.ffi,
under wrk load, answers every request correctly and leaves nothing behind.

What "nothing behind" is checked against, taken after a short warm-up run (so Go has started
the OS threads it keeps for the life of the process): the process's open fds, its Python
threads, keel.runtime's task count and in-flight kernel operations, all exactly; OS threads
within the few that Go's thread pool may add; and the Go runtime's goroutine count (the
example library's `goroutines()` probe, runtime.NumGoroutine), exactly.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import wrk_load
from hashing_service import make_app

import keel.runtime as kr
from keel.http import Server, TestClient
from keel.native.testing.leaks import open_fds
from keel.runtime.sync import Event

LOAD_SECONDS = 10
WARM_UP_SECONDS = 2
CONNECTIONS = 16
SETTLE_SECONDS = 5.0
SETTLE_POLL_SECONDS = 0.05
DISTINCT_VALUES = 32
RECORD_LINES = [
    "7;ada;9.5;math,logic;51.5,-0.1",
    "8;grace;8.25;navy;",
    "9;alan;7;;52.2,0.12",
]
HTTP_OK = 200
# Go never ends an OS thread it started (idle Ms are parked, not exited), so its pool may
# grow by a few under load even after the warm-up; a per-request or per-call leak over tens
# of thousands of requests would be far beyond this.
GO_THREAD_POOL_GROWTH = 8
LISTED_FDS = 5
DRIVERS = ["io_uring", "epoll"]


def load_requests() -> list[wrk_load.LoadRequest]:
    """Many distinct answers, so a Go result delivered to the wrong request shows."""
    requests: list[wrk_load.LoadRequest] = []
    for value in range(1, DISTINCT_VALUES + 1):
        requests.append(wrk_load.LoadRequest("GET", f"/square/{value * 7919}"))
        requests.append(wrk_load.LoadRequest("GET", f"/hash/word{value}"))
        requests.append(wrk_load.LoadRequest(
            "POST", "/hash", f"payload number {value}".encode(), "application/octet-stream"))
    requests.extend(wrk_load.LoadRequest("GET", f"/record?line={line}") for line in RECORD_LINES)
    return requests


async def expected_bodies(app: Any, requests: list[wrk_load.LoadRequest]) -> set[bytes]:
    """What the app answers in-process (no sockets, no load) for each request."""
    client = TestClient(app)
    bodies: set[bytes] = set()
    for request in requests:
        response = await client.arequest(request.method, request.path, content=request.body,
                                         headers=[("content-type", request.content_type)]
                                         if request.content_type else None)
        assert response.status == HTTP_OK, (request, response.text)
        bodies.add(response.content)
    assert len(bodies) == len(requests), "every request should have its own answer"
    return bodies


def os_thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


async def settle(server: Server, runtime: Any, idle_tasks: int) -> None:
    """Wait (bounded) for wrk's connections to end and their tasks to finish."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while (server.connections or runtime.task_count != idle_tasks) and \
            time.monotonic() < deadline:
        await kr.sleep(SETTLE_POLL_SECONDS)


@pytest.mark.go
@pytest.mark.slow
@pytest.mark.timeout(LOAD_SECONDS + WARM_UP_SECONDS + 90)
@pytest.mark.parametrize("driver", DRIVERS)
def test_wrk_load_on_go_backed_handlers_has_no_errors_and_no_leaks(
        go_library: Any, tmp_path: Path, driver: str) -> None:
    wrk = wrk_load.find_wrk()
    if wrk is None:
        pytest.skip("needs wrk (Debian package `wrk`, listed in .ci/apt-packages.txt)")
    app = make_app(go_library)
    server = Server(app, host="127.0.0.1", port=0, backend="runtime")
    requests = load_requests()
    script = tmp_path / "routes.lua"
    findings: dict[str, Any] = {}

    async def main() -> None:
        runtime = kr.current_runtime()
        wrk_load.write_script(script, requests, await expected_bodies(app, requests))
        ready = Event()
        async with kr.TaskGroup() as group:
            group.spawn(server.serve, lambda addresses: ready.set())
            await ready.wait()
            url = f"http://127.0.0.1:{server.addresses[0][1]}"
            idle_tasks = runtime.task_count
            idle_operations = runtime.driver.in_flight()

            findings["warm_up"] = await wrk_load.run_wrk(
                wrk, url, script, tmp_path / "warm-up.txt", seconds=WARM_UP_SECONDS,
                connections=CONNECTIONS)
            await settle(server, runtime, idle_tasks)
            fds_before = open_fds()
            threads_before = set(threading.enumerate())
            os_threads_before = os_thread_count()
            goroutines_before = go_library.goroutines()

            findings["load"] = await wrk_load.run_wrk(
                wrk, url, script, tmp_path / "load.txt", seconds=LOAD_SECONDS,
                connections=CONNECTIONS)
            await settle(server, runtime, idle_tasks)
            findings["connections_after"] = len(server.connections)
            findings["tasks"] = (idle_tasks, runtime.task_count)
            findings["operations"] = (idle_operations, runtime.driver.in_flight())
            fds_after = open_fds()
            findings["fds"] = ({fd: target for fd, target in fds_after.items()
                                if fds_before.get(fd) != target},
                               {fd: target for fd, target in fds_before.items()
                                if fds_after.get(fd) != target})
            findings["threads"] = set(threading.enumerate()) ^ threads_before
            findings["os_threads"] = (os_threads_before, os_thread_count())
            findings["goroutines"] = (goroutines_before, go_library.goroutines())
            server.shutdown()

    kr.run(main, driver=driver, strict=True)

    for phase in ("warm_up", "load"):
        report: wrk_load.WrkReport = findings[phase]
        assert report.requests > 0, f"{phase}: wrk made no request\n{report.output}"
        assert report.problems == 0, f"{phase}: wrk saw errors or wrong answers\n{report.output}"
        assert report.responses > 0
    assert findings["connections_after"] == 0, "connections still open after wrk exited"
    idle_tasks, tasks_after = findings["tasks"]
    assert tasks_after == idle_tasks, f"keel.runtime tasks: {idle_tasks} idle, {tasks_after} after"
    idle_operations, operations_after = findings["operations"]
    assert operations_after == idle_operations, \
        f"in-flight kernel operations: {idle_operations} idle, {operations_after} after"
    opened, closed = findings["fds"]
    assert not opened and not closed, \
        f"across the load {len(opened)} fds were opened and left open (first: " \
        f"{sorted(opened.items())[:LISTED_FDS]}), {len(closed)} closed (first: " \
        f"{sorted(closed.items())[:LISTED_FDS]})"
    assert not findings["threads"], f"Python threads changed: {findings['threads']}"
    goroutines_before, goroutines_after = findings["goroutines"]
    assert goroutines_after == goroutines_before, \
        f"goroutines: {goroutines_before} before the load, {goroutines_after} after"
    os_threads_before, os_threads_after = findings["os_threads"]
    assert os_threads_after <= os_threads_before + GO_THREAD_POOL_GROWTH, \
        f"OS threads (Go's included): {os_threads_before} before, {os_threads_after} after"
