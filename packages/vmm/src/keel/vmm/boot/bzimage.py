"""Linux bzImage loader (Documentation/arch/x86/boot.rst), 64-bit entry.

Why these checks: the setup header is the image's contract; a loader that does not verify the
boot flag, the "HdrS" magic, the protocol version and XLF_KERNEL_64 jumps into garbage. The
zero page (boot_params) gets a copy of the header, the loader fields, the e820 map, the
command line and the initrd; the protected-mode kernel goes to its preferred address (or 1 MiB
when it is relocatable), and the vCPU starts in long mode at load address + 0x200 with rsi
pointing at the zero page.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from keel.vmm.boot import layout
from keel.vmm.boot.common import place_initrd, write_command_line
from keel.vmm.boot.memory_map import memory_map
from keel.vmm.boot.modes import CpuMode, EntryPoint
from keel.vmm.errors import LoaderError
from keel.vmm.memory import GuestMemory

SECTOR_SIZE = 512
ZERO_PAGE_SIZE = 4096
DEFAULT_SETUP_SECTORS = 4  # setup_sects == 0 means 4
# setup header offsets (in the image and in boot_params alike)
SETUP_SECTORS_OFFSET = 0x1F1
BOOT_FLAG_OFFSET = 0x1FE
JUMP_OFFSET = 0x200
HEADER_MAGIC_OFFSET = 0x202
VERSION_OFFSET = 0x206
TYPE_OF_LOADER_OFFSET = 0x210
LOADFLAGS_OFFSET = 0x211
CODE32_START_OFFSET = 0x214
RAMDISK_IMAGE_OFFSET = 0x218
RAMDISK_SIZE_OFFSET = 0x21C
CMD_LINE_PTR_OFFSET = 0x228
INITRD_ADDR_MAX_OFFSET = 0x22C
KERNEL_ALIGNMENT_OFFSET = 0x230
RELOCATABLE_OFFSET = 0x234
XLOADFLAGS_OFFSET = 0x236
CMDLINE_SIZE_OFFSET = 0x238
PREF_ADDRESS_OFFSET = 0x258
INIT_SIZE_OFFSET = 0x260
# boot_params fields outside the header
EXT_RAMDISK_IMAGE_OFFSET = 0x0C0
EXT_RAMDISK_SIZE_OFFSET = 0x0C4
EXT_CMD_LINE_PTR_OFFSET = 0x0C8
E820_ENTRIES_OFFSET = 0x1E8
E820_TABLE_OFFSET = 0x2D0
E820_ENTRY_SIZE = 20
E820_MAX_ENTRIES = 128
# values
BOOT_FLAG = 0xAA55
HEADER_MAGIC = b"HdrS"
MINIMUM_VERSION = 0x020C  # 2.12: xloadflags, the 64-bit entry
VERSION_WITH_CMDLINE_SIZE = 0x0206
VERSION_WITH_PREF_ADDRESS = 0x020A
LOADED_HIGH = 0x01
XLF_KERNEL_64 = 0x01
LOADER_TYPE_UNDEFINED = 0xFF
ENTRY_64_OFFSET = 0x200
LOW_32_BITS = 0xFFFF_FFFF
DEFAULT_CMDLINE_SIZE = 255  # before protocol 2.06
MINIMUM_IMAGE_SIZE = 2 * SECTOR_SIZE  # boot sector + one setup sector


@dataclass(frozen=True)
class SetupHeader:
    """The fields of the setup header a loader acts on."""

    setup_sectors: int
    version: int
    loadflags: int
    xloadflags: int
    relocatable: bool
    kernel_alignment: int
    initrd_address_max: int
    command_line_size: int
    preferred_address: int
    init_size: int
    header_end: int  # offset one past the header: 0x202 + the jump's displacement

    @property
    def kernel_offset(self) -> int:
        """File offset of the protected-mode kernel."""
        return (self.setup_sectors + 1) * SECTOR_SIZE


def _u(image: bytes, offset: int, size: int) -> int:
    return int.from_bytes(image[offset : offset + size], "little")


def parse_setup_header(image: bytes) -> SetupHeader:
    if len(image) < MINIMUM_IMAGE_SIZE:
        raise LoaderError(f"bzImage of {len(image)} bytes is too short for a setup header")
    if _u(image, BOOT_FLAG_OFFSET, 2) != BOOT_FLAG:
        raise LoaderError(f"no boot flag: expected {BOOT_FLAG:#x} at {BOOT_FLAG_OFFSET:#x}, got "
                          f"{_u(image, BOOT_FLAG_OFFSET, 2):#x}")
    magic = image[HEADER_MAGIC_OFFSET : HEADER_MAGIC_OFFSET + 4]
    if magic != HEADER_MAGIC:
        raise LoaderError(f"not a bzImage: expected 'HdrS' at {HEADER_MAGIC_OFFSET:#x}, got "
                          f"{magic!r}")
    version = _u(image, VERSION_OFFSET, 2)
    if version < MINIMUM_VERSION:
        raise LoaderError(f"boot protocol {version >> 8}.{version & 0xFF} is too old: the 64-bit "
                          f"entry needs 2.12 or newer")
    xloadflags = _u(image, XLOADFLAGS_OFFSET, 2)
    if not xloadflags & XLF_KERNEL_64:
        raise LoaderError("the kernel has no 64-bit entry point (XLF_KERNEL_64 unset)")
    loadflags = image[LOADFLAGS_OFFSET]
    if not loadflags & LOADED_HIGH:
        raise LoaderError("zImage (loaded low) kernels are not supported: LOADED_HIGH unset")
    setup_sectors = image[SETUP_SECTORS_OFFSET] or DEFAULT_SETUP_SECTORS
    header_end = JUMP_OFFSET + 2 + image[JUMP_OFFSET + 1]
    header = SetupHeader(
        setup_sectors=setup_sectors,
        version=version,
        loadflags=loadflags,
        xloadflags=xloadflags,
        relocatable=bool(image[RELOCATABLE_OFFSET]),
        kernel_alignment=_u(image, KERNEL_ALIGNMENT_OFFSET, 4),
        initrd_address_max=_u(image, INITRD_ADDR_MAX_OFFSET, 4),
        command_line_size=(_u(image, CMDLINE_SIZE_OFFSET, 4)
                           if version >= VERSION_WITH_CMDLINE_SIZE else DEFAULT_CMDLINE_SIZE),
        preferred_address=(_u(image, PREF_ADDRESS_OFFSET, 8)
                           if version >= VERSION_WITH_PREF_ADDRESS else layout.KERNEL_LOAD_ADDRESS),
        init_size=_u(image, INIT_SIZE_OFFSET, 4),
        header_end=min(header_end, E820_TABLE_OFFSET),
    )
    if header.kernel_offset >= len(image):
        raise LoaderError(f"setup of {setup_sectors} sectors leaves no kernel in a "
                          f"{len(image)}-byte image")
    return header


@dataclass(frozen=True)
class LoadedLinux:
    """Where the bzImage loader put everything (tests check each placement)."""

    header: SetupHeader
    kernel_address: int
    kernel_size: int
    zero_page_address: int
    command_line_address: int
    initrd_address: int | None
    initrd_size: int
    entry: EntryPoint


def load_bzimage(memory: GuestMemory, image: bytes, command_line: str = "",
                 initrd: bytes | None = None) -> LoadedLinux:
    header = parse_setup_header(image)
    kernel = image[header.kernel_offset :]
    footprint = max(header.init_size, len(kernel))
    kernel_address = header.preferred_address
    if not memory.contains(kernel_address, footprint):
        if not header.relocatable:
            raise LoaderError(f"kernel needs {footprint:#x} bytes at {kernel_address:#x}, which "
                              "is not in guest memory, and it is not relocatable")
        kernel_address = layout.KERNEL_LOAD_ADDRESS
        if not memory.contains(kernel_address, footprint):
            raise LoaderError(f"kernel needs {footprint:#x} bytes of memory from "
                              f"{kernel_address:#x}: give the VM more memory")
    memory.write(kernel_address, kernel)

    zero_page = bytearray(ZERO_PAGE_SIZE)
    zero_page[SETUP_SECTORS_OFFSET : header.header_end] = image[SETUP_SECTORS_OFFSET
                                                                : header.header_end]
    zero_page[TYPE_OF_LOADER_OFFSET] = LOADER_TYPE_UNDEFINED
    struct.pack_into("<I", zero_page, CODE32_START_OFFSET, kernel_address & LOW_32_BITS)

    command_line_address = write_command_line(memory, command_line, header.command_line_size + 1)
    struct.pack_into("<I", zero_page, CMD_LINE_PTR_OFFSET, command_line_address)
    struct.pack_into("<I", zero_page, EXT_CMD_LINE_PTR_OFFSET, command_line_address >> 32)

    initrd_address: int | None = None
    if initrd is not None:
        initrd_address = place_initrd(memory, initrd, lowest=kernel_address + footprint,
                                      highest_end=header.initrd_address_max + 1)
        struct.pack_into("<II", zero_page, RAMDISK_IMAGE_OFFSET, initrd_address & LOW_32_BITS,
                         len(initrd) & LOW_32_BITS)
        struct.pack_into("<II", zero_page, EXT_RAMDISK_IMAGE_OFFSET, initrd_address >> 32,
                         len(initrd) >> 32)

    entries = memory_map(memory)[:E820_MAX_ENTRIES]
    zero_page[E820_ENTRIES_OFFSET] = len(entries)
    for index, entry in enumerate(entries):
        struct.pack_into("<QQI", zero_page, E820_TABLE_OFFSET + index * E820_ENTRY_SIZE,
                         entry.address, entry.size, entry.type)
    memory.write(layout.ZERO_PAGE_ADDRESS, zero_page)
    entry_point = EntryPoint(CpuMode.LONG, kernel_address + ENTRY_64_OFFSET,
                             {"rsi": layout.ZERO_PAGE_ADDRESS})
    return LoadedLinux(header, kernel_address, len(kernel), layout.ZERO_PAGE_ADDRESS,
                       command_line_address, initrd_address, len(initrd or b""), entry_point)


def is_bzimage(image: bytes) -> bool:
    return image[HEADER_MAGIC_OFFSET : HEADER_MAGIC_OFFSET + 4] == HEADER_MAGIC
