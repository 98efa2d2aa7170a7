"""The C hot path (keel.runtime._hotpath): stream read and write, the ready loop, and the
cases where it hands over to Python. Runs on both drivers (epoll reads take the Python path;
writes take the C path on both)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

import keel.runtime as kr
from keel.runtime import _hotpath

pytestmark = pytest.mark.timeout(60)

LARGE_BYTES = 8 * 1024 * 1024  # far more than a socket buffer: the write must wait for room


def test_read_hands_back_the_callers_buffer_and_honours_size(run) -> None:
    async def main() -> None:
        left, right = kr.UnixStream.pair()
        with left, right:
            buffer = bytearray(16)
            await right.write(b"0123456789")
            count, returned = await left.read(buffer, 4)  # size below the message
            assert returned is buffer
            assert bytes(buffer[:count]) == b"0123"
            count, returned = await left.read(buffer)  # the rest was kept for this read
            assert bytes(buffer[:count]) == b"456789"
            view = memoryview(bytearray(8))[2:6]  # not a bytearray: the Python path
            await right.write(b"abcdef")
            count, returned_view = await left.read(view)
            assert returned_view is view
            assert bytes(view[:count]) == b"abcd"[:count]

    run(main)


def test_read_spawned_as_a_task_sees_bytes_that_came_before_it_ran(run) -> None:
    """A read started by spawn() begins at once but runs later: bytes arriving in between
    must complete it, not leave it parked on data that already came."""

    async def main() -> bytes:
        left, right = kr.UnixStream.pair()
        with left, right:
            await right.write(b"warm")  # arm the receiver (io_uring) with a first read
            count, _ = await left.read(bytearray(8))
            assert count == 4
            async with kr.TaskGroup() as group:
                reading = group.spawn(left.read, bytearray(8))
                await right.write(b"late")
                await kr.sleep(0.02)  # a loop turn reaps the bytes before the task runs
            count, buffer = reading.result()
            return bytes(buffer[:count])

    assert run(main) == b"late"


def test_write_larger_than_the_socket_buffer_arrives_whole_and_in_order(run) -> None:
    payload = bytes(range(256)) * (LARGE_BYTES // 256)

    async def main() -> bytes:
        left, right = kr.UnixStream.pair()
        received = bytearray()

        async def drain() -> None:
            buffer = bytearray(65536)
            while len(received) < LARGE_BYTES:
                count, buffer = await left.read(buffer)
                assert count > 0
                received.extend(buffer[:count])

        with left, right:
            async with kr.TaskGroup() as group:
                group.spawn(drain)
                count, returned = await right.write(payload)
                assert count == LARGE_BYTES and returned is payload
        return bytes(received)

    assert run(main) == payload


def test_write_of_an_unusual_buffer_counts_bytes(run) -> None:
    """A memoryview of 4-byte items goes whole; its count is in bytes."""

    async def main() -> bytes:
        left, right = kr.UnixStream.pair()
        with left, right:
            words = memoryview(bytearray(b"abcdefgh")).cast("I")
            count, returned = await right.write(words)
            assert count == 8 and returned is words
            strided = memoryview(b"a-b-c-d-")[::2]  # not contiguous: TypeError, nothing sent
            with pytest.raises(TypeError):
                await right.write(strided)
            count, buffer = await left.read(bytearray(16))
            return bytes(buffer[:count])

    assert run(main) == b"abcdefgh"


def test_write_with_a_size_sends_only_that_prefix(run) -> None:
    async def main() -> bytes:
        left, right = kr.UnixStream.pair()
        with left, right:
            buffer = bytearray(b"0123456789")
            count, returned = await right.write(buffer, 4)
            assert (count, returned) == (4, buffer)
            count, _ = await right.write(buffer, 100)  # larger than the buffer: all of it
            assert count == 10
            count, _ = await right.write(b"", 0)
            assert count == 0
            with pytest.raises(ValueError):
                await right.write(buffer, -1)
            with pytest.raises(ValueError):
                await right.write(buffer, True)  # type: ignore[arg-type]
            received = bytearray()
            while len(received) < 14:
                count, chunk = await left.read(bytearray(16))
                received.extend(chunk[:count])
            return bytes(received)

    assert run(main) == b"0123" + b"0123456789"


def test_write_and_read_on_a_closed_stream_raise(run) -> None:
    async def main() -> None:
        left, right = kr.UnixStream.pair()
        with right:
            left.close()
            with pytest.raises(kr.ClosedResourceError):
                await left.write(b"x")
            with pytest.raises(kr.ClosedResourceError):
                await left.read(bytearray(4))
            with pytest.raises(BrokenPipeError):
                await right.write(b"x" * 65536)  # the peer is gone

    run(main)


def test_a_coroutine_closed_mid_read_frees_the_stream_for_the_next_read(run) -> None:
    """Closing a coroutine parked in read() (GeneratorExit) ends that read: the next one is
    not refused as busy."""

    async def main() -> bytes:
        left, right = kr.UnixStream.pair()
        with left, right:

            async def reader() -> None:
                await left.read(bytearray(4))

            coroutine = reader()
            trap = coroutine.send(None)  # parked on the read, as a task would be
            assert hasattr(trap, "abort")
            coroutine.close()
            await right.write(b"next")
            count, buffer = await left.read(bytearray(4))
            return bytes(buffer[:count])

    assert run(main) == b"next"


def test_a_cancelled_read_leaves_later_bytes_for_the_next_read(run) -> None:
    async def main() -> bytes:
        left, right = kr.UnixStream.pair()
        with left, right:
            buffer = bytearray(8)
            with kr.move_on_after(0.01):
                await left.read(buffer)
            assert buffer == bytearray(8)  # the cancelled read wrote nothing
            await right.write(b"after")
            count, buffer = await left.read(buffer)
            return bytes(buffer[:count])

    assert run(main) == b"after"


def test_a_read_whose_buffer_was_released_fails_and_keeps_the_bytes() -> None:
    """The waiting read's target is released before data comes (only possible through the
    receiver itself: stream.read pins its own view): that read fails with the buffer's
    error, not the loop, and the bytes are there for the next read."""

    async def main() -> bytes:
        left, right = kr.UnixStream.pair()
        view = memoryview(bytearray(8))
        with left, right:
            await right.write(b"arm")
            await left.read(bytearray(8))  # arms the multishot recv
            receiver = left._receiver
            assert receiver is not None

            async def reader() -> None:
                with pytest.raises(ValueError):
                    await receiver.start(view, len(view), view)

            async with kr.TaskGroup() as group:
                group.spawn(reader)
                await kr.sleep(0.01)  # the reader is parked on the receiver
                view.release()
                await right.write(b"kept")
            count, buffer = await left.read(bytearray(8))
            return bytes(buffer[:count])

    assert kr.run(main, driver="io_uring", strict=True) == b"kept"


def test_reads_and_writes_work_under_a_tracer(run) -> None:
    """With a trace function set, CPython resumes awaitables through their `send` method
    instead of the C slot: the C awaitables answer that protocol too."""

    def tracer(frame: Any, event: str, argument: Any) -> Any:
        return tracer

    async def main() -> bytes:
        left, right = kr.UnixStream.pair()
        with left, right:
            sys.settrace(tracer)
            try:
                await right.write(b"traced")
                count, buffer = await left.read(bytearray(8))
            finally:
                sys.settrace(None)
            return bytes(buffer[:count])

    assert run(main) == b"traced"


def test_receiver_rejects_a_ring_that_is_not_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power-of-two"):
        _hotpath.Receiver(0, 0, 3, 0, 8)
