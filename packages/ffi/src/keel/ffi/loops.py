"""Event-loop adapters: how an async Go call waits, whatever loop the caller runs.

Why adapters and not one loop: keel.ffi must not import keel.runtime (the dependency points
the other way), and asyncio and trio users must not need it. An adapter knows three things
about its loop: whether it is running in this thread (and which instance), how to wait for a
file descriptor to become readable, and how to make an event. keel.runtime (or any loop)
plugs in through `register_loop_adapter` or the `keel.ffi.loop_adapters` entry-point group.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import logging
import sys
from typing import Any, Protocol

from keel.ffi.errors import FfiError

logger = logging.getLogger("keel.ffi")
ENTRY_POINT_GROUP = "keel.ffi.loop_adapters"


class LoopEvent(Protocol):
    def set(self) -> None: ...

    async def wait(self) -> Any: ...


class LoopAdapter(Protocol):
    """What keel.ffi needs from an event loop."""

    name: str

    def current(self) -> object | None:
        """The running loop instance in this thread (any hashable identity), or None."""
        ...

    async def wait_readable(self, fd: int) -> None:
        """Return once fd is readable; cancellable the loop's own way."""
        ...

    def new_event(self) -> LoopEvent:
        """A one-shot event that tasks of this loop can wait on."""
        ...


class AsyncioAdapter:
    """asyncio (and any asyncio-compatible loop, uvloop or keel.runtime's): add_reader."""

    name = "asyncio"

    def current(self) -> object | None:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return None

    async def wait_readable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await readable
        finally:
            loop.remove_reader(fd)

    def new_event(self) -> LoopEvent:
        return asyncio.Event()


class TrioAdapter:
    """trio: trio.lowlevel.wait_readable (imported only when trio is already in use)."""

    name = "trio"

    def current(self) -> object | None:
        trio = sys.modules.get("trio")
        if trio is None:
            return None
        try:
            token: object = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return None
        return token

    async def wait_readable(self, fd: int) -> None:
        import trio  # type: ignore[import-untyped,unused-ignore]

        await trio.lowlevel.wait_readable(fd)

    def new_event(self) -> LoopEvent:
        import trio  # type: ignore[import-untyped,unused-ignore]

        event: LoopEvent = trio.Event()
        return event


class KeelRuntimeAdapter:
    """keel.runtime's own tasks: its driver's wait_readable (io_uring POLL_ADD or epoll) and
    its Event. keel.ffi never imports keel.runtime: this adapter only answers when the caller
    has already imported it and a keel.runtime loop is running on this thread.
    (keel.runtime's asyncio loop is served by the asyncio adapter.)"""

    name = "keel.runtime"
    MODULE = "keel.runtime"

    def _runtime(self) -> Any:
        module = sys.modules.get(self.MODULE)
        if module is None:
            return None
        try:
            return module.current_runtime()
        except Exception:  # keel.runtime.NoRuntimeError: no keel loop on this thread
            return None

    def current(self) -> object | None:
        runtime: object | None = self._runtime()
        return runtime

    async def wait_readable(self, fd: int) -> None:
        await self._runtime().driver.wait_readable(fd)

    def new_event(self) -> LoopEvent:
        synchronisation = importlib.import_module(f"{self.MODULE}.sync")
        event: LoopEvent = synchronisation.Event()
        return event


_registered: list[LoopAdapter] = []
_builtin: list[LoopAdapter] = [KeelRuntimeAdapter(), AsyncioAdapter(), TrioAdapter()]
_entry_points_loaded = False


def register_loop_adapter(adapter: LoopAdapter) -> None:
    """Add an adapter; registered adapters are asked before asyncio and trio."""
    if adapter not in _registered:
        _registered.insert(0, adapter)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            adapter = entry_point.load()
            register_loop_adapter(adapter() if isinstance(adapter, type) else adapter)
        except Exception as error:  # a broken plugin must not break asyncio and trio users
            logger.warning("loop adapter %s could not be loaded: %s", entry_point.value, error)


def current_loop() -> tuple[LoopAdapter, object]:
    """The adapter for the loop running in this thread and that loop's identity."""
    _load_entry_points()
    for adapter in (*_registered, *_builtin):
        token = adapter.current()
        if token is not None:
            return adapter, token
    raise FfiError("an async keel.ffi call must be awaited inside a running event loop "
                   "(asyncio, trio, keel.runtime or a registered adapter); none is running")
