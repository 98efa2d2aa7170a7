"""Build keel's guest kernel from Debian's linux-source-6.1 package, once per machine.

Why from the distribution's source package: it is the one kernel tree every keel machine can
install offline from its package mirror, and Debian's stock image has virtio as modules and
no virtio-mmio command-line devices. The recipe: extract, apply keel's patches, `make
tinyconfig`, merge keel's fragment, check that every option took, `make vmlinux` at low
priority, check the PVH entry note. The result is the uncompressed ELF vmlinux (booted through
its PVH entry), cached under <cache>/kernel/<key>/ where the key hashes the source package
version, the fragment, the patches and this recipe, so any change rebuilds and nothing else
does. A file lock lets concurrent callers (parallel test sessions) share one build.
"""

from __future__ import annotations

import collections
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keel.vmm.boot.elf import ElfImage
from keel.vmm.boot.pvh import pvh_entry
from keel.vmm.cache_lock import exclusive_lock
from keel.vmm.errors import LoaderError
from keel.vmm.guest_kernel.config import FRAGMENT_NAME, fragment_text, missing_options
from keel.vmm.guest_kernel.errors import GuestKernelError
from keel.vmm.guest_kernel.patches import PATCHES, Patch

SOURCE_PACKAGE = "linux-source-6.1"
SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
SOURCE_DIRECTORY_NAME = "linux-source-6.1"
BUILD_PACKAGES = (SOURCE_PACKAGE, "bc", "bison", "flex", "libelf-dev", "libssl-dev", "cpio",
                  "xz-utils", "make", "gcc", "patch")
REQUIRED_TOOLS = ("make", "gcc", "bc", "bison", "flex", "patch", "tar", "xz")
RECIPE_VERSION = "1"  # bump when the steps below change what gets built
CACHE_ENVIRONMENT_VARIABLE = "KEEL_CACHE_DIR"
KEY_LENGTH = 24
NICENESS = 19
OUTPUT_TAIL_LINES = 40
PROGRESS_EVERY_FILES = 100
COMPILE_PREFIXES = ("  CC ", "  AS ", "  LD ", "  AR ")


def _silent(_message: str) -> None:
    return None


@dataclass(frozen=True)
class KernelBuild:
    """Where the built kernel is, and whether this call built it or found it cached."""

    vmlinux: Path
    config: Path
    key: str
    built: bool
    pvh_entry: int


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    return Path(base) if base else Path.home() / ".cache" / "keel"


def install_command() -> str:
    return "apt-get install -y " + " ".join(BUILD_PACKAGES)


def check_prerequisites(tarball: Path = SOURCE_TARBALL) -> None:
    """Raise GuestKernelError naming what to install when the source or a tool is missing."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if not tarball.is_file():
        missing.insert(0, str(tarball))
    if missing:
        raise GuestKernelError(f"building the guest kernel needs {', '.join(missing)}; "
                               f"install them with: {install_command()}")


def source_version(tarball: Path = SOURCE_TARBALL) -> str:
    """The Debian version of the installed source package (falls back to the tarball's size)."""
    try:
        completed = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", SOURCE_PACKAGE], capture_output=True,
            text=True, check=True, timeout=30)
        version = completed.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = ""
    return f"{version or 'unknown'}:{tarball.stat().st_size}"


def build_key(version: str, fragment: str = "", patches: tuple[Patch, ...] = PATCHES) -> str:
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, version, fragment or fragment_text(),
                 *(patch.name + patch.text for patch in patches)):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:KEY_LENGTH]


