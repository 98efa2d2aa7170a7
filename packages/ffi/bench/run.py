"""keel.ffi benchmark: the cost of calling Go from Python, beside its two peers.

Competitors, all in the same run, alternating (each round runs every competitor in ten short
turns, the order rotating by turn), reporting medians over rounds and the ratio keel/peer:
- keel:       the generated binding -> cgo export (scalar, str and bytes methods through
              its CPython fast-path extension, the rest through its API-mode cffi module).
- cffi->C:    the floor: an API-mode cffi call into equivalent C functions this script
              compiles with gcc (the cheapest way Python can call native code with the GIL
              released).
- ctypes->Go: ctypes calling the very same Go exports (what people do without keel).
Async calls/s run under asyncio, trio and keel.runtime's scheduler (when installed).
The async peers are the usual way to call blocking native code from asyncio:
`loop.run_in_executor` on a thread pool, with ctypes into Go and cffi into C.
Async calls returning a structured value (`parse_record_async(line) -> Record`, a dataclass
with str, float, list[str] and an optional nested dataclass) run under asyncio and
keel.runtime against `run_in_executor` of keel's own sync `parse_record` (the same Go code
and the same result decoding, so the difference is only how the await completes).

Cores: the Python thread that calls is pinned to core 1; every other thread (Go's runtime
threads, executor workers) to core 0. Counts and rounds are bounded (about a minute).

    python packages/ffi/bench/run.py [--rounds N] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import ctypes
import hashlib
import json
import operator
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import repeat
from pathlib import Path
from typing import Any

import cffi

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "hashing"
sys.path.insert(0, str(EXAMPLE))

from hashing_binding import HashingLibrary  # noqa: E402
from hashing_iface import Block  # noqa: E402

from keel.ffi.build import build_cached  # noqa: E402
from keel.ffi.toolchain import CACHE_ROOT, find_toolchain  # noqa: E402

CALLER_CORE, WORKER_CORE = 1, 0
MEBIBYTE = 1 << 20
BLOCK_FIELDS = 30
BLOCK_VALUES = 10
DEFAULT_ROUNDS = 5
# Calls per round for each benchmark (full, quick).
CALLS = {
    "empty sync call": (200_000, 20_000),
    "256-byte struct argument": (20_000, 2_000),
    "1 MiB bytes argument": (100_000, 10_000),
    "hash 1 MiB (FNV-1a)": (60, 10),
}
# Each round's sync calls run in this many turns per competitor (see time_interleaved).
SLICES = 10
ASYNC_CALLS = (20_000, 2_000)
ASYNC_CONCURRENCY = 64
RECORD_LINE = "7;ada lovelace;9.5;math,logic,engines;51.5,-0.1"

FLOOR_SOURCE = r"""
#include <stdint.h>
typedef struct { int64_t *values; int64_t count; int64_t a[30]; } floor_block;
static int64_t floor_empty(void) { return 0; }
static int64_t floor_block_sum(const floor_block *block) {
    int64_t total = block->a[0] + block->a[1] + block->a[2] + block->a[29];
    for (int64_t index = 0; index < block->count; index++) total += block->values[index];
    return total;
}
static uint64_t floor_address(const uint8_t *data, int64_t size) {
    (void)size;
    return (uint64_t)(uintptr_t)data;
}
static uint64_t floor_hash(const uint8_t *data, int64_t size) {
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (int64_t index = 0; index < size; index++) {
        hash ^= data[index];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}
"""
FLOOR_CDEF = """
typedef struct { int64_t *values; int64_t count; int64_t a[30]; } floor_block;
int64_t floor_empty(void);
int64_t floor_block_sum(const floor_block *block);
uint64_t floor_address(const uint8_t *data, int64_t size);
uint64_t floor_hash(const uint8_t *data, int64_t size);
"""


def build_floor() -> Any:
    """The cffi->C floor, compiled with gcc once into the cache (keyed by its source)."""
    digest = hashlib.sha256((FLOOR_SOURCE + FLOOR_CDEF + sys.version).encode()).hexdigest()[:16]
    name = f"_keel_ffi_floor_{digest}"
    directory = CACHE_ROOT / "ffi-bench" / digest
    if not any(directory.glob(f"{name}*.so")):
        directory.mkdir(parents=True, exist_ok=True)
        builder = cffi.FFI()
        builder.cdef(FLOOR_CDEF)
        builder.set_source(name, FLOOR_SOURCE, extra_compile_args=["-O2"])
        with tempfile.TemporaryDirectory() as scratch:
            built = Path(builder.compile(tmpdir=scratch))
            built.replace(directory / built.name)
    sys.path.insert(0, str(directory))
    return __import__(name)


# -- ctypes mirror of the generated C layout ----------------------------------------------

class CBytes(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_int64)]


class CList(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_int64)]


class CBlock(ctypes.Structure):
    _fields_ = [("values", CList)] + [(f"a{index}", ctypes.c_int64)
                                      for index in range(BLOCK_FIELDS)]


class CBlockArgs(ctypes.Structure):
    _fields_ = [("block", CBlock)]


class CBytesArgs(ctypes.Structure):
    _fields_ = [("data", CBytes)]


class CResult(ctypes.Structure):
    _fields_ = [("arena", ctypes.c_void_p), ("value", ctypes.c_uint64)]


def ctypes_calls(library_path: Path) -> dict[str, Callable[..., Any]]:
    go = ctypes.CDLL(str(library_path))
    empty = go.keel_Hashing_empty
    empty.restype, empty.argtypes = ctypes.c_int64, []
    calls: dict[str, Callable[..., Any]] = {}
    block_sum = go.keel_Hashing_block_sum
    address = go.keel_Hashing_address_of_bytes
    hash_bytes = go.keel_Hashing_hash
    for function in (block_sum, address, hash_bytes):
        function.restype = ctypes.c_int64
        function.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    scalars = operator.attrgetter(*(f"a{index}" for index in range(BLOCK_FIELDS)))

    def call_empty() -> None:
        if empty():
            raise RuntimeError("Go error")

    def call_block(block: Block) -> int:
        values = (ctypes.c_int64 * len(block.values))(*block.values)
        arguments = CBlockArgs(CBlock(CList(ctypes.addressof(values), len(block.values)),
                                      *scalars(block)))
        result = CResult()
        if block_sum(ctypes.byref(arguments), ctypes.byref(result)):
            raise RuntimeError("Go error")
        return int(result.value)

    def bytes_call(function: Any) -> Callable[[bytes], int]:
        def call(data: bytes) -> int:
            pointer = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
            arguments = CBytesArgs(CBytes(pointer, len(data)))
            result = CResult()
            if function(ctypes.byref(arguments), ctypes.byref(result)):
                raise RuntimeError("Go error")
            return int(result.value)

        return call

    calls["empty"] = call_empty
    calls["block"] = call_block
    calls["address"] = bytes_call(address)
    calls["hash"] = bytes_call(hash_bytes)
    return calls


def floor_calls(floor: Any) -> dict[str, Callable[..., Any]]:
    ffi, lib = floor.ffi, floor.lib
    scalars = operator.attrgetter(*(f"a{index}" for index in range(BLOCK_FIELDS)))

    def call_block(block: Block) -> int:
        values = ffi.new("int64_t[]", block.values)
        native = ffi.new("floor_block *", [values, len(block.values), list(scalars(block))])
        return int(lib.floor_block_sum(native))

    def bytes_call(function: Any) -> Callable[[bytes], int]:
        from_buffer = ffi.from_buffer

        def call(data: bytes) -> int:
            return int(function(from_buffer(data), len(data)))

        return call

    return {"empty": lib.floor_empty, "block": call_block,
            "address": bytes_call(lib.floor_address), "hash": bytes_call(lib.floor_hash)}


# -- measurement -------------------------------------------------------------------------

def time_interleaved(functions: dict[str, Callable[..., Any]], argument: Any,
                     count: int) -> dict[str, float]:
    """Nanoseconds per call of each function over `count` calls, taken in SLICES turns
    (A B C A B C ...; the order rotates every turn) rather than one block per competitor.

    Why: this machine is a VM whose speed shifts by up to 2x for seconds at a time as the
    host's load changes. In one long block per competitor a shift lands on one of them and
    moves the ratio; in short turns every competitor sees the same share of each speed.
    """
    names = list(functions)
    per_slice = max(1, count // SLICES)
    totals = dict.fromkeys(names, 0.0)
    for turn in range(SLICES):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            totals[name] += time_calls(functions[name], argument, per_slice) * per_slice
    return {name: total / (per_slice * SLICES) for name, total in totals.items()}


def time_calls(function: Callable[..., Any], argument: Any, count: int) -> float:
    """Nanoseconds per call of function(argument) (or function() when argument is None)."""
    if argument is None:
        started = time.perf_counter_ns()
        for _ in repeat(None, count):
            function()
    else:
        started = time.perf_counter_ns()
        for _ in repeat(None, count):
            function(argument)
    return (time.perf_counter_ns() - started) / count


async def asyncio_rate(call: Callable[[], Any], total: int) -> float:
    started = time.perf_counter()
    for _ in range(total // ASYNC_CONCURRENCY):
        await asyncio.gather(*[call() for _ in range(ASYNC_CONCURRENCY)])
    return (total // ASYNC_CONCURRENCY * ASYNC_CONCURRENCY) / (time.perf_counter() - started)


def keel_asyncio(library: HashingLibrary, total: int) -> float:
    return asyncio.run(asyncio_rate(library.empty_async, total))


def keel_asyncio_record(library: HashingLibrary, total: int) -> float:
    return asyncio.run(asyncio_rate(lambda: library.parse_record_async(RECORD_LINE), total))


def executor_asyncio_record(library: HashingLibrary, pool: concurrent.futures.Executor,
                            total: int) -> float:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        return await asyncio_rate(
            lambda: loop.run_in_executor(pool, library.parse_record, RECORD_LINE), total)

    return asyncio.run(main())


def keel_runtime_record_rate(library: HashingLibrary, total: int) -> float | None:
    """parse_record_async under keel.runtime's own scheduler, when it is installed."""
    try:
        import keel.runtime as runtime
    except ImportError:
        return None

    async def one() -> None:
        await library.parse_record_async(RECORD_LINE)

    async def main() -> float:
        started = time.perf_counter()
        for _ in range(total // ASYNC_CONCURRENCY):
            async with runtime.TaskGroup() as group:
                for _ in range(ASYNC_CONCURRENCY):
                    group.spawn(one)
        return (total // ASYNC_CONCURRENCY * ASYNC_CONCURRENCY) / (time.perf_counter() - started)

    result: float = runtime.run(main)
    return result


def executor_asyncio(function: Callable[[], Any], pool: concurrent.futures.Executor,
                     total: int) -> float:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        return await asyncio_rate(lambda: loop.run_in_executor(pool, function), total)

    return asyncio.run(main())


def keel_trio(library: HashingLibrary, total: int) -> float:
    import trio

    async def main() -> float:
        started = time.perf_counter()
        for _ in range(total // ASYNC_CONCURRENCY):
            async with trio.open_nursery() as nursery:
                for _ in range(ASYNC_CONCURRENCY):
                    nursery.start_soon(library.empty_async)
        return (total // ASYNC_CONCURRENCY * ASYNC_CONCURRENCY) / (time.perf_counter() - started)

    result: float = trio.run(main)
    return result


def keel_runtime_rate(library: HashingLibrary, total: int) -> float | None:
    """Under keel.runtime's own scheduler, when keel-runtime is installed."""
    try:
        import keel.runtime as runtime
    except ImportError:
        return None

    async def main() -> float:
        started = time.perf_counter()
        for _ in range(total // ASYNC_CONCURRENCY):
            async with runtime.TaskGroup() as group:
                for _ in range(ASYNC_CONCURRENCY):
                    group.spawn(library.empty_async)
        return (total // ASYNC_CONCURRENCY * ASYNC_CONCURRENCY) / (time.perf_counter() - started)

    result: float = runtime.run(main)
    return result


def pin_threads() -> None:
    """The calling thread on CALLER_CORE, every other thread of the process on WORKER_CORE."""
    cores = os.sched_getaffinity(0)
    if not {CALLER_CORE, WORKER_CORE} <= cores:
        return
    main = threading_native_id()
    for task in os.listdir("/proc/self/task"):
        thread = int(task)
        os.sched_setaffinity(thread, {CALLER_CORE if thread == main else WORKER_CORE})


def threading_native_id() -> int:
    import threading

    return threading.get_native_id()


def pin_worker() -> None:
    os.sched_setaffinity(0, {WORKER_CORE})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--quick", action="store_true", help="10x fewer calls (smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--only", action="append", choices=["empty", "block", "address",
                                                            "hash", "async", "async-record"],
                        help="run only these rows (repeatable); all by default")
    options = parser.parse_args()
    rounds = max(3, options.rounds)
    scale = 1 if options.quick else 0

    toolchain = find_toolchain()
    built = build_cached(EXAMPLE, toolchain)
    floor = build_floor()
    library = HashingLibrary.open(built)
    ctypes_peer = ctypes_calls(built.library)
    floor_peer = floor_calls(floor)
    keel_calls: dict[str, Callable[..., Any]] = {
        "empty": library.empty, "block": library.block_sum,
        "address": library.address_of_bytes, "hash": library.hash,
    }
    block = Block(list(range(BLOCK_VALUES)), *range(BLOCK_FIELDS))
    mebibyte = os.urandom(MEBIBYTE)
    assert library.block_sum(block) == floor_peer["block"](block) == ctypes_peer["block"](block)
    assert library.hash(mebibyte) == floor_peer["hash"](mebibyte) == ctypes_peer["hash"](mebibyte)
    assert asyncio.run(library.parse_record_async(RECORD_LINE)) == library.parse_record(RECORD_LINE)
    asyncio.run(library.empty_async())  # Go's netpoller and the completer are ready
    pin_threads()

    benchmarks = [("empty sync call", "empty", None), ("256-byte struct argument", "block", block),
                  ("1 MiB bytes argument", "address", mebibyte),
                  ("hash 1 MiB (FNV-1a)", "hash", mebibyte)]
    chosen = set(options.only or ["empty", "block", "address", "hash", "async", "async-record"])
    benchmarks = [benchmark for benchmark in benchmarks if benchmark[1] in chosen]
    with_async = "async" in chosen
    with_records = "async-record" in chosen
    record_competitors = ["keel asyncio", "asyncio+executor keel sync"]
    record_samples: dict[str, list[float]] = {name: [] for name in record_competitors}
    runtime_record_samples: list[float] = []
    competitors = {"keel": keel_calls, "cffi->C": floor_peer, "ctypes->Go": ctypes_peer}
    samples: dict[str, dict[str, list[float]]] = {name: {c: [] for c in competitors}
                                                  for name, _, _ in benchmarks}
    async_competitors = ["keel asyncio", "asyncio+executor ctypes->Go",
                         "asyncio+executor cffi->C", "keel trio"]
    async_samples: dict[str, list[float]] = {name: [] for name in async_competitors}
    runtime_samples: list[float] = []
    async_total = ASYNC_CALLS[scale]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                               initializer=pin_worker) as pool:
        for round_index in range(rounds):
            order = list(competitors)
            order = order[round_index % len(order):] + order[:round_index % len(order)]
            for name, key, argument in benchmarks:
                samples_of_round = time_interleaved(
                    {competitor: competitors[competitor][key] for competitor in order},
                    argument, CALLS[name][scale])
                for competitor, nanoseconds in samples_of_round.items():
                    samples[name][competitor].append(nanoseconds)
            async_order = async_competitors[round_index % 4:] + async_competitors[:round_index % 4]
            for competitor in async_order if with_async else []:
                if competitor == "keel asyncio":
                    rate = keel_asyncio(library, async_total)
                elif competitor == "keel trio":
                    rate = keel_trio(library, async_total)
                elif competitor.endswith("ctypes->Go"):
                    rate = executor_asyncio(ctypes_peer["empty"], pool, async_total)
                else:
                    rate = executor_asyncio(floor_peer["empty"], pool, async_total)
                async_samples[competitor].append(rate)
            runtime_rate = keel_runtime_rate(library, async_total) if with_async else None
            if runtime_rate is not None:
                runtime_samples.append(runtime_rate)
            turn = round_index % len(record_competitors)
            record_order = record_competitors[turn:] + record_competitors[:turn]
            for competitor in record_order if with_records else []:
                if competitor == "keel asyncio":
                    rate = keel_asyncio_record(library, async_total)
                else:
                    rate = executor_asyncio_record(library, pool, async_total)
                record_samples[competitor].append(rate)
            runtime_rate = keel_runtime_record_rate(library, async_total) if with_records else None
            if runtime_rate is not None:
                runtime_record_samples.append(runtime_rate)
            print(f"round {round_index + 1}/{rounds} done", file=sys.stderr)
    library.close()

    report: dict[str, Any] = {
        "go": toolchain.version, "python": sys.version.split()[0], "cffi": cffi.__version__,
        "machine": platform.machine(), "rounds": rounds, "quick": options.quick,
        "sync_ns_per_call": {}, "async_calls_per_second": {},
    }
    print(f"\nkeel.ffi benchmark: {toolchain.version}, Python {report['python']}, "
          f"{rounds} rounds, medians; caller on core {CALLER_CORE}, other threads on core "
          f"{WORKER_CORE}\n")
    print(f"{'sync call':<28}{'keel ns':>10}{'cffi->C ns':>12}{'ctypes->Go ns':>15}"
          f"{'keel/cffi':>11}{'keel/ctypes':>13}")
    for name, _, _ in benchmarks:
        medians = {competitor: statistics.median(values)
                   for competitor, values in samples[name].items()}
        report["sync_ns_per_call"][name] = {**medians, "calls_per_round": CALLS[name][scale],
                                            "samples": samples[name]}
        print(f"{name:<28}{medians['keel']:>10.0f}{medians['cffi->C']:>12.0f}"
              f"{medians['ctypes->Go']:>15.0f}{medians['keel'] / medians['cffi->C']:>10.2f}x"
              f"{medians['keel'] / medians['ctypes->Go']:>12.2f}x")
    if with_async:
        print(f"\n{'async calls/s (' + str(ASYNC_CONCURRENCY) + ' in flight)':<36}{'median':>12}"
              f"{'keel asyncio / this':>22}")
        keel_async = statistics.median(async_samples["keel asyncio"])
        for competitor, values in async_samples.items():
            median = statistics.median(values)
            report["async_calls_per_second"][competitor] = {"median": median, "samples": values}
            print(f"{competitor:<36}{median:>12.0f}{keel_async / median:>21.2f}x")
        if runtime_samples:
            median = statistics.median(runtime_samples)
            report["async_calls_per_second"]["keel keel.runtime"] = {"median": median,
                                                                     "samples": runtime_samples}
            print(f"{'keel keel.runtime':<36}{median:>12.0f}{keel_async / median:>21.2f}x")
        else:
            print("keel.runtime: not measured (keel-runtime is not installed)")
    if with_records:
        report["async_record_calls_per_second"] = {}
        print(f"\n{'async -> Record calls/s (' + str(ASYNC_CONCURRENCY) + ' in flight)':<40}"
              f"{'median':>8}{'keel asyncio / this':>22}")
        keel_records = statistics.median(record_samples["keel asyncio"])
        if runtime_record_samples:
            record_samples["keel keel.runtime"] = runtime_record_samples
        for competitor, values in record_samples.items():
            median = statistics.median(values)
            report["async_record_calls_per_second"][competitor] = {"median": median,
                                                                   "samples": values}
            print(f"{competitor:<40}{median:>8.0f}{keel_records / median:>21.2f}x")
    if options.json:
        options.json.write_text(json.dumps(report, indent=2) + "\n")

if __name__ == "__main__":
    main()
