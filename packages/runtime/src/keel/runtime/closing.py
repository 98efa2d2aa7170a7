"""Sync and async context-manager protocol for keel.runtime's resources.

Why: sockets, files and pipes close synchronously (closing cancels their in-flight kernel
operations), yet users write both `with stream:` and `async with stream:`; one base keeps the
four protocol methods in one place.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from keel.native.fd import Closing


class AsyncClosing(Closing):
    """`with` and `async with` both call close() on the way out."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.close()
