"""eventfd: the kernel's cheapest cross-thread and kernel-to-user wake-up.

Why: KVM's irqfd and ioeventfd, io_uring's completion notification and keel's cross-thread
channels all speak eventfd; one owned wrapper keeps the 8-byte counter protocol in one place.
"""

from __future__ import annotations

import os
import struct

from keel.native._sys import lib
from keel.native.checks import UINT32_MAX, require_int
from keel.native.errors import check_result
from keel.native.fd import FdResource, OwnedFd

COUNTER = struct.Struct("=Q")
# The counter saturates one below 2**64 - 1 (eventfd(2)).
COUNTER_MAX = (1 << 64) - 2

NONBLOCK = lib.EFD_NONBLOCK
CLOEXEC = lib.EFD_CLOEXEC
SEMAPHORE = lib.EFD_SEMAPHORE


class EventFd(FdResource):
    """An eventfd counter (close-on-exec always)."""

    def __init__(self, initial_value: int = 0, *, nonblocking: bool = False,
                 semaphore: bool = False) -> None:
        initial_value = require_int("initial_value", initial_value, 0, UINT32_MAX)
        flags = CLOEXEC | (NONBLOCK if nonblocking else 0) | (SEMAPHORE if semaphore else 0)
        fd = check_result(lib.keel_eventfd(initial_value, flags), "eventfd",
                          initial_value=initial_value, flags=hex(flags))
        super().__init__(OwnedFd(fd, "eventfd"))

    def write(self, value: int = 1) -> None:
        """Add `value` to the counter (wakes any reader)."""
        value = require_int("value", value, 1, COUNTER_MAX)
        os.write(self.fileno(), COUNTER.pack(value))

    def read(self) -> int:
        """Take the counter (or 1 in semaphore mode); blocks or raises BlockingIOError at 0."""
        return int(COUNTER.unpack(os.read(self.fileno(), COUNTER.size))[0])
