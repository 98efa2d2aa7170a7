"""io_uring: ring setup, mapping, batched submission and reaping, registration and probing.

Why this shape: the runtime prepares SQEs into a Python-owned batch (`SqeBatch`) as it goes
and hands the whole batch to the kernel with one C call and one io_uring_enter per loop
turn; completions come back the same way, many per call. The shared ring memory is touched
only by the C helpers, with the acquire/release ordering io_uring(7) requires.
"""

from __future__ import annotations

import errno
import mmap
from typing import Any

from keel.native._uring import ffi, lib
from keel.native.checks import UINT8_MAX, UINT16_MAX, UINT32_MAX, require_int
from keel.native.errors import ClosedResourceError, check_result
from keel.native.fd import Closing, OwnedFd

CData = Any

# IORING_MAX_ENTRIES is kernel-internal (io_uring/io_uring.h), not in the uapi header.
MAX_SQ_ENTRIES = 32768
DEFAULT_REAP_CAPACITY = 256
NANOSECONDS_PER_SECOND = 1_000_000_000
# The kernel indexes a provided-buffer ring with a 16-bit tail masked by entries - 1.
MAX_PROVIDED_BUFFERS = 1 << 15
BUFFER_RING_SLOT_BYTES = 16  # sizeof(struct io_uring_buf)
CQE_BUFFER_SHIFT: int = lib.KEEL_CQE_BUFFER_SHIFT

OPCODE_NAMES: dict[int, str] = {
    getattr(lib, name): name.removeprefix("IORING_OP_").lower()
    for name in dir(lib)
    if name.startswith("IORING_OP_") and name != "IORING_OP_LAST"
}


