"""What every loader shares: the command line and the initrd placement."""

from __future__ import annotations

from keel.vmm.boot import layout
from keel.vmm.boot.memory_map import highest_ram_below
from keel.vmm.errors import LoaderError
from keel.vmm.memory import PAGE_SIZE, GuestMemory


def write_command_line(memory: GuestMemory, command_line: str, capacity: int) -> int:
    """Write the NUL-terminated command line at its fixed place; returns its address."""
    encoded = command_line.encode()
    if b"\0" in encoded:
        raise LoaderError("the kernel command line contains a NUL byte")
    limit = min(capacity, layout.COMMAND_LINE_CAPACITY)
    if len(encoded) + 1 > limit:
        raise LoaderError(f"kernel command line of {len(encoded)} bytes is longer than the "
                          f"{limit - 1} this kernel accepts")
    memory.write(layout.COMMAND_LINE_ADDRESS, encoded + b"\0")
    return layout.COMMAND_LINE_ADDRESS


def place_initrd(memory: GuestMemory, initrd: bytes, *, lowest: int, highest_end: int) -> int:
    """Put the initrd as high as allowed (page aligned), above `lowest`; returns its address."""
    top = highest_ram_below(memory, highest_end)
    address = (top - len(initrd)) & ~(PAGE_SIZE - 1)
    if address < lowest or not memory.contains(address, len(initrd)):
        raise LoaderError(f"initrd of {len(initrd)} bytes does not fit between {lowest:#x} and "
                          f"{top:#x}: give the VM more memory")
    memory.write(address, initrd)
    return address
