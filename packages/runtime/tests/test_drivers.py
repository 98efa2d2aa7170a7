"""Driver choice: probe, argument, environment variable, and bad names."""

from __future__ import annotations

import pytest

import keel.runtime as kr
from keel.runtime.drivers import chosen_driver_name, probe
from keel.runtime.scheduler import current_runtime


async def _driver_name() -> str:
    return current_runtime().driver.name


def test_probe_prefers_io_uring_here() -> None:
    assert probe() == "io_uring"  # this project's machines run kernel 6.18 with io_uring on


def test_argument_environment_and_default(monkeypatch) -> None:
    monkeypatch.delenv("KEEL_RUNTIME_DRIVER", raising=False)
    assert kr.run(_driver_name) == probe()
    assert kr.run(_driver_name, driver="epoll") == "epoll"
    monkeypatch.setenv("KEEL_RUNTIME_DRIVER", "epoll")
    assert kr.run(_driver_name) == "epoll"
    assert kr.run(_driver_name, driver="io_uring") == "io_uring"  # the argument wins


def test_unknown_driver_names_fail_clearly(monkeypatch) -> None:
    with pytest.raises(kr.DriverError, match=r"'kqueue'.*io_uring, epoll"):
        kr.run(_driver_name, driver="kqueue")
    monkeypatch.setenv("KEEL_RUNTIME_DRIVER", "select")
    with pytest.raises(kr.DriverError, match="KEEL_RUNTIME_DRIVER"):
        chosen_driver_name()
