"""The Bus: dispatch by range, overlaps refused, unclaimed accesses answered like open bus."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.vmm.devices.bus import MMIO_ACCESS_SIZES, PORT_SPACE_END, AddressSpace, Bus
from keel.vmm.errors import BusError


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        return 0x1000 + offset

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def test_accesses_reach_the_device_at_their_offset() -> None:
    bus = Bus()
    device = Recorder()
    bus.ports.register(0x3F8, 8, device, "serial")
    bus.ports.write(0x3FB, 1, 0x80)
    assert device.writes == [(3, 1, 0x80)]
    assert bus.ports.read(0x3FD, 2) == 0x1005


def test_overlapping_registration_is_refused_naming_both() -> None:
    bus = Bus()
    bus.mmio.register(0xD000_0000, 0x1000, Recorder(), "first")
    with pytest.raises(BusError, match=r"'second'.*'first'"):
        bus.mmio.register(0xD000_0800, 0x1000, Recorder(), "second")
    with pytest.raises(BusError, match="overlaps"):
        bus.mmio.register(0xCFFF_F800, 0x1000, Recorder(), "third")
    bus.mmio.register(0xD000_1000, 0x1000, Recorder(), "adjacent")
    assert [m.name for m in bus.mmio.mappings()] == ["first", "adjacent"]


def test_ranges_outside_the_space_are_refused() -> None:
    with pytest.raises(BusError, match="not inside"):
        Bus().ports.register(PORT_SPACE_END - 1, 2, Recorder(), "straddles")


def test_unclaimed_reads_return_all_ones_and_writes_vanish() -> None:
    bus = Bus()
    assert bus.ports.read(0x80, 1) == 0xFF
    assert bus.mmio.read(0xFEE0_0000, 4) == 0xFFFF_FFFF
    bus.mmio.write(0xFEE0_0000, 8, 1)
    assert bus.mmio.unclaimed_accesses == 2


def test_an_access_straddling_a_device_end_is_unclaimed() -> None:
    bus = Bus()
    device = Recorder()
    bus.ports.register(0x60, 1, device, "one port")
    assert bus.ports.read(0x60, 2) == 0xFFFF
    assert device.writes == []


def test_impossible_access_sizes_are_refused() -> None:
    with pytest.raises(BusError, match="3 bytes"):
        Bus().mmio.read(0, 3)


@given(st.lists(st.tuples(st.integers(0, 0x1000), st.integers(1, 0x100)), max_size=30),
       st.integers(0, 0x1100), st.sampled_from(MMIO_ACCESS_SIZES))
def test_registered_ranges_never_overlap_and_lookup_finds_the_owner(
        ranges: list[tuple[int, int]], probe: int, size: int) -> None:
    space = AddressSpace("MMIO", 1 << 64, MMIO_ACCESS_SIZES)
    accepted: list[tuple[int, int]] = []
    for index, (base, length) in enumerate(ranges):
        try:
            space.register(base, length, Recorder(), f"device {index}")
            accepted.append((base, base + length))
        except BusError:
            assert any(base < end and start < base + length for start, end in accepted)
    for (_a_start, a_end), (b_start, _b_end) in zip(sorted(accepted), sorted(accepted)[1:],
                                                  strict=False):
        assert a_end <= b_start
    owner = space.find(probe, size)
    expected = [r for r in accepted if r[0] <= probe and probe + size <= r[1]]
    if owner is None:
        assert expected == []
    else:
        assert [(owner.base, owner.end)] == expected
