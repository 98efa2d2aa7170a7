"""Async completion: Go finishes a call on a goroutine, Python's loop wakes on an eventfd.

Why this shape: every in-flight call owns its argument and result memory (one buffer) until
Go says it is finished, even if its await was cancelled: cancelling only asks Go to stop
(the context is cancelled) and marks the call abandoned; its memory is released when its
completion is drained. One eventfd per (library, loop) wakes the loop; whichever waiting
task holds the "pump" waits for readability, drains every finished call in one cgo call and
wakes their owners, then hands the pump to another waiter when its own call is done.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from keel.ffi.loops import LoopAdapter, LoopEvent
from keel.native.eventfd import EventFd

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("keel.ffi")

# Completions taken from Go per cgo call when a wake-up is drained.
DRAIN_BATCH = 256


class PendingCall:
    """One async call in flight: its id, the memory Go may still write, and its outcome."""

    __slots__ = ("abandoned", "call_id", "done", "event", "keep", "release", "status")

    def __init__(self, call_id: int, keep: Any, release: Callable[[PendingCall], None]) -> None:
        self.call_id = call_id
        self.keep = keep  # the call's buffer and everything it points at: alive until drained
        self.release = release  # frees what Go allocated for an abandoned call
        self.done = False
        self.abandoned = False
        self.status = 0
        self.event: LoopEvent | None = None


class Completer:
    """One eventfd registered with Go, serving the async calls of one running loop."""

    def __init__(self, ffi: Any, lib: Any) -> None:
        self.ffi = ffi
        self.lib = lib
        self.eventfd = EventFd(nonblocking=True)
        self.go_id = int(lib.keel_completer_open(self.eventfd.fileno()))
        self.pending: dict[int, PendingCall] = {}
        self.pumping = False
        self.adapter: LoopAdapter | None = None
        self.token: object | None = None
        self._completions = ffi.new("keel_completion[]", DRAIN_BATCH)

    @property
    def idle(self) -> bool:
        return not self.pending and not self.pumping

    def drain(self) -> None:
        """Take every finished call from Go; wake their owners, release abandoned ones."""
        try:
            self.eventfd.read()
        except BlockingIOError:
            pass
        completions = self._completions
        while True:
            count = self.lib.keel_completer_drain(self.go_id, completions, DRAIN_BATCH)
            for index in range(count):
                entry = completions[index]
                call = self.pending.pop(entry.call, None)
                if call is None:
                    continue
                call.status = entry.status
                call.done = True
                if call.abandoned:
                    call.release(call)
                elif call.event is not None:
                    call.event.set()
            if count < DRAIN_BATCH:
                return

    def _hand_over(self) -> None:
        """Wake one waiting call so that it takes the pump."""
        for call in self.pending.values():
            if call.event is not None and not call.done:
                call.event.set()
                return

    async def wait(self, call: PendingCall) -> None:
        assert self.adapter is not None
        adapter = self.adapter
        try:
            while not call.done:
                if self.pumping:
                    call.event = adapter.new_event()
                    await call.event.wait()
                    call.event = None
                    continue
                self.pumping = True
                try:
                    await adapter.wait_readable(self.eventfd.fileno())
                finally:
                    self.pumping = False
                self.drain()
        except BaseException:
            if not call.done:
                call.abandoned = True
                self.lib.keel_cancel(call.call_id)
            raise
        finally:
            call.event = None
            if not self.pumping:
                self._hand_over()

    def close_go_side(self) -> None:
        """After this Go never writes to the eventfd again (close is ordered with writes)."""
        self.lib.keel_completer_close(self.go_id)

    def close(self) -> None:
        self.close_go_side()
        self.eventfd.close()
