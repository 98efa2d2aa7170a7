"""Multishot recv with provided buffers: a stream's reads need no SQE per message.

Why: with one RECV SQE per read, every message costs the kernel a failed recv attempt, a
poll arm and a retry, and costs Python an SQE, an operation object and a dict entry. A
multishot recv (IORING_RECV_MULTISHOT + IOSQE_BUFFER_SELECT) is armed once per socket; the
kernel picks a buffer from the driver's ProvidedBufferRing for each arrival and posts one
CQE. The bytes are copied into the reader's buffer (or kept as pending bytes when nobody
reads) and the provided buffer goes straight back to the kernel.

Cancellation is simple here: the kernel never writes into a caller's buffer, so a waiting
read can be abandoned at once without losing data (later bytes stay pending).
Unread bytes are bounded: past PENDING_LIMIT_BYTES the multishot recv is cancelled and
re-armed only once a reader drained them.

The per-message half lives in C (keel.runtime._hotpath.Receiver, this class's base): a read
on an armed socket with nothing pending parks on the receiver itself, and a completion for
it is copied and resumes the task from the C dispatch loop. This module holds the rest:
arming, pending bytes, the end of the stream, errors, backpressure, closing.
"""

from __future__ import annotations

import errno
import weakref
from typing import TYPE_CHECKING, Any

from keel.native._uring import lib
from keel.native.io_uring import ProvidedBufferRing
from keel.runtime._hotpath import Receiver
from keel.runtime.errors import ClosedResourceError
from keel.runtime.scheduler import register_trap_class

if TYPE_CHECKING:
    import socket

    from keel.runtime.drivers.uring import UringDriver

MORE = lib.IORING_CQE_F_MORE
HAS_BUFFER = lib.IORING_CQE_F_BUFFER
BUFFER_SHIFT = lib.KEEL_CQE_BUFFER_SHIFT
SELECT_BUFFER = lib.IOSQE_BUFFER_SELECT
MULTISHOT = lib.IORING_RECV_MULTISHOT
ECANCELED = errno.ECANCELED
ENOBUFS = errno.ENOBUFS
EBADF = errno.EBADF
# Unread bytes a socket may hold before its multishot recv is paused (backpressure).
PENDING_LIMIT_BYTES = 256 * 1024


@register_trap_class
class RecvStream(Receiver):
    """One socket's multishot recv, its unread bytes, and the read waiting on it.

    The stream is also the awaitable of its reads and the trap their task parks on (`task`,
    `buffer` and `limit` are set while a read waits): no object is allocated per read.
    """

    __slots__ = ("buffers", "driver", "pool", "size", "sock")

    def __init__(self, driver: UringDriver, sock: socket.socket,
                 buffers: ProvidedBufferRing) -> None:
        super().__init__(sock.fileno(), buffers.ring_address, buffers.entries,
                         buffers.pool_address, buffers.buffer_size)
        self.driver = driver
        # Weak: the driver's table must not keep a socket its owner dropped alive (its fd
        # would never close); a dead reference marks the entry stale.
        self.sock = weakref.ref(sock)
        self.buffers = buffers
        self.pool = buffers.view
        self.size = buffers.buffer_size

    # Reading -------------------------------------------------------------------------------
    def arm(self) -> None:
        driver = self.driver
        self.user_data = driver._prep(lib.IORING_OP_RECV, self.fd, 0, 0, 0, 0, self)
        sqe = driver._batch.sqe(driver._batch.count - 1)
        sqe.ioprio = MULTISHOT
        sqe.flags = SELECT_BUFFER
        sqe.buf_index = self.buffers.group  # buf_group shares the field
        self.armed = True

    def take(self, target: Any, limit: int) -> int:
        """Move up to `limit` pending bytes into `target`; returns the count."""
        pending = self.pending
        count = min(len(pending), len(target), limit)
        target[:count] = pending[:count]
        del pending[:count]
        return count

    def ready_now(self, target: Any, limit: int) -> int | None:
        """The outcome of a read of `limit` bytes into `target` if one is known now (a
        count, 0 at the end, -errno); else arm the recv and say None (the read waits)."""
        if self.closed:
            return -EBADF
        if self.pending:
            count = self.take(target, limit)
            if (not self.armed and not self.eof and not self.error
                    and len(self.pending) <= PENDING_LIMIT_BYTES):
                self.arm()  # resumes a stream paused by backpressure once drained
            return count
        if self.error:
            result, self.error = -self.error, 0
            return result
        if self.eof or not limit or not len(target):
            return 0
        if not self.armed:
            self.arm()
        return None

    def complete(self, result: int, flags: int) -> None:
        """Every completion the C fast path left: data with no read waiting (or behind
        pending bytes), the end of the stream, errors, the multishot recv ending."""
        if not flags & MORE:
            self.armed = False
        if flags & HAS_BUFFER:
            buffer_id = flags >> BUFFER_SHIFT
            start = buffer_id * self.size
            if not self.closed:
                self.pending.extend(self.pool[start:start + result])
                if self.armed and len(self.pending) > PENDING_LIMIT_BYTES:
                    self.driver._prep_cancel(self.user_data)  # backpressure: pause
            self.buffers.recycle(buffer_id)
        elif result == 0:
            self.eof = True
        elif result < 0 and result not in (-ECANCELED, -ENOBUFS):
            self.error = -result
        task = self.task
        if task is None or self.closed or not self.waiting:
            return
        outcome = self.ready_now(self.buffer, self.limit)
        if outcome is not None:
            self.task = None
            task.runtime.resume(task, outcome)
        # else: still waiting (the recv was re-armed after ENOBUFS or a pause)

    def stop(self) -> None:
        """The socket is closing: cancel the recv and end a waiting read.

        (Not `close`: a coroutine closed while awaiting this receiver calls `close()` on
        it, and that must not close the socket's recv.)
        """
        self.closed = True
        self.pending.clear()
        if self.armed:
            self.driver._prep_cancel(self.user_data)
            self.armed = False  # reads fail from now on; the final CQE only confirms it
        task = self.task
        if task is not None:
            self.abort()
            task.runtime.resume_error(
                task, ClosedResourceError(f"socket fd {self.fd} was closed"))
