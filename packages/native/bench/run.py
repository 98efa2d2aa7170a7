"""Does the C batch helper pay? io_uring NOP round trips, C helpers against pure Python.

Both sides drive the same ring the same way: put `batch` NOP SQEs in the submission ring,
one io_uring_enter that submits and waits for all of them, then take every CQE out. The
"python" side does the ring work with cffi field accesses from Python (what keel.native
would do without its helpers); the "c" side uses SqeBatch.prep, IoUring.submit and
IoUring.reap (one C call for the whole submit, one for the whole reap).

Run: ./dev nox -s bench -- native    (or python packages/native/bench/run.py --json out.json)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from keel.native._uring import ffi, lib
from keel.native.io_uring import CqeBatch, IoUring, SqeBatch

RING_ENTRIES = 256
BATCH_SIZES = (1, 16, 256)
ROUNDS = 5
SECONDS_PER_CELL = 0.5
NO_FD = -1


def c_helpers(ring: IoUring, batch_size: int) -> Callable[[], None]:
    sqes = SqeBatch(batch_size)
    cqes = CqeBatch(batch_size)

    def turn() -> None:
        for index in range(batch_size):
            sqes.prep(lib.IORING_OP_NOP, user_data=index)
        ring.submit(sqes, wait_for=batch_size)
        ring.reap(cqes)

    return turn


def pure_python(ring: IoUring, batch_size: int) -> Callable[[], None]:
    shared = ring._ring  # the same mapped ring the C helpers use
    sq_mask = shared.sq_mask[0]
    cq_mask = shared.cq_mask[0]
    fd = ring.fileno()
    getevents = lib.IORING_ENTER_GETEVENTS
    sqe_size = ffi.sizeof("struct io_uring_sqe")

    def turn() -> None:
        tail = shared.sq_tail[0]
        for index in range(batch_size):
            slot = (tail + index) & sq_mask
            sqe = shared.sqes + slot
            ffi.memmove(sqe, bytes(sqe_size), sqe_size)
            sqe.opcode = lib.IORING_OP_NOP
            sqe.fd = NO_FD
            sqe.user_data = index
            shared.sq_array[slot] = slot
        shared.sq_tail[0] = tail + batch_size
        shared.sqe_tail = tail + batch_size
        lib.keel_uring_enter(fd, batch_size, batch_size, getevents, ffi.NULL, 0)
        head = shared.cq_head[0]
        end = shared.cq_tail[0]
        taken = []
        while head != end:
            cqe = shared.cqes[head & cq_mask]
            taken.append((cqe.user_data, cqe.res, cqe.flags))
            head += 1
        shared.cq_head[0] = head

    return turn


def ops_per_second(turn: Callable[[], None], batch_size: int) -> float:
    turns = 0
    started = time.perf_counter()
    deadline = started + SECONDS_PER_CELL
    while time.perf_counter() < deadline:
        turn()
        turns += 1
    return turns * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    arguments = parser.parse_args()
    results = []
    print(f"io_uring NOP round trips, ops/s (median of {ROUNDS} alternating rounds, "
          f"{SECONDS_PER_CELL}s each, one core)")
    print(f"{'batch':>6} {'python':>12} {'c helpers':>12} {'c/python':>9}")
    for batch_size in BATCH_SIZES:
        samples: dict[str, list[float]] = {"python": [], "c": []}
        with IoUring(RING_ENTRIES) as ring:
            sides = {"python": pure_python(ring, batch_size), "c": c_helpers(ring, batch_size)}
            for _ in range(ROUNDS):
                for name, turn in sides.items():
                    samples[name].append(ops_per_second(turn, batch_size))
        python_median = statistics.median(samples["python"])
        c_median = statistics.median(samples["c"])
        ratio = c_median / python_median
        print(f"{batch_size:>6} {python_median:>12,.0f} {c_median:>12,.0f} {ratio:>8.2f}x")
        results.append({"batch": batch_size, "python_ops_per_s": python_median,
                        "c_ops_per_s": c_median, "ratio_c_over_python": ratio})
    if arguments.json:
        with open(arguments.json, "w") as handle:
            json.dump({"benchmark": "native-uring-nop", "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
