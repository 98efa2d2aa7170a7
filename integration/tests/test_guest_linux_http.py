"""keel.http on keel.runtime inside a Linux guest: keel's guest kernel boots an initramfs
holding CPython and the keel packages, and serves HTTP over keel's virtio-net; the host
fetches the pages with keel.http's client on keel.runtime from the test-made namespace that
holds the TAP (the same exercise as test_guest_http.py: 100 sequential requests, 16
concurrent connections, a 1 MiB response, every byte checked).

The boot needs guest supervisor code to run natively (VT-x/AMD-V): where KVM emulates it
(PVM), the guest's first system call faults and Linux user space cannot run at all
(ENVIRONMENT.md), so those tests are skipped there with the probe's figure as the reason.
What can run anywhere runs here too: the same archive, unpacked and entered with chroot
inside a test-made namespace, runs the same /init program, and the same exercise fetches
from it; only the kernel and virtio-net path differ.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import pytest
from guest_http import (
    CONCURRENT_CLIENTS,
    ONE_MEBIBYTE,
    REQUESTS_PER_CONCURRENT_CLIENT,
    SEQUENTIAL_REQUESTS,
    ExerciseReport,
    GuestHttpServer,
    exercise,
)

import keel.runtime as kr
from keel.http.client import HttpClient
from keel.native.guest_speed import measure_supervisor_speed
from keel.native.netns import NetworkNamespace
from keel.native.testing.skips import requires_kvm, requires_tap
from keel.vmm.boot.loader import load_kernel
from keel.vmm.boot.modes import EntryPoint
from keel.vmm.guest_kernel import build_kernel
from keel.vmm.guest_kernel.initramfs import BUSYBOX_PATH
from keel.vmm.guest_kernel.python_initramfs import PythonInitramfs, build_python_initramfs
from keel.vmm.machine import Vm

pytestmark = [
    pytest.mark.skipif(not BUSYBOX_PATH.is_file(), reason="needs busybox-static"),
    pytest.mark.timeout(2400),  # a first build of the guest kernel takes up to 20 minutes
]

PACKAGES = Path(__file__).resolve().parents[2] / "packages"
KEEL_DISTRIBUTIONS = ("native", "runtime", "http")
TAP_NAME = "keel-linux0"
HOST_ADDRESS = "10.200.0.1"
GUEST_ADDRESS = "10.200.0.2"
PREFIX_LENGTH = 24
NETMASK = "255.255.255.0"
GUEST_MAC = "02:4b:45:45:4c:03"
HTTP_PORT = 80
MEMORY_SIZE = 512 << 20  # the kernel, the 14 MiB initramfs, and its 40 MiB unpacked
READY_TEXT = b"keel-http: listening"
BOOT_TIMEOUT_SECONDS = 120.0
SERIAL_LIMIT = 1 << 20
STATUS_TIMEOUT_SECONDS = 10.0
CHROOT_STOP_SECONDS = 10.0
READY_POLL_SECONDS = 0.1
APP_PATH = "srv/keel_http_app.py"
INDEX_TEXT = "Hello from keel.http on keel.runtime"
T = TypeVar("T")

# /init: what a Linux user space needs mounted, loopback up (eth0 is configured by the
# kernel's ip= parameter), then the app; if it ever returns, say so and power off.
INIT_SCRIPT = f"""#!/bin/sh
export PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
ip link set lo up
echo "keel-http: init on Linux $(uname -r)"
/usr/bin/python3 /{APP_PATH} 0.0.0.0 {HTTP_PORT}
echo "keel-http: the server exited with status $?"
poweroff -f
"""

# The guest's program: the pages test_guest_http.py's lwIP guest serves, on keel.http.
APP_SOURCE = f'''"""keel.http on keel.runtime: /, and /bytes/<count> (byte i is i * 31 mod 251)."""
import platform
import sys

import keel.runtime as kr
from keel.http import HTTPException, Path, Router, Server
from keel.runtime.drivers import chosen_driver_name

LARGEST = {ONE_MEBIBYTE}
PERIOD = bytes(index * 31 % 251 for index in range(251))
INDEX = ("<html><body><h1>{INDEX_TEXT} inside a Linux guest</h1></body></html>\\n")

app = Router()


@app.get("/")
async def index() -> str:
    return INDEX


@app.get("/bytes/{{count}}")
async def some_bytes(count: Path[int]) -> bytes:
    if not 0 <= count <= LARGEST:
        raise HTTPException(400, f"count must be in [0, {{LARGEST}}]")
    return (PERIOD * (count // len(PERIOD) + 1))[:count]


def ready(addresses: list[tuple[str, int]]) -> None:
    where = ", ".join(f"{{host}}:{{port}}" for host, port in addresses)
    print(f"keel-http: listening on {{where}} (keel.runtime {{chosen_driver_name()}} driver, "
          f"Python {{platform.python_version()}}, Linux {{platform.release()}})", flush=True)


async def main() -> None:
    await Server(app, host=sys.argv[1], port=int(sys.argv[2]), backend="runtime").serve(ready)


kr.run(main)
'''


@functools.cache
def supervisor_code_is_native() -> tuple[bool, str]:
    speed = measure_supervisor_speed()
    return speed.native, f"{speed.iterations_per_second:,.0f} loop iterations/s at CPL 0"


def _say(request: pytest.FixtureRequest, prefix: str) -> Callable[[str], None]:
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(message: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"[{prefix}] {message}", flush=True)

    return say


@pytest.fixture(scope="module")
def python_initramfs(request: pytest.FixtureRequest) -> PythonInitramfs:
    """CPython, keel-native, keel-runtime and keel-http, the app and its /init (cached)."""
    if not all((PACKAGES / name / "pyproject.toml").is_file() for name in KEEL_DISTRIBUTIONS):
        pytest.skip("needs the keel source tree (packages/native, runtime, http)")
    return build_python_initramfs(
        INIT_SCRIPT.encode(), install=[str(PACKAGES / name) for name in KEEL_DISTRIBUTIONS],
        files={APP_PATH: APP_SOURCE.encode()}, progress=_say(request, "python initramfs"))


def exercise_keel_pages(host: str) -> Awaitable[ExerciseReport]:
    """test_guest_http.py's exercise (guest_http.exercise) against keel.http's pages."""
    return exercise(host, HTTP_PORT, index_text=INDEX_TEXT.encode())


async def statuses(host: str) -> list[tuple[int, bytes]]:
    async with HttpClient(host, HTTP_PORT, timeout=STATUS_TIMEOUT_SECONDS) as client:
        answers = []
        for method, path in [("GET", "/nope"), ("GET", f"/bytes/{ONE_MEBIBYTE + 1}"),
                             ("GET", "/bytes/12x"), ("DELETE", "/"), ("GET", "/bytes/0")]:
            response = await client.request(method, path)
            answers.append((response.status, response.body))
        return answers


def check_exercise(report: ExerciseReport) -> None:
    expected = 1 + SEQUENTIAL_REQUESTS + CONCURRENT_CLIENTS * REQUESTS_PER_CONCURRENT_CLIENT + 1
    assert report.requests == expected
    # keep-alive held: one connection for the sequential run, one per concurrent client, one
    # for the large response
    assert report.connections == 1 + CONCURRENT_CLIENTS + 1
    assert report.bytes_checked > ONE_MEBIBYTE
    assert INDEX_TEXT in report.index_page


def check_statuses(answers: list[tuple[int, bytes]]) -> None:
    assert [status for status, _ in answers] == [404, 400, 400, 405, 200]
    assert answers[4][1] == b""


# ---------------------------------------------------------------------------------------------
# In a booted Linux guest (where KVM runs guest supervisor code natively)


def linux_loader(kernel: Path, initrd: bytes,
                 say: Callable[[str], None]) -> Callable[[Vm], EntryPoint]:
    """Loads keel's guest kernel with the Python initramfs into the demo's guest server."""

    def load(vm: Vm) -> EntryPoint:
        command_line = " ".join((
            "console=ttyS0", "panic=1",
            f"ip={GUEST_ADDRESS}::{HOST_ADDRESS}:{NETMASK}::eth0:off",
            vm.virtio_command_line()))
        say(f"booting Linux under keel.vmm: {command_line}")
        return load_kernel(vm.memory, kernel.read_bytes(), command_line=command_line,
                           initrd=initrd)

    return load


@pytest.fixture(scope="module")
def linux_guest(request: pytest.FixtureRequest) -> Iterator[GuestHttpServer]:
    native, figure = supervisor_code_is_native()
    if not native:
        pytest.skip(f"guest supervisor code is emulated on this host ({figure}, `keel vmm "
                    "doctor`): Linux user space cannot make system calls here")
    python_initramfs: PythonInitramfs = request.getfixturevalue("python_initramfs")
    say = _say(request, "linux http guest")
    kernel = build_kernel(progress=say).vmlinux
    with GuestHttpServer(progress=say, boot_timeout=BOOT_TIMEOUT_SECONDS,
                         loader=linux_loader(kernel, python_initramfs.path.read_bytes(), say),
                         ready_text=READY_TEXT, memory_size=MEMORY_SIZE, cpu_template="host",
                         tap_name=TAP_NAME, mac=GUEST_MAC) as guest:
        yield guest
        assert guest.vm is not None and guest.vm.exit is None, guest.serial_output


@requires_kvm
@requires_tap
@pytest.mark.parametrize("driver", ["io_uring", "epoll"])
def test_sequential_concurrent_and_one_mebibyte_requests_arrive_intact(
        linux_guest: GuestHttpServer, driver: str) -> None:
    report = linux_guest.run_inside(
        lambda: kr.run(exercise_keel_pages, GUEST_ADDRESS, driver=driver))
    check_exercise(report)


@requires_kvm
@requires_tap
def test_unknown_paths_methods_and_sizes_get_their_status(linux_guest: GuestHttpServer) -> None:
    check_statuses(linux_guest.run_inside(lambda: kr.run(statuses, GUEST_ADDRESS)))


@requires_kvm
@requires_tap
def test_the_guest_ran_keel_runtime_on_its_own_kernel(linux_guest: GuestHttpServer) -> None:
    serial = linux_guest.serial_output
    assert "IP-Config: Complete" in serial
    assert f"device=eth0, hwaddr={GUEST_MAC}, ipaddr={GUEST_ADDRESS}" in serial
    listening = next(line for line in serial.splitlines() if READY_TEXT.decode() in line)
    assert f"0.0.0.0:{HTTP_PORT}" in listening
    assert "keel.runtime io_uring driver" in listening  # the guest kernel has IO_URING
    assert "Linux 6.1." in listening


# ---------------------------------------------------------------------------------------------
# The same archive and program under chroot, runnable on any host


class ChrootHttpServer:
    """The initramfs unpacked by GNU cpio, its /init program started with chroot inside a
    namespace this test makes (loopback only: no traffic can leave it)."""

    def __init__(self, initramfs: Path, directory: Path) -> None:
        self._initramfs = initramfs
        self._root = directory / "root"
        self._log = directory / "app.log"
        self.namespace: NetworkNamespace | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def output(self) -> bytes:
        """What the app printed (a file, not a pipe: nothing can block the server)."""
        return self._log.read_bytes()[:SERIAL_LIMIT] if self._log.exists() else b""

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
        self._root.mkdir()
        with open(self._initramfs, "rb") as archive:
            unzipped = subprocess.run(["gzip", "-dc"], stdin=archive, capture_output=True,
                                      check=True, timeout=STATUS_TIMEOUT_SECONDS * 6).stdout
        subprocess.run(["cpio", "-idm", "--quiet"], input=unzipped, cwd=self._root,
                       check=True, timeout=STATUS_TIMEOUT_SECONDS * 6)
        self.namespace = namespace = NetworkNamespace()
        command = [shutil.which("chroot") or "chroot", str(self._root), "/usr/bin/python3",
                   f"/{APP_PATH}", "127.0.0.1", str(HTTP_PORT)]
        environment = {"PATH": "/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8"}
        with open(self._log, "wb") as log:
            # Started from a thread inside the namespace, the process lives in it.
            self.process = process = namespace.run(lambda: subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=environment))
        deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
        while not self._ready_line_complete():
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"the app did not print {READY_TEXT.decode()!r} (status "
                                     f"{process.poll()}): {self.output.decode(errors='replace')}")
            time.sleep(READY_POLL_SECONDS)

    def _ready_line_complete(self) -> bool:
        output = self.output
        position = output.find(READY_TEXT)
        return position >= 0 and b"\n" in output[position:]

    def run_inside(self, function: Callable[[], T]) -> T:
        if self.namespace is None:
            raise RuntimeError("the chroot server is not running")
        return self.namespace.run(function)

    def close(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(CHROOT_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.namespace is not None:
            namespace, self.namespace = self.namespace, None
            namespace.delete()


@pytest.fixture(scope="module")
def chroot_server(python_initramfs: PythonInitramfs,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChrootHttpServer]:
    if os.geteuid() != 0:
        pytest.skip("needs root to chroot into the initramfs")
    if shutil.which("cpio") is None:
        pytest.skip("needs GNU cpio (apt cpio) to unpack the initramfs")
    with ChrootHttpServer(python_initramfs.path, tmp_path_factory.mktemp("chroot")) as server:
        yield server


def test_the_same_archive_and_program_serve_the_exercise_under_chroot(
        chroot_server: ChrootHttpServer) -> None:
    check_exercise(chroot_server.run_inside(lambda: kr.run(exercise_keel_pages, "127.0.0.1")))
    check_statuses(chroot_server.run_inside(lambda: kr.run(statuses, "127.0.0.1")))
    assert b"keel.runtime io_uring driver" in chroot_server.output
