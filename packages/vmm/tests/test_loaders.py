"""Loaders: Debian's real bzImage placed field by field, hostile images refused, and the
bootinfo test guests echoing exactly what each protocol handed them."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.native.testing.skips import requires_kvm
from keel.vmm.boot import bzimage, layout, multiboot
from keel.vmm.boot.bzimage import load_bzimage, parse_setup_header
from keel.vmm.boot.loader import FlatBinary, KernelFormat, detect_format, load_kernel
from keel.vmm.boot.memory_map import E820_RAM, memory_map
from keel.vmm.boot.modes import CpuMode
from keel.vmm.boot.multiboot import load_multiboot
from keel.vmm.boot.pvh import START_INFO_MAGIC, load_pvh
from keel.vmm.errors import LoaderError, VmmError
from keel.vmm.machine import Vm
from keel.vmm.memory import PAGE_SIZE, GuestMemory

MEBIBYTE = 1 << 20
COMMAND_LINE = "console=ttyS0 root=/dev/vda ro quiet keel=test"
INITRD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes


def u(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset : offset + size], "little")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Debian's linux-image-amd64 ----------------------------------------------------------------
def test_debian_setup_header_is_parsed(debian_bzimage: bytes) -> None:
    header = parse_setup_header(debian_bzimage)
    assert u(debian_bzimage, 0x1FE, 2) == 0xAA55
    assert debian_bzimage[0x202:0x206] == b"HdrS"
    assert header.version >= 0x020F
    assert header.setup_sectors == debian_bzimage[0x1F1]
    assert header.xloadflags & bzimage.XLF_KERNEL_64
    assert header.relocatable and header.kernel_alignment == 2 * MEBIBYTE
    assert header.preferred_address == 16 * MEBIBYTE
    assert header.init_size > len(debian_bzimage) - header.kernel_offset
    assert header.command_line_size == 2047


def test_debian_bzimage_lands_where_the_boot_protocol_says(debian_bzimage: bytes) -> None:
    header = parse_setup_header(debian_bzimage)
    with GuestMemory(256 * MEBIBYTE) as memory:
        loaded = load_bzimage(memory, debian_bzimage, COMMAND_LINE, INITRD)
        kernel = debian_bzimage[header.kernel_offset :]
        # the protected-mode kernel, byte for byte, at its preferred address
        assert loaded.kernel_address == header.preferred_address
        assert digest(memory.read(loaded.kernel_address, len(kernel))) == digest(kernel)
        # 64-bit entry: startup_64 is 0x200 into it, rsi -> zero page, long mode
        assert loaded.entry.mode is CpuMode.LONG
        assert loaded.entry.address == loaded.kernel_address + 0x200
        assert loaded.entry.registers == {"rsi": layout.ZERO_PAGE_ADDRESS}
        zero_page = memory.read(layout.ZERO_PAGE_ADDRESS, 4096)
        # the setup header is copied, except the fields the loader owns
        owned = {bzimage.TYPE_OF_LOADER_OFFSET, *range(0x214, 0x218), *range(0x218, 0x220),
                 *range(0x228, 0x22C)}
        for offset in range(0x1F1, header.header_end):
            if offset not in owned:
                assert zero_page[offset] == debian_bzimage[offset], hex(offset)
        assert zero_page[bzimage.TYPE_OF_LOADER_OFFSET] == 0xFF
        assert u(zero_page, 0x214, 4) == loaded.kernel_address
        # command line: pointer, bytes, terminator
        assert u(zero_page, 0x228, 4) == layout.COMMAND_LINE_ADDRESS
        assert u(zero_page, 0x0C8, 4) == 0
        stored = memory.read(layout.COMMAND_LINE_ADDRESS, len(COMMAND_LINE) + 1)
        assert stored == COMMAND_LINE.encode() + b"\0"
        # initrd: page aligned, above the kernel's whole footprint, below initrd_addr_max
        ramdisk, size = u(zero_page, 0x218, 4), u(zero_page, 0x21C, 4)
        assert (ramdisk, size) == (loaded.initrd_address, len(INITRD))
        assert ramdisk % PAGE_SIZE == 0
        assert ramdisk >= loaded.kernel_address + header.init_size
        assert ramdisk + size <= min(header.initrd_address_max + 1, 256 * MEBIBYTE)
        assert memory.read(ramdisk, size) == INITRD
        # e820: low RAM below the EBDA and everything from 1 MiB
        entries = zero_page[0x1E8]
        table = [struct.unpack_from("<QQI", zero_page, 0x2D0 + 20 * i) for i in range(entries)]
        assert table == [(0, layout.EBDA_START, E820_RAM),
                         (MEBIBYTE, 255 * MEBIBYTE, E820_RAM)]


def test_debian_bzimage_needs_room(debian_bzimage: bytes) -> None:
    with GuestMemory(32 * MEBIBYTE) as memory, pytest.raises(LoaderError, match="more memory"):
        load_bzimage(memory, debian_bzimage)
    with GuestMemory(256 * MEBIBYTE) as memory, pytest.raises(LoaderError, match="2047"):
        load_bzimage(memory, debian_bzimage, "x" * 3000)
    assert detect_format(debian_bzimage) is KernelFormat.BZIMAGE


# Hostile or broken images ------------------------------------------------------------------
def patched(image: bytes, offset: int, data: bytes) -> bytes:
    return image[:offset] + data + image[offset + len(data) :]


@pytest.mark.parametrize(("offset", "data", "message"), [
    (0x1FE, b"\0\0", "boot flag"),
    (0x202, b"HdrZ", "not a bzImage"),
    (0x206, b"\x0b\x02", "too old"),
    (0x236, b"\0\0", "XLF_KERNEL_64"),
    (0x211, b"\0", "LOADED_HIGH"),
    (0x1F1, b"\xff", "leaves no kernel"),
])
def test_broken_bzimage_headers_are_refused(guests: dict[str, Path], offset: int, data: bytes,
                                            message: str) -> None:
    image = patched(guests["bootinfo-bzimage"].read_bytes(), offset, data)
    with GuestMemory(16 * MEBIBYTE) as memory, pytest.raises(LoaderError, match=message):
        load_bzimage(memory, image)


def test_multiboot_addresses_outside_memory_are_refused(guests: dict[str, Path]) -> None:
    image = guests["exit-loop"].read_bytes()
    found = multiboot.find_header(image)
    assert found is not None and found.kludge is not None
    header_address, load_address, load_end, bss_end, entry = found.kludge
    fields = struct.pack("<5I", header_address, load_address, load_end, 0xFFFF_0000, entry)
    hostile = patched(image, found.offset + 12, fields)
    with GuestMemory(16 * MEBIBYTE) as memory, pytest.raises(LoaderError, match="outside"):
        load_multiboot(memory, hostile)
    past_end = struct.pack("<5I", header_address, load_address, load_address + (1 << 30),
                           bss_end, entry)
    with GuestMemory(16 * MEBIBYTE) as memory, pytest.raises(LoaderError, match="past"):
        load_multiboot(memory, patched(image, found.offset + 12, past_end))


def test_elf_segments_outside_memory_are_refused(guests: dict[str, Path]) -> None:
    with GuestMemory(MEBIBYTE) as memory, pytest.raises(LoaderError, match="outside"):
        load_pvh(memory, guests["bootinfo-elf"].read_bytes())


def test_unrecognised_images_and_bad_flat_placements_are_refused() -> None:
    with pytest.raises(LoaderError, match="unrecognised"):
        detect_format(bytes(8192))
    with GuestMemory(MEBIBYTE) as memory:
        with pytest.raises(LoaderError, match="does not fit"):
            load_kernel(memory, b"\x90" * 16, kernel_format=KernelFormat.FLAT,
                        flat=FlatBinary(address=MEBIBYTE - 8))
        with pytest.raises(LoaderError, match="command line"):
            load_kernel(memory, b"\x90", command_line="x", kernel_format=KernelFormat.FLAT)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_images_load_or_fail_with_a_vmm_error(guests: dict[str, Path],
                                                      data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["bootinfo-bzimage", "bootinfo-elf", "exit-loop"]))
    image = bytearray(guests[name].read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        offset = data.draw(st.integers(0, min(len(image), 0x1100) - 1))
        image[offset] = data.draw(st.integers(0, 255))
    with GuestMemory(4 * MEBIBYTE) as memory:
        try:
            load_kernel(memory, bytes(image), command_line="fuzz", initrd=b"rd")
        except VmmError:
            pass


# The bootinfo guests: what the guest reads is what the loader wrote -------------------------
def run_bootinfo(image: bytes, kernel_format: KernelFormat,
                 initrd: bytes | None) -> tuple[dict[str, str], list[tuple[int, int, int]],
                                                list[tuple[int, int, int]]]:
    output = bytearray()
    with Vm(64 * MEBIBYTE, serial_output=output.extend) as vm:
        entry = load_kernel(vm.memory, image, command_line=COMMAND_LINE, initrd=initrd,
                            kernel_format=kernel_format)
        outcome = vm.run(entry, timeout=30)
        expected_map = [(e.address, e.size, e.type) for e in memory_map(vm.memory)]
    assert (outcome.reason, outcome.status) == ("debug-exit", 0), output
    lines = output.decode().splitlines()
    assert lines[-1] == "end"
    values = dict(line.split("=", 1) for line in lines[:-1] if not line.startswith("memory="))
    echoed_map = [tuple(int(x, 0) for x in line.removeprefix("memory=").split(","))
                  for line in lines if line.startswith("memory=")]
    return values, echoed_map, expected_map  # type: ignore[return-value]


@requires_kvm
@pytest.mark.kvm
def test_bzimage_guest_reads_its_zero_page_as_linux_would(guests: dict[str, Path]) -> None:
    image = guests["bootinfo-bzimage"].read_bytes()
    with GuestMemory(64 * MEBIBYTE) as memory:
        loaded = load_bzimage(memory, image, COMMAND_LINE, INITRD)
    values, echoed_map, expected_map = run_bootinfo(image, KernelFormat.AUTO, INITRD)
    assert values["protocol"] == "linux"
    assert values["cmdline"] == COMMAND_LINE
    assert int(values["cmd_line_ptr"], 0) == layout.COMMAND_LINE_ADDRESS
    assert int(values["boot_flag"], 0) == 0xAA55
    assert int(values["header"], 0).to_bytes(4, "little") == b"HdrS"
    assert int(values["version"], 0) == 0x020F
    assert int(values["type_of_loader"], 0) == 0xFF
    assert int(values["code32_start"], 0) == loaded.kernel_address
    assert int(values["ramdisk_image"], 0) == loaded.initrd_address
    assert int(values["ramdisk_size"], 0) == len(INITRD)
    assert int(values["e820_entries"], 0) == len(expected_map)
    assert echoed_map == expected_map


@requires_kvm
@pytest.mark.kvm
def test_pvh_guest_reads_hvm_start_info(guests: dict[str, Path]) -> None:
    image = guests["bootinfo-elf"].read_bytes()
    with GuestMemory(64 * MEBIBYTE) as memory:
        loaded = load_pvh(memory, image, COMMAND_LINE, INITRD)
        assert memory.read_int(loaded.start_info_address, 4) == START_INFO_MAGIC
    assert loaded.entry.mode is CpuMode.PROTECTED
    values, echoed_map, expected_map = run_bootinfo(image, KernelFormat.PVH, INITRD)
    assert values["protocol"] == "pvh"
    assert int(values["version"], 0) == 1
    assert values["cmdline"] == COMMAND_LINE
    assert int(values["nr_modules"], 0) == 1
    assert int(values["module_paddr"], 0) == loaded.initrd_address
    assert int(values["module_size"], 0) == len(INITRD)
    assert echoed_map == expected_map


@requires_kvm
@pytest.mark.kvm
def test_multiboot_guest_reads_its_information_structure(guests: dict[str, Path]) -> None:
    image = guests["bootinfo-elf"].read_bytes()
    with GuestMemory(64 * MEBIBYTE) as memory:
        loaded = load_multiboot(memory, image, COMMAND_LINE, INITRD)
    assert loaded.entry.registers["rax"] == multiboot.BOOTLOADER_MAGIC
    values, echoed_map, expected_map = run_bootinfo(image, KernelFormat.MULTIBOOT, INITRD)
    assert values["protocol"] == "multiboot"
    assert values["cmdline"] == COMMAND_LINE
    flags = int(values["flags"], 0)
    assert flags & multiboot.INFO_MEMORY and flags & multiboot.INFO_MEMORY_MAP
    assert int(values["mem_lower"], 0) == 640
    assert int(values["mem_upper"], 0) == (64 * MEBIBYTE - MEBIBYTE) // 1024
    assert int(values["mods_count"], 0) == 1
    assert int(values["module_start"], 0) == loaded.initrd_address
    assert int(values["module_end"], 0) == loaded.initrd_address + len(INITRD)
    assert echoed_map == expected_map


def test_auto_detection_prefers_pvh_for_an_elf_with_both_headers(
        guests: dict[str, Path]) -> None:
    assert detect_format(guests["bootinfo-elf"].read_bytes()) is KernelFormat.PVH
    assert detect_format(guests["bootinfo-bzimage"].read_bytes()) is KernelFormat.BZIMAGE
    assert re.fullmatch(r"[0-9a-f]{24}", guests["hello"].parent.name)


@requires_kvm
@pytest.mark.kvm
def test_memory_above_the_hole_is_a_second_slot_and_in_the_e820_map(
        guests: dict[str, Path]) -> None:
    from keel.vmm.memory import FOUR_GIB, MMIO_HOLE_START

    output = bytearray()
    total = MMIO_HOLE_START + 64 * MEBIBYTE
    with Vm(total, serial_output=output.extend) as vm:
        entry = load_kernel(vm.memory, guests["bootinfo-bzimage"].read_bytes(),
                            command_line="high")
        assert vm.run(entry, timeout=30).status == 0
    echoed = [line for line in output.decode().splitlines() if line.startswith("memory=")]
    assert echoed == [f"memory=0x0,{layout.EBDA_START:#x},1",
                      f"memory={MEBIBYTE:#x},{MMIO_HOLE_START - MEBIBYTE:#x},1",
                      f"memory={FOUR_GIB:#x},{64 * MEBIBYTE:#x},1"]
