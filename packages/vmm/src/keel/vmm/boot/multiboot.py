"""Multiboot v1 kernels, loaded the way QEMU's -kernel does.

Why: many small kernels and test images (and keel's benchmark guest, which QEMU must also
boot) speak multiboot. The header sits in the first 8 KiB; with the a.out kludge (flag 16)
it gives load addresses itself, otherwise the ELF program headers do. Entry in flat 32-bit
protected mode, eax = 0x2BADB002, ebx = the multiboot information structure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from keel.vmm.boot import layout
from keel.vmm.boot.common import place_initrd, write_command_line
from keel.vmm.boot.elf import ELF_MAGIC, ElfImage
from keel.vmm.boot.memory_map import memory_map
from keel.vmm.boot.modes import CpuMode, EntryPoint
from keel.vmm.errors import LoaderError
from keel.vmm.memory import GuestMemory

HEADER_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002
SEARCH_LIMIT = 8192
HEADER_ALIGNMENT = 4
HEADER = struct.Struct("<III")
AOUT_KLUDGE = struct.Struct("<IIIII")  # header_addr, load_addr, load_end, bss_end, entry
FLAG_AOUT_KLUDGE = 1 << 16
FLAG_VIDEO_MODE = 1 << 2
# multiboot_info flags
INFO_MEMORY = 1 << 0
INFO_CMDLINE = 1 << 2
INFO_MODULES = 1 << 3
INFO_MEMORY_MAP = 1 << 6
INFO = struct.Struct("<IIIIIII16xII")  # up to mmap_addr
MODULE = struct.Struct("<IIII")
MMAP_ENTRY = struct.Struct("<IQQI")  # size (of the rest: 20), base, length, type
MMAP_ENTRY_REST = MMAP_ENTRY.size - 4
INFO_ADDRESS = layout.START_INFO_ADDRESS
MODULE_ADDRESS = INFO_ADDRESS + 0x80
MODULE_STRING_ADDRESS = INFO_ADDRESS + 0x90
MMAP_ADDRESS = INFO_ADDRESS + 0x100
MAX_MMAP_ENTRIES = (layout.START_INFO_LIMIT - MMAP_ADDRESS) // MMAP_ENTRY.size
KIB = 1024
LOW_MEMORY_END = 640 * KIB
ADDRESS_LIMIT_32 = 1 << 32
COMMAND_LINE_LIMIT = 4096


@dataclass(frozen=True)
class MultibootHeader:
    offset: int
    flags: int
    kludge: tuple[int, int, int, int, int] | None


def find_header(image: bytes) -> MultibootHeader | None:
    window = image[:SEARCH_LIMIT]
    for offset in range(0, len(window) - HEADER.size + 1, HEADER_ALIGNMENT):
        magic, flags, checksum = HEADER.unpack_from(window, offset)
        if magic != HEADER_MAGIC or (magic + flags + checksum) & 0xFFFF_FFFF:
            continue
        kludge = None
        if flags & FLAG_AOUT_KLUDGE:
            if offset + HEADER.size + AOUT_KLUDGE.size > len(image):
                raise LoaderError("multiboot header's address fields run past the image")
            kludge = AOUT_KLUDGE.unpack_from(image, offset + HEADER.size)
        return MultibootHeader(offset, flags, kludge)
    return None


@dataclass(frozen=True)
class LoadedMultiboot:
    entry: EntryPoint
    info_address: int
    load_address: int
    load_end: int
    initrd_address: int | None


def _load_kludge(memory: GuestMemory, image: bytes, header: MultibootHeader) -> tuple[int, int,
                                                                                       int]:
    assert header.kludge is not None
    header_address, load_address, load_end, bss_end, entry = header.kludge
    if not load_address <= header_address or header.offset < header_address - load_address:
        raise LoaderError(f"multiboot load_addr {load_address:#x} is not at or below "
                          f"header_addr {header_address:#x} within the file")
    file_start = header.offset - (header_address - load_address)
    size = (load_end - load_address) if load_end else len(image) - file_start
    if size < 0 or file_start + size > len(image):
        raise LoaderError(f"multiboot load_end_addr {load_end:#x} runs past the image")
    end = max(bss_end, load_address + size)
    if not memory.contains(load_address, end - load_address):
        raise LoaderError(f"multiboot image [{load_address:#x}, {end:#x}) is outside memory")
    memory.write(load_address, image[file_start : file_start + size])
    memory.write(load_address + size, bytes(end - load_address - size))
    return load_address, end, entry


def load_multiboot(memory: GuestMemory, image: bytes, command_line: str = "",
                   initrd: bytes | None = None) -> LoadedMultiboot:
    header = find_header(image)
    if header is None:
        raise LoaderError(f"no multiboot header in the first {SEARCH_LIMIT} bytes")
    if header.kludge is not None:
        load_address, end, entry = _load_kludge(memory, image, header)
    elif image[:4] == ELF_MAGIC:
        elf = ElfImage(image)
        load_address, end = elf.load(memory)
        entry = elf.entry
    else:
        raise LoaderError("multiboot image is neither ELF nor carries load addresses")
    if end > ADDRESS_LIMIT_32:
        raise LoaderError(f"multiboot image ends at {end:#x}, above 4 GiB")
    flags = INFO_MEMORY | INFO_CMDLINE | INFO_MEMORY_MAP
    command_line_address = write_command_line(memory, command_line, COMMAND_LINE_LIMIT)
    module_count = 0
    initrd_address = None
    if initrd is not None:
        initrd_address = place_initrd(memory, initrd, lowest=end, highest_end=ADDRESS_LIMIT_32)
        memory.write(MODULE_STRING_ADDRESS, b"initrd\0")
        memory.write(MODULE_ADDRESS, MODULE.pack(initrd_address, initrd_address + len(initrd),
                                                 MODULE_STRING_ADDRESS, 0))
        flags |= INFO_MODULES
        module_count = 1
    entries = memory_map(memory)[:MAX_MMAP_ENTRIES]
    for index, item in enumerate(entries):
        memory.write(MMAP_ADDRESS + index * MMAP_ENTRY.size,
                     MMAP_ENTRY.pack(MMAP_ENTRY_REST, item.address, item.size, item.type))
    upper = next((e for e in entries if e.address == layout.HIGH_MEMORY_START), None)
    memory.write(INFO_ADDRESS, INFO.pack(
        flags, LOW_MEMORY_END // KIB, (upper.size // KIB) if upper else 0, 0,
        command_line_address, module_count, MODULE_ADDRESS if module_count else 0,
        len(entries) * MMAP_ENTRY.size, MMAP_ADDRESS))
    registers = {"rax": BOOTLOADER_MAGIC, "rbx": INFO_ADDRESS}
    return LoadedMultiboot(EntryPoint(CpuMode.PROTECTED, entry, registers), INFO_ADDRESS,
                           load_address, end, initrd_address)
