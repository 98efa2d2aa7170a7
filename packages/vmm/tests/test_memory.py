"""Guest memory: layout around the MMIO hole, checked access, hostile addresses refused."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.vmm.errors import GuestMemoryError
from keel.vmm.memory import FOUR_GIB, MMIO_HOLE_START, GuestMemory, layout_for

MEBIBYTE = 1 << 20


def test_small_memory_is_one_region_from_zero() -> None:
    assert layout_for(64 * MEBIBYTE) == [(0, 64 * MEBIBYTE)]


def test_large_memory_skips_the_mmio_hole() -> None:
    total = MMIO_HOLE_START + 512 * MEBIBYTE
    assert layout_for(total) == [(0, MMIO_HOLE_START), (FOUR_GIB, 512 * MEBIBYTE)]


@pytest.mark.parametrize("size", [0, -4096, 4095])
def test_bad_sizes_are_refused(size: int) -> None:
    with pytest.raises(GuestMemoryError, match=str(size)):
        layout_for(size)


def test_read_write_and_translation_share_the_same_bytes() -> None:
    with GuestMemory(MEBIBYTE) as memory:
        memory.write(0x1000, b"keel")
        assert memory.read(0x1000, 4) == b"keel"
        view = memory.view(0x1000, 4)
        view[0:1] = b"K"
        assert memory.read(0x1000, 4) == b"Keel"
        view.release()
        memory.write_int(0x2000, 8, 0x1122334455667788)
        assert memory.read(0x2000, 2) == b"\x88\x77"
        assert memory.read_int(0x2000, 8) == 0x1122334455667788


def test_access_crossing_the_end_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with GuestMemory(MEBIBYTE) as memory, caplog.at_level(logging.ERROR, "keel.vmm"):
        with pytest.raises(GuestMemoryError, match="0xffffe"):
            memory.read(MEBIBYTE - 2, 4)
        assert "outside guest memory" in caplog.text


def test_access_in_the_mmio_hole_is_refused() -> None:
    with GuestMemory(MMIO_HOLE_START + 4096) as memory:
        assert memory.read(FOUR_GIB, 4) == bytes(4)
        with pytest.raises(GuestMemoryError):
            memory.read(MMIO_HOLE_START, 1)


@given(address=st.integers(-(1 << 70), 1 << 70), length=st.integers(-(1 << 20), 1 << 24))
def test_any_address_is_either_inside_or_refused(address: int, length: int) -> None:
    with GuestMemory(64 * 1024) as memory:
        inside = address >= 0 and length >= 0 and address + length <= 64 * 1024
        if inside:
            assert len(memory.read(address, length)) == length
        else:
            with pytest.raises(GuestMemoryError):
                memory.read(address, length)


def test_c_strings_are_bounded_by_the_limit_and_the_region() -> None:
    with GuestMemory(8192) as memory:
        memory.write(8192 - 3, b"abc")
        assert memory.read_c_string(8192 - 3, 100) == b"abc"
        memory.write(0, b"hello\0world")
        assert memory.read_c_string(0, 100) == b"hello"
        assert memory.read_c_string(0, 3) == b"hel"


def test_host_address_points_at_the_same_bytes_and_is_checked() -> None:
    import ctypes

    with GuestMemory(MEBIBYTE) as memory:
        memory.write(0x3000, b"translated")
        assert ctypes.string_at(memory.host_address(0x3000, 10), 10) == b"translated"
        with pytest.raises(GuestMemoryError):
            memory.host_address(MEBIBYTE - 4, 8)
