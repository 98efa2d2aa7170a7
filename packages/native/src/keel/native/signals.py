"""Signals that interrupt a blocking call on one thread.

Why: stopping a vCPU blocked in KVM_RUN, or a driver blocked in io_uring_enter, from another
thread takes a signal to that thread whose handler does not restart the call. Python can only
install handlers from the main thread, and its handlers restart, so the handler is C's.
"""

from __future__ import annotations

import signal
import threading

from keel.native._sys import lib
from keel.native.errors import check_result

# The first real-time signal glibc leaves free, offset so it is unlikely to clash with
# another library's choice.
_KICK_OFFSET = 3
_installed: set[int] = set()
_lock = threading.Lock()


def kick_signal() -> int:
    """The signal keel uses to interrupt a thread's blocking call (installed on first use)."""
    number = int(lib.keel_signal_realtime_min()) + _KICK_OFFSET
    with _lock:
        if number not in _installed:
            check_result(lib.keel_install_interrupting_handler(number), "sigaction",
                         signal=number)
            _installed.add(number)
    return number


def kick(thread_id: int) -> None:
    """Interrupt the blocking call of the thread with `threading.get_ident()` == thread_id."""
    signal.pthread_kill(thread_id, kick_signal())
