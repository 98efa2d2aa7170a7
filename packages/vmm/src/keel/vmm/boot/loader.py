"""Pick the loader for a kernel image: bzImage, PVH ELF, multiboot v1, or a flat binary.

Why this order: a bzImage is recognised by its "HdrS" header, a vmlinux by its PVH note, a
multiboot kernel by its header; a flat binary has no marker at all, so it is only ever chosen
explicitly (with its load address and the mode to start it in).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from keel.vmm.boot.bzimage import is_bzimage, load_bzimage
from keel.vmm.boot.elf import ELF_MAGIC, ElfImage
from keel.vmm.boot.modes import CpuMode, EntryPoint
from keel.vmm.boot.multiboot import find_header, load_multiboot
from keel.vmm.boot.pvh import load_pvh, pvh_entry
from keel.vmm.errors import LoaderError
from keel.vmm.memory import GuestMemory

DEFAULT_FLAT_ADDRESS = 0x100000


class KernelFormat(enum.Enum):
    AUTO = "auto"
    BZIMAGE = "bzimage"
    PVH = "pvh"
    MULTIBOOT = "multiboot"
    FLAT = "flat"


@dataclass(frozen=True)
class FlatBinary:
    """How to place and start a flat binary (it carries no header to say so)."""

    address: int = DEFAULT_FLAT_ADDRESS
    mode: CpuMode = CpuMode.LONG


def detect_format(image: bytes) -> KernelFormat:
    if is_bzimage(image):
        return KernelFormat.BZIMAGE
    if image[:4] == ELF_MAGIC and pvh_entry(ElfImage(image)) is not None:
        return KernelFormat.PVH
    if find_header(image) is not None:
        return KernelFormat.MULTIBOOT
    raise LoaderError("unrecognised kernel image: not a bzImage, not an ELF with a PVH note, "
                      "no multiboot header (load flat binaries with format=flat)")


def load_flat(memory: GuestMemory, image: bytes, flat: FlatBinary) -> EntryPoint:
    if not memory.contains(flat.address, len(image)):
        raise LoaderError(f"flat binary of {len(image)} bytes at {flat.address:#x} does not "
                          "fit in guest memory")
    memory.write(flat.address, image)
    return EntryPoint(flat.mode, flat.address)


def load_kernel(memory: GuestMemory, image: bytes, *, command_line: str = "",
                initrd: bytes | None = None, kernel_format: KernelFormat = KernelFormat.AUTO,
                flat: FlatBinary | None = None) -> EntryPoint:
    """Load `image` into `memory` and return where the boot vCPU starts."""
    chosen = detect_format(image) if kernel_format is KernelFormat.AUTO else kernel_format
    if chosen is KernelFormat.BZIMAGE:
        return load_bzimage(memory, image, command_line, initrd).entry
    if chosen is KernelFormat.PVH:
        return load_pvh(memory, image, command_line, initrd).entry
    if chosen is KernelFormat.MULTIBOOT:
        return load_multiboot(memory, image, command_line, initrd).entry
    if initrd is not None or command_line:
        raise LoaderError("a flat binary takes no command line or initrd")
    return load_flat(memory, image, flat or FlatBinary())
