"""Files: open, read_at, write_at, fsync, stat; pipes.

Why positional I/O only (read_at/write_at): with io_uring many reads of one file can be in
flight at once, so a shared file position would be a race; callers say where.
"""

from __future__ import annotations

import os

from keel.runtime.buffers import ReadableBuffer, WritableBuffer, readable_view, writable_view
from keel.runtime.closing import AsyncClosing
from keel.runtime.drivers.base import Driver
from keel.runtime.errors import BusyResourceError, ClosedResourceError
from keel.runtime.scheduler import current_runtime

DEFAULT_MODE = 0o644
OPEN_MODES = {
    "r": os.O_RDONLY,
    "r+": os.O_RDWR,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
}


class _FdObject(AsyncClosing):
    def __init__(self, fd: int, driver: Driver, description: str) -> None:
        self._fd = fd
        self._driver = driver
        self._description = description
        self._pending = 0

    def fileno(self) -> int:
        if self._fd < 0:
            raise ClosedResourceError(f"{self._description} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                self._driver.forget_fd(fd, self._pending > 0)
            finally:
                os.close(fd)

    def _closed_error(self, error: OSError) -> BaseException:
        if self._fd < 0:
            return ClosedResourceError(f"{self._description} was closed during the operation")
        return error


class File(_FdObject):
    """An open file; every operation names its offset."""

    @classmethod
    async def open(cls, path: str | os.PathLike[str], mode: str | int = "r",
                   permissions: int = DEFAULT_MODE) -> File:
        driver = current_runtime().driver
        if isinstance(mode, str):
            if mode not in OPEN_MODES:
                raise ValueError(f"file mode {mode!r} is not one of {sorted(OPEN_MODES)}")
            flags = OPEN_MODES[mode]
        else:
            flags = mode
        name = os.fspath(path)
        fd = await driver.open(name, flags, permissions)
        return cls(fd, driver, f"file {name!r}")

    async def read_at(self, buffer: WritableBuffer, offset: int,
                      size: int | None = None) -> tuple[int, WritableBuffer]:
        """Read up to len(buffer) bytes at `offset`; returns (count, buffer); 0 at EOF."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        view = writable_view("buffer", buffer, size)
        fd = self.fileno()
        self._pending += 1
        try:
            count = await self._driver.read_at(fd, view, offset)
        except OSError as error:
            raise self._closed_error(error) from error
        finally:
            self._pending -= 1
        return count, buffer

    async def write_at(self, buffer: ReadableBuffer, offset: int) -> tuple[int, ReadableBuffer]:
        """Write all of `buffer` at `offset`; returns (count, buffer)."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        view = memoryview(readable_view("buffer", buffer))
        fd = self.fileno()
        done = 0
        self._pending += 1
        try:
            while done < len(view):
                written = await self._driver.write_at(fd, view[done:], offset + done)
                if written == 0:
                    raise OSError(f"write to {self._description} made no progress at "
                                  f"offset {offset + done}")
                done += written
        except OSError as error:
            raise self._closed_error(error) from error
        finally:
            self._pending -= 1
        return done, buffer

    async def fsync(self) -> None:
        await self._driver.fsync(self.fileno())

    def stat(self) -> os.stat_result:
        return os.fstat(self.fileno())


class PipeReader(_FdObject):
    async def read(self, buffer: WritableBuffer,
                   size: int | None = None) -> tuple[int, WritableBuffer]:
        view = writable_view("buffer", buffer, size)
        fd = self.fileno()
        if self._pending:
            raise BusyResourceError("another task is already reading this pipe")
        self._pending += 1
        try:
            count = await self._driver.read_at(fd, view, -1)
        except OSError as error:
            raise self._closed_error(error) from error
        finally:
            self._pending -= 1
        return count, buffer


class PipeWriter(_FdObject):
    async def write(self, buffer: ReadableBuffer) -> tuple[int, ReadableBuffer]:
        view = memoryview(readable_view("buffer", buffer))
        fd = self.fileno()
        if self._pending:
            raise BusyResourceError("another task is already writing this pipe")
        done = 0
        self._pending += 1
        try:
            while done < len(view):
                done += await self._driver.write_at(fd, view[done:], -1)
        except OSError as error:
            raise self._closed_error(error) from error
        finally:
            self._pending -= 1
        return done, buffer


def open_pipe() -> tuple[PipeReader, PipeWriter]:
    """A new pipe as (reader, writer), set up for the running driver."""
    driver = current_runtime().driver
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    for fd in (read_fd, write_fd):
        os.set_blocking(fd, not driver.nonblocking_fds)
    return PipeReader(read_fd, driver, "pipe reader"), PipeWriter(write_fd, driver, "pipe writer")


def wrap_pipe_fds(read_fd: int | None, write_fd: int | None) -> tuple[PipeReader | None,
                                                                      PipeWriter | None]:
    """Adopt existing pipe ends (e.g. a subprocess's stdout)."""
    driver = current_runtime().driver
    reader = writer = None
    if read_fd is not None:
        os.set_blocking(read_fd, not driver.nonblocking_fds)
        reader = PipeReader(read_fd, driver, "pipe reader")
    if write_fd is not None:
        os.set_blocking(write_fd, not driver.nonblocking_fds)
        writer = PipeWriter(write_fd, driver, "pipe writer")
    return reader, writer
