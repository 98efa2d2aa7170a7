"""Build keel's test guests from source with gcc and ld, cached by a hash of their inputs.

Why a cache keyed by content: building takes a second or two per guest and tests ask for
guests constantly; the key covers every source file, the linker script, the flags and the
compiler's version, so any change rebuilds and nothing stale is ever used. Binaries live in
~/.cache/keel/guests/<hash>/ (or $KEEL_CACHE_DIR/guests), never in the repository.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from keel.vmm.errors import GuestBuildError

logger = logging.getLogger("keel.vmm")

CACHE_ENVIRONMENT_VARIABLE = "KEEL_CACHE_DIR"
TOOL_TIMEOUT_SECONDS = 120
CFLAGS = (
    "-m64", "-O2", "-std=gnu11", "-ffreestanding", "-nostdlib", "-fno-pic", "-fno-pie",
    "-mno-red-zone", "-fno-stack-protector", "-mgeneral-regs-only", "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables", "-Wall", "-Wextra", "-Werror",
)
LDFLAGS = ("-nostdlib", "-static", "-z", "max-page-size=0x1000", "--no-warn-rwx-segments")


@dataclass(frozen=True)
class GuestSpec:
    """One test guest: its sources, linker script, and whether the result is a flat image."""

    name: str
    sources: tuple[str, ...]
    linker_script: str
    flat: bool
    description: str
    headers: tuple[str, ...] = ()      # packaged headers the sources include (hashed, staged)
    libraries: tuple[str, ...] = ()    # third-party code compiled in ("lwip")


@dataclass(frozen=True)
class GuestLibrary:
    """Third-party C compiled into a guest from outside keel's tree (lwIP from Debian)."""

    identity: str                              # name and version: part of the cache key
    sources: tuple[Path, ...]
    include_directories: tuple[Path, ...]
    cflags: tuple[str, ...]                    # added after CFLAGS for the library's files
    staged_headers: tuple[tuple[str, str], ...] = ()  # (path in the build, packaged header)


def _libraries(spec: GuestSpec) -> list[GuestLibrary]:
    from keel.vmm.guests import lwip  # fetched (and cached) on first use only

    known = {"lwip": lwip.guest_library}
    return [known[name]() for name in spec.libraries]


GUESTS: dict[str, GuestSpec] = {spec.name: spec for spec in (
    GuestSpec("hello", ("entry64.S", "runtime.c", "hello.c"), "flat64.ld", True,
              "flat 64-bit: greets from CPL 3, boot-timer write, echoes a serial line, exit 42"),
    GuestSpec("cpuid", ("cpuid_entry.S", "entry64.S", "runtime.c", "cpuid.c"), "flat64.ld",
              True, "flat 64-bit: reports CPUID as the vCPU sees it at CPL 0"),
    GuestSpec("interrupts", ("irq_entry.S", "entry64.S", "runtime.c", "interrupts.c"),
              "flat64.ld", True, "flat 64-bit: serial input by IRQ 4 through PIC and LINT0"),
    GuestSpec("modes", ("modes.S", "entry64.S", "paging32.S", "runtime.c", "modes.c"),
              "modes.ld", True, "flat, starts in real mode: real -> protected -> long -> CPL 3"),
    GuestSpec("bootinfo-bzimage", ("bzimage_header.S", "entry64.S", "runtime.c", "bootinfo.c"),
              "bzimage.ld", True, "a bzImage that echoes its zero page, e820 map and cmdline"),
    GuestSpec("bootinfo-elf", ("boot32.S", "entry64.S", "paging32.S", "runtime.c", "bootinfo.c"),
              "elf.ld", False, "multiboot v1 + PVH ELF that echoes its boot information"),
    GuestSpec("exit-loop", ("boot32.S", "entry64.S", "paging32.S", "runtime.c", "exit_loop.c"),
              "elf.ld", False, "multiboot benchmark guest: port I/O + MMIO exits at CPL 3"),
    GuestSpec("http-lwip", ("boot32.S", "entry64.S", "paging32.S", "runtime.c",
                            "virtio_mmio_driver.c", "lwip_libc.c", "lwip_vnet_netif.c",
                            "lwip_http_server.c", "http_lwip.c"), "elf.ld", False,
              "multiboot/PVH ELF: lwIP (Debian's) serves HTTP over virtio-net at CPL 3",
              headers=("virtio_guest.h", "lwipopts.h", "lwip_arch_cc.h", "lwip_vnet_netif.h",
                       "lwip_http_server.h"), libraries=("lwip",)),
    GuestSpec("virtio-test", ("boot32.S", "entry64.S", "paging32.S", "runtime.c",
                              "virtio_mmio_driver.c", "virtio_test.c"),
              "elf_pvh.ld", False, "PVH guest driving virtio-net and virtio-blk at CPL 3",
              headers=("virtio_guest.h",)),
)}


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    root = Path(base) if base else Path.home() / ".cache" / "keel"
    return root / "guests"


