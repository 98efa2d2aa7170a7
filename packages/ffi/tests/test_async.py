"""Async calls: asyncio, trio and a plugged-in loop adapter; cancellation never frees memory
Go still writes; errors, panics and close while calls are in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import trio
from hashing_iface import Location, Record

from keel.ffi import loops
from keel.ffi.errors import ClosedLibraryError, FfiError, GoError, GoPanic

pytestmark = [pytest.mark.go, pytest.mark.timeout(60)]
SHORT_MS = 5
LONG_MS = 10_000
STUBBORN_MS = 300
CONCURRENT_CALLS = 200


def pending_calls(library: Any) -> int:
    return sum(len(completer.pending) for completer in library._completers.values())


BURST_ROUNDS = 150
BURST_SIZE = 64
BURST_TIMEOUT_SECONDS = 30.0


def test_bursts_of_instant_completions_are_never_lost(library: Any) -> None:
    """Go writes the eventfd only when its queue was empty: calls finishing while an earlier
    wake-up is unread, or while Python drains, must still be taken (a lost one would hang
    its await, so every round is bounded in time)."""
    data = b"burst"

    async def main() -> None:
        for round_index in range(BURST_ROUNDS):
            calls = [library.hash_async(data) if index % 2 else library.empty_async()
                     for index in range(BURST_SIZE)]
            results = await asyncio.wait_for(asyncio.gather(*calls), BURST_TIMEOUT_SECONDS)
            assert results[1::2] == [library.hash(data)] * (BURST_SIZE // 2), round_index
            assert results[0::2] == [None] * (BURST_SIZE // 2)

    asyncio.run(main())
    assert pending_calls(library) == 0


def test_asyncio_calls(library: Any) -> None:
    async def main() -> None:
        assert await library.slow_square(12, SHORT_MS) == 144
        assert await library.empty_async() is None
        record = await library.parse_record_async("3;x;1.5;a;1,2")
        assert record == Record(3, "x", 1.5, ["a"], Location(1.0, 2.0))
        results = await asyncio.gather(*[library.slow_square(index, SHORT_MS)
                                         for index in range(CONCURRENT_CALLS)])
        assert results == [index * index for index in range(CONCURRENT_CALLS)]

    asyncio.run(main())
    assert pending_calls(library) == 0


def test_trio_calls(library: Any) -> None:
    results: dict[int, int] = {}

    async def one(index: int) -> None:
        results[index] = await library.slow_square(index, SHORT_MS)

    async def main() -> None:
        assert await library.hash_async(b"") == 0xCBF29CE484222325
        async with trio.open_nursery() as nursery:
            for index in range(CONCURRENT_CALLS):
                nursery.start_soon(one, index)

    trio.run(main)
    assert results == {index: index * index for index in range(CONCURRENT_CALLS)}


def test_go_errors_and_panics_in_async_calls(library: Any) -> None:
    async def main() -> None:
        with pytest.raises(GoError, match="record id"):
            await library.parse_record_async("x;a;1;;")
        assert await library.slow_square(2, SHORT_MS) == 4

    asyncio.run(main())


def test_cancelled_await_cancels_the_go_context(library: Any) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(library.slow_square(5, LONG_MS))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The abandoned call still owns its memory until Go reports it finished; the
        # next await drains it (Go returns at once: its context was cancelled).
        assert await library.slow_square(3, SHORT_MS) == 9

    asyncio.run(asyncio.wait_for(main(), timeout=5))
    assert pending_calls(library) == 0


def test_cancelled_await_keeps_memory_until_go_writes(library: Any) -> None:
    """stubborn_square ignores cancellation and writes its result late: the call's buffer
    must still be owned by the completer when Go writes, and released only after."""

    async def main() -> None:
        task = asyncio.ensure_future(library.stubborn_square(7, STUBBORN_MS))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (completer,) = library._completers.values()
        (abandoned,) = completer.pending.values()
        assert abandoned.abandoned and not abandoned.done
        buffer, _arguments, result, _keep, values = abandoned.keep
        assert values == (7, STUBBORN_MS)
        # Churn the allocator: freed memory would be reused by these.
        garbage = [bytearray(256) for _ in range(10_000)]
        while not abandoned.done:
            await library.slow_square(1, SHORT_MS)
        assert result.value == 49  # Go wrote into memory that was still ours
        del garbage, buffer

    asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert pending_calls(library) == 0


def test_trio_cancellation(library: Any) -> None:
    async def main() -> None:
        with trio.move_on_after(0.05) as scope:
            await library.slow_square(5, LONG_MS)
        assert scope.cancelled_caught
        assert await library.slow_square(4, SHORT_MS) == 16

    trio.run(main)
    assert pending_calls(library) == 0


class RecordingAdapter(loops.AsyncioAdapter):
    """Stands in for keel.runtime's adapter: plugged in without keel.ffi importing it."""

    name = "recording"

    def __init__(self) -> None:
        self.waits = 0

    async def wait_readable(self, fd: int) -> None:
        self.waits += 1
        await super().wait_readable(fd)


