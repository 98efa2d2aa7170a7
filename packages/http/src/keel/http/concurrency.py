"""Timeouts and events that work on whichever loop is running the request.

Why: middleware and the ASGI adapter run under keel's server on asyncio or trio, and under
foreign ASGI servers; sniffio tells which library is running so one code path serves all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sniffio

RUNTIME = "keel.runtime"


def _library() -> str:
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        pass
    try:
        import keel.runtime

        keel.runtime.current_runtime()
    except Exception:
        return "asyncio"
    return RUNTIME


@asynccontextmanager
async def timeout(seconds: float) -> AsyncIterator[None]:
    """Raise TimeoutError if the body runs longer than `seconds`."""
    library = _library()
    if library == "trio":
        import trio

        try:
            with trio.fail_after(seconds):
                yield
        except trio.TooSlowError:
            raise TimeoutError(f"took longer than {seconds} s") from None
    elif library == RUNTIME:
        import keel.runtime

        with keel.runtime.fail_after(seconds):  # raises TooSlowError, a TimeoutError
            yield
    else:
        async with asyncio.timeout(seconds):
            yield


async def sleep(seconds: float) -> None:
    """Sleep on whichever library is running."""
    library = _library()
    if library == "trio":
        import trio

        await trio.sleep(seconds)
    elif library == RUNTIME:
        import keel.runtime

        await keel.runtime.sleep(seconds)
    else:
        await asyncio.sleep(seconds)


class Signal:
    """A one-shot event created lazily for the running library."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._event: Any = None
        self._set = False

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            return
        if self._event is None:
            library = _library()
            if library == "trio":
                import trio

                self._event = trio.Event()
            elif library == RUNTIME:
                from keel.runtime.sync import Event

                self._event = Event()
            else:
                self._event = asyncio.Event()
        await self._event.wait()
