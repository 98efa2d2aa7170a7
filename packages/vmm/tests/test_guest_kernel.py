"""Guest kernel tooling: the fragment, the patch against Debian's real source, the cache key,
the newc writer checked by GNU cpio, the initramfs, and (when built) the kernel itself."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from keel.vmm.guest_kernel import cpio
from keel.vmm.guest_kernel.command_line import (
    CPU_FEATURES,
    emulation_safe_parameters,
    feature_number,
)
from keel.vmm.guest_kernel.config import DISABLED, ENABLED, fragment_text, missing_options
from keel.vmm.guest_kernel.errors import GuestKernelError
from keel.vmm.guest_kernel.initramfs import BUSYBOX_PATH, build_initramfs
from keel.vmm.guest_kernel.kernel import (
    SOURCE_TARBALL,
    build_kernel,
    build_key,
    cache_root,
    check_prerequisites,
    source_version,
)
from keel.vmm.guest_kernel.patches import INT3_SELFTEST, SKIP_INT3_SELFTEST_PARAMETER

TOOL_TIMEOUT_SECONDS = 120
# ENVIRONMENT.md's list for a guest kernel that boots here.
ENVIRONMENT_OPTIONS = ("64BIT", "PRINTK", "TTY", "SERIAL_8250_CONSOLE", "BLK_DEV_INITRD",
                       "PROC_FS", "SYSFS", "DEVTMPFS", "PARAVIRT", "KVM_GUEST", "PVH",
                       "VIRTIO_MMIO", "VIRTIO_MMIO_CMDLINE_DEVICES", "VIRTIO_NET", "VIRTIO_BLK",
                       "NET", "INET", "UNIX", "PACKET", "IP_PNP", "IO_URING")
XEN_ELFNOTE_PHYS32_ENTRY = 0x12
BUILD_ENVIRONMENT_VARIABLE = "KEEL_BUILD_GUEST_KERNEL"
needs_cpio = pytest.mark.skipif(shutil.which("cpio") is None,
                                reason="needs GNU cpio (Debian package cpio) to read archives")
needs_busybox = pytest.mark.skipif(not BUSYBOX_PATH.is_file(),
                                   reason="needs busybox-static (/bin/busybox)")


def test_fragment_holds_what_the_environment_needs() -> None:
    assert set(ENVIRONMENT_OPTIONS) <= set(ENABLED)
    assert {"SMP", "PTP_1588_CLOCK_KVM"} <= set(DISABLED)
    text = fragment_text()
    assert "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n" in text
    assert "# CONFIG_SMP is not set\n" in text


def test_missing_options_are_reported(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    lines = [f"CONFIG_{name}=y" for name in ENABLED if name != "PVH"] + ["CONFIG_SMP=y"]
    config.write_text("\n".join(lines) + "\n")
    assert missing_options(config) == ["PVH is not y", "SMP is set"]


def test_cache_key_follows_every_input() -> None:
    base = build_key("6.1.176-1:1")
    assert build_key("6.1.176-1:1") == base
    assert build_key("6.1.177-1:1") != base
    assert build_key("6.1.176-1:1", fragment="CONFIG_X=y\n") != base
    assert build_key("6.1.176-1:1", patches=()) != base


def test_emulation_safe_parameters() -> None:
    parameters = emulation_safe_parameters().split()
    assert SKIP_INT3_SELFTEST_PARAMETER in parameters
    assert "noxsave" in parameters
    cleared = next(p for p in parameters if p.startswith("clearcpuid="))
    numbers = [int(n) for n in cleared.removeprefix("clearcpuid=").split(",")]
    assert feature_number("smap") == 9 * 32 + 20 and feature_number("smap") in numbers
    assert len(numbers) == len(CPU_FEATURES)


def test_missing_source_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(GuestKernelError, match=re.escape("apt-get install -y linux-source-6.1 bc")):
        check_prerequisites(tmp_path / "linux-source-6.1.tar.xz")


@pytest.mark.skipif(not SOURCE_TARBALL.is_file() or shutil.which("patch") is None,
                    reason="needs Debian's linux-source-6.1 package and patch")
def test_patch_and_feature_numbers_match_debian_source(tmp_path: Path) -> None:
    members = ["linux-source-6.1/arch/x86/kernel/alternative.c",
               "linux-source-6.1/arch/x86/include/asm/cpufeatures.h"]
    subprocess.run(["tar", "-xf", str(SOURCE_TARBALL), "-C", str(tmp_path), *members],
                   check=True, timeout=TOOL_TIMEOUT_SECONDS)
    tree = tmp_path / "linux-source-6.1"
    header = (tree / "arch/x86/include/asm/cpufeatures.h").read_text()
    for name, (word, bit) in CPU_FEATURES.items():
        pattern = rf"#define X86_FEATURE_{name.upper()}\s+\(\s*{word}\*32\+\s*{bit}\)"
        assert re.search(pattern, header), name
    subprocess.run(["patch", "-p1", "--forward", "--batch"], input=INT3_SELFTEST.text,
                   text=True, cwd=tree, check=True, capture_output=True,
                   timeout=TOOL_TIMEOUT_SECONDS)
    patched = (tree / "arch/x86/kernel/alternative.c").read_text()
    assert f'early_param("{SKIP_INT3_SELFTEST_PARAMETER}"' in patched
    assert "if (int3_selftest_disabled) {" in patched


def _cpio(arguments: list[str], archive: bytes) -> bytes:
    return subprocess.run(["cpio", "--quiet", *arguments], input=archive, check=True,
                          capture_output=True, timeout=TOOL_TIMEOUT_SECONDS).stdout


@needs_cpio
def test_newc_archives_read_back_with_gnu_cpio() -> None:
    archive = cpio.archive([
        cpio.directory("dev"),
        cpio.character_device("dev/console", 5, 1),
        cpio.regular_file("init", b"#!/bin/sh\necho hi\n", 0o755),
        cpio.regular_file("odd", b"x" * 5),
        cpio.symlink("sh", "bin/busybox"),
    ])
    assert len(archive) % 4 == 0
    listing = _cpio(["-itv"], archive).decode()
    assert re.search(r"^crw------- .* 5, +1 .* dev/console$", listing, re.MULTILINE)
    assert re.search(r"^-rwxr-xr-x .* init$", listing, re.MULTILINE)
    assert re.search(r"^lrwxrwxrwx .* sh -> bin/busybox$", listing, re.MULTILINE)
    assert _cpio(["-i", "--to-stdout", "init"], archive) == b"#!/bin/sh\necho hi\n"
    assert _cpio(["-i", "--to-stdout", "odd"], archive) == b"xxxxx"


def test_newc_refuses_oversized_names() -> None:
    with pytest.raises(ValueError, match="exceeds 4096"):
        cpio.archive([cpio.regular_file("x" * 5000, b"")])


@needs_cpio
@needs_busybox
def test_initramfs_with_busybox(tmp_path: Path) -> None:
    init = b"#!/bin/sh\nmount -t proc proc /proc\nexec sh\n"
    path = build_initramfs(init, root=tmp_path)
    assert path.parent == tmp_path / "initramfs"
    assert build_initramfs(init, root=tmp_path) == path  # cached by content
    archive = gzip.decompress(path.read_bytes())
    names = set(_cpio(["-it"], archive).decode().split())
    assert {"init", "bin/busybox", "bin/sh", "sbin/ip", "dev/console", "proc"} <= names
    assert _cpio(["-i", "--to-stdout", "init"], archive) == init
    listing = _cpio(["-itv"], archive).decode()
    assert re.search(r"^lrwxrwxrwx .* bin/sh -> \.\./bin/busybox$", listing, re.MULTILINE)


@needs_cpio
def test_initramfs_without_busybox(tmp_path: Path) -> None:
    init = tmp_path / "loop"
    init.write_bytes(b"\x7fELF-not-really")
    output = tmp_path / "out" / "initrd.gz"
    assert build_initramfs(init, busybox=None, output=output) == output
    names = set(_cpio(["-it"], gzip.decompress(output.read_bytes())).decode().split())
    assert "init" in names and "bin/busybox" not in names


def test_initramfs_refuses_a_dynamic_busybox(tmp_path: Path) -> None:
    with pytest.raises(GuestKernelError, match="is not a static ELF binary"):
        build_initramfs(b"x", busybox=Path(shutil.which("ls") or "/bin/ls"), root=tmp_path)
    with pytest.raises(GuestKernelError, match="is empty"):
        build_initramfs(b"", root=tmp_path)


def _cached_or_requested() -> bool:
    if os.environ.get(BUILD_ENVIRONMENT_VARIABLE) == "1":
        return True
    if not SOURCE_TARBALL.is_file():
        return False
    key = build_key(source_version())
    return (cache_root() / "kernel" / key / "vmlinux").is_file()


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not _cached_or_requested(),
                    reason="the guest kernel is not built on this machine (about 10 minutes "
                           f"on 2 cores): run `keel vmm guest build-kernel` or set "
                           f"{BUILD_ENVIRONMENT_VARIABLE}=1")
def test_built_kernel_has_a_pvh_entry() -> None:
    messages: list[str] = []
    result = build_kernel(progress=messages.append)
    assert messages
    notes = subprocess.run(["readelf", "-n", str(result.vmlinux)], check=True, text=True,
                           capture_output=True, timeout=TOOL_TIMEOUT_SECONDS).stdout
    assert re.search(rf"^\s+Xen\s+0x[0-9a-f]+\s+.*{XEN_ELFNOTE_PHYS32_ENTRY:#010x}",
                     notes, re.MULTILINE | re.IGNORECASE), notes
    config = result.config.read_text()
    assert "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y" in config
    assert "# CONFIG_SMP is not set" in config
