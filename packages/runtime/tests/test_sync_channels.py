"""Lock, Semaphore, Event, mpsc/oneshot/broadcast channels and the cross-thread channel."""

from __future__ import annotations

import threading

import pytest

import keel.runtime as kr
from keel.runtime.channels import Broadcast, Lagged, Oneshot, channel
from keel.runtime.crossthread import ThreadChannel
from keel.runtime.sync import Event, Lock, Semaphore


def test_lock_is_exclusive_and_fair(run) -> None:
    async def main() -> list[int]:
        lock = Lock()
        order: list[int] = []
        inside = 0

        async def worker(number: int) -> None:
            nonlocal inside
            async with lock:
                inside += 1
                assert inside == 1
                await kr.sleep(0.001)
                order.append(number)
                inside -= 1

        async with kr.TaskGroup() as group:
            for number in range(5):
                group.spawn(worker, number)
        with pytest.raises(kr.RuntimeError_, match="does not hold"):
            lock.release()
        return order

    assert run(main) == [0, 1, 2, 3, 4]


def test_semaphore_bounds_concurrency_and_survives_cancellation(run) -> None:
    async def main() -> None:
        semaphore = Semaphore(2)
        peak = active = 0

        async def worker() -> None:
            nonlocal peak, active
            async with semaphore:
                active += 1
                peak = max(peak, active)
                await kr.sleep(0.002)
                active -= 1

        async with kr.TaskGroup() as group:
            for _ in range(10):
                group.spawn(worker)
        assert peak == 2 and semaphore.value == 2
        async with kr.TaskGroup() as group:
            for _ in range(10):
                group.spawn(worker)
            await kr.sleep(0.001)
            group.cancel()
        assert semaphore.value == 2
        with pytest.raises(ValueError):
            Semaphore(-1)

    run(main)


def test_event_wakes_all_waiters(run) -> None:
    async def main() -> int:
        event = Event()
        woken = 0

        async def waiter() -> None:
            nonlocal woken
            await event.wait()
            woken += 1

        async with kr.TaskGroup() as group:
            for _ in range(10):
                group.spawn(waiter)
            await kr.sleep(0.001)
            event.set()
        await event.wait()  # already set: returns
        return woken

    assert run(main) == 10


def test_mpsc_backpressure_and_end(run) -> None:
    async def main() -> list[int]:
        sender, receiver = channel(2)
        received: list[int] = []

        async def produce(start: int, producer: kr.runtime.channels.Sender[int]) -> None:
            with producer:
                for value in range(start, start + 50):
                    await producer.send(value)

        async with kr.TaskGroup() as group:
            group.spawn(produce, 0, sender.clone())
            group.spawn(produce, 100, sender)
            async for value in receiver:
                received.append(value)
        with pytest.raises(kr.WouldBlock):
            channel(1)[1].receive_nowait()
        with pytest.raises(ValueError):
            channel(-1)
        return received

    received = run(main)
    assert sorted(received) == list(range(50)) + list(range(100, 150))
    assert [v for v in received if v < 100] == list(range(50))


def test_mpsc_closed_receiver_breaks_senders(run) -> None:
    async def main() -> None:
        sender, receiver = channel(0)

        async def blocked_send() -> None:
            with pytest.raises(kr.BrokenChannelError):
                await sender.send(1)

        async with kr.TaskGroup() as group:
            group.spawn(blocked_send)
            await kr.sleep(0.001)
            receiver.close()

    run(main)


def test_oneshot_and_broadcast(run) -> None:
    async def main() -> None:
        shot: Oneshot[str] = Oneshot()
        async with kr.TaskGroup() as group:
            handle = group.spawn(shot.receive)
            await kr.sleep(0)
            shot.send("done")
        assert handle.result() == "done"
        with pytest.raises(kr.RuntimeError_):
            shot.send("again")

        news: Broadcast[int] = Broadcast(2)
        first, second = news.subscribe(), news.subscribe()
        assert news.send(1) == 2
        assert await first.receive() == 1 and await second.receive() == 1
        for value in range(5):
            news.send(value)
        with pytest.raises(Lagged) as lagged:
            await first.receive()
        assert lagged.value.missed == 3
        assert [await first.receive(), await first.receive()] == [3, 4]
        news.close()
        with pytest.raises(kr.EndOfChannel):
            await first.receive()

    run(main)


def test_cross_thread_channel_wakes_a_blocked_runtime(run) -> None:
    count = 200

    async def main() -> list[int]:
        values: ThreadChannel[int] = ThreadChannel()

        def producer() -> None:
            for number in range(count):
                values.send(number)
            values.close()

        thread = threading.Thread(target=producer)
        thread.start()
        received = []
        try:
            with kr.fail_after(10):
                while True:
                    try:
                        received.append(await values.receive())
                    except kr.EndOfChannel:
                        break
        finally:
            thread.join()
        return received

    assert run(main) == list(range(count))
