"""A writer for the cpio "newc" format, the one format Linux unpacks as an initramfs.

Why by hand: the format is a 110-byte ASCII header per entry, 4-byte padding and a trailer
(Documentation/driver-api/early-userspace/buffer-format.rst); writing it directly lets keel
put device nodes and root-owned files in an archive without root privileges or a staging
directory, byte for byte reproducibly (fixed inode numbers, mtime 0).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

MAGIC = b"070701"
FIELD_COUNT = 13
FIELD_LIMIT = (1 << 32) - 1  # every header field is 8 hex digits
ALIGNMENT = 4
TRAILER_NAME = "TRAILER!!!"
NAME_LIMIT = 4096  # PATH_MAX, including the terminating NUL
DIRECTORY_MODE = stat.S_IFDIR | 0o755
SYMLINK_MODE = stat.S_IFLNK | 0o777


@dataclass(frozen=True)
class Entry:
    name: str
    mode: int
    data: bytes = b""
    device: tuple[int, int] = (0, 0)  # (major, minor) for character and block devices


def directory(name: str) -> Entry:
    return Entry(name, DIRECTORY_MODE)


def regular_file(name: str, data: bytes, permissions: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | permissions, data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, SYMLINK_MODE, target.encode())


def character_device(name: str, major: int, minor: int, permissions: int = 0o600) -> Entry:
    return Entry(name, stat.S_IFCHR | permissions, device=(major, minor))


def _pad(length: int) -> bytes:
    return bytes(-length % ALIGNMENT)


def _header(inode: int, entry: Entry, name: bytes) -> bytes:
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (inode, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, entry.device[0],
              entry.device[1], len(name), 0)
    if len(fields) != FIELD_COUNT or any(not 0 <= field <= FIELD_LIMIT for field in fields):
        raise ValueError(f"cpio entry {entry.name!r} has a field outside 32 bits")
    return MAGIC + b"".join(b"%08X" % field for field in fields)


def archive(entries: list[Entry]) -> bytes:
    """The newc archive of `entries` (names relative, no leading '/'), with its trailer."""
    parts: list[bytes] = []
    offset = 0
    for inode, entry in enumerate([*entries, Entry(TRAILER_NAME, 0)], start=1):
        name = entry.name.lstrip("/").encode() + b"\0"
        if len(name) > NAME_LIMIT:
            raise ValueError(f"cpio entry name of {len(name)} bytes exceeds {NAME_LIMIT}")
        head = _header(inode if entry.name != TRAILER_NAME else 0, entry, name) + name
        head += _pad(offset + len(head))
        parts += [head, entry.data, _pad(len(entry.data))]
        offset += len(head) + len(entry.data) + len(_pad(len(entry.data)))
    return b"".join(parts)
