"""The Python initramfs is complete: unpacked by GNU cpio and entered with chroot, its own
interpreter imports keel.runtime, keel.http and keel.native's io_uring binding and runs a
keel.runtime program, and every ELF file in it finds its libraries inside it.

Why chroot and not a VM: where KVM emulates guest supervisor code (PVM, ENVIRONMENT.md) Linux
user space cannot make system calls, so a booted guest cannot prove the archive here; a
chroot runs the very same files on the host kernel, and nothing outside the archive is
visible to it. integration/tests/test_guest_linux_http.py boots it where KVM is native.

The archive is cached in ~/.cache/keel/initramfs (pip's part by the packages' contents), so
only the first run after a change in keel-native, keel-runtime or keel-http pays for pip.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from keel.vmm.guest_kernel.errors import GuestKernelError
from keel.vmm.guest_kernel.initramfs import BUSYBOX_PATH
from keel.vmm.guest_kernel.python_initramfs import (
    KEPT_BUILDS,
    PythonInitramfs,
    build_python_initramfs,
    install_site_packages,
    prune_cache,
    shared_libraries,
)

PACKAGES = Path(__file__).resolve().parents[2]
KEEL_DISTRIBUTIONS = ("native", "runtime", "http")
INIT = b"#!/bin/sh\nmount -t proc proc /proc\nexec /usr/bin/python3 -c 'print(42)'\n"
CHROOT_TIMEOUT_SECONDS = 60
TOOL_TIMEOUT_SECONDS = 60
GUEST_ENVIRONMENT = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/", "LANG": "C.UTF-8"}
LOADER = "/lib64/ld-linux-x86-64.so.2"
ELF_MAGIC = b"\x7fELF"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chroot into the archive"),
    pytest.mark.skipif(shutil.which("cpio") is None, reason="needs GNU cpio (apt cpio)"),
    pytest.mark.skipif(not BUSYBOX_PATH.is_file(), reason="needs busybox-static"),
    pytest.mark.skipif(not all((PACKAGES / name / "pyproject.toml").is_file()
                               for name in KEEL_DISTRIBUTIONS),
                       reason="needs the keel source tree (packages/native, runtime, http)"),
    pytest.mark.timeout(600),
]

KEEL_PROGRAM = """
import sys, threading
import keel.native._uring
import keel.http
import keel.runtime as kr
from keel.runtime.crossthread import ThreadChannel

async def main() -> int:
    await kr.sleep(0.01)
    channel = ThreadChannel()
    sender = threading.Thread(target=lambda: channel.send(41))
    sender.start()
    value = await channel.receive()
    sender.join()
    return value + 1

for driver in ("io_uring", "epoll"):
    print(driver, kr.run(main, driver=driver))
