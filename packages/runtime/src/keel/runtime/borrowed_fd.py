"""An fd that something else owns (an eventfd, a TAP device, a tty), driven by the runtime.

Why borrowed: devices such as KVM's ioeventfds or a VMM's TAP are created and closed by the
component that owns them (keel.native's EventFd, Tap); the runtime only needs to read and
write them without blocking its thread. `close()` here releases the runtime's hold (every
wait and operation on the fd ends) but leaves the fd open for its owner. Reads and writes are
single system calls: one read is one eventfd counter or one TAP frame, one write one frame,
never split or merged.
"""

from __future__ import annotations

import os

from keel.runtime.buffers import ReadableBuffer, WritableBuffer, readable_view, writable_view
from keel.runtime.closing import AsyncClosing
from keel.runtime.errors import BusyResourceError, ClosedResourceError
from keel.runtime.scheduler import current_runtime

CURRENT_POSITION = -1  # read_at/write_at offset meaning "no offset" (pipes, devices)


class BorrowedFd(AsyncClosing):
    """One reader and one writer at a time; the fd's blocking mode is set for the driver."""

    def __init__(self, fd: int, description: str = "borrowed fd") -> None:
        if fd < 0:
            raise ValueError(f"{description}: fd must be >= 0, got {fd}")
        self._driver = current_runtime().driver
        self._fd = fd
        self._description = description
        self._reading = False
        self._writing = False
        os.set_blocking(fd, not self._driver.nonblocking_fds)

    def fileno(self) -> int:
        if self._fd < 0:
            raise ClosedResourceError(f"{self._description} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    async def read(self, buffer: WritableBuffer,
                   size: int | None = None) -> tuple[int, WritableBuffer]:
        """One read(2) into `buffer` once the fd is readable; returns (count, buffer)."""
        view = writable_view("buffer", buffer, size)
        fd = self.fileno()
        if self._reading:
            raise BusyResourceError(f"another task is already reading {self._description}")
        self._reading = True
        try:
            count = await self._driver.read_at(fd, view, CURRENT_POSITION)
        except OSError as error:
            raise self._closed_error(error) from error
        finally:
            self._reading = False
        return count, buffer

    async def write(self, buffer: ReadableBuffer) -> int:
        """One write(2) of the whole of `buffer` (a frame); returns what the kernel took."""
        view = memoryview(readable_view("buffer", buffer))
        fd = self.fileno()
        if self._writing:
            raise BusyResourceError(f"another task is already writing {self._description}")
        self._writing = True
        try:
            return await self._driver.write_at(fd, view, CURRENT_POSITION)
        except OSError as error:
            raise self._closed_error(error) from error
        finally:
            self._writing = False

    async def wait_readable(self) -> None:
        await self._driver.wait_readable(self.fileno())

    def close(self) -> None:
        """End the runtime's use of the fd; the owner still closes it."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            self._driver.forget_fd(fd, self._reading or self._writing)

    def _closed_error(self, error: OSError) -> BaseException:
        if self._fd < 0:
            return ClosedResourceError(f"{self._description} was closed during the operation")
        return error