def test_registered_adapters_are_used_first(library: Any) -> None:
    adapter = RecordingAdapter()
    loops.register_loop_adapter(adapter)
    try:
        assert asyncio.run(library.slow_square(6, SHORT_MS)) == 36
    finally:
        loops._registered.remove(adapter)
    assert adapter.waits >= 1


def test_awaiting_without_a_loop_is_a_clear_error(library: Any) -> None:
    coroutine = library.slow_square(1, SHORT_MS)
    with pytest.raises(FfiError, match="inside a running event loop"):
        coroutine.send(None)


def test_async_argument_errors_raise_before_go(library: Any) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match=r"delay_ms\) = -1 is out of range for uint32"):
            await library.slow_square(1, -1)
        with pytest.raises(TypeError, match=r"value\) is None but is not optional"):
            await library.slow_square(None, 1)

    asyncio.run(main())


def test_close_cancels_and_waits_for_in_flight_calls(built_example: Any) -> None:
    from hashing_binding import HashingLibrary

    opened = HashingLibrary.open(built_example)

    async def main() -> None:
        task = asyncio.ensure_future(opened.slow_square(8, LONG_MS))
        await asyncio.sleep(0.05)
        opened.close()
        with pytest.raises(GoError, match="context canceled"):
            await task
        with pytest.raises(ClosedLibraryError):
            await opened.slow_square(1, SHORT_MS)

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_async_panic_becomes_go_panic(library: Any) -> None:
    async def main() -> None:
        with pytest.raises(GoPanic, match="goroutine on fire"):
            await library.crash_async("goroutine on fire")
        assert await library.slow_square(2, SHORT_MS) == 4

    asyncio.run(main())


def test_keel_runtime_tasks(library: Any) -> None:
    runtime = pytest.importorskip(
        "keel.runtime", reason="keel-runtime is not installed here (the ffi nox session "
        "installs keel-native and keel-ffi only); the system Python and the bench have it")
    results: dict[int, int] = {}

    async def one(index: int) -> None:
        results[index] = await library.slow_square(index, SHORT_MS)

    async def main() -> None:
        assert await library.slow_square(11, SHORT_MS) == 121
        async with runtime.TaskGroup() as group:
            for index in range(CONCURRENT_CALLS):
                group.spawn(one, index)
        with runtime.move_on_after(0.05) as scope:
            await library.slow_square(5, LONG_MS)
        assert scope.cancelled_caught
        assert await library.slow_square(4, SHORT_MS) == 16

    runtime.run(main)
    assert results == {index: index * index for index in range(CONCURRENT_CALLS)}
    assert pending_calls(library) == 0


def test_loops_in_several_threads_share_one_library(library: Any) -> None:
    import threading

    results: dict[int, list[int]] = {}

    def run_loop(thread_index: int) -> None:
        async def main() -> list[int]:
            return list(await asyncio.gather(*[library.slow_square(thread_index * 100 + call,
                                                                   SHORT_MS)
                                               for call in range(50)]))

        results[thread_index] = asyncio.run(main())

    threads = [threading.Thread(target=run_loop, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {index: [(index * 100 + call) ** 2 for call in range(50)]
                       for index in range(4)}
    assert pending_calls(library) == 0


def test_in_flight_calls_are_bounded(library: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.ffi import library as library_module
    from keel.ffi.errors import TooManyCallsError

    monkeypatch.setattr(library_module, "MAX_IN_FLIGHT", 3)

    async def main() -> None:
        running = [asyncio.ensure_future(library.slow_square(index, 50)) for index in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(TooManyCallsError, match="3 async calls already in flight"):
            await library.slow_square(9, SHORT_MS)
        assert await asyncio.gather(*running) == [0, 1, 4]

    asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert pending_calls(library) == 0
