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
"""

from __future__ import annotations

import errno
import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from keel.native._uring import ffi, lib
from keel.native.io_uring import ProvidedBufferRing
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
_from_buffer = ffi.from_buffer


@register_trap_class
class RecvStream:
    """One socket's multishot recv, its unread bytes, and the read waiting on it.

    The stream is also the trap its reader parks on (`task` and `buffer` are set while a
    read waits): no object is allocated per read.
    """

    __slots__ = (
        "armed",
        "buffer",
        "buffers",
        "closed",
        "driver",
        "eof",
        "error",
        "fd",
        "pending",
        "pool",
        "pool_address",
        "pool_pointer",
        "push",
        "ring_entries",
        "ring_memory",
        "size",
        "sock",
        "take_into",
        "task",
        "user_data",
    )

    def __init__(self, driver: UringDriver, sock: socket.socket,
                 buffers: ProvidedBufferRing) -> None:
        self.driver = driver
        # Weak: the driver's table must not keep a socket its owner dropped alive (its fd
        # would never close); a dead reference marks the entry stale.
        self.sock = weakref.ref(sock)
        self.fd = sock.fileno()
        self.buffers = buffers
        self.pool = buffers.view
        self.size = buffers.buffer_size
        # ProvidedBufferRing.recycle inlined on the hot path: the C call and its arguments.
        self.push = lib.keel_buf_ring_push
        self.ring_memory = buffers.ring_pointer
        self.ring_entries = buffers.entries
        self.pool_address = buffers.pool_address
        self.pool_pointer = buffers.pool_pointer
        self.take_into = lib.keel_buf_ring_take
        self.pending = bytearray()
        self.task: Any = None
        self.buffer: Any = None
        self.armed = False
        self.closed = False
        self.eof = False
        self.error = 0
        self.user_data = 0

    # The trap protocol ---------------------------------------------------------------------
    def __await__(self) -> Generator[Any, Any, int]:
        return (yield self)  # type: ignore[no-any-return]

    def abort(self) -> bool:
        # The kernel only ever writes into provided buffers: leaving at once is safe, and
        # bytes arriving later stay pending for the next read.
        self.task = None
        self.buffer = None
        return True

    # Reading -------------------------------------------------------------------------------
    def arm(self) -> None:
        driver = self.driver
        self.user_data = driver._prep(lib.IORING_OP_RECV, self.fd, 0, 0, 0, 0, self)
        sqe = driver._batch.sqe(driver._batch.count - 1)
        sqe.ioprio = MULTISHOT
        sqe.flags = SELECT_BUFFER
        sqe.buf_index = self.buffers.group  # buf_group shares the field
        self.armed = True

    def take(self, buffer: Any) -> int:
        """Move pending bytes into `buffer`; returns the count."""
        pending = self.pending
        count = min(len(pending), len(buffer))
        buffer[:count] = pending[:count]
        del pending[:count]
        return count

    def read(self, buffer: Any) -> int | RecvStream:
        """A count now (pending bytes, EOF, -errno), or this stream to await."""
        if self.armed and not self.pending:
            self.buffer = buffer  # the common case: wait for the next arrival
            return self
        ready = self.ready_now(buffer)
        if ready is not None:
            return ready
        self.buffer = buffer
        return self

    def ready_now(self, buffer: Any) -> int | None:
        """The outcome of a read into `buffer` if one is known now; else arm and say None."""
        if self.closed:
            return -EBADF
        if self.pending:
            count = self.take(buffer)
            if (not self.armed and not self.eof and not self.error
                    and len(self.pending) <= PENDING_LIMIT_BYTES):
                self.arm()  # resumes a stream paused by backpressure once drained
            return count
        if self.error:
            result, self.error = -self.error, 0
            return result
        if self.eof or not len(buffer):
            return 0
        if not self.armed:
            self.arm()
        return None

    def complete(self, result: int, flags: int) -> None:
        if not flags & MORE:
            self.armed = False
        if flags & HAS_BUFFER:
            buffer_id = flags >> BUFFER_SHIFT
            start = buffer_id * self.size
            task = self.task
            if self.closed:
                pass
            elif task is not None and not self.pending:
                target = self.buffer
                room = len(target)
                count = result
                if result > room:
                    self.pending += self.pool[start + room:start + result]
                    count = room
                # Copy into the reader's buffer and recycle the provided one: one C call.
                self.take_into(self.ring_memory, self.ring_entries, self.pool_pointer,
                               self.size, buffer_id, _from_buffer(target), count)
                self.task = None
                self.buffer = None
                task._trap = None
                task.runtime._ready.append((task, count, None))
                return
            else:
                self.pending += self.pool[start:start + result]
                if self.armed and len(self.pending) > PENDING_LIMIT_BYTES:
                    self.driver._prep_cancel(self.user_data)  # backpressure: pause
            self.push(self.ring_memory, self.ring_entries, self.pool_address + start,
                      self.size, buffer_id)
        elif result == 0:
            self.eof = True
        elif result < 0 and result not in (-ECANCELED, -ENOBUFS):
            self.error = -result
        task = self.task
        if task is None or self.closed:
            return
        outcome = self.ready_now(self.buffer)
        if outcome is not None:
            self.task = None
            self.buffer = None
            task.runtime.resume(task, outcome)
        # else: still waiting (the recv was re-armed after ENOBUFS or a pause)

    def close(self) -> None:
        """The socket is closing: cancel the recv and end a waiting read."""
        self.closed = True
        self.pending.clear()
        if self.armed:
            self.driver._prep_cancel(self.user_data)
            self.armed = False  # reads fail from now on; the final CQE only confirms it
        task = self.task
        if task is not None:
            self.task = None
            self.buffer = None
            task.runtime.resume_error(
                task, ClosedResourceError(f"socket fd {self.fd} was closed"))
