"""Demo: a keel.vmm guest serves HTTP with lwIP over keel's virtio-net; the host fetches it.

Run it with `python integration/demos/guest_http.py` (root, /dev/kvm, /dev/net/tun). It
builds the `http-lwip` test guest (lwIP from Debian's source package, keel's guest-side
virtio-net driver, an HTTP/1.1 server; all at CPL 3), makes a network namespace with a TAP
device 10.200.0.1/24 in it, boots the guest with keel.vmm and a virtio-net device on that TAP
(guest address 10.200.0.2), and then, from a thread inside the namespace, fetches pages with
keel.http's client on keel.runtime: 100 sequential requests on one keep-alive connection, 16
concurrent connections, and a 1 MiB response, checking every byte. It prints what it did and
removes the VM, the TAP and the namespace on the way out (also on Ctrl-C or failure).

The integration test (integration/tests/test_guest_http.py) drives the same pieces.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import keel.runtime as kr
from keel.http.client import HttpClient
from keel.native.netns import NetworkNamespace
from keel.vmm.boot.loader import load_kernel
from keel.vmm.boot.modes import EntryPoint
from keel.vmm.cpuid import DEFAULT_TEMPLATE
from keel.vmm.guests.build import guest_path
from keel.vmm.machine import Vm

GUEST_NAME = "http-lwip"
TAP_NAME = "keel-http0"
HOST_ADDRESS = "10.200.0.1"
GUEST_ADDRESS = "10.200.0.2"
PREFIX_LENGTH = 24
NETMASK = "255.255.255.0"
HTTP_PORT = 80
MEMORY_SIZE = 128 << 20
READY_TEXT = b"http: listening"
INDEX_TEXT = b"lwIP"  # what the guest's index page must contain
BOOT_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
SERIAL_LIMIT = 1 << 20
REQUEST_TIMEOUT_SECONDS = 20.0
SEQUENTIAL_REQUESTS = 100
CONCURRENT_CLIENTS = 16
REQUESTS_PER_CONCURRENT_CLIENT = 4
ONE_MEBIBYTE = 1 << 20
PATTERN_MULTIPLIER = 31
PATTERN_MODULUS = 251
T = TypeVar("T")


def pattern(count: int) -> bytes:
    """What the guest sends for /bytes/<count>: byte i is i * 31 mod 251."""
    period = bytes(index * PATTERN_MULTIPLIER % PATTERN_MODULUS
                   for index in range(PATTERN_MODULUS))
    repeats = count // PATTERN_MODULUS + 1
    return (period * repeats)[:count]


class GuestHttpServer:
    """The http-lwip guest on a TAP in its own namespace (a context manager).

    Order on the way in: namespace, VM, TAP (opened by the VMM inside the namespace),
    addresses, boot, wait for "http: listening". On the way out, the reverse: VM stopped and
    closed (vCPU and device threads joined, TAP fd closed), then the namespace deleted."""

    def __init__(self, *, guest: Path | None = None, boot_timeout: float = BOOT_TIMEOUT_SECONDS,
                 progress: Callable[[str], None] | None = None,
                 loader: Callable[[Vm], EntryPoint] | None = None,
                 ready_text: bytes = READY_TEXT, memory_size: int = MEMORY_SIZE,
                 cpu_template: str = DEFAULT_TEMPLATE, tap_name: str = TAP_NAME,
                 mac: str | None = None) -> None:
        """`loader` puts another guest into the VM (given the VM with its virtio-net device
        added, it returns the entry point); by default the http-lwip test guest."""
        self._guest = guest
        self._boot_timeout = boot_timeout
        self._progress = progress or (lambda message: None)
        self._loader = loader or self._load_lwip_guest
        self._ready_text = ready_text
        self._memory_size = memory_size
        self._cpu_template = cpu_template
        self._tap_name = tap_name
        self._mac = mac
        self._serial = bytearray()
        self._serial_changed = threading.Condition()
        self.namespace: NetworkNamespace | None = None
        self.vm: Vm | None = None
        self.boot_seconds = 0.0

    def _capture(self, data: bytes) -> None:
        with self._serial_changed:
            if len(self._serial) + len(data) <= SERIAL_LIMIT:
                self._serial += data
            self._serial_changed.notify_all()

    @property
    def serial_output(self) -> str:
        with self._serial_changed:
            return self._serial.decode(errors="replace")

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        self.namespace = namespace = NetworkNamespace()
        self._progress(f"network namespace {namespace.name}")
        self.vm = vm = Vm(self._memory_size, 1, self._cpu_template,
                          serial_output=self._capture)
        tap = self._tap_name
        namespace.run(lambda: vm.add_virtio_net(tap, self._mac))
        namespace.ip("addr", "add", f"{HOST_ADDRESS}/{PREFIX_LENGTH}", "dev", tap)
        namespace.ip("link", "set", tap, "up")
        self._progress(f"TAP {tap} {HOST_ADDRESS}/{PREFIX_LENGTH} in {namespace.name}")
        vm.load(self._loader(vm))
        started = time.monotonic()
        vm.start()
        deadline = started + self._boot_timeout
        with self._serial_changed:
            while not self._ready_line_complete():
                left = deadline - time.monotonic()
                if vm.exit is not None or left <= 0:
                    raise RuntimeError(f"the guest did not print "
                                       f"{self._ready_text.decode()!r} within "
                                       f"{self._boot_timeout} s (exit: {vm.exit}); "
                                       f"serial output:\n{self._serial.decode(errors='replace')}")
                self._serial_changed.wait(min(left, 0.1))
        self.boot_seconds = time.monotonic() - started

    def _load_lwip_guest(self, vm: Vm) -> EntryPoint:
        guest = self._guest or guest_path(GUEST_NAME)
        self._progress(f"guest image {guest}")
        command_line = (f"ip={GUEST_ADDRESS} mask={NETMASK} gw={HOST_ADDRESS} "
                        f"port={HTTP_PORT} {vm.virtio_command_line()}")
        self._progress(f"command line: {command_line}")
        return load_kernel(vm.memory, guest.read_bytes(), command_line=command_line)

    def _ready_line_complete(self) -> bool:
        position = self._serial.find(self._ready_text)
        return position >= 0 and b"\n" in self._serial[position:]

    def run_inside(self, function: Callable[[], T]) -> T:
        """Call `function` on a thread inside the namespace (where the TAP and guest are)."""
        if self.namespace is None:
            raise RuntimeError("the guest server is not running")
        return self.namespace.run(function)

    def close(self) -> None:
        if self.vm is not None:
            vm, self.vm = self.vm, None
            vm.stop()
            vm.close()
        if self.namespace is not None:
            namespace, self.namespace = self.namespace, None
            namespace.delete()


@dataclass
class ExerciseReport:
    """What `exercise` did and saw."""

    requests: int = 0
    bytes_checked: int = 0
    connections: int = 0
    index_page: str = ""
    timings: dict[str, float] = field(default_factory=dict)


async def exercise(host: str = GUEST_ADDRESS, port: int = HTTP_PORT, *,
                   sequential: int = SEQUENTIAL_REQUESTS,
                   concurrent: int = CONCURRENT_CLIENTS,
                   large: int = ONE_MEBIBYTE, index_text: bytes = INDEX_TEXT) -> ExerciseReport:
    """Sequential, concurrent and large requests against the guest; every byte checked."""
    report = ExerciseReport()

    def check(path: str, status: int, body: bytes, expected: bytes) -> None:
        if status != 200 or body != expected:
            raise AssertionError(f"GET {path}: status {status}, {len(body)} bytes; expected "
                                 f"200 and {len(expected)} bytes of the pattern")
        report.requests += 1
        report.bytes_checked += len(body)

    started = time.monotonic()
    async with HttpClient(host, port, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        index = await client.get("/")
        if index.status != 200 or index_text not in index.body:
            raise AssertionError(f"GET /: {index.status} {index.body[:200]!r}")
        report.index_page = index.body.decode(errors="replace")
        report.requests += 1
        for number in range(sequential):
            count = number * 97 % 4096
            response = await client.get(f"/bytes/{count}")
            check(f"/bytes/{count}", response.status, response.body, pattern(count))
        report.connections += client.connections_opened
    report.timings["sequential"] = time.monotonic() - started

    started = time.monotonic()

    async def one_client(index: int) -> None:
        async with HttpClient(host, port, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            for round_number in range(REQUESTS_PER_CONCURRENT_CLIENT):
                count = 1000 * index + 17 * round_number + 1
                response = await client.get(f"/bytes/{count}")
                check(f"/bytes/{count}", response.status, response.body, pattern(count))
            report.connections += client.connections_opened

    async with kr.TaskGroup() as group:
        for client_number in range(concurrent):
            group.spawn(one_client, client_number)
    report.timings["concurrent"] = time.monotonic() - started

    started = time.monotonic()
    async with HttpClient(host, port, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        response = await client.get(f"/bytes/{large}")
        check(f"/bytes/{large}", response.status, response.body, pattern(large))
        report.connections += client.connections_opened
    report.timings["large"] = time.monotonic() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=["io_uring", "epoll"], default=None,
                        help="keel.runtime driver for the client (default: the probe's choice)")
    arguments = parser.parse_args()
    print("guest http: building the http-lwip guest (lwIP from Debian's source package)")
    with GuestHttpServer(progress=lambda message: print(f"guest http: {message}")) as server:
        print(f"guest http: the guest booted in {server.boot_seconds * 1000:.0f} ms and said:")
        for line in server.serial_output.splitlines():
            print(f"    {line}")
        print(f"guest http: fetching http://{GUEST_ADDRESS}:{HTTP_PORT}/ from inside the "
              "namespace with keel.http's client on keel.runtime")
        report = server.run_inside(lambda: kr.run(exercise, driver=arguments.driver))
        first_line = next((line for line in report.index_page.splitlines() if "<h1>" in line),
                          "")
        print(f"guest http: GET / -> 200, {first_line.strip()}")
        print(f"guest http: {SEQUENTIAL_REQUESTS} sequential requests on one keep-alive "
              f"connection in {report.timings['sequential']:.2f} s")
        print(f"guest http: {CONCURRENT_CLIENTS} concurrent connections x "
              f"{REQUESTS_PER_CONCURRENT_CLIENT} requests in "
              f"{report.timings['concurrent']:.2f} s")
        megabytes_per_second = ONE_MEBIBYTE / (1 << 20) / max(report.timings["large"], 1e-9)
        print(f"guest http: 1 MiB response in {report.timings['large']:.2f} s "
              f"({megabytes_per_second:.1f} MiB/s)")
        print(f"guest http: {report.requests} responses, {report.bytes_checked} body bytes "
              f"checked byte for byte, {report.connections} connections")
    print("guest http: VM stopped, TAP and namespace removed")


if __name__ == "__main__":
    main()
