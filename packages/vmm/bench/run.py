"""Exit round-trip benchmark: keel vs QEMU vs a minimal C KVM loop, the same guest, one run.

The guest (keel's `exit-loop` test guest, multiboot) makes N VM exits at CPL 3: port writes,
MMIO writes, or one of each per iteration. Each VMM runs as its own process pinned to CPU 0
(`taskset -c 0`); this harness sits on CPU 1 and times the loop between the guest's
"bench: start" and "bench: end" serial lines, so boot time is excluded and every VMM is timed
the same way. Rounds alternate keel, QEMU, floor; medians and the ratio keel/peer are printed
(and written as JSON with --json PATH).

    python packages/vmm/bench/run.py [--iterations N] [--rounds R] [--json PATH]
                                     [--only exits|virtio-net] [--virtio-json PATH]

Then, unless `--only exits`, the virtio-net benchmark (bench/virtio_net.py: frames/s, Mbit/s
and round-trip latency, keel vs QEMU with the same CPL 3 guest and TAP setup).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keel.vmm.boot.multiboot import load_multiboot
from keel.vmm.guests.build import cache_root, guest_path
from keel.vmm.memory import GuestMemory

HERE = Path(__file__).parent
FLOOR_SOURCE = HERE / "kvm_floor.c"
VMM_CPU = "0"
HARNESS_CPU = 1
MEMORY_SIZE = 64 << 20
MEMORY_IMAGE_SIZE = 2 << 20  # the guest, its boot info and command line live below 2 MiB
RUN_TIMEOUT_SECONDS = 120
KINDS = ("port", "mmio")
VMMS = ("keel", "qemu", "floor")
START_MARKER = b"bench: start"
END_MARKER = b"bench: end"


def build_floor() -> Path:
    source = FLOOR_SOURCE.read_bytes()
    key = hashlib.sha256(source).hexdigest()[:16]
    target = cache_root().parent / "bench" / key / "kvm_floor"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(target), str(FLOOR_SOURCE)],
                       check=True, timeout=RUN_TIMEOUT_SECONDS)
    return target


def floor_command(floor: Path, guest: bytes, command_line: str, scratch: Path) -> list[str]:
    """The C loop gets guest memory as keel's multiboot loader prepared it, and the entry."""
    with GuestMemory(MEMORY_SIZE) as memory:
        loaded = load_multiboot(memory, guest, command_line)
        image = scratch / f"memory-{hashlib.sha256(command_line.encode()).hexdigest()[:8]}"
        image.write_bytes(memory.read(0, MEMORY_IMAGE_SIZE))
    registers = loaded.entry.registers
    return [str(floor), str(image), hex(loaded.entry.address), hex(registers["rax"]),
            hex(registers["rbx"])]


def qemu_command(guest: Path, command_line: str) -> list[str]:
    return ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", "host", "-m", "64M",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-display", "none",
            "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", str(guest), "-append", command_line]


def keel_command(guest: Path, command_line: str) -> list[str]:
    return [sys.executable, "-m", "keel.native", "vmm", "run", "--kernel", str(guest),
            "--append", command_line, "--format", "multiboot", "--mem", "64M",
            "--serial", "stdout"]


def time_loop(command: list[str], iterations: int) -> float:
    """Seconds between the guest's start and end markers, as this process sees them."""
    process = subprocess.Popen(["taskset", "-c", VMM_CPU, *command], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    started = ended = None
    announced = b""
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    try:
        while ended is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if START_MARKER in line:
                started = time.perf_counter()
                announced = line.split(START_MARKER)[1].strip()
            elif END_MARKER in line:
                ended = time.perf_counter()
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        assert process.stderr is not None
        errors = process.stderr.read().decode(errors="replace")
        process.stderr.close()
    if started is None or ended is None:
        raise RuntimeError(f"{command[0]} did not run the loop: {errors.strip()[-500:]}")
    if announced != str(iterations).encode():
        raise RuntimeError(f"{command[0]}: the guest ran {announced!r} iterations, not "
                           f"{iterations} (command line lost?)")
    return ended - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--only", choices=("exits", "virtio-net"),
                        help="run one of the two benchmarks (both by default)")
    parser.add_argument("--virtio-json", type=Path,
                        help="write the virtio-net results here as JSON")
    arguments = parser.parse_args()
    if arguments.rounds < 3 or not 1 <= arguments.iterations <= 10_000_000:
        parser.error("need --rounds >= 3 and 1 <= --iterations <= 10000000")
    if arguments.only != "virtio-net":
        run_exits(arguments)
    if arguments.only != "exits":
        import virtio_net  # beside this script (sys.path[0])

        virtio_net.main(["--json", str(arguments.virtio_json)] if arguments.virtio_json else [])


def run_exits(arguments: argparse.Namespace) -> None:
    if shutil.which("qemu-system-x86_64") is None or shutil.which("taskset") is None:
        sys.exit("the benchmark needs qemu-system-x86 and taskset (util-linux) installed")
    os.sched_setaffinity(0, {HARNESS_CPU})
    guest = guest_path("exit-loop")
    floor = build_floor()
    samples: dict[str, dict[str, list[float]]] = {k: {v: [] for v in VMMS} for k in KINDS}
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as scratch_name:
        scratch = Path(scratch_name)
        commands = {}
        for kind in KINDS:
            line = f"iterations={arguments.iterations} kind={kind}"
            commands[kind] = {
                "keel": keel_command(guest, line),
                "qemu": qemu_command(guest, line),
                "floor": floor_command(floor, guest.read_bytes(), line, scratch),
            }
        for round_index in range(arguments.rounds):
            for kind in KINDS:
                for vmm in VMMS:
                    seconds = time_loop(commands[kind][vmm], arguments.iterations)
                    samples[kind][vmm].append(seconds / arguments.iterations * 1e6)
            print(f"round {round_index + 1}/{arguments.rounds} done", file=sys.stderr)
    report = {"benchmark": "vmm exit round trip", "unit": "microseconds per exit",
              "iterations": arguments.iterations, "rounds": arguments.rounds,
              "placement": f"VMM on CPU {VMM_CPU}, harness on CPU {HARNESS_CPU}",
              "results": {}}
    print(f"\nexit round trip, µs per exit (median of {arguments.rounds} rounds, "
          f"{arguments.iterations} exits each; VMM on CPU {VMM_CPU}, harness on CPU "
          f"{HARNESS_CPU})")
    print(f"{'exit':<6} {'keel':>8} {'qemu':>8} {'C floor':>8} {'keel/qemu':>10} "
          f"{'keel/floor':>11}")
    for kind in KINDS:
        medians = {vmm: statistics.median(samples[kind][vmm]) for vmm in VMMS}
        ratios = {"keel/qemu": medians["keel"] / medians["qemu"],
                  "keel/floor": medians["keel"] / medians["floor"]}
        report["results"][kind] = {"median_us": medians, "samples_us": samples[kind],
                                   "ratios": ratios}
        print(f"{kind:<6} {medians['keel']:>8.2f} {medians['qemu']:>8.2f} "
              f"{medians['floor']:>8.2f} {ratios['keel/qemu']:>10.2f} "
              f"{ratios['keel/floor']:>11.2f}")
    if arguments.json:
        arguments.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
