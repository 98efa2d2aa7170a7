"""PVH boot (Xen's direct boot ABI, which Linux's vmlinux and QEMU/Firecracker speak).

Why PVH: an uncompressed vmlinux carries a XEN_ELFNOTE_PHYS32_ENTRY note; the VMM loads its
segments, writes an hvm_start_info (command line, modules, memory map) and starts the vCPU
in flat 32-bit protected mode, paging off, at that entry with ebx pointing at the start info.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from keel.vmm.boot import layout
from keel.vmm.boot.common import place_initrd, write_command_line
from keel.vmm.boot.elf import ElfImage
from keel.vmm.boot.memory_map import memory_map
from keel.vmm.boot.modes import CpuMode, EntryPoint
from keel.vmm.errors import LoaderError
from keel.vmm.memory import GuestMemory

XEN_NOTE_NAME = b"Xen"
XEN_ELFNOTE_PHYS32_ENTRY = 18
START_INFO_MAGIC = 0x336EC578
START_INFO_VERSION = 1
START_INFO = struct.Struct("<IIIIQQQQII")  # struct hvm_start_info, version 1
MODULE_ENTRY = struct.Struct("<QQQQ")  # struct hvm_modlist_entry
MEMMAP_ENTRY = struct.Struct("<QQII")  # struct hvm_memmap_table_entry
MODULE_LIST_ADDRESS = layout.START_INFO_ADDRESS + 0x40
MEMMAP_ADDRESS = layout.START_INFO_ADDRESS + 0x80
MAX_MEMMAP_ENTRIES = (layout.START_INFO_LIMIT - MEMMAP_ADDRESS) // MEMMAP_ENTRY.size
INITRD_ADDRESS_LIMIT = 1 << 32
COMMAND_LINE_LIMIT = 4096
ENTRY_NOTE_SIZES = (4, 8)


def pvh_entry(image: ElfImage) -> int | None:
    for note in image.notes():
        if note.name == XEN_NOTE_NAME and note.type == XEN_ELFNOTE_PHYS32_ENTRY:
            if len(note.description) not in ENTRY_NOTE_SIZES:
                raise LoaderError(f"PVH entry note of {len(note.description)} bytes; expected 4 "
                                  "or 8")
            return int.from_bytes(note.description, "little")
    return None


@dataclass(frozen=True)
class LoadedPvh:
    entry: EntryPoint
    start_info_address: int
    initrd_address: int | None


def load_pvh(memory: GuestMemory, image: bytes, command_line: str = "",
             initrd: bytes | None = None) -> LoadedPvh:
    elf = ElfImage(image)
    entry = pvh_entry(elf)
    if entry is None:
        raise LoaderError("ELF image has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")
    _lowest, end = elf.load(memory)
    command_line_address = write_command_line(memory, command_line, COMMAND_LINE_LIMIT)
    module_count, module_list = 0, 0
    initrd_address = None
    if initrd is not None:
        initrd_address = place_initrd(memory, initrd, lowest=end,
                                      highest_end=INITRD_ADDRESS_LIMIT)
        memory.write(MODULE_LIST_ADDRESS, MODULE_ENTRY.pack(initrd_address, len(initrd), 0, 0))
        module_count, module_list = 1, MODULE_LIST_ADDRESS
    entries = memory_map(memory)[:MAX_MEMMAP_ENTRIES]
    for index, item in enumerate(entries):
        memory.write(MEMMAP_ADDRESS + index * MEMMAP_ENTRY.size,
                     MEMMAP_ENTRY.pack(item.address, item.size, item.type, 0))
    memory.write(layout.START_INFO_ADDRESS, START_INFO.pack(
        START_INFO_MAGIC, START_INFO_VERSION, 0, module_count, module_list,
        command_line_address, 0, MEMMAP_ADDRESS, len(entries), 0))
    return LoadedPvh(EntryPoint(CpuMode.PROTECTED, entry, {"rbx": layout.START_INFO_ADDRESS}),
                     layout.START_INFO_ADDRESS, initrd_address)
