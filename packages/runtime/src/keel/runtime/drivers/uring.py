"""The io_uring driver: completion-based operations, one io_uring_enter per loop turn.

Why this shape: tasks prepare SQEs into one SqeBatch while they run; the loop turn hands the
whole batch to the kernel and waits in the same io_uring_enter, then reaps every completion
in one C call. An operation's buffer is referenced by its `_Op` until the CQE arrives, so a
cancelled read never writes into memory its caller already got back: cancelling submits
IORING_OP_ASYNC_CANCEL and the task resumes only on the original operation's CQE.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections import deque
from collections.abc import Generator
from typing import Any

from keel.native._uring import ffi, lib
from keel.native.errors import syscall_error
from keel.native.eventfd import EventFd
from keel.native.io_uring import CqeBatch, IoUring, ProvidedBufferRing, SqeBatch
from keel.runtime._hotpath import CompletionQueue
from keel.runtime.drivers.base import Buffer, Driver
from keel.runtime.drivers.uring_recv import RecvStream
from keel.runtime.errors import BusyResourceError, Cancelled, ClosedResourceError
from keel.runtime.scheduler import register_trap_class

DEFAULT_ENTRIES = 256
CQ_FACTOR = 4
# user_data below FIRST_OPERATION is the driver's own: wake-ups, timeouts, cancels.
WAKE_USER_DATA = 1
TIMEOUT_USER_DATA = 2
CANCEL_USER_DATA = 3
FIRST_OPERATION = 16
NANOSECONDS = 1_000_000_000
CLOSE_DRAIN_SECONDS = 2.0
POLL_IN = select.POLLIN  # io_uring's poll32_events take <poll.h> bits
POLL_OUT = select.POLLOUT
UNSIGNED_OFFSET_CURRENT = (1 << 64) - 1  # offset -1: "the file position" for read/write
MORE = lib.IORING_CQE_F_MORE

ECANCELED = errno.ECANCELED
# One thread submits to a ring (thread-per-core), and completions are only needed when the
# loop turn enters the kernel anyway: so the kernel may defer completion work to that enter
# (DEFER_TASKRUN) instead of interrupting the thread for it. Kernels before 6.1 refuse the
# flags; the driver then sets the ring up without them.
SETUP_FLAGS = (lib.IORING_SETUP_SINGLE_ISSUER | lib.IORING_SETUP_DEFER_TASKRUN
               | lib.IORING_SETUP_COOP_TASKRUN | lib.IORING_SETUP_SUBMIT_ALL)
TRANSIENT_ENTER_ERRORS = (-errno.EINTR, -errno.EBUSY, -errno.EAGAIN)
# Provided buffers for multishot recv (IORING_RECV_MULTISHOT needs Linux 6.0): enough for
# every connection of a busy worker to have a message in flight; 2 MiB per runtime.
RECV_BUFFER_GROUP = 0
RECV_BUFFERS = 256
RECV_BUFFER_BYTES = 8192
MULTISHOT_RECV_KERNEL = (6, 0)


_prep_buffer = lib.keel_sqe_prep_buffer
_from_buffer = ffi.from_buffer
OP_RECV = lib.IORING_OP_RECV


def address_of(buffer: Buffer) -> int:
    return int(ffi.cast("uintptr_t", ffi.from_buffer(buffer)))


@register_trap_class
class _Op:
    """One in-flight SQE: the task waiting for it and the objects the kernel may touch."""

    __slots__ = ("cancelling", "driver", "keep", "task", "user_data")

    def __init__(self, driver: UringDriver, user_data: int, keep: Any) -> None:
        self.driver = driver
        self.user_data = user_data
        self.keep = keep
        self.task: Any = None
        self.cancelling = False

    def __await__(self) -> Generator[Any, Any, int]:
        return (yield self)  # type: ignore[no-any-return]

    def abort(self) -> bool:
        self.cancelling = True
        self.driver._prep_cancel(self.user_data)
        return False

    def complete(self, result: int, flags: int) -> None:
        task = self.task
        if task is None:
            return  # the task never parked on it (cannot happen) or is gone
        self.keep = None
        runtime = task.runtime
        if result == -ECANCELED and self.cancelling:
            runtime.resume_error(task, Cancelled())
        else:
            runtime.resume(task, result)


class _AcceptStream:
    """A multishot accept on one listener: new fds queue up until accept() takes them."""

    __slots__ = ("armed", "closed", "driver", "error", "fd", "queue", "user_data", "waiter")

    def __init__(self, driver: UringDriver, fd: int) -> None:
        self.driver = driver
        self.fd = fd
        self.queue: deque[int] = deque()
        self.error: int = 0
        self.waiter: Any = None
        self.armed = False
        self.closed = False
        self.user_data = 0

    def arm(self) -> None:
        driver = self.driver
        self.user_data = driver._prep(lib.IORING_OP_ACCEPT, self.fd, 0, 0, 0, socket.SOCK_CLOEXEC,
                                      self)
        driver._batch.sqe(driver._batch.count - 1).ioprio = lib.IORING_ACCEPT_MULTISHOT
        self.armed = True

    def complete(self, result: int, flags: int) -> None:
        if not flags & MORE:
            self.armed = False
        if result >= 0:
            if self.closed:
                os.close(result)
                return
            self.queue.append(result)
        elif result != -ECANCELED:
            self.error = result
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.task.runtime.resume(waiter.task, None)

    def close(self) -> None:
        self.closed = True
        while self.queue:
            os.close(self.queue.popleft())
        if self.armed:
            self.driver._prep_cancel(self.user_data)


@register_trap_class
class _AcceptWait:
    __slots__ = ("stream", "task")

    def __init__(self, stream: _AcceptStream) -> None:
        self.stream = stream
        self.task: Any = None

    def __await__(self) -> Generator[Any, Any, None]:
        return (yield self)  # type: ignore[no-any-return]

    def abort(self) -> bool:
        self.stream.waiter = None
        return True


class UringDriver(Driver):
    name = "io_uring"
    nonblocking_fds = False

    def __init__(self, entries: int = DEFAULT_ENTRIES, multishot_recv: bool = True) -> None:
        super().__init__()
        try:
            self._ring = IoUring(entries, cq_entries=entries * CQ_FACTOR, flags=SETUP_FLAGS)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            # A kernel before 6.1 lacks DEFER_TASKRUN: run without the optimisation.
            self._ring = IoUring(entries, cq_entries=entries * CQ_FACTOR)
        try:
            self._batch = SqeBatch(self._ring.sq_entries)
            self._sqes = self._batch.pointer
            self._ready: Any = None
            self._cqes = CqeBatch(self._ring.cq_entries)
            # Built in attach(): dispatching resumes the runtime's tasks (a stream reader
            # directly, others through the ready queue).
            self._queue: CompletionQueue | None = None
            self._ops: dict[int, Any] = {}
            self._next_user_data = FIRST_OPERATION
            self._timeout: Any = ffi.new("struct __kernel_timespec *")
            self._timeout_address = int(ffi.cast("uintptr_t", self._timeout))
            self._accepts: dict[int, _AcceptStream] = {}
            self._recvs: dict[int, RecvStream] = {}
            self._buffers = self._provide_buffers() if multishot_recv else None
            self._wake = EventFd(nonblocking=True)
            self._wake_armed = False
            self._arm_wake()
        except BaseException:
            self._ring.close()
            raise

    def _provide_buffers(self) -> ProvidedBufferRing | None:
        """The buffer ring multishot recv selects from, or None where the kernel lacks it."""
        if _kernel_version() < MULTISHOT_RECV_KERNEL:
            return None
        try:
            return ProvidedBufferRing(self._ring, RECV_BUFFER_GROUP, RECV_BUFFERS,
                                      RECV_BUFFER_BYTES)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            return None

    @property
    def multishot_recv(self) -> bool:
        """Whether stream reads go through a multishot recv with provided buffers."""
        return self._buffers is not None

    # SQE preparation ----------------------------------------------------------------------
    def _prep(self, opcode: int, fd: int, address: int, length: int, offset: int,
              op_flags: int, operation: Any) -> int:
        user_data = self._next_user_data
        self._next_user_data = user_data + 1
        batch = self._batch
        if batch.count == batch.capacity:
            self._flush()
        batch.prep(opcode, fd=fd, addr=address, length=length, offset=offset,
                   op_flags=op_flags, user_data=user_data)
        self._ops[user_data] = operation
        return user_data

    def _start(self, opcode: int, fd: int, address: int, length: int, offset: int,
               op_flags: int, keep: Any) -> _Op:
        user_data = self._next_user_data
        self._next_user_data = user_data + 1
        batch = self._batch
        if batch.count == batch.capacity:
            self._flush()
        batch.prep(opcode, fd=fd, addr=address, length=length, offset=offset,
                   op_flags=op_flags, user_data=user_data)
        op = _Op(self, user_data, keep)
        self._ops[user_data] = op
        return op

    def _prep_cancel(self, user_data: int) -> None:
        batch = self._batch
        if batch.count == batch.capacity:
            self._flush()
        batch.prep(lib.IORING_OP_ASYNC_CANCEL, addr=user_data, user_data=CANCEL_USER_DATA)

    def _flush(self) -> None:
        """Submit without waiting (the batch is full, or a close must reach the kernel now)."""
        while self._batch.count:
            self.enters += 1
            try:
                self._ring.submit(self._batch, 0)
            except InterruptedError:
                continue

    def _arm_wake(self) -> None:
        batch = self._batch
        if batch.count == batch.capacity:
            self._flush()
        batch.prep(lib.IORING_OP_POLL_ADD, fd=self._wake.fileno(), op_flags=POLL_IN,
                   length=lib.IORING_POLL_ADD_MULTI, user_data=WAKE_USER_DATA)
        self._wake_armed = True

    # The loop turn ------------------------------------------------------------------------
    def poll(self, timeout: float | None) -> None:
        batch = self._batch
        if timeout is None:
            wait_for = 1
        elif timeout <= 0:
            wait_for = 0
        else:
            seconds = int(timeout)
            self._timeout.tv_sec = seconds
            self._timeout.tv_nsec = int((timeout - seconds) * NANOSECONDS)
            if batch.count == batch.capacity:
                self._flush()
            # Completes after `timeout`, or as soon as one other completion arrives.
            batch.prep(lib.IORING_OP_TIMEOUT, addr=self._timeout_address, length=1, offset=1,
                       user_data=TIMEOUT_USER_DATA)
            wait_for = 1
        # One io_uring_enter submits the batch and waits (the kernel returns at once when
        # completions are already pending). EINTR: a signal; EBUSY/EAGAIN: the completion
        # queue is backed up, which the reap below resolves.
        self.turns += 1
        self.enters += 1
        result = self._ring.submit_unchecked(batch, wait_for)
        if result < 0 and result not in TRANSIENT_ENTER_ERRORS:
            raise syscall_error(-result, "io_uring_enter", fd=self._ring.fileno(),
                                wait_for=wait_for)
        if batch.count:
            self._flush()
        self._reap()

    def attach(self, runtime: Any) -> None:
        super().attach(runtime)
        self._ready = runtime._ready
        head, tail, mask, entries, cqes = self._ring.completion_queue_addresses()
        self._queue = CompletionQueue(head, tail, mask, entries, cqes, FIRST_OPERATION,
                                      self._ops, _Op, self._ready.append, self._own_completion,
                                      runtime)

    def _reap(self) -> None:
        # One C call reaps the mapped completion queue and resumes the waiting tasks of
        # plain operations and multishot recvs; other completions call their `complete`.
        queue = self._queue
        if queue is None:
            raise ClosedResourceError("the io_uring driver is not attached or is closed")
        self.completions += queue.dispatch()

    def _own_completion(self, user_data: int, result: int, flags: int) -> None:
        """Completions of the driver's own SQEs (user_data below FIRST_OPERATION)."""
        if user_data == WAKE_USER_DATA:
            self._drain_wake(flags)

    def _drain_wake(self, flags: int) -> None:
        try:
            self._wake.read()
        except BlockingIOError:
            pass
        if not flags & MORE:
            self._wake_armed = False
            if not self._wake.closed:
                self._arm_wake()

    def wake(self) -> None:
        try:
            self._wake.write(1)
        except (BlockingIOError, ValueError, OSError):
            pass  # already signalled, or closing

    def in_flight(self) -> int:
        # An open socket's standing multishot recv with no read waiting on it is not an
        # operation anyone waits for (the socket's close or the driver's close cancels it),
        # so the leak check and callers asking "did my operations finish" do not count it.
        standing = sum(1 for receiver in self._recvs.values()
                       if receiver.armed and receiver.task is None)
        return len(self._ops) - standing

    def close(self) -> None:
        if self._ring.closed:
            return
        for stream in list(self._accepts.values()):
            stream.close()
        self._accepts.clear()
        for receiver in list(self._recvs.values()):
            receiver.stop()
        self._recvs.clear()
        for user_data in list(self._ops):
            self._prep_cancel(user_data)
        self._batch.prep(lib.IORING_OP_ASYNC_CANCEL, addr=WAKE_USER_DATA,
                         user_data=CANCEL_USER_DATA)
        self._flush()
        # Wait (bounded) until the kernel has let go of every buffer before unmapping.
        turns = 0
        while self._ops and turns < CLOSE_DRAIN_SECONDS * 100:
            self._ring.wait(1, 0.01)
            self._reap_quietly()
            turns += 1
        self._queue = None  # its addresses point into the ring's mapping
        self._ring.close()
        if self._buffers is not None:
            self._buffers.close()  # only now: the kernel may write into them until here
        self._wake.close()

    def _reap_quietly(self) -> None:
        ring, cqes, ops = self._ring, self._cqes, self._ops
        count = ring.reap(cqes)
        for index in range(count):
            cqe = cqes.pointer[index]
            if not cqe.flags & MORE:
                operation = ops.pop(cqe.user_data, None)
                if isinstance(operation, _AcceptStream) and cqe.res >= 0:
                    os.close(cqe.res)
            elif isinstance(ops.get(cqe.user_data), _AcceptStream) and cqe.res >= 0:
                os.close(cqe.res)

    # Operations ---------------------------------------------------------------------------
    async def _poll_once(self, fd: int, mask: int) -> int:
        op = self._start(lib.IORING_OP_POLL_ADD, fd, 0, 0, 0, mask, None)
        result: int = await op
        if result < 0:
            raise _error(result, "poll", fd)
        return result

    async def wait_readable(self, fd: int) -> None:
        await self._poll_once(fd, POLL_IN)

    async def wait_writable(self, fd: int) -> None:
        await self._poll_once(fd, POLL_OUT)

    def forget_fd(self, fd: int, busy: bool = True) -> None:
        receiver = self._recvs.pop(fd, None)
        if receiver is not None:
            receiver.stop()
        stream = self._accepts.pop(fd, None)
        if stream is not None:
            stream.close()
            waiter = stream.waiter
            if waiter is not None:
                stream.waiter = None
                waiter.task.runtime.resume_error(
                    waiter.task, ClosedResourceError(f"listener fd {fd} was closed"))
        if not busy:
            return
        # Cancel whatever else is in flight on this fd before the number can be reused.
        batch = self._batch
        if batch.count == batch.capacity:
            self._flush()
        batch.prep(lib.IORING_OP_ASYNC_CANCEL, fd=fd,
                   op_flags=lib.IORING_ASYNC_CANCEL_FD | lib.IORING_ASYNC_CANCEL_ALL,
                   user_data=CANCEL_USER_DATA)
        self._flush()

    async def recv_into(self, sock: socket.socket, buffer: Buffer, flags: int = 0) -> int:
        fd = sock.fileno()
        op = self._start(lib.IORING_OP_RECV, fd, address_of(buffer), len(buffer), 0, flags,
                         buffer)
        result: int = await op
        if result < 0:
            raise _error(result, "recv", fd)
        return result

    def _recv_stream(self, sock: socket.socket, buffers: ProvidedBufferRing) -> RecvStream:
        receiver = self._recvs.get(sock.fileno())
        if receiver is not None and receiver.sock() is sock and not receiver.closed:
            return receiver
        if receiver is not None:
            receiver.stop()  # a stale entry: the fd was closed behind our back
        receiver = self._recvs[sock.fileno()] = RecvStream(self, sock, buffers)
        return receiver

    def stream_receiver(self, sock: socket.socket) -> RecvStream | None:
        if self._buffers is None:
            return None
        # Closed only with its socket (forget_fd); a read after that fails with EBADF.
        return self._recv_stream(sock, self._buffers)

    def recv_raw(self, sock: socket.socket, buffer: Buffer,
                 flags: int = 0) -> _Op | int:
        # One RECV SQE per read: without multishot recv, or with flags. The hottest path of
        # that mode, so `_start` and SqeBatch.prep are inlined: one C call fills the SQE in
        # place (the batch was sized and checked at setup).
        batch = self._batch
        count = batch.count
        if count == batch.capacity:
            self._flush()
            count = 0
        user_data = self._next_user_data
        self._next_user_data = user_data + 1
        _prep_buffer(self._sqes, count, OP_RECV, sock.fileno(), _from_buffer(buffer),
                     len(buffer), flags, user_data)
        batch.count = count + 1
        op = _Op(self, user_data, buffer)
        self._ops[user_data] = op
        return op

    async def send(self, sock: socket.socket, buffer: Buffer, flags: int = 0) -> int:
        fd = sock.fileno()
        op = self._start(lib.IORING_OP_SEND, fd, address_of(buffer), len(buffer), 0, flags,
                         buffer)
        result: int = await op
        if result < 0:
            raise _error(result, "send", fd)
        return result

    async def accept(self, sock: socket.socket) -> int:
        fd = sock.fileno()
        stream = self._accepts.get(fd)
        if stream is None:
            stream = self._accepts[fd] = _AcceptStream(self, fd)
        while True:
            if stream.queue:
                return stream.queue.popleft()
            if stream.error:
                result, stream.error = stream.error, 0
                raise _error(result, "accept", fd)
            if not stream.armed:
                stream.arm()
            if stream.waiter is not None:
                raise BusyResourceError(f"another task is already accepting on fd {fd}")
            wait = _AcceptWait(stream)
            stream.waiter = wait
            await wait

    async def read_at(self, fd: int, buffer: Buffer, offset: int) -> int:
        return await self._positioned(lib.IORING_OP_READ, "read", fd, buffer, offset)

    async def write_at(self, fd: int, buffer: Buffer, offset: int) -> int:
        return await self._positioned(lib.IORING_OP_WRITE, "write", fd, buffer, offset)

    async def _positioned(self, opcode: int, call: str, fd: int, buffer: Buffer,
                          offset: int) -> int:
        """A read or write at `offset` (negative: the file position), the buffer held."""
        position = UNSIGNED_OFFSET_CURRENT if offset < 0 else offset
        op = self._start(opcode, fd, address_of(buffer), len(buffer), position, 0, buffer)
        result: int = await op
        if result < 0:
            raise _error(result, call, fd)
        return result

    async def fsync(self, fd: int) -> None:
        op = self._start(lib.IORING_OP_FSYNC, fd, 0, 0, 0, 0, None)
        result: int = await op
        if result < 0:
            raise _error(result, "fsync", fd)

    async def open(self, path: str, flags: int, mode: int) -> int:
        encoded = ffi.new("char[]", os.fsencode(path))
        op = self._start(lib.IORING_OP_OPENAT, AT_FDCWD, int(ffi.cast("uintptr_t", encoded)),
                         mode, 0, flags | os.O_CLOEXEC, encoded)
        result: int = await op
        if result < 0:
            raise syscall_error(-result, "openat", path=path, flags=hex(flags))
        return result


AT_FDCWD = -100  # <fcntl.h>; Python's os module does not export it


def _kernel_version() -> tuple[int, int]:
    release = os.uname().release
    try:
        major, minor = release.split(".")[:2]
        return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)
    except ValueError:
        return (0, 0)


def _error(result: int, call: str, fd: int) -> OSError:
    return syscall_error(-result, call, fd=fd)
