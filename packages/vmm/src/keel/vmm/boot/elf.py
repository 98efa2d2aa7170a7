"""ELF images: loadable segments and notes, read with pyelftools and bounded.

Why pyelftools: it parses both ELF classes and validates headers; keel only adds the bounds
(every segment must land inside guest memory) and its own note walker (notes are tiny and
their format is fixed).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from keel.vmm.errors import LoaderError
from keel.vmm.memory import GuestMemory

ELF_MAGIC = b"\x7fELF"
NOTE_HEADER = struct.Struct("<III")
NOTE_ALIGNMENT = 4
MAX_SEGMENTS = 64
# What pyelftools raises on hostile files (found by fuzzing: OverflowError for huge offsets,
# and the usual parse errors); every one becomes a LoaderError.
PARSE_ERRORS = (ELFError, struct.error, ValueError, OverflowError, KeyError, IndexError,
                EOFError, UnicodeDecodeError)


@dataclass(frozen=True)
class Note:
    name: bytes
    type: int
    description: bytes


def _align(value: int) -> int:
    return (value + NOTE_ALIGNMENT - 1) & ~(NOTE_ALIGNMENT - 1)


def parse_notes(data: bytes) -> Iterator[Note]:
    """Walk an ELF note area; stops at the first entry that does not fit."""
    offset = 0
    while offset + NOTE_HEADER.size <= len(data):
        name_size, description_size, note_type = NOTE_HEADER.unpack_from(data, offset)
        name_start = offset + NOTE_HEADER.size
        description_start = name_start + _align(name_size)
        end = description_start + _align(description_size)
        if description_start + description_size > len(data):
            return
        yield Note(data[name_start : name_start + name_size].rstrip(b"\0"), note_type,
                   data[description_start : description_start + description_size])
        offset = end


class ElfImage:
    """An ELF kernel in memory (bytes), its loadable segments and notes."""

    def __init__(self, image: bytes) -> None:
        if image[:4] != ELF_MAGIC:
            raise LoaderError("not an ELF image (no \\x7fELF magic)")
        try:
            self._elf = ELFFile(io.BytesIO(image))
            self.entry = int(self._elf["e_entry"])
            self.segments = [self._elf.get_segment(i) for i in range(self._elf.num_segments())]
        except PARSE_ERRORS as error:
            raise LoaderError(f"malformed ELF image: {error!r}") from None
        if len(self.segments) > MAX_SEGMENTS:
            raise LoaderError(f"ELF image has {len(self.segments)} segments; at most "
                              f"{MAX_SEGMENTS} are accepted")

    def notes(self) -> Iterator[Note]:
        for segment in self.segments:
            if segment["p_type"] == "PT_NOTE":
                try:
                    data = segment.data()
                except PARSE_ERRORS as error:
                    raise LoaderError(f"ELF note segment unreadable: {error!r}") from None
                yield from parse_notes(data)

    def load(self, memory: GuestMemory) -> tuple[int, int]:
        """Copy every PT_LOAD segment to its physical address; returns (lowest, end)."""
        lowest, end = None, 0
        for segment in self.segments:
            if segment["p_type"] != "PT_LOAD":
                continue
            address, file_size = int(segment["p_paddr"]), int(segment["p_filesz"])
            memory_size = int(segment["p_memsz"])
            if file_size > memory_size:
                raise LoaderError(f"ELF segment at {address:#x} has filesz {file_size:#x} > "
                                  f"memsz {memory_size:#x}")
            if not memory.contains(address, memory_size):
                raise LoaderError(f"ELF segment [{address:#x}, {address + memory_size:#x}) is "
                                  "outside guest memory")
            try:
                data = segment.data()
            except PARSE_ERRORS as error:
                raise LoaderError(f"ELF segment at {address:#x} unreadable: {error!r}") from None
            if len(data) != file_size:
                raise LoaderError(f"ELF segment at {address:#x} is truncated in the file")
            memory.write(address, data)
            memory.write(address + file_size, bytes(memory_size - file_size))
            lowest = address if lowest is None else min(lowest, address)
            end = max(end, address + memory_size)
        if lowest is None:
            raise LoaderError("ELF image has no loadable segment")
        return lowest, end
