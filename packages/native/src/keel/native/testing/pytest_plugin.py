"""pytest plugin (entry point `keel_native`): fail tests that leak fds or threads.

Why a plugin: every keel package's suite must prove it closes what it opens. Each test is
checked from the start of its call to the end of its teardown; the whole session is checked
from start to finish, which also catches leaks of fixtures with a wider scope.
Mark a test `@pytest.mark.keel_allow_leaks("why")` to exempt it (rarely, with a reason).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from keel.native.testing.leaks import leaked_fds, leaked_threads, live_threads, open_fds

_FDS_KEY = pytest.StashKey[dict[int, str]]()
_THREADS_KEY = pytest.StashKey[set[Any]]()
_session_fds: dict[int, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "keel_allow_leaks(reason): exempt a test from keel's fd and thread leak check"
    )
    for marker, meaning in (
        ("kvm", "needs /dev/kvm"),
        ("tap", "needs /dev/net/tun, root and iproute2"),
        ("go", "needs a Go toolchain"),
        ("slow", "takes more than a few seconds"),
    ):
        config.addinivalue_line("markers", f"{marker}: {meaning}")


def pytest_sessionstart(session: pytest.Session) -> None:
    _session_fds.clear()
    _session_fds.update(open_fds())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_FDS_KEY] = open_fds()
    item.stash[_THREADS_KEY] = live_threads()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    result = yield
    if item.get_closest_marker("keel_allow_leaks") or _FDS_KEY not in item.stash:
        return result
    fds = leaked_fds(item.stash[_FDS_KEY])
    threads = leaked_threads(item.stash[_THREADS_KEY])
    problems = []
    if fds:
        problems.append("file descriptors left open: " +
                        ", ".join(f"{fd} -> {target}" for fd, target in sorted(fds.items())))
    if threads:
        problems.append("threads left running: " + ", ".join(t.name for t in threads))
    if problems:
        pytest.fail(f"{item.nodeid} leaked " + "; ".join(problems), pytrace=False)
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _session_fds:
        return
    fds = leaked_fds(_session_fds)
    if fds:
        listing = ", ".join(f"{fd} -> {target}" for fd, target in sorted(fds.items()))
        session.config.stash.setdefault(_SESSION_LEAKS, []).append(listing)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_SESSION_LEAKS = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for listing in config.stash.get(_SESSION_LEAKS, []):
        terminalreporter.write_line(
            f"keel leak check: the session left file descriptors open: {listing}", red=True)
