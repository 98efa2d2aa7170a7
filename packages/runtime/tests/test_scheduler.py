"""Tasks, task groups, cancel scopes, timeouts and sleep, on both drivers."""

from __future__ import annotations

import asyncio
import time

import pytest

import keel.runtime as kr
from keel.runtime.scheduler import current_runtime


def test_run_returns_the_main_result(run) -> None:
    async def main(value: int) -> int:
        await kr.sleep(0)
        return value * 2

    assert run(main, 21) == 42


def test_run_reraises_the_main_exception(run) -> None:
    async def main() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run(main)


def test_spawn_and_join(run) -> None:
    async def child(value: int) -> int:
        await kr.sleep(0.01)
        return value + 1

    async def main() -> list[int]:
        handles = [kr.spawn(child, number) for number in range(5)]
        return [await handle for handle in handles]

    assert run(main) == [1, 2, 3, 4, 5]


def test_join_reraises_and_cancelled_join_says_so(run) -> None:
    async def failing() -> None:
        raise ValueError("child failed")

    async def forever() -> None:
        await kr.sleep(3600)

    async def main() -> None:
        handle = kr.spawn(failing)
        with pytest.raises(ValueError, match="child failed"):
            await handle.join()
        sleeper = kr.spawn(forever)
        await kr.sleep(0)
        sleeper.cancel()
        with pytest.raises(kr.TaskCancelledError):
            await sleeper

    run(main)


def test_task_group_propagates_errors_and_cancels_siblings(run) -> None:
    cancelled: list[str] = []

    async def sibling() -> None:
        try:
            await kr.sleep(3600)
        except kr.Cancelled:
            cancelled.append("sibling")
            raise

    async def failing() -> None:
        await kr.sleep(0.01)
        raise ValueError("first")

    async def main() -> None:
        async with kr.TaskGroup() as group:
            group.spawn(sibling)
            group.spawn(failing)

    started = time.monotonic()
    with pytest.raises(ExceptionGroup) as caught:
        run(main)
    assert time.monotonic() - started < 10
    assert [str(error) for error in caught.value.exceptions] == ["first"]
    assert cancelled == ["sibling"]


def test_task_group_collects_every_error(run) -> None:
    async def failing(message: str) -> None:
        raise RuntimeError(message)

    async def main() -> None:
        async with kr.TaskGroup() as group:
            group.spawn(failing, "a")
            group.spawn(failing, "b")

    with pytest.raises(ExceptionGroup) as caught:
        run(main)
    assert sorted(str(error) for error in caught.value.exceptions) == ["a", "b"]


def test_task_group_waits_for_children_and_cannot_spawn_after_close(run) -> None:
    finished: list[int] = []

    async def child(number: int) -> None:
        await kr.sleep(0.001 * number)
        finished.append(number)

    async def main() -> None:
        async with kr.TaskGroup() as group:
            for number in range(10):
                group.spawn(child, number)
        assert sorted(finished) == list(range(10))
        with pytest.raises(kr.RuntimeError_, match="not open"):
            group.spawn(child, 99)

    run(main)


def test_move_on_after_and_fail_after(run) -> None:
    async def main() -> None:
        with kr.move_on_after(0.02) as scope:
            await kr.sleep(10)
        assert scope.cancelled_caught
        with kr.move_on_after(10) as quiet:
            await kr.sleep(0.001)
        assert not quiet.cancelled_caught
        with pytest.raises(kr.TooSlowError), kr.fail_after(0.02):
            await kr.sleep(10)

    run(main)


def test_nested_scopes_outer_cancel_reaches_inner_unless_shielded(run) -> None:
    async def main() -> list[str]:
        seen: list[str] = []
        with kr.CancelScope() as outer:
            with kr.CancelScope(shield=True):
                outer.cancel()
                await kr.sleep(0.01)  # shielded: not cancelled
                seen.append("shield held")
            await kr.sleep(10)
            seen.append("not reached")
        assert outer.cancelled_caught
        return seen

    assert run(main) == ["shield held"]


def test_cancelling_a_task_group_from_outside(run) -> None:
    async def main() -> None:
        async with kr.TaskGroup() as group:
            for _ in range(100):
                group.spawn(kr.sleep, 3600)
            await kr.sleep(0.01)
            group.cancel()

    run(main)


def test_sleep_orders_wakeups(run) -> None:
    order: list[float] = []

    async def sleeper(delay: float) -> None:
        await kr.sleep(delay)
        order.append(delay)

    async def main() -> None:
        async with kr.TaskGroup() as group:
            for delay in (0.03, 0.01, 0.02, 0.0):
                group.spawn(sleeper, delay)

    run(main)
    assert order == [0.0, 0.01, 0.02, 0.03]


def test_unjoined_detached_tasks_are_cancelled_at_shutdown(run) -> None:
    state: list[str] = []

    async def background() -> None:
        try:
            await kr.sleep(3600)
        finally:
            state.append("cleaned up")

    async def main() -> int:
        kr.spawn(background)
        await kr.sleep(0.001)
        return current_runtime().task_count

    assert run(main) == 2
    assert state == ["cleaned up"]


def test_runtime_apis_outside_a_runtime_raise_clearly() -> None:
    with pytest.raises(kr.NoRuntimeError, match=r"keel\.runtime\.run"):
        kr.spawn(kr.sleep, 1)
    with pytest.raises(kr.NoRuntimeError):
        kr.TcpListener.bind()
    with pytest.raises(kr.NoRuntimeError), kr.CancelScope():
        pass
    coroutine = kr.sleep(1)
    with pytest.raises(kr.NoRuntimeError):
        coroutine.send(None)


def test_bad_arguments_raise(run) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="seconds >= 0"):
            await kr.sleep(-1)
        with pytest.raises(ValueError):
            kr.move_on_after(-1)
        with pytest.raises(TypeError, match="async function"):
            kr.spawn(len, "x")  # type: ignore[arg-type]

    run(main)


def test_awaiting_a_foreign_awaitable_is_a_clear_error(run) -> None:
    async def main() -> None:
        loop = asyncio.new_event_loop()
        try:
            future = loop.create_future()
            with pytest.raises(TypeError, match="cannot await a Future"):
                await future
        finally:
            loop.close()

    run(main)


def test_nested_run_is_refused(run) -> None:
    async def inner() -> None:
        pass

    async def main() -> None:
        with pytest.raises(kr.RuntimeError_, match="already running"):
            kr.run(inner)

    run(main)


INTERRUPT_SCRIPT = """
import signal
import sys
import keel.runtime as kr

# Ctrl-C as at a terminal: a job started in the background by a non-interactive shell (as
# CI may start the suite) inherits SIGINT ignored, and then Python never raises on it.
signal.signal(signal.SIGINT, signal.default_int_handler)

async def main():
    try:
        print("running", flush=True)
        await kr.sleep(3600)
    finally:
        print("main cleaned up", flush=True)

try:
    kr.run(main, driver=sys.argv[1])
except KeyboardInterrupt:
    print("KeyboardInterrupt after clean shutdown", flush=True)
"""


def test_ctrl_c_cancels_main_then_raises_keyboard_interrupt(driver: str, tmp_path) -> None:
    import signal
    import subprocess
    import sys

    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), driver], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "running"
        process.send_signal(signal.SIGINT)
        output, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert output.splitlines() == ["main cleaned up", "KeyboardInterrupt after clean shutdown"]
    assert process.returncode == 0, errors
