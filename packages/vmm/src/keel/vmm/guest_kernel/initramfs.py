"""Build an initramfs: busybox-static with its applet links, plus the caller's /init.

Why busybox-static: one statically linked binary gives the guest a shell and the usual tools
with no libraries to copy; Debian's busybox-static package installs it as /bin/busybox. The
archive is cpio newc, gzip-compressed (the kernel is built with RD_GZIP), reproducible (mtime
0), and cached under <cache>/initramfs/<hash of its contents>.cpio.gz unless the caller names
an output path.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from keel.vmm.guest_kernel import cpio
from keel.vmm.guest_kernel.errors import GuestKernelError
from keel.vmm.guest_kernel.kernel import cache_root

BUSYBOX_PATH = Path("/bin/busybox")
BUSYBOX_PACKAGE = "busybox-static"
DIRECTORIES = ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "etc", "tmp",
               "root", "mnt", "run")
CONSOLE_DEVICE = (5, 1)  # /dev/console
NULL_DEVICE = (1, 3)  # /dev/null
EXECUTABLE = 0o755
APPLET_LIMIT = 1024
GZIP_LEVEL = 9
KEY_LENGTH = 24
LIST_TIMEOUT_SECONDS = 30


def _is_static_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            return not any(segment["p_type"] == "PT_INTERP" for segment in elf.iter_segments())
    except (ELFError, OSError):
        return False


def busybox_applets(busybox: Path) -> list[str]:
    """Paths (relative, like 'bin/sh') of every applet the busybox binary provides."""
    try:
        completed = subprocess.run([str(busybox), "--list-full"], capture_output=True,
                                   text=True, check=True, timeout=LIST_TIMEOUT_SECONDS)
    except (OSError, subprocess.SubprocessError) as error:
        raise GuestKernelError(f"{busybox} --list-full failed: {error}") from None
    applets = [line.strip().lstrip("/") for line in completed.stdout.splitlines()
               if line.strip()]
    if not applets or len(applets) > APPLET_LIMIT:
        raise GuestKernelError(f"{busybox} listed {len(applets)} applets; expected 1 to "
                               f"{APPLET_LIMIT}")
    return applets


def initramfs_entries(init: bytes, *, busybox: Path | None = BUSYBOX_PATH,
                      files: Mapping[str, bytes] | None = None) -> list[cpio.Entry]:
    entries = [cpio.directory(name) for name in DIRECTORIES]
    entries += [cpio.character_device("dev/console", *CONSOLE_DEVICE),
                cpio.character_device("dev/null", *NULL_DEVICE, permissions=0o666)]
    if busybox is not None:
        if not busybox.is_file():
            raise GuestKernelError(f"{busybox} is missing; install it with: apt-get install "
                                   f"-y {BUSYBOX_PACKAGE}")
        if not _is_static_elf(busybox):
            raise GuestKernelError(f"{busybox} is not a static ELF binary; the initramfs has "
                                   f"no libraries (install {BUSYBOX_PACKAGE})")
        entries.append(cpio.regular_file("bin/busybox", busybox.read_bytes(), EXECUTABLE))
        for applet in busybox_applets(busybox):
            if applet != "bin/busybox":
                depth = applet.count("/")
                entries.append(cpio.symlink(applet, "../" * depth + "bin/busybox"))
    for name, data in sorted((files or {}).items()):
        entries.append(cpio.regular_file(name.lstrip("/"), data, EXECUTABLE))
    entries.append(cpio.regular_file("init", init, EXECUTABLE))
    return entries


def build_initramfs(init: bytes | Path, *, busybox: Path | None = BUSYBOX_PATH,
                    files: Mapping[str, bytes] | None = None, output: Path | None = None,
                    root: Path | None = None) -> Path:
    """A gzip-compressed newc initramfs with `init` as /init; returns its path.

    `init` is the program or script itself (bytes) or a path to it; `files` adds more
    executables by path; `busybox=None` leaves busybox out (an /init that makes no system
    calls needs nothing else).
    """
    init_bytes = init.read_bytes() if isinstance(init, Path) else bytes(init)
    if not init_bytes:
        raise GuestKernelError("the /init given is empty")
    archive = cpio.archive(initramfs_entries(init_bytes, busybox=busybox, files=files))
    if output is None:
        key = hashlib.sha256(archive).hexdigest()[:KEY_LENGTH]
        output = (root or cache_root()) / "initramfs" / f"{key}.cpio.gz"
        if output.is_file():
            return output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(gzip.compress(archive, compresslevel=GZIP_LEVEL, mtime=0))
    partial.rename(output)
    return output
