"""pytest plugin (entry point `keel_vmm`): fixtures that run guests for any package's tests.

    def test_greets(keel_vm, keel_test_guest):
        session = keel_vm(keel_test_guest("hello"), kernel_format=KernelFormat.FLAT).start()
        session.wait_for("hello", timeout=10)

`keel_vm(kernel, **options)` returns a started-on-demand GuestSession (see
keel.vmm.testing.session) and closes it after the test; `keel_test_guest(name)` builds one
of keel's test guests (cached) and returns its path. Imports are lazy: loading the plugin
costs nothing to suites that never use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from keel.vmm.testing.session import GuestSession


@pytest.fixture
def keel_vm() -> Iterator[Callable[..., GuestSession]]:
    from keel.vmm.testing.session import GuestSession

    sessions: list[GuestSession] = []

    def start(kernel: Path | str | bytes, **options: Any) -> GuestSession:
        session = GuestSession(kernel, **options)
        sessions.append(session)
        return session

    yield start
    for session in reversed(sessions):
        session.close()


@pytest.fixture(scope="session")
def keel_test_guest() -> Callable[[str], Path]:
    from keel.vmm.guests.build import guest_path

    return guest_path
