"""keel.http against uvicorn + Starlette, uvicorn + FastAPI and granian + Starlette.

Plaintext and a JSON route with a path parameter; one server process pinned to core 0
(`taskset -c 0`), wrk pinned to core 1 (`-t1 -c64`); every server in every round, rounds
alternating; medians and ratios keel/peer. Usage:

    python packages/http/bench/run.py [--rounds 5] [--duration 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
SERVER_CORE = "0"
CLIENT_CORE = "1"
CONNECTIONS = 64
STARTUP_SECONDS = 15.0
WARMUP_SECONDS = 1
MAX_ROUNDS = 20
# Five, not the minimum three: on a shared machine a server's share of its core moves from
# one cell to the next, and the median of five is steadier.
DEFAULT_ROUNDS = 5
MAX_DURATION = 60
CELLS = {"plaintext": "/plaintext", "json": "/json/42"}


@dataclass(frozen=True)
class Contender:
    name: str
    command: list[str]


def contenders(port: int) -> list[Contender]:
    python = sys.executable
    uvicorn = [python, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
               "--loop", "uvloop", "--http", "httptools", "--no-access-log",
               "--log-level", "warning", "--app-dir", str(APPS)]
    return [
        Contender("keel", [python, "-m", "keel.native", "http", "serve", "keel_app:app",
                           "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]),
        Contender("keel (asyncio backend)", [
            python, "-m", "keel.native", "http", "serve", "keel_app:app", "--backend",
            "asyncio", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]),
        Contender("uvicorn+starlette", [*uvicorn, "starlette_app:app"]),
        Contender("uvicorn+fastapi", [*uvicorn, "fastapi_app:app"]),
        Contender("granian+starlette", [python, "-m", "granian", "--interface", "asgi",
                                        "--host", "127.0.0.1", "--port", str(port),
                                        "--workers", "1", "--no-ws", "--log-level", "warning",
                                        "--working-dir", str(APPS), "starlette_app:app"]),
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} within {STARTUP_SECONDS} s")


def parse_latency(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STAT_UTIME_FIELD = 13  # fields of /proc/PID/stat after the command name, 0-based: utime, stime


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = task.read_text().split()
        except OSError:
            continue
        for child in children:
            found += _descendants(int(child))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server and its child processes (granian forks one)."""
    total = 0
    for member in _descendants(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[STAT_UTIME_FIELD - 2]) + int(fields[STAT_UTIME_FIELD - 1])
    return total / CLOCK_TICKS


def run_wrk(url: str, seconds: int) -> tuple[float, float, int]:
    """(requests/s, p99 latency in ms, requests) from one wrk run on the client core."""
    completed = subprocess.run(
        ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s",
         "--latency", url], capture_output=True, text=True, timeout=seconds + 30, check=True)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", completed.stdout)
    p99 = re.search(r"\s99%\s+(\S+)", completed.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", completed.stdout)
    count = re.search(r"(\d+) requests in", completed.stdout)
    if rate is None or p99 is None or count is None:
        raise RuntimeError(f"cannot read wrk output:\n{completed.stdout}")
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses")
    return float(rate.group(1)), parse_latency(p99.group(1)), int(count.group(1))


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's finished children (wrk, once it exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


Sample = tuple[float, float, float, float, float]


def measure(contender: Contender, seconds: int) -> dict[str, Sample]:
    """Per cell: (requests/s, p99 ms, server CPU µs per request, server core share, wrk
    core share). The shares (CPU seconds over wall seconds) show which side was the limit:
    a server far below 100 % of its core was waiting for the client or for its turn on a
    core other work shares."""
    port = int(contender.command[contender.command.index("--port") + 1])
    inherited = os.environ.get("PYTHONPATH")
    environment = dict(os.environ, PYTHONPATH=str(APPS) if not inherited
                       else f"{APPS}{os.pathsep}{inherited}")
    process = subprocess.Popen(["taskset", "-c", SERVER_CORE, *contender.command],
                               env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        wait_until_listening(port, process)
        results = {}
        for cell, path in CELLS.items():
            url = f"http://127.0.0.1:{port}{path}"
            run_wrk(url, WARMUP_SECONDS)
            cpu_before = cpu_seconds(process.pid)
            client_before = children_cpu_seconds()
            started = time.monotonic()
            rate, p99, count = run_wrk(url, seconds)
            elapsed = time.monotonic() - started
            cpu_used = cpu_seconds(process.pid) - cpu_before
            client_used = children_cpu_seconds() - client_before
            results[cell] = (rate, p99, cpu_used * 1e6 / max(count, 1), cpu_used / elapsed,
                             client_used / elapsed)
        return results
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("installing wrk from Debian (apt-get install wrk)", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk cell")
    parser.add_argument("--only", nargs="*", help="contender names to run (default: all)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    options = parser.parse_args()
    rounds = max(1, min(options.rounds, MAX_ROUNDS))
    duration = max(1, min(options.duration, MAX_DURATION))
    ensure_wrk()
    samples: dict[str, dict[str, list[Sample]]] = {}
    for round_index in range(rounds):
        for contender in contenders(free_port()):
            if options.only and contender.name not in options.only:
                continue
            print(f"round {round_index + 1}/{rounds}: {contender.name}", file=sys.stderr)
            for cell, sample in measure(contender, duration).items():
                samples.setdefault(contender.name, {}).setdefault(cell, []).append(sample)
    table = {name: {cell: {"requests_per_second": statistics.median(s[0] for s in runs),
                           "p99_ms": statistics.median(s[1] for s in runs),
                           "cpu_us_per_request": statistics.median(s[2] for s in runs),
                           "server_core_share": statistics.median(s[3] for s in runs),
                           "wrk_core_share": statistics.median(s[4] for s in runs),
                           "rounds": [list(s) for s in runs]}
                    for cell, runs in cells.items()}
             for name, cells in samples.items()}
    print(f"\nwrk -t1 -c{CONNECTIONS}, {duration} s per cell, {rounds} rounds (medians); "
          f"server on core {SERVER_CORE}, wrk on core {CLIENT_CORE}\n")
    print("| server | cell | req/s | p99 ms | keel/peer req/s | server CPU µs/req | "
          "peer/keel CPU | server core | wrk core |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    keel = table.get("keel")
    for cell in CELLS:
        for name, cells in table.items():
            result = cells[cell]
            ratio = (keel[cell]["requests_per_second"] / result["requests_per_second"]
                     if keel else float("nan"))
            cpu_ratio = (result["cpu_us_per_request"] / keel[cell]["cpu_us_per_request"]
                         if keel else float("nan"))
            print(f"| {name} | {cell} | {result['requests_per_second']:.0f} | "
                  f"{result['p99_ms']:.2f} | {ratio:.2f}x | "
                  f"{result['cpu_us_per_request']:.1f} | {cpu_ratio:.2f}x | "
                  f"{result['server_core_share']:.0%} | {result['wrk_core_share']:.0%} |")
    print("\nPer round, in run order (req/s; server CPU µs/req):")
    for cell in CELLS:
        for name, cells in table.items():
            runs = cells[cell]["rounds"]
            print(f"- {cell}, {name}: " + ", ".join(f"{run[0]:.0f}" for run in runs) +
                  " (" + ", ".join(f"{run[2]:.1f}" for run in runs) + ")")
    if options.json:
        options.json.write_text(json.dumps({"connections": CONNECTIONS, "duration": duration,
                                            "rounds": rounds, "results": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
