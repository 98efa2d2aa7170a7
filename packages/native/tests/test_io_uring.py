"""io_uring bindings against the real kernel ring."""

from __future__ import annotations

import os
import socket

import pytest

from keel.native._uring import ffi, lib
from keel.native.errors import ClosedResourceError
from keel.native.io_uring import (
    CompletionArrays,
    CqeBatch,
    IoUring,
    ProvidedBufferRing,
    SqeBatch,
    probe_opcodes,
)


def test_nop_completes_with_its_user_data() -> None:
    with IoUring(8) as ring:
        batch = SqeBatch(8)
        batch.prep(lib.IORING_OP_NOP, user_data=0xABCDEF)
        assert ring.submit(batch, wait_for=1) == 1
        assert len(batch) == 0
        completions = CqeBatch()
        assert ring.reap(completions) == 1
        assert completions[0] == (0xABCDEF, 0, 0)


def test_read_from_a_pipe() -> None:
    read_end, write_end = os.pipe()
    try:
        with IoUring(4) as ring:
            buffer = bytearray(64)
            pointer = ffi.from_buffer(buffer)
            batch = SqeBatch(4)
            batch.prep(lib.IORING_OP_READ, fd=read_end, addr=int(ffi.cast("uintptr_t", pointer)),
                       length=len(buffer), offset=(1 << 64) - 1, user_data=7)
            ring.submit(batch)
            assert not ring.wait(1, timeout=0.05), "the read completed before any data was written"
            os.write(write_end, b"hello, ring")
            assert ring.wait(1, timeout=5)
            completions = CqeBatch()
            ring.reap(completions)
            user_data, result, _flags = completions[0]
            assert (user_data, result) == (7, len(b"hello, ring"))
            assert bytes(buffer[:result]) == b"hello, ring"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_more_operations_than_ring_entries() -> None:
    """A batch larger than the SQ ring goes in over several submits; nothing is lost."""
    with IoUring(4) as ring:
        batch = SqeBatch(32)
        for index in range(32):
            batch.prep(lib.IORING_OP_NOP, user_data=index)
        seen: list[int] = []
        completions = CqeBatch(8)
        while len(batch) or len(seen) < 32:
            if len(batch):
                ring.submit(batch)
            ring.wait(1, timeout=5)
            ring.reap(completions)
            seen.extend(completions[i][0] for i in range(len(completions)))
        assert sorted(seen) == list(range(32))
        assert ring.cq_overflow() == 0


def test_reap_lists_splits_completions_and_prep_buffer_fills_one_sqe() -> None:
    """The runtime's fast path: a read prepared by one C call, completions as int lists."""
    read_end, write_end = os.pipe()
    try:
        with IoUring(8) as ring:
            buffer = bytearray(16)
            batch = SqeBatch(8)
            lib.keel_sqe_prep_buffer(batch.pointer, 0, lib.IORING_OP_READ, read_end,
                                     ffi.from_buffer(buffer), len(buffer), 0, 41)
            batch.count = 1
            batch.prep(lib.IORING_OP_NOP, user_data=(1 << 64) - 1)
            os.write(write_end, b"split")
            ring.submit(batch, wait_for=2)
            completions = CompletionArrays(1)
            seen: list[tuple[int, int, int]] = []
            while len(seen) < 2:
                user_data, results, flags = ring.reap_lists(completions)
                assert len(user_data) <= 1, "reaped more than the arrays' capacity"
                seen.extend(zip(user_data, results, flags, strict=True))
            assert sorted(seen) == [(41, len(b"split"), 0), ((1 << 64) - 1, 0, 0)]
            assert bytes(buffer[:5]) == b"split"
            assert ring.reap_lists(completions) == ([], [], [])
        with pytest.raises(ClosedResourceError):
            ring.reap_lists(completions)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_completion_queue_addresses_locate_the_mapped_cqes() -> None:
    """An outside reaper (keel.runtime's C dispatch) reads the CQ ring through these."""
    with IoUring(4) as ring:
        head, tail, mask, entries, cqes = ring.completion_queue_addresses()
        assert entries == ring.cq_entries and mask == entries - 1
        batch = SqeBatch(1)
        batch.prep(lib.IORING_OP_NOP, user_data=77)
        ring.submit(batch, wait_for=1)
        head_value = ffi.cast("unsigned *", head)[0]
        assert ffi.cast("unsigned *", tail)[0] == head_value + 1
        cqe = ffi.cast("struct io_uring_cqe *", cqes)[head_value & mask]
        assert (cqe.user_data, cqe.res) == (77, 0)
    with pytest.raises(ClosedResourceError):
        ring.completion_queue_addresses()


