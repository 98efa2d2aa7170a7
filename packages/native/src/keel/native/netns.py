"""Network namespaces for tests and demos.

Why: every TAP device, guest address and ping of keel lives inside a namespace its owner made
(no traffic may reach any other address). Namespaces are per thread, so work inside one runs on
a short-lived thread that entered it; sockets and TAP fds it opens stay in that namespace after
the thread ends.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from typing import TypeVar

from keel.native._sys import lib
from keel.native.errors import check_result
from keel.native.fd import Closing

NETNS_DIRECTORY = "/run/netns"
NAME_PREFIX = "keel-"
T = TypeVar("T")


def _ip(*arguments: str) -> None:
    completed = subprocess.run(["ip", *arguments], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"ip {' '.join(arguments)} failed: {completed.stderr.strip()}")


class NetworkNamespace(Closing):
    """A named network namespace that this object creates and deletes."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"{NAME_PREFIX}{uuid.uuid4().hex[:8]}"
        _ip("netns", "add", self.name)
        self._deleted = False
        try:
            self.run(lambda: _ip("link", "set", "lo", "up"))
        except BaseException:
            self.delete()
            raise

    @property
    def path(self) -> str:
        return os.path.join(NETNS_DIRECTORY, self.name)

    def run(self, function: Callable[[], T]) -> T:
        """Call `function` on a thread inside this namespace and return its result."""
        outcome: list[T] = []
        failure: list[BaseException] = []

        def inside() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    check_result(lib.keel_setns(fd, lib.CLONE_NEWNET), "setns",
                                 namespace=self.name)
                finally:
                    os.close(fd)
                outcome.append(function())
            except BaseException as error:  # handed to the caller's thread below
                failure.append(error)

        thread = threading.Thread(target=inside, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
        return outcome[0]

    def ip(self, *arguments: str) -> None:
        """Run `ip ARGUMENTS` inside the namespace."""
        _ip("-n", self.name, *arguments)

    def delete(self) -> None:
        if not self._deleted:
            self._deleted = True
            _ip("netns", "delete", self.name)

    def close(self) -> None:
        """Same as delete(): what leaving a `with` block does."""
        self.delete()
