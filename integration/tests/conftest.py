"""Shared fixtures: the example Go library, built once (cached) and warmed up at session start.

Why warm up before the leak checker's session snapshot: the Go runtime inside a c-shared
library opens its netpoller (an epoll fd and an eventfd) the first time Go code uses a timer
and keeps them for the life of the process (a Go library cannot be unloaded). Doing that
first keeps those process-lifetime fds out of every leak report; everything keel's packages
open is still checked.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DEMOS = Path(__file__).resolve().parents[1] / "demos"
WARM_UP_DELAY_MS = 1

_build_error: str | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _build_error
    if str(DEMOS) not in sys.path:
        sys.path.insert(0, str(DEMOS))
    try:
        from keel.ffi.errors import FfiError
    except ImportError as error:
        _build_error = f"keel-ffi is not installed: {error}"
        return
    from hashing_service import open_library

    try:
        with open_library() as library:
            asyncio.run(library.slow_square(1, WARM_UP_DELAY_MS))
    except FfiError as error:
        _build_error = str(error)


@pytest.fixture(scope="session")
def go_library() -> Iterator[Any]:
    """keel.ffi's example Go library, open for the whole session."""
    if _build_error is not None:
        pytest.fail(f"the example Go library did not build: {_build_error}")
    from hashing_service import open_library

    with open_library() as library:
        yield library
