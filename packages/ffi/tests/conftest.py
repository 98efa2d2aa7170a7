"""Shared fixtures: the example Go library, built once (cached) and opened per session.

Why a session-start hook: the Go runtime inside a c-shared library opens its netpoller
(an epoll fd and an eventfd) the first time Go code uses a timer, and keeps them for the
life of the process (a Go library cannot be unloaded). Warming the runtime up before the
keel_native leak checker takes its session snapshot keeps those process-lifetime fds out of
every test's and the session's leak report; everything keel.ffi itself opens is still checked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keel.ffi.build import BuiltLibrary, build_cached
from keel.ffi.errors import FfiError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hashing"
WARM_UP_DELAY_MS = 1

_built: BuiltLibrary | None = None
_build_error: str | None = None


def copy_example(destination: Path) -> Path:
    """A private copy of the example package (tests never write into the source tree)."""
    target = destination / "hashing"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("build", "__pycache__"))
    return target


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _built, _build_error
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    try:
        _built = build_cached(EXAMPLE)
        from hashing_binding import HashingLibrary

        with HashingLibrary.open(_built) as library:
            asyncio.run(library.slow_square(1, WARM_UP_DELAY_MS))
    except FfiError as error:
        _build_error = str(error)


@pytest.fixture(scope="session")
def built_example() -> BuiltLibrary:
    if _built is None:
        pytest.fail(f"the example Go library did not build: {_build_error}")
    return _built


@pytest.fixture(scope="session")
def library(built_example: BuiltLibrary) -> Iterator[Any]:
    from hashing_binding import HashingLibrary

    with HashingLibrary.open(built_example) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _no_godebug() -> None:
    # cgocheck must stay at its default (on): no test may run with GODEBUG switches.
    assert "GODEBUG" not in os.environ, "keel.ffi's tests must run without GODEBUG"