class SqeBatch:
    """SQEs prepared by Python and submitted together.

    Fields are filled by one C call per SQE (`prep`); `sqe(i)` gives the raw struct for the
    rarer fields (buf_index, personality, addr3, splice_fd_in).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = require_int("capacity", capacity, 1, MAX_SQ_ENTRIES)
        self._sqes = ffi.new("struct io_uring_sqe[]", self.capacity)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def full(self) -> bool:
        return self.count == self.capacity

    def prep(
        self,
        opcode: int,
        *,
        fd: int = -1,
        addr: int = 0,
        length: int = 0,
        offset: int = 0,
        op_flags: int = 0,
        user_data: int = 0,
        sqe_flags: int = 0,
    ) -> CData:
        """Append one SQE and return it for any further field."""
        if self.count == self.capacity:
            raise OverflowError(f"SqeBatch is full ({self.capacity} SQEs); submit it first")
        if not 0 <= opcode < lib.IORING_OP_LAST:
            raise ValueError(f"opcode {opcode!r} is not an io_uring opcode this build knows")
        sqe = self._sqes + self.count
        lib.keel_sqe_prep(sqe, opcode, sqe_flags, fd, addr, length, offset, op_flags, user_data)
        self.count += 1
        return sqe

    def sqe(self, index: int) -> CData:
        if not 0 <= index < self.count:
            raise IndexError(f"SQE {index} is not in this batch of {self.count}")
        return self._sqes + index

    def clear(self) -> None:
        self.count = 0

    @property
    def pointer(self) -> CData:
        return self._sqes


class CqeBatch:
    """A reusable array that completions are copied into."""

    def __init__(self, capacity: int = DEFAULT_REAP_CAPACITY) -> None:
        self.capacity = require_int("capacity", capacity, 1, UINT32_MAX)
        self._cqes = ffi.new("struct io_uring_cqe[]", self.capacity)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        """(user_data, res, flags) of completion `index`."""
        if not 0 <= index < self.count:
            raise IndexError(f"completion {index} is not in this batch of {self.count}")
        cqe = self._cqes[index]
        return cqe.user_data, cqe.res, cqe.flags

    @property
    def pointer(self) -> CData:
        return self._cqes


class CompletionArrays:
    """Reusable parallel arrays (user_data, res, flags) that completions are split into.

    Why: a runtime dispatching thousands of completions a second pays for every cffi field
    access; `IoUring.reap_lists` fills these in one C call and hands back plain Python int
    lists (one `memoryview.tolist()` per field), so the dispatch loop touches no cdata.
    """

    def __init__(self, capacity: int = DEFAULT_REAP_CAPACITY) -> None:
        self.capacity = require_int("capacity", capacity, 1, UINT32_MAX)
        self.user_data = ffi.new("uint64_t[]", self.capacity)
        self.results = ffi.new("int32_t[]", self.capacity)
        self.flags = ffi.new("uint32_t[]", self.capacity)
        self.user_data_view = memoryview(ffi.buffer(self.user_data)).cast("Q")
        self.results_view = memoryview(ffi.buffer(self.results)).cast("i")
        self.flags_view = memoryview(ffi.buffer(self.flags)).cast("I")


class IoUring(Closing):
    """One io_uring instance: its descriptor, its mapped rings, and the calls on them."""

    def __init__(
        self,
        entries: int,
        *,
        flags: int = 0,
        cq_entries: int | None = None,
        sq_thread_idle_ms: int = 0,
    ) -> None:
        entries = require_int("entries", entries, 1, MAX_SQ_ENTRIES)
        flags = require_int("flags", flags, 0, UINT32_MAX)
        params: CData = ffi.new("struct io_uring_params *")
        params.flags = flags
        params.sq_thread_idle = require_int("sq_thread_idle_ms", sq_thread_idle_ms, 0, UINT32_MAX)
        if cq_entries is not None:
            params.flags |= lib.IORING_SETUP_CQSIZE
            params.cq_entries = require_int("cq_entries", cq_entries, entries, UINT32_MAX)
        fd = check_result(lib.keel_uring_setup(entries, params), "io_uring_setup",
                          entries=entries, flags=hex(params.flags))
        self._owned = OwnedFd(fd, "io_uring fd")
        self._ring = ffi.new("struct keel_ring *")
        result = lib.keel_ring_map(self._ring, fd, params)
        if result < 0:
            self._owned.close()
            check_result(result, "mmap", what="io_uring rings", fd=fd)
        self.params: CData = params
        self._mapped = True

    # Life cycle -------------------------------------------------------------------------
    def fileno(self) -> int:
        return self._owned.fileno()

    @property
    def closed(self) -> bool:
        return self._owned.closed

    def close(self) -> None:
        if self._mapped:
            lib.keel_ring_unmap(self._ring)
            self._mapped = False
        self._owned.close()

    def _live_ring(self) -> CData:
        if not self._mapped:
            raise ClosedResourceError("io_uring is closed")
        return self._ring

    # Facts ------------------------------------------------------------------------------
    @property
    def sq_entries(self) -> int:
        return int(self.params.sq_entries)

    @property
    def cq_entries(self) -> int:
        return int(self.params.cq_entries)

    @property
    def features(self) -> int:
        return int(self.params.features)

    def sq_space(self) -> int:
        return int(lib.keel_ring_sq_space(self._live_ring()))

    def cq_ready(self) -> int:
        return int(lib.keel_ring_cq_ready(self._live_ring()))

    def cq_overflow(self) -> int:
        return int(lib.keel_ring_cq_overflow(self._live_ring()))

    # The hot path -----------------------------------------------------------------------
    def submit(self, batch: SqeBatch, wait_for: int = 0, enter_flags: int = 0) -> int:
        """Queue the batch and make one io_uring_enter; returns how many SQEs were consumed.

        SQEs that did not fit (the ring was full) stay at the front of the batch.
        """
        ring = self._live_ring()
        wait_for = require_int("wait_for", wait_for, 0, UINT32_MAX)
        queued = min(batch.count, int(lib.keel_ring_sq_space(ring)))
        result = lib.keel_ring_submit_batch(ring, batch.pointer, batch.count, wait_for,
                                            enter_flags)
        # Whatever fit is in the shared ring now, even if the enter failed: the kernel
        # picks it up at the next enter, so it must leave the batch either way.
        self._drop_front(batch, queued)
        return check_result(result, "io_uring_enter", fd=self.fileno(), to_submit=queued,
                            wait_for=wait_for)

    def submit_unchecked(self, batch: SqeBatch, wait_for: int) -> int:
        """`submit` for a runtime's loop turn: returns -errno instead of raising.

        Why: a runtime calls this once per loop turn with arguments it built itself; the
        argument checks and the keyword-rich error of `submit` cost more than the
        io_uring_enter. Still safe on a closed ring (ClosedResourceError, no syscall).
        """
        if not self._mapped:
            raise ClosedResourceError("io_uring is closed")
        ring = self._ring
        count = batch.count
        queued = min(count, lib.keel_ring_sq_space(ring))
        result: int = lib.keel_ring_submit_batch(ring, batch.pointer, count, wait_for, 0)
        if queued:
            self._drop_front(batch, queued)
        return result

    @staticmethod
    def _drop_front(batch: SqeBatch, taken: int) -> None:
        left = batch.count - taken
        if left and taken:
            sqe_size = ffi.sizeof("struct io_uring_sqe")
            ffi.memmove(batch.pointer, batch.pointer + taken, left * sqe_size)
        batch.count = left

    def wait(self, wait_for: int = 1, timeout: float | None = None) -> bool:
        """Block until `wait_for` completions are ready; False if `timeout` seconds passed."""
        ring = self._live_ring()
        wait_for = require_int("wait_for", wait_for, 0, UINT32_MAX)
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
        timeout_ns = -1 if timeout is None else int(timeout * NANOSECONDS_PER_SECOND)
        result = lib.keel_ring_wait(ring, wait_for, timeout_ns)
        if result == -errno.ETIME:
            return False
        check_result(result, "io_uring_enter", fd=self.fileno(), wait_for=wait_for,
                     timeout=timeout)
        return True

    def reap(self, into: CqeBatch) -> int:
        """Copy ready completions into `into` (up to its capacity); returns how many."""
        into.count = int(lib.keel_ring_reap(self._live_ring(), into.pointer, into.capacity))
        return into.count

    def reap_lists(self, into: CompletionArrays) -> tuple[list[int], list[int], list[int]]:
        """Take up to `into.capacity` ready completions as (user_data, res, flags) lists.

        Fewer than `into.capacity` entries means the completion queue is now empty.
        """
        if not self._mapped:
            raise ClosedResourceError("io_uring is closed")
        count = lib.keel_ring_reap_split(self._ring, into.user_data, into.results, into.flags,
                                         into.capacity)
        return (into.user_data_view[:count].tolist(), into.results_view[:count].tolist(),
                into.flags_view[:count].tolist())

    def completion_queue_addresses(self) -> tuple[int, int, int, int, int]:
        """(head address, tail address, mask, entries, cqes address) of the mapped CQ ring.

        Why: a runtime that reaps completions in its own C code (keel.runtime's dispatch
        loop) reads the shared ring directly; it must acquire-load the tail, release-store
        the head, and stop using the addresses once this ring is closed.
        """
        ring = self._live_ring()
        if self.params.flags & lib.IORING_SETUP_CQE32:
            raise ValueError("completion_queue_addresses: 32-byte CQEs are not supported")
        return (int(ffi.cast("uintptr_t", ring.cq_head)), int(ffi.cast("uintptr_t", ring.cq_tail)),
                int(ring.cq_mask[0]), int(self.params.cq_entries),
                int(ffi.cast("uintptr_t", ring.cqes)))

    # Registration -----------------------------------------------------------------------
    def register(self, opcode: int, argument: CData, count: int) -> int:
        """io_uring_register(2) with a raw argument; typed helpers below cover common uses."""
        opcode = require_int("opcode", opcode, 0, UINT32_MAX)
        count = require_int("count", count, 0, UINT32_MAX)
        return check_result(
            lib.keel_uring_register(self.fileno(), opcode, argument, count),
            "io_uring_register", fd=self.fileno(), opcode=opcode, count=count,
        )

    def register_eventfd(self, eventfd: int) -> None:
        value = ffi.new("int *", require_int("eventfd", eventfd, 0, UINT32_MAX >> 1))
        self.register(lib.IORING_REGISTER_EVENTFD, value, 1)

    def unregister_eventfd(self) -> None:
        self.register(lib.IORING_UNREGISTER_EVENTFD, ffi.NULL, 0)

    def probe(self) -> set[int]:
        """The opcodes this kernel supports (IORING_REGISTER_PROBE)."""
        capacity = UINT8_MAX + 1
        raw = ffi.new("char[]", ffi.sizeof("struct io_uring_probe")
                      + capacity * ffi.sizeof("struct io_uring_probe_op"))
        probe: CData = ffi.cast("struct io_uring_probe *", raw)
        self.register(lib.IORING_REGISTER_PROBE, probe, capacity)
        return {
            int(probe.ops[i].op)
            for i in range(probe.ops_len)
            if probe.ops[i].flags & lib.IO_URING_OP_SUPPORTED
        }


def probe_opcodes() -> dict[str, bool]:
    """Which of the opcodes in this build's header the running kernel supports."""
    with IoUring(1) as ring:
        supported = ring.probe()
    return {name: code in supported for code, name in sorted(OPCODE_NAMES.items())}


