"""The `driver` fixture: every test that takes it runs once per I/O driver."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

import keel.runtime

T = TypeVar("T")
DRIVERS = ["io_uring", "epoll"]


class Runner:
    """Runs a main coroutine function on a fresh runtime with the chosen driver."""

    def __init__(self, driver: str) -> None:
        self.driver = driver

    def __call__(self, function: Callable[..., Awaitable[T]], *args: Any,
                 ring_entries: int | None = None) -> T:
        # strict: a test that leaves a kernel operation in flight fails (runtime leak check).
        return keel.runtime.run(function, *args, driver=self.driver, strict=True,
                                ring_entries=ring_entries)


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def run(driver: str) -> Runner:
    return Runner(driver)
