"""Timer cost with many pending timers: is the heap still cheap at 100k?

Measures, for 0, 1k, 10k and 100k pending timers: add, cancel, next_deadline and firing
one due timer; then a runtime-level figure: 100k tasks asleep at once, and what one loop turn
(a task sleeping 0.1 ms in a loop) costs while they wait. Prints a table; `--json PATH`.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import keel.runtime as kr
from keel.runtime.timers import TimerHeap

PENDING = [0, 1_000, 10_000, 100_000]
OPERATIONS = 20_000
SLEEPERS = 100_000
TURNS = 2_000
NANOSECONDS = 1e9


def _noop() -> None:
    pass


def heap_costs(pending: int) -> dict[str, float]:
    heap = TimerHeap()
    far = time.monotonic() + 3600
    for _ in range(pending):
        heap.add(far + random.random(), _noop)
    started = time.perf_counter()
    added = [heap.add(far + random.random(), _noop) for _ in range(OPERATIONS)]
    add_ns = (time.perf_counter() - started) / OPERATIONS * NANOSECONDS
    started = time.perf_counter()
    for timer in added:
        timer.cancel()
    cancel_ns = (time.perf_counter() - started) / OPERATIONS * NANOSECONDS
    started = time.perf_counter()
    for _ in range(OPERATIONS):
        heap.next_deadline()
    next_ns = (time.perf_counter() - started) / OPERATIONS * NANOSECONDS
    now = time.monotonic()
    for _ in range(OPERATIONS):
        heap.add(now - 1, _noop)
    started = time.perf_counter()
    heap.fire_due(now)
    fire_ns = (time.perf_counter() - started) / OPERATIONS * NANOSECONDS
    return {"add_ns": add_ns, "cancel_ns": cancel_ns, "next_deadline_ns": next_ns,
            "fire_ns": fire_ns}


def runtime_costs() -> dict[str, float]:
    async def sleeper() -> None:
        await kr.sleep(3600)

    async def main() -> dict[str, float]:
        started = time.perf_counter()
        async with kr.TaskGroup() as group:
            for _ in range(SLEEPERS):
                group.spawn(sleeper)
            await kr.sleep(0)  # every sleeper runs and registers its timer
            spawn_sleep_us = (time.perf_counter() - started) / SLEEPERS * 1e6
            started = time.perf_counter()
            for _ in range(TURNS):
                await kr.sleep(0.0001)
            turn_us = (time.perf_counter() - started) / TURNS * 1e6
            started = time.perf_counter()
            group.cancel()
        cancel_us = (time.perf_counter() - started) / SLEEPERS * 1e6
        return {"spawn_and_sleep_us_per_task": spawn_sleep_us,
                "sleep_0.1ms_turn_us_with_100k_pending": turn_us,
                "cancel_us_per_sleeping_task": cancel_us}

    return kr.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    results = {str(pending): heap_costs(pending) for pending in PENDING}
    print("pending | add ns | cancel ns | next_deadline ns | fire ns")
    for pending, row in results.items():
        print(f"{pending:>7} | {row['add_ns']:6.0f} | {row['cancel_ns']:9.0f} | "
              f"{row['next_deadline_ns']:16.0f} | {row['fire_ns']:7.0f}")
    runtime = runtime_costs()
    for name, value in runtime.items():
        print(f"{name}: {value:.1f}")
    if arguments.json:
        arguments.json.write_text(json.dumps({"heap": results, "runtime": runtime}, indent=2))


if __name__ == "__main__":
    main()
