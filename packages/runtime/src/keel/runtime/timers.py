"""A binary heap of deadlines with lazy deletion.

Why a heap and not a wheel: in CPython the heap's push and pop are C functions (heapq), so a
timer costs one list allocation and an O(log n) C-level sift; a hierarchical wheel in pure
Python costs more per operation at every size we measured (bench/timers.py: 100k pending
timers). Cancelled timers are only marked; the heap is rebuilt when more than half of it is
dead, so a storm of cancelled timeouts cannot grow it without bound.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

# [deadline, sequence, callback]; callback None once cancelled.
DEADLINE, SEQUENCE, CALLBACK = 0, 1, 2
COMPACT_MINIMUM = 1024


class Timer:
    """A handle to one scheduled callback; `cancel()` is O(1)."""

    __slots__ = ("_entry", "_heap")

    def __init__(self, heap: TimerHeap, entry: list[Any]) -> None:
        self._heap = heap
        self._entry = entry

    @property
    def deadline(self) -> float:
        return float(self._entry[DEADLINE])

    @property
    def active(self) -> bool:
        return self._entry[CALLBACK] is not None

    def cancel(self) -> None:
        if self._entry[CALLBACK] is not None:
            self._entry[CALLBACK] = None
            self._heap._cancelled_one()


class TimerHeap:
    """Deadlines (monotonic seconds) in a heap; callbacks run from `fire_due`."""

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._sequence = itertools.count()
        self._dead = 0

    def __len__(self) -> int:
        """Live (not cancelled, not fired) timers."""
        return len(self._heap) - self._dead

    def add(self, deadline: float, callback: Callable[[], object]) -> Timer:
        entry = [deadline, next(self._sequence), callback]
        heapq.heappush(self._heap, entry)
        return Timer(self, entry)

    def _cancelled_one(self) -> None:
        self._dead += 1
        if self._dead > COMPACT_MINIMUM and self._dead * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[CALLBACK] is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][CALLBACK] is None:
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0][DEADLINE] if heap else None

    def fire_due(self, now: float) -> int:
        """Run every callback whose deadline is <= now; returns how many ran."""
        heap = self._heap
        fired = 0
        while heap and heap[0][DEADLINE] <= now:
            entry = heapq.heappop(heap)
            callback = entry[CALLBACK]
            if callback is None:
                self._dead -= 1
                continue
            entry[CALLBACK] = None
            fired += 1
            callback()
        return fired