def test_multishot_recv_selects_provided_buffers() -> None:
    """One RECV SQE, many messages: each completion names the provided buffer it filled."""
    left, right = socket.socketpair()
    ring = IoUring(8)
    buffers = ProvidedBufferRing(ring, group=3, entries=2, buffer_size=16)
    try:
        batch = SqeBatch(2)
        sqe = batch.prep(lib.IORING_OP_RECV, fd=left.fileno(), user_data=9,
                         sqe_flags=lib.IOSQE_BUFFER_SELECT)
        sqe.ioprio = lib.IORING_RECV_MULTISHOT
        sqe.buf_index = buffers.group
        ring.submit(batch)
        completions = CompletionArrays(8)
        received = bytearray()
        for message in (b"first", b"second", b"third", b"fourth", b"fifth"):
            right.send(message)
            assert ring.wait(1, timeout=5)
            user_data, results, flags = ring.reap_lists(completions)
            assert user_data == [9] and results == [len(message)]
            assert flags[0] & lib.IORING_CQE_F_MORE, "the multishot recv ended early"
            assert flags[0] & lib.IORING_CQE_F_BUFFER
            destination = bytearray(results[0])
            buffers.take(buffers.buffer_id(flags[0]), destination, results[0])
            received += destination
        assert received == b"firstsecondthirdfourthfifth"  # 5 messages, 2 buffers: recycled
        with pytest.raises(ValueError):
            buffers.take(0, bytearray(4), 8)
    finally:
        ring.close()  # first: the kernel may write into the buffers until then
        buffers.close()
        left.close()
        right.close()


def test_probe_reports_supported_opcodes() -> None:
    with IoUring(2) as ring:
        supported = ring.probe()
    assert lib.IORING_OP_NOP in supported
    assert lib.IORING_OP_READ in supported
    assert probe_opcodes()["nop"] is True


def test_eventfd_registration_signals_completions() -> None:
    from keel.native.eventfd import EventFd

    with IoUring(2) as ring, EventFd(nonblocking=True) as notify:
        ring.register_eventfd(notify.fileno())
        batch = SqeBatch(1)
        batch.prep(lib.IORING_OP_NOP, user_data=1)
        ring.submit(batch, wait_for=1)
        assert notify.read() >= 1
        ring.unregister_eventfd()
        ring.reap(CqeBatch())


def test_bad_arguments_and_closed_ring() -> None:
    with pytest.raises(ValueError, match="entries must be in"):
        IoUring(0)
    with pytest.raises(TypeError, match="entries must be an int"):
        IoUring("8")  # type: ignore[arg-type]
    batch = SqeBatch(1)
    with pytest.raises(ValueError, match="not an io_uring opcode"):
        batch.prep(10_000)
    batch.prep(lib.IORING_OP_NOP)
    with pytest.raises(OverflowError, match="full"):
        batch.prep(lib.IORING_OP_NOP)
    ring = IoUring(2)
    ring.close()
    ring.close()
    with pytest.raises(ClosedResourceError, match="io_uring is closed"):
        ring.submit(batch)
    with pytest.raises(ValueError, match="timeout must be"), IoUring(2) as live:
        live.wait(1, timeout=-1)
