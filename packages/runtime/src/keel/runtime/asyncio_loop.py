"""An asyncio event loop on keel's drivers: `asyncio.run(main(), loop_factory=new_event_loop)`.

Why a selector: asyncio's SelectorEventLoop already implements streams, protocols,
transports, servers, subprocesses, signal handlers and executors exactly as CPython users
expect; what it needs from below is readiness. keel gives it readiness through the same
driver choice as the runtime: with io_uring, every wait is one io_uring_enter that submits
the re-armed IORING_OP_POLL_ADDs of the last turn and waits for new ones (level-triggered,
like asyncio's own epoll selector, because a poll is re-armed only after its callbacks ran);
with epoll, keel's epoll wrapper.
"""

from __future__ import annotations

import asyncio
import errno
import math
import select
import selectors
from typing import Any

from keel.native import epoll as ep
from keel.native._uring import ffi, lib
from keel.native.epoll import Epoll
from keel.native.errors import syscall_error
from keel.native.io_uring import CqeBatch, IoUring, SqeBatch
from keel.runtime.drivers import chosen_driver_name
from keel.runtime.drivers.uring import NANOSECONDS

RING_ENTRIES = 256
CQ_FACTOR = 4
TIMEOUT_USER_DATA = 1
CANCEL_USER_DATA = 2
FIRST_POLL = 16
MILLISECONDS = 1000
READ_BITS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
WRITE_BITS = select.POLLOUT | select.POLLERR | select.POLLHUP


def _poll_mask(events: int) -> int:
    mask = 0
    if events & selectors.EVENT_READ:
        mask |= select.POLLIN | select.POLLPRI
    if events & selectors.EVENT_WRITE:
        mask |= select.POLLOUT
    return mask


POLL_MASKS = {events: _poll_mask(events) for events in range(4)}
OP_POLL_ADD = lib.IORING_OP_POLL_ADD
_sqe_prep = lib.keel_sqe_prep
TRANSIENT_ENTER_ERRORS = (-errno.EINTR, -errno.EBUSY, -errno.EAGAIN)


