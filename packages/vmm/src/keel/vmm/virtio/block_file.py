"""A BlockBackend on a host file: pread/pwrite/fsync on a file descriptor it owns.

Why a plain file and blocking calls: it is the thin I/O edge of the block core, correct and
simple; the event-loop wiring (keel.runtime with io_uring reads and writes) can replace it
without touching the request logic in block.py.
"""

from __future__ import annotations

import errno
import os
from types import TracebackType
from typing import Self

from keel.vmm.virtio.errors import VirtioConfigError


class FileBlockBackend:
    """A disk image file, opened read-write or read-only (a context manager)."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags)
        except OSError as error:
            raise VirtioConfigError(f"disk image {os.fspath(path)!r} cannot be opened "
                                    f"{'read-only' if read_only else 'read-write'}: "
                                    f"{error.strerror}") from None
        self.path = os.fspath(path)
        self.read_only = read_only
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def fileno(self) -> int:
        """The image's fd, for an event loop that reads and writes it through io_uring."""
        return self._fd

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def write_at(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            if written <= 0:
                raise OSError(errno.EIO, f"pwrite to {self.path!r} at {offset} made no progress")
            view = view[written:]
            offset += written

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
