"""BorrowedFd: eventfds and TAP-like devices read and written by the runtime, on both drivers."""

from __future__ import annotations

import os
import threading

import pytest

import keel.runtime as kr
from keel.native.eventfd import EventFd
from keel.runtime.borrowed_fd import BorrowedFd

COUNTER_SIZE = 8


def test_eventfd_written_by_another_thread_wakes_a_read(run) -> None:
    with EventFd() as event:
        async def main() -> int:
            with BorrowedFd(event.fileno(), "eventfd") as borrowed:
                writer = threading.Timer(0.05, lambda: event.write(3))
                writer.start()
                try:
                    count, buffer = await borrowed.read(bytearray(COUNTER_SIZE))
                finally:
                    writer.join()
                assert count == COUNTER_SIZE
                return int.from_bytes(buffer, "little")

        assert run(main) == 3


def test_pipe_write_and_read_keep_message_boundaries(run) -> None:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        async def main() -> bytes:
            with BorrowedFd(read_fd, "pipe") as reader, BorrowedFd(write_fd, "pipe") as writer:
                assert await writer.write(b"frame-1") == len(b"frame-1")
                await reader.wait_readable()
                count, buffer = await reader.read(bytearray(64))
                return bytes(buffer[:count])

        assert run(main) == b"frame-1"
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_close_ends_a_pending_read_and_leaves_the_fd_open(run) -> None:
    with EventFd() as event:
        async def main() -> None:
            borrowed = BorrowedFd(event.fileno(), "eventfd")

            async def reader() -> None:
                with pytest.raises((kr.ClosedResourceError, kr.Cancelled)):
                    await borrowed.read(bytearray(COUNTER_SIZE))

            async with kr.TaskGroup() as group:
                group.spawn(reader)
                await kr.sleep(0.02)
                borrowed.close()
                group.cancel_scope.cancel()
            with pytest.raises(kr.ClosedResourceError):
                borrowed.fileno()

        run(main)
        event.write(1)  # the owner's fd is still open and usable
        assert event.read() == 1


def test_bad_arguments(run) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="fd must be"):
            BorrowedFd(-1)

    run(main)
