"""virtio-net benchmark: keel vs QEMU microvm, the same CPL 3 guest and TAP setup, one run.

The guest is keel's `virtio-test` (its own polled virtio-mmio driver; devices found from the
`virtio_mmio.device=` words each VMM appends to its command line). Both VMMs attach the same
persistent TAP inside a network namespace this script creates and deletes; no frame leaves it.

- guest -> host: `mode=bench-tx frames=N size=B batch=K` sends N frames of B bytes as fast as
  the ring allows, one notification per K frames. Frames/s = frames the TAP delivered to the
  host (its rx_packets counter, read before and after) / the time between the guest's
  "bench: start" and "bench: end" serial lines (the guest prints the end only after the
  device has returned every buffer).
- round trip: `mode=echo`; a small C client (frame_pingpong.c, built here with gcc) sends a
  frame, waits for the echo, repeats; median and p99.

Each VMM process is pinned to CPU 0 (`taskset -c 0`), the C client and this harness to CPU 1.
Rounds alternate keel and QEMU; medians of the rounds and the ratio keel/QEMU are printed
(and written as JSON with --json PATH).

    python packages/vmm/bench/virtio_net.py [--frames N] [--pings N] [--rounds R] [--json PATH]
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
import time
from dataclasses import dataclass
from pathlib import Path

from keel.native.netns import NetworkNamespace
from keel.vmm.guests.build import cache_root, guest_path

HERE = Path(__file__).parent
CLIENT_SOURCE = HERE / "frame_pingpong.c"
VMM_CPU = "0"
CLIENT_CPU = "1"
HARNESS_CPU = 1
TAP_NAME = "keelbench0"
GUEST_MAC = "02:4b:45:45:4c:42"
MEMORY = "64M"
VMMS = ("keel", "qemu")
# (frame bytes, frames per notification): one kick per frame, then 32 frames per kick (as
# Linux batches with xmit_more), which takes the exit cost mostly out of the figure.
TRANSMIT_CASES = ((64, 1), (1500, 1), (64, 32), (1500, 32))
PING_SIZE = 64
PING_WARMUP = 200
RUN_TIMEOUT_SECONDS = 300
BITS_PER_BYTE = 8
START_MARKER = b"bench: start"
END_MARKER = b"bench: end"
READY_MARKER = b"net: ready"
ECHO_DONE_MARKER = b"echo: done"
NANOSECONDS_PER_MICROSECOND = 1000


@dataclass(frozen=True)
class TransmitResult:
    frames_per_second: float
    megabits_per_second: float
    delivered: int
    seconds: float


@dataclass(frozen=True)
class LatencyResult:
    median_us: float
    p99_us: float
    measured: int
    lost: int


def build_client() -> Path:
    source = CLIENT_SOURCE.read_bytes()
    key = hashlib.sha256(source).hexdigest()[:16]
    target = cache_root().parent / "bench" / key / "frame_pingpong"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(target), str(CLIENT_SOURCE)],
                       check=True, timeout=RUN_TIMEOUT_SECONDS)
    return target


def keel_command(guest: Path, command_line: str) -> list[str]:
    return [sys.executable, "-m", "keel.native", "vmm", "run", "--kernel", str(guest),
            "--format", "pvh", "--append", command_line, "--mem", MEMORY, "--serial", "stdout",
            "--net", f"tap={TAP_NAME},mac={GUEST_MAC}", "--timeout", str(RUN_TIMEOUT_SECONDS)]


def qemu_command(guest: Path, command_line: str) -> list[str]:
    """microvm without ACPI appends `virtio_mmio.device=` itself; force-legacy=false gives
    virtio-mmio version 2, the modern transport keel implements."""
    return ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-global",
            "virtio-mmio.force-legacy=false", "-enable-kvm", "-cpu", "host", "-m", MEMORY,
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-display", "none",
            "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", str(guest), "-append", command_line,
            "-netdev", f"tap,id=net0,ifname={TAP_NAME},script=no,downscript=no,vhost=off",
            "-device", f"virtio-net-device,netdev=net0,mac={GUEST_MAC}"]


class Bench:
    """The namespace with its persistent TAP, and the runs inside it."""

    def __init__(self, namespace: NetworkNamespace, guest: Path, client: Path) -> None:
        self.namespace = namespace
        self.guest = guest
        self.client = client
        namespace.ip("tuntap", "add", "dev", TAP_NAME, "mode", "tap", "vnet_hdr")
        subprocess.run(["ip", "netns", "exec", namespace.name, "sysctl", "-qw",
                        f"net.ipv6.conf.{TAP_NAME}.disable_ipv6=1"], check=True,
                       timeout=RUN_TIMEOUT_SECONDS)
        namespace.ip("link", "set", TAP_NAME, "up")

    def command(self, vmm: str, command_line: str) -> list[str]:
        inner = (keel_command if vmm == "keel" else qemu_command)(self.guest, command_line)
        return ["ip", "netns", "exec", self.namespace.name, "taskset", "-c", VMM_CPU, *inner]

    def received_packets(self) -> int:
        shown = subprocess.run(["ip", "-n", self.namespace.name, "-s", "-j", "link", "show",
                                "dev", TAP_NAME], capture_output=True, text=True, check=True,
                               timeout=RUN_TIMEOUT_SECONDS)
        return int(json.loads(shown.stdout)[0]["stats64"]["rx"]["packets"])

    def transmit(self, vmm: str, frames: int, size: int, batch: int) -> TransmitResult:
        before = self.received_packets()
        line = f"mode=bench-tx frames={frames} size={size} batch={batch}"
        with Guest(vmm, self.command(vmm, line)) as guest:
            guest.wait_for(START_MARKER)
            started = time.perf_counter()
            guest.wait_for(END_MARKER)
            seconds = time.perf_counter() - started
            guest.finish()
        delivered = self.received_packets() - before
        rate = delivered / seconds
        return TransmitResult(rate, rate * size * BITS_PER_BYTE / 1e6, delivered, seconds)

    def round_trip(self, vmm: str, pings: int) -> LatencyResult:
        with Guest(vmm, self.command(vmm, "mode=echo")) as guest:
            guest.wait_for(READY_MARKER)
            completed = subprocess.run(
                ["ip", "netns", "exec", self.namespace.name, "taskset", "-c", CLIENT_CPU,
                 str(self.client), TAP_NAME, GUEST_MAC, str(pings), str(PING_WARMUP),
                 str(PING_SIZE)], capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS,
                check=False)
            if completed.returncode != 0:
                raise RuntimeError(f"frame_pingpong under {vmm} failed: {completed.stderr}")
            guest.wait_for(ECHO_DONE_MARKER)
            guest.finish()
        fields = completed.stdout.split()
        median, p99, measured, lost = int(fields[1]), int(fields[2]), int(fields[5]), int(
            fields[6])
        return LatencyResult(median / NANOSECONDS_PER_MICROSECOND,
                             p99 / NANOSECONDS_PER_MICROSECOND, measured, lost)


class Guest:
    """One VMM process; its serial output read line by line against a deadline."""

    def __init__(self, vmm: str, command: list[str]) -> None:
        self.vmm = vmm
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        self.output = b""

    def wait_for(self, marker: bytes) -> None:
        assert self.process.stdout is not None
        while time.monotonic() < self.deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output += line
            if marker in line:
                return
        raise RuntimeError(f"{self.vmm} never printed {marker.decode()!r}; serial:\n"
                           f"{self.output.decode(errors='replace')[-2000:]}")

    def finish(self) -> None:
        self.process.wait(timeout=max(1.0, self.deadline - time.monotonic()))

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exception: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000,
                        help="frames per guest -> host run")
    parser.add_argument("--pings", type=int, default=2000, help="round trips per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    arguments = parser.parse_args(argv)
    if arguments.rounds < 3 or not 1 <= arguments.frames <= 10_000_000 or not (
            1 <= arguments.pings <= 1_000_000):
        parser.error("need --rounds >= 3, 1 <= --frames <= 10000000, 1 <= --pings <= 1000000")
    for tool in ("qemu-system-x86_64", "taskset", "gcc", "ip"):
        if shutil.which(tool) is None:
            sys.exit(f"the virtio-net benchmark needs {tool} (qemu-system-x86, util-linux, "
                     "gcc, iproute2)")
    if os.geteuid() != 0:
        sys.exit("the virtio-net benchmark needs root (network namespace and TAP)")
    os.sched_setaffinity(0, {HARNESS_CPU})
    guest = guest_path("virtio-test")
    client = build_client()
    transmit: dict[tuple[int, int], dict[str, list[TransmitResult]]] = {
        case: {vmm: [] for vmm in VMMS} for case in TRANSMIT_CASES}
    latency: dict[str, list[LatencyResult]] = {vmm: [] for vmm in VMMS}
    with NetworkNamespace() as namespace:
        bench = Bench(namespace, guest, client)
        for round_index in range(arguments.rounds):
            for vmm in VMMS:
                for size, batch in TRANSMIT_CASES:
                    transmit[size, batch][vmm].append(
                        bench.transmit(vmm, arguments.frames, size, batch))
                latency[vmm].append(bench.round_trip(vmm, arguments.pings))
            print(f"round {round_index + 1}/{arguments.rounds} done", file=sys.stderr)
    report(arguments, transmit, latency)


def report(arguments: argparse.Namespace,
           transmit: dict[tuple[int, int], dict[str, list[TransmitResult]]],
           latency: dict[str, list[LatencyResult]]) -> None:
    results: dict[str, object] = {}
    print(f"\nvirtio-net, guest -> host ({arguments.frames} frames per run, median of "
          f"{arguments.rounds} rounds; VMM on CPU {VMM_CPU}, harness on CPU {HARNESS_CPU})")
    print(f"{'frame':>6} {'batch':>6} {'keel fps':>10} {'qemu fps':>10} {'keel/qemu':>10} "
          f"{'keel Mbit/s':>12} {'qemu Mbit/s':>12}")
    for size, batch in TRANSMIT_CASES:
        runs = transmit[size, batch]
        fps = {vmm: statistics.median(r.frames_per_second for r in runs[vmm]) for vmm in VMMS}
        mbps = {vmm: statistics.median(r.megabits_per_second for r in runs[vmm])
                for vmm in VMMS}
        ratio = fps["keel"] / fps["qemu"]
        print(f"{size:>5}B {batch:>6} {fps['keel']:>10.0f} {fps['qemu']:>10.0f} {ratio:>10.2f} "
              f"{mbps['keel']:>12.2f} {mbps['qemu']:>12.2f}")
        results[f"tx_{size}_batch_{batch}"] = {
            "median_frames_per_second": fps, "median_megabits_per_second": mbps,
            "ratio_keel_qemu": ratio,
            "runs": {vmm: [vars(r) for r in runs[vmm]] for vmm in VMMS}}
    median = {vmm: statistics.median(r.median_us for r in latency[vmm]) for vmm in VMMS}
    p99 = {vmm: statistics.median(r.p99_us for r in latency[vmm]) for vmm in VMMS}
    print(f"\nround trip, {PING_SIZE}-byte frames ({arguments.pings} per run after "
          f"{PING_WARMUP} warm-up; client on CPU {CLIENT_CPU})")
    print(f"{'':>6} {'keel µs':>10} {'qemu µs':>10} {'keel/qemu':>10}")
    for name, values in (("median", median), ("p99", p99)):
        print(f"{name:>6} {values['keel']:>10.1f} {values['qemu']:>10.1f} "
              f"{values['keel'] / values['qemu']:>10.2f}")
    results["round_trip"] = {
        "median_us": median, "p99_us": p99,
        "runs": {vmm: [vars(r) for r in latency[vmm]] for vmm in VMMS}}
    if arguments.json:
        arguments.json.write_text(json.dumps({
            "benchmark": "vmm virtio-net", "frames": arguments.frames,
            "pings": arguments.pings, "rounds": arguments.rounds, "results": results},
            indent=2))


if __name__ == "__main__":
    main()