def _run(command: list[str], cwd: Path, log: Path, step: str,
         progress: Callable[[str], None] = _silent, input_text: str | None = None,
         deadline: float | None = None) -> None:
    """Run one build step, appending its output to `log`; failures quote the output's tail."""
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    compiled = 0
    environment = {**os.environ, "LC_ALL": "C"}
    with open(log, "a", buffering=1) as log_file:  # line-buffered: tail -f works
        log_file.write(f"$ {' '.join(command)}\n")
        log_file.flush()
        process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=environment)
        try:
            assert process.stdin is not None and process.stdout is not None
            if input_text is not None:
                process.stdin.write(input_text)
            process.stdin.close()
            for line in process.stdout:
                log_file.write(line)
                tail.append(line.rstrip())
                if line.startswith(COMPILE_PREFIXES):
                    compiled += 1
                    if compiled % PROGRESS_EVERY_FILES == 0:
                        progress(f"{step}: {compiled} files built (now {line.split()[-1]})")
                if deadline is not None and time.monotonic() > deadline:
                    raise GuestKernelError(f"{step} did not finish in time; see {log}")
            status = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if status != 0:
        output = "\n".join(tail)
        raise GuestKernelError(f"{step} failed with exit status {status} ({' '.join(command)}); "
                               f"last output:\n{output}\nfull log: {log}")


def build_kernel(*, progress: Callable[[str], None] = _silent, jobs: int | None = None,
                 rebuild: bool = False, keep_tree: bool = False, root: Path | None = None,
                 tarball: Path = SOURCE_TARBALL, timeout: float | None = None) -> KernelBuild:
    """The guest kernel's vmlinux, built now or found in the cache.

    `progress` receives one human-readable line per step (and every few hundred compiled
    files); `jobs` defaults to the number of CPUs; `keep_tree` keeps the build tree (about
    1.5 GB) for inspection; `timeout` bounds the whole build in seconds.
    """
    check_prerequisites(tarball)
    key = build_key(source_version(tarball))
    directory = (root or cache_root()) / "kernel" / key
    vmlinux = directory / "vmlinux"
    config = directory / "config"
    with exclusive_lock(directory.parent / f"{key}.lock"):
        if vmlinux.is_file() and not rebuild:
            entry = _check_pvh(vmlinux)
            progress(f"guest kernel {key} is cached: {vmlinux}")
            return KernelBuild(vmlinux, config, key, False, entry)
        deadline = time.monotonic() + timeout if timeout is not None else None
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        log = directory / "build.log"
        tree = directory / SOURCE_DIRECTORY_NAME
        progress(f"extracting {tarball} into {directory}")
        _run(["tar", "-xf", str(tarball), "-C", str(directory)], directory, log, "extract",
             deadline=deadline)
        for patch in PATCHES:
            progress(f"applying patch {patch.name}")
            _run(["patch", "-p1", "--forward", "--batch"], tree, log, f"patch {patch.name}",
                 input_text=patch.text, deadline=deadline)
        progress("configuring: make tinyconfig + keel's fragment")
        (tree / "arch" / "x86" / "configs" / FRAGMENT_NAME).write_text(fragment_text())
        _run(["make", "tinyconfig"], tree, log, "make tinyconfig", deadline=deadline)
        _run(["make", FRAGMENT_NAME], tree, log, f"make {FRAGMENT_NAME}", deadline=deadline)
        problems = missing_options(tree / ".config")
        if problems:
            raise GuestKernelError("the kernel configuration did not take keel's fragment: "
                                   + "; ".join(problems))
        job_count = jobs or os.cpu_count() or 1
        progress(f"building vmlinux with make -j{job_count} at nice {NICENESS} "
                 "(several minutes)")
        _run(["nice", "-n", str(NICENESS), "make", f"-j{job_count}", "vmlinux"], tree, log,
             "make vmlinux", progress, deadline=deadline)
        entry = _check_pvh(tree / "vmlinux")
        shutil.copyfile(tree / ".config", config)
        partial = directory / "vmlinux.partial"
        shutil.copyfile(tree / "vmlinux", partial)
        partial.rename(vmlinux)
        if not keep_tree:
            shutil.rmtree(tree)
        progress(f"guest kernel built: {vmlinux} (PVH entry {entry:#x})")
        return KernelBuild(vmlinux, config, key, True, entry)


def _check_pvh(vmlinux: Path) -> int:
    try:
        entry = pvh_entry(ElfImage(vmlinux.read_bytes()))
    except LoaderError as error:
        raise GuestKernelError(f"{vmlinux} is not a usable ELF kernel: {error}") from None
    if entry is None:
        raise GuestKernelError(f"{vmlinux} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
                               "was CONFIG_PVH lost?")
    return entry
