"""Owned file descriptors.

Why: every keel object that holds a kernel resource holds it through `OwnedFd`, so closing
is explicit, idempotent and ordered, a closed descriptor is never reused by accident (the
number may already belong to someone else), and the test suite can prove nothing leaks.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Self

from keel.native.errors import ClosedResourceError

_CLOSED = -1


class Closing:
    """Context-manager protocol for anything with an idempotent close()."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class OwnedFd(Closing):
    """A file descriptor this object owns and closes exactly once."""

    __slots__ = ("_description", "_fd")

    def __init__(self, fd: int, description: str) -> None:
        if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
            raise ValueError(f"{description}: not a file descriptor: {fd!r}")
        self._fd = fd
        self._description = description

    @property
    def description(self) -> str:
        return self._description

    @property
    def closed(self) -> bool:
        return self._fd == _CLOSED

    def fileno(self) -> int:
        """The descriptor number; ClosedResourceError once closed."""
        if self._fd == _CLOSED:
            raise ClosedResourceError(f"{self._description} is closed")
        return self._fd

    def detach(self) -> int:
        """Give up ownership: the caller now closes the returned descriptor."""
        fd = self.fileno()
        self._fd = _CLOSED
        return fd

    def close(self) -> None:
        if self._fd != _CLOSED:
            fd, self._fd = self._fd, _CLOSED
            os.close(fd)

    def __del__(self) -> None:
        # Last resort only: owners close explicitly, and the test plugin reports leaks.
        if getattr(self, "_fd", _CLOSED) != _CLOSED:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<OwnedFd {self._description} {state}>"


class FdResource(Closing):
    """Base for wrappers whose life is one owned descriptor: context manager and fileno()."""

    _owned: OwnedFd

    def __init__(self, owned: OwnedFd) -> None:
        self._owned = owned

    def fileno(self) -> int:
        return self._owned.fileno()

    @property
    def closed(self) -> bool:
        return self._owned.closed

    def close(self) -> None:
        self._owned.close()