class ProvidedBufferRing(Closing):
    """A ring of equal buffers the kernel picks from (IORING_REGISTER_PBUF_RING, 5.19+).

    Why: a multishot recv with IOSQE_BUFFER_SELECT needs no SQE per message; the kernel
    takes a buffer from this ring for each completion and names it in the CQE flags
    (`buffer_id(flags)`). The owner copies the bytes out and `recycle`s the buffer.
    Ring and buffers are anonymous page-aligned mappings owned here; close this after the
    io_uring (or after every operation selecting from it ended).
    """

    def __init__(self, ring: IoUring, group: int, entries: int, buffer_size: int) -> None:
        self.group = require_int("group", group, 0, UINT16_MAX)
        self.entries = require_int("entries", entries, 1, MAX_PROVIDED_BUFFERS)
        if self.entries & (self.entries - 1):
            raise ValueError(f"entries must be a power of two, got {entries}")
        self.buffer_size = require_int("buffer_size", buffer_size, 1, UINT32_MAX)
        self._ring_memory = mmap.mmap(-1, max(mmap.PAGESIZE,
                                              self.entries * BUFFER_RING_SLOT_BYTES))
        self._pool = mmap.mmap(-1, self.entries * self.buffer_size)
        self.ring_pointer = ffi.from_buffer(self._ring_memory)
        self.pool_pointer = ffi.from_buffer(self._pool)
        # Public for owners that inline `recycle` (keel_buf_ring_push) on their hot path.
        self.pool_address = int(ffi.cast("uintptr_t", self.pool_pointer))
        self.ring_address = int(ffi.cast("uintptr_t", self.ring_pointer))
        self.view = memoryview(self._pool)
        self._closed = False
        for buffer_id in range(self.entries):
            self.recycle(buffer_id)
        registration: CData = ffi.new("struct io_uring_buf_reg *")
        registration.ring_addr = self.ring_address
        registration.ring_entries = self.entries
        registration.bgid = self.group
        try:
            ring.register(lib.IORING_REGISTER_PBUF_RING, registration, 1)
        except BaseException:
            self.close()
            raise

    def recycle(self, buffer_id: int) -> None:
        """Give buffer `buffer_id` back to the kernel (its bytes were consumed)."""
        lib.keel_buf_ring_push(self.ring_pointer, self.entries,
                               self.pool_address + buffer_id * self.buffer_size,
                               self.buffer_size, buffer_id)

    def take(self, buffer_id: int, destination: Any, count: int) -> None:
        """Copy the first `count` bytes of buffer `buffer_id` into `destination` (a writable
        buffer) and recycle it, in one C call."""
        if not 0 <= count <= min(self.buffer_size, len(destination)):
            raise ValueError(f"count {count} exceeds the buffer ({self.buffer_size} bytes) "
                             f"or the destination ({len(destination)} bytes)")
        lib.keel_buf_ring_take(self.ring_pointer, self.entries, self.pool_pointer,
                               self.buffer_size, buffer_id, ffi.from_buffer(destination), count)

    @staticmethod
    def buffer_id(cqe_flags: int) -> int:
        """The buffer a completion with IORING_CQE_F_BUFFER used."""
        return cqe_flags >> CQE_BUFFER_SHIFT

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.view.release()
        ffi.release(self.ring_pointer)
        ffi.release(self.pool_pointer)
        self._ring_memory.close()
        self._pool.close()
