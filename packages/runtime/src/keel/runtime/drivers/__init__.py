"""Driver selection: a probe at start-up, overridable by argument and KEEL_RUNTIME_DRIVER.

Why probe rather than check the kernel version: io_uring can be compiled out, disabled by
sysctl (io_uring_disabled) or blocked by seccomp in a container; only trying it tells.
"""

from __future__ import annotations

import logging
import os

from keel.runtime.drivers.base import Driver
from keel.runtime.errors import DriverError

ENVIRONMENT_VARIABLE = "KEEL_RUNTIME_DRIVER"
DRIVER_NAMES = ("io_uring", "epoll")
logger = logging.getLogger("keel.runtime")
_probe_result: str | None = None


def io_uring_usable() -> bool:
    """Can this process set up a ring and does the kernel have the opcodes we use?"""
    from keel.native._uring import lib
    from keel.native.io_uring import IoUring

    needed = {lib.IORING_OP_RECV, lib.IORING_OP_SEND, lib.IORING_OP_ACCEPT,
              lib.IORING_OP_ASYNC_CANCEL, lib.IORING_OP_TIMEOUT, lib.IORING_OP_POLL_ADD,
              lib.IORING_OP_READ, lib.IORING_OP_WRITE, lib.IORING_OP_OPENAT}
    try:
        with IoUring(1) as ring:
            return needed <= ring.probe()
    except OSError as error:
        logger.info("io_uring unavailable (%s); using epoll", error)
        return False


def probe() -> str:
    """The best driver this host supports (cached)."""
    global _probe_result
    if _probe_result is None:
        _probe_result = "io_uring" if io_uring_usable() else "epoll"
    return _probe_result


def chosen_driver_name(requested: str | None = None) -> str:
    name = requested or os.environ.get(ENVIRONMENT_VARIABLE) or probe()
    if name not in DRIVER_NAMES:
        raise DriverError(f"unknown keel runtime driver {name!r}: expected one of "
                          f"{', '.join(DRIVER_NAMES)} (argument or {ENVIRONMENT_VARIABLE})")
    return name


def create_driver(requested: str | Driver | None = None, *,
                  ring_entries: int | None = None) -> Driver:
    if isinstance(requested, Driver):
        return requested
    name = chosen_driver_name(requested)
    if name == "io_uring":
        from keel.runtime.drivers.uring import DEFAULT_ENTRIES, UringDriver

        if probe() != "io_uring":
            raise DriverError("driver 'io_uring' was requested but this kernel or process "
                              "cannot use io_uring")
        return UringDriver(ring_entries or DEFAULT_ENTRIES)
    from keel.runtime.drivers.epoll import EpollDriver

    return EpollDriver()