class UringSelector(selectors._BaseSelectorImpl):
    """A level-triggered selector whose waits are io_uring polls."""

    def __init__(self) -> None:
        super().__init__()
        self._ring = IoUring(RING_ENTRIES, cq_entries=RING_ENTRIES * CQ_FACTOR)
        self._batch = SqeBatch(self._ring.sq_entries)
        self._sqes = self._batch.pointer
        self._cqes = CqeBatch(self._ring.cq_entries)
        self._timeout: Any = ffi.new("struct __kernel_timespec *")
        self._timeout_address = int(ffi.cast("uintptr_t", self._timeout))
        self._armed: dict[int, int] = {}  # fd -> user_data of its pending poll
        self._fd_of: dict[int, int] = {}  # user_data -> fd
        self._next_user_data = FIRST_POLL

    def _prep(self, opcode: int, **fields: Any) -> None:
        if self._batch.full:
            self._submit(0)
        self._batch.prep(opcode, **fields)

    def _submit(self, wait_for: int) -> None:
        result = self._ring.submit_unchecked(self._batch, wait_for)
        if result < 0 and result not in TRANSIENT_ENTER_ERRORS:
            raise syscall_error(-result, "io_uring_enter", fd=self._ring.fileno())
        while self._batch.count:
            self._ring.submit(self._batch, 0)

    def _arm(self, fd: int, events: int) -> None:
        user_data = self._next_user_data
        self._next_user_data = user_data + 1
        batch = self._batch
        if batch.count == batch.capacity:
            self._submit(0)
        # SqeBatch.prep inlined: this runs once per ready fd per loop iteration.
        _sqe_prep(self._sqes + batch.count, OP_POLL_ADD, 0, fd, 0, 0, 0, POLL_MASKS[events],
                  user_data)
        batch.count += 1
        self._armed[fd] = user_data
        self._fd_of[user_data] = fd

    def _disarm(self, fd: int) -> None:
        user_data = self._armed.pop(fd, None)
        if user_data is not None:
            del self._fd_of[user_data]
            self._prep(lib.IORING_OP_POLL_REMOVE, addr=user_data, user_data=CANCEL_USER_DATA)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = super().register(fileobj, events, data)
        self._arm(key.fd, events)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = super().unregister(fileobj)
        self._disarm(key.fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = self.get_key(fileobj)
        if events != key.events:
            self._disarm(key.fd)
            key = super().modify(fileobj, events, data)
            self._arm(key.fd, events)
            return key
        return super().modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            wait_for = 1
        elif timeout <= 0:
            wait_for = 0
        else:
            seconds = int(timeout)
            self._timeout.tv_sec = seconds
            self._timeout.tv_nsec = int((timeout - seconds) * NANOSECONDS)
            self._prep(lib.IORING_OP_TIMEOUT, addr=self._timeout_address, length=1, offset=1,
                       user_data=TIMEOUT_USER_DATA)
            wait_for = 1
        self._submit(wait_for)
        ready: list[tuple[selectors.SelectorKey, int]] = []
        pointer = self._cqes.pointer
        while True:
            count = self._ring.reap(self._cqes)
            for index in range(count):
                cqe = pointer[index]
                fd = self._fd_of.pop(cqe.user_data, None)
                if fd is None:
                    continue
                del self._armed[fd]
                key = self._fd_to_key.get(fd)  # type: ignore[attr-defined]
                if key is None:
                    continue
                result = cqe.res
                events = 0
                if result < 0:
                    events = key.events  # let the callback see the error from its syscall
                else:
                    if result & READ_BITS:
                        events |= selectors.EVENT_READ
                    if result & WRITE_BITS:
                        events |= selectors.EVENT_WRITE
                    events &= key.events
                # Re-armed now, submitted at the next select(): after the callbacks ran,
                # so an fd with unread data fires again (level-triggered).
                self._arm(fd, key.events)
                if events:
                    ready.append((key, events))
            if count < self._cqes.capacity:
                break
        return ready

    def close(self) -> None:
        super().close()
        self._ring.close()


class KeelEpollSelector(selectors._BaseSelectorImpl):
    """asyncio's EpollSelector, on keel.native's epoll wrapper."""

    def __init__(self) -> None:
        super().__init__()
        self._epoll = Epoll()

    @staticmethod
    def _mask(events: int) -> int:
        mask = 0
        if events & selectors.EVENT_READ:
            mask |= ep.IN
        if events & selectors.EVENT_WRITE:
            mask |= ep.OUT
        return mask

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = super().register(fileobj, events, data)
        try:
            self._epoll.register(key.fd, self._mask(events), key.fd)
        except BaseException:
            super().unregister(fileobj)
            raise
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = super().unregister(fileobj)
        try:
            self._epoll.unregister(key.fd)
        except OSError:
            pass
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = self.get_key(fileobj)
        if events != key.events:
            self._epoll.modify(key.fd, self._mask(events), key.fd)
        return super().modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            milliseconds = -1
        elif timeout <= 0:
            milliseconds = 0
        else:
            milliseconds = min(ep.MAX_TIMEOUT_MS, math.ceil(timeout * MILLISECONDS))
        try:
            count = self._epoll.wait(milliseconds)
        except InterruptedError:
            return []
        ready = []
        for index in range(count):
            fd, mask = self._epoll.event(index)
            key = self._fd_to_key.get(fd)  # type: ignore[attr-defined]
            if key is None:
                continue
            events = 0
            if mask & ~ep.IN:
                events |= selectors.EVENT_WRITE
            if mask & ~ep.OUT:
                events |= selectors.EVENT_READ
            events &= key.events
            if events:
                ready.append((key, events))
        return ready

    def close(self) -> None:
        super().close()
        self._epoll.close()


class KeelEventLoop(asyncio.SelectorEventLoop):
    """asyncio's loop with a keel selector; `driver` as for keel.runtime.run."""

    def __init__(self, driver: str | None = None) -> None:
        self.keel_driver = chosen_driver_name(driver)
        selector: selectors.BaseSelector = (
            UringSelector() if self.keel_driver == "io_uring" else KeelEpollSelector())
        super().__init__(selector)


def new_event_loop(driver: str | None = None) -> KeelEventLoop:
    """The loop factory: `asyncio.Runner(loop_factory=new_event_loop)`."""
    return KeelEventLoop(driver)


class KeelEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return new_event_loop()


def install() -> None:
    """Make `asyncio.run()` and `asyncio.new_event_loop()` use keel's loop."""
    asyncio.set_event_loop_policy(KeelEventLoopPolicy())