def _source_text(name: str, source_directory: Path | None = None) -> bytes:
    if source_directory is not None:
        return (source_directory / name).read_bytes()
    return resources.files("keel.vmm.guests").joinpath("sources", name).read_bytes()


@functools.cache
def _tool_version(tool: str) -> bytes:
    return _run([tool, "--version"], Path.cwd()).encode()


def _run(command: list[str], cwd: Path) -> str:
    try:
        completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                                   timeout=TOOL_TIMEOUT_SECONDS, check=False)
    except FileNotFoundError:
        raise GuestBuildError(f"{command[0]} not found: install gcc and binutils") from None
    except subprocess.TimeoutExpired:
        raise GuestBuildError(f"{' '.join(command)} took over {TOOL_TIMEOUT_SECONDS} s") from None
    if completed.returncode != 0:
        raise GuestBuildError(f"{' '.join(command)} failed ({completed.returncode}):\n"
                              f"{completed.stdout}{completed.stderr}")
    return completed.stdout


def input_hash(spec: GuestSpec, source_directory: Path | None = None) -> str:
    """The cache key: sources, header, linker script, flags and tool versions."""
    digest = hashlib.sha256()
    libraries = _libraries(spec)
    texts = [_source_text(name, source_directory)
             for name in ("guest.h", spec.linker_script, *spec.sources, *spec.headers,
                          *(header for library in libraries
                            for _, header in library.staged_headers))]
    for part in (repr(spec).encode(), repr(CFLAGS + LDFLAGS).encode(), _tool_version("gcc"),
                 _tool_version("ld"), *(repr(library).encode() for library in libraries),
                 *texts):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:24]


def guest_path(name: str, *, rebuild: bool = False,
               source_directory: Path | None = None) -> Path:
    """The built guest `name` (building it first if its inputs changed).

    `source_directory` replaces the packaged sources (for working on a guest)."""
    spec = GUESTS.get(name)
    if spec is None:
        raise GuestBuildError(f"unknown test guest {name!r}; expected one of {sorted(GUESTS)}")
    directory = cache_root() / input_hash(spec, source_directory)
    target = directory / (f"{name}.bin" if spec.flat else f"{name}.elf")
    if target.exists() and not rebuild:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"keel-guest-{name}-") as scratch_name:
        scratch = Path(scratch_name)
        for source in (*spec.sources, *spec.headers, "guest.h", spec.linker_script):
            (scratch / source).write_bytes(_source_text(source, source_directory))
        libraries = _libraries(spec)
        includes = [f"-I{include}" for library in libraries
                    for include in (scratch, *library.include_directories)]
        for library in libraries:
            for build_path, header in library.staged_headers:
                (scratch / build_path).parent.mkdir(parents=True, exist_ok=True)
                (scratch / build_path).write_bytes(_source_text(header, source_directory))
        objects = []
        for source in spec.sources:
            object_name = f"{source}.o"
            _run(["gcc", *CFLAGS, *includes, "-c", source, "-o", object_name], scratch)
            objects.append(object_name)
        for index, library in enumerate(libraries):
            for library_source in library.sources:
                object_name = f"library{index}-{library_source.stem}.o"
                _run(["gcc", *CFLAGS, *library.cflags, *includes, "-c", str(library_source),
                      "-o", object_name], scratch)
                objects.append(object_name)
        _run(["ld", *LDFLAGS, "-T", spec.linker_script, "-o", "guest.elf", *objects], scratch)
        output = scratch / "guest.elf"
        if spec.flat:
            _run(["objcopy", "-O", "binary", "guest.elf", "guest.bin"], scratch)
            output = scratch / "guest.bin"
        staged = directory / f".{target.name}.{os.getpid()}"
        shutil.copyfile(output, staged)
        os.replace(staged, target)  # atomic: concurrent builders never see half a file
    logger.info("built test guest %s -> %s", name, target)
    return target


def build_all(*, rebuild: bool = False) -> dict[str, Path]:
    return {name: guest_path(name, rebuild=rebuild) for name in GUESTS}
