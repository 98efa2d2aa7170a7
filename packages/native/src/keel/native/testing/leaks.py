"""Snapshots of the process's file descriptors and threads, for leak checks."""

from __future__ import annotations

import gc
import os
import threading
import time

FD_DIRECTORY = "/proc/self/fd"
THREAD_GRACE_SECONDS = 2.0
THREAD_POLL_SECONDS = 0.02


def open_fds() -> dict[int, str]:
    """{fd: what it points at} for every open descriptor of this process."""
    found: dict[int, str] = {}
    for entry in os.listdir(FD_DIRECTORY):
        try:
            found[int(entry)] = os.readlink(os.path.join(FD_DIRECTORY, entry))
        except OSError:
            continue  # the listing's own descriptor, already closed
    return found


def leaked_fds(before: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not open (to the same target) in `before`."""
    gc.collect()
    now = open_fds()
    return {fd: target for fd, target in now.items() if before.get(fd) != target}


def live_threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def leaked_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads alive now that were not before, after a short grace period to finish."""
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() >= deadline:
            return extra
        time.sleep(THREAD_POLL_SECONDS)
