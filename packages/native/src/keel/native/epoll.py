"""epoll: readiness notification for keel.runtime's legacy driver.

Why not select.epoll: `wait()` here fills caller-owned arrays of (data, events) with the GIL
released and no per-event Python tuple, and registrations carry a 64-bit token rather than
the fd, which lets the runtime map an event straight to its waiter.
"""

from __future__ import annotations

from typing import Any

from keel.native._sys import ffi, lib
from keel.native.checks import UINT32_MAX, require_fd, require_int
from keel.native.errors import check_result
from keel.native.fd import FdResource, OwnedFd

IN = lib.EPOLLIN
OUT = lib.EPOLLOUT
ERR = lib.EPOLLERR
HUP = lib.EPOLLHUP
RDHUP = lib.EPOLLRDHUP
PRI = lib.EPOLLPRI
EDGE_TRIGGERED = lib.EPOLLET
ONESHOT = lib.EPOLLONESHOT
DEFAULT_CAPACITY = 256
MAX_TIMEOUT_MS = (1 << 31) - 1


class Epoll(FdResource):
    """An epoll instance with a reusable ready list."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = require_int("capacity", capacity, 1, 1 << 16)
        fd = check_result(lib.keel_epoll_create(lib.EPOLL_CLOEXEC), "epoll_create1")
        super().__init__(OwnedFd(fd, "epoll fd"))
        self._datas = ffi.new("uint64_t[]", self.capacity)
        self._events = ffi.new("uint32_t[]", self.capacity)
        self.count = 0

    def _control(self, operation: int, name: str, fd: Any, events: int, data: int) -> None:
        number = require_fd("fd", fd)
        events = require_int("events", events, 0, UINT32_MAX)
        data = require_int("data", data)
        check_result(lib.keel_epoll_ctl(self.fileno(), operation, number, events, data),
                     "epoll_ctl", operation=name, fd=number, events=hex(events))

    def register(self, fd: Any, events: int, data: int) -> None:
        self._control(lib.EPOLL_CTL_ADD, "EPOLL_CTL_ADD", fd, events, data)

    def modify(self, fd: Any, events: int, data: int) -> None:
        self._control(lib.EPOLL_CTL_MOD, "EPOLL_CTL_MOD", fd, events, data)

    def unregister(self, fd: Any) -> None:
        self._control(lib.EPOLL_CTL_DEL, "EPOLL_CTL_DEL", fd, 0, 0)

    def wait(self, timeout_ms: int = -1) -> int:
        """Wait for readiness (GIL released); returns how many events `event(i)` can read."""
        timeout_ms = require_int("timeout_ms", timeout_ms, -1, MAX_TIMEOUT_MS)
        result = lib.keel_epoll_wait(self.fileno(), self._datas, self._events, self.capacity,
                                     timeout_ms)
        self.count = check_result(result, "epoll_wait", fd=self.fileno(), timeout_ms=timeout_ms)
        return self.count

    def event(self, index: int) -> tuple[int, int]:
        """(data, events) of ready event `index` from the last wait()."""
        if not 0 <= index < self.count:
            raise IndexError(f"event {index} is not among the {self.count} ready")
        return int(self._datas[index]), int(self._events[index])