print("uring", keel.native._uring.lib.IORING_OP_NOP)
print("prefix", sys.prefix)
print("http", keel.http.__file__)
"""
EXTENSIONS_PROGRAM = """
import bz2, ctypes, _decimal, hashlib, json, lzma, readline, sqlite3, ssl, uuid, zlib
import msgspec, httptools, cffi
sqlite3.connect(":memory:").execute("select 1")
print("ok", ssl.OPENSSL_VERSION.split()[0], msgspec.json.encode({"a": 1}).decode())
"""


@dataclass(frozen=True)
class Unpacked:
    initramfs: PythonInitramfs
    root: Path
    init: Path
    names: frozenset[str]  # what the archive holds (the chroot runs add .pyc files later)


@pytest.fixture(scope="module")
def unpacked(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unpacked]:
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(message: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"[python initramfs] {message}", flush=True)

    directory = tmp_path_factory.mktemp("python-initramfs")
    init = directory / "init"
    init.write_bytes(INIT)
    initramfs = build_python_initramfs(
        init, install=[str(PACKAGES / name) for name in KEEL_DISTRIBUTIONS], progress=say)
    root = directory / "root"
    root.mkdir()
    with open(initramfs.path, "rb") as archive:
        unzipped = subprocess.run(["gzip", "-dc"], stdin=archive, capture_output=True,
                                  check=True, timeout=TOOL_TIMEOUT_SECONDS).stdout
    subprocess.run(["cpio", "-idm", "--quiet"], input=unzipped, cwd=root, check=True,
                   timeout=TOOL_TIMEOUT_SECONDS)
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=unzipped, capture_output=True,
                             check=True, timeout=TOOL_TIMEOUT_SECONDS).stdout.decode()
    yield Unpacked(initramfs, root, init, frozenset(listing.splitlines()))


def in_chroot(root: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *command], capture_output=True, text=True,
                          env=GUEST_ENVIRONMENT, timeout=CHROOT_TIMEOUT_SECONDS)


def test_the_packed_interpreter_runs_keel_runtime(unpacked: Unpacked) -> None:
    completed = in_chroot(unpacked.root, "/usr/bin/python3", "-c", KEEL_PROGRAM)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[:2] == ["io_uring 42", "epoll 42"]
    assert lines[2] == "uring 0"  # IORING_OP_NOP
    assert lines[3] == f"prefix {sys.base_prefix}"
    assert lines[4] == f"http {unpacked.initramfs.site_packages}/keel/http/__init__.py"


def test_standard_library_and_dependency_extensions_load(unpacked: Unpacked) -> None:
    completed = in_chroot(unpacked.root, "/usr/bin/python3", "-c", EXTENSIONS_PROGRAM)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("ok OpenSSL ")
    assert completed.stdout.rstrip().endswith('{"a":1}')


def test_every_elf_file_finds_its_libraries_inside_the_archive(unpacked: Unpacked) -> None:
    checked = 0
    for current, _, files in os.walk(unpacked.root):
        for name in files:
            path = Path(current) / name
            if path.is_symlink() or not path.is_file():
                continue  # links, and the device nodes in /dev
            with open(path, "rb") as stream:
                if stream.read(len(ELF_MAGIC)) != ELF_MAGIC:
                    continue
            guest_path = "/" + str(path.relative_to(unpacked.root))
            if guest_path == "/bin/busybox" or name.startswith("ld-linux"):
                continue  # static, and the loader itself
            completed = in_chroot(unpacked.root, LOADER, "--list", guest_path)
            assert completed.returncode == 0, (guest_path, completed.stderr)
            assert "not found" not in completed.stdout, (guest_path, completed.stdout)
            checked += 1
    assert checked > 50  # interpreter, libpython, lib-dynload, msgspec, httptools, keel...


def test_the_layout_leaves_out_tests_gui_and_bytecode(unpacked: Unpacked) -> None:
    library = unpacked.root / str(unpacked.initramfs.site_packages).lstrip("/")
    standard_library = library.parent
    assert (standard_library / "os.py").is_file()
    assert (standard_library / "asyncio" / "__init__.py").is_file()
    for left_out in ("test", "idlelib", "tkinter", "ensurepip"):
        assert not (standard_library / left_out).exists(), left_out
    assert not list(standard_library.glob("lib-dynload/_tkinter*"))
    assert not [name for name in unpacked.names if "__pycache__" in name]
    assert not [name for name in unpacked.names if name.endswith(".pyc")]
    assert os.readlink(unpacked.root / "usr/bin/python3").endswith(
        unpacked.initramfs.python.lstrip("/"))
    assert (unpacked.root / "init").read_bytes() == INIT
    assert os.readlink(unpacked.root / "bin/sh") == "../bin/busybox"
    assert (library / "keel" / "runtime" / "__init__.py").is_file()
    assert list(library.glob("keel_http-*.dist-info"))


def test_the_cli_finds_the_same_archive_in_the_cache(unpacked: Unpacked) -> None:
    from keel.vmm.cli import vmm

    arguments = ["guest", "build-initramfs", "--python", "--init", str(unpacked.init)]
    for name in KEEL_DISTRIBUTIONS:
        arguments += ["--install", str(PACKAGES / name)]
    result = CliRunner().invoke(vmm, arguments)
    assert result.exit_code == 0, result.output
    assert "initramfs is cached" in result.output
    assert result.output.splitlines()[-1] == str(unpacked.initramfs.path)


def test_the_cli_wants_python_for_install() -> None:
    from keel.vmm.cli import vmm

    result = CliRunner().invoke(vmm, ["guest", "build-initramfs", "--init", __file__,
                                      "--install", "keel-http"])
    assert result.exit_code != 0
    assert "--install and --rebuild go with --python" in result.output


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the libraries")
def test_a_missing_shared_library_is_named(tmp_path: Path) -> None:
    library_source = tmp_path / "gone.c"
    library_source.write_text("int keel_gone(void) { return 1; }\n")
    library = tmp_path / "libkeelgone.so"
    user_source = tmp_path / "user.c"
    user_source.write_text("int keel_gone(void);\nint keel_user(void) { return keel_gone(); }\n")
    user = tmp_path / "libkeeluser.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(library_source)],
                   check=True, timeout=TOOL_TIMEOUT_SECONDS)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(user), str(user_source),
                    f"-L{tmp_path}", "-lkeelgone"], check=True, timeout=TOOL_TIMEOUT_SECONDS)
    library.unlink()
    with pytest.raises(GuestKernelError, match=r"libkeeluser\.so needs libkeelgone\.so"):
        shared_libraries([user])


def test_a_pip_failure_names_pip_and_shows_its_output(tmp_path: Path) -> None:
    broken = tmp_path / "broken-project"
    broken.mkdir()
    (broken / "pyproject.toml").write_text("[project\nname = \n")
    with pytest.raises(GuestKernelError, match="pip failed with exit status") as failure:
        install_site_packages([str(broken)], root=tmp_path / "cache")
    message = str(failure.value)
    assert str(broken) in message and "last output:" in message
    assert len(message.split("last output:", 1)[1].strip()) > 0
    staged = tmp_path / "cache" / "initramfs" / "site-packages"
    assert [path for path in staged.iterdir() if path.is_dir()] == []  # nothing half-built


def test_the_cache_keeps_the_newest_builds_and_any_in_use(tmp_path: Path) -> None:
    (tmp_path / "site-packages").mkdir()
    archives = [tmp_path / f"python-{index:02d}.cpio.gz" for index in range(KEPT_BUILDS + 3)]
    for age, archive in enumerate(reversed(archives)):  # archives[0] is the oldest
        archive.write_bytes(b"archive")
        os.utime(archive, (1_000_000 - age, 1_000_000 - age))
    with open(tmp_path / "python-00.lock", "w") as lock:  # the oldest, in use elsewhere
        fcntl.flock(lock, fcntl.LOCK_EX)
        prune_cache(tmp_path)
    left = sorted(path.name for path in tmp_path.glob("*.cpio.gz"))
    assert left == ["python-00.cpio.gz"] + [path.name for path in archives[-KEPT_BUILDS:]]
