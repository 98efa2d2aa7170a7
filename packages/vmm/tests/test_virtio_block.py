"""virtio-blk on a real file, driven through the MMIO transport like Linux's virtio_blk."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.native._virtio import lib
from keel.vmm.memory import GuestMemory
from keel.vmm.virtio.block import (
    HEADER,
    REQUEST_BYTES_LIMIT,
    SECTOR_SIZE,
    STATUS_IOERR,
    STATUS_OK,
    STATUS_UNSUPPORTED,
    TYPE_FLUSH,
    TYPE_GET_ID,
    TYPE_IN,
    TYPE_OUT,
    BlockDevice,
)
from keel.vmm.virtio.block_file import FileBlockBackend
from keel.vmm.virtio.constants import (
    F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC,
    F_VERSION_1,
    STATUS_NEEDS_RESET,
)
from keel.vmm.virtio.driver import MmioDriver, SplitQueueDriver, UsedBuffer
from keel.vmm.virtio.errors import VirtioConfigError
from keel.vmm.virtio.mmio import MmioTransport

MEMORY_SIZE = 4 << 20
QUEUE_BASE = 0x2000
BUFFERS = 0x100000
BUFFER_AREA = 0x200000
QUEUE_SIZE = 32
DISK_SECTORS = 64
F_RO = 1 << lib.VIRTIO_BLK_F_RO
F_FLUSH = 1 << lib.VIRTIO_BLK_F_FLUSH
SERIAL = "keel-disk-7"


@dataclass
class Disk:
    path: Path
    device: BlockDevice
    driver: MmioDriver
    queue: SplitQueueDriver

    def request(self, request_type: int, sector: int, data: bytes = b"", read_length: int = 0,
                *, indirect: bool = False) -> UsedBuffer:
        header = HEADER.pack(request_type, 0, sector)
        readable = [header, data] if data else [header]
        writable = [read_length, 1] if read_length else [1]
        self.queue.add(readable, writable, indirect=indirect)
        self.driver.notify(0)
        (used,) = self.queue.used()
        return used


def open_disk(path: Path, memory: GuestMemory, *, read_only: bool) -> tuple[Disk,
                                                                             FileBlockBackend]:
    backend = FileBlockBackend(path, read_only=read_only)
    device = BlockDevice(backend, read_only=read_only, serial=SERIAL)
    transport = MmioTransport(device, memory, lambda: None, name="disk0")
    driver = MmioDriver(transport)
    offered = driver.device_features()
    assert offered & F_FLUSH
    assert bool(offered & F_RO) is read_only
    assert driver.negotiate(offered)
    queue = SplitQueueDriver(memory, QUEUE_BASE, QUEUE_SIZE, BUFFERS, BUFFER_AREA)
    driver.setup_queue(0, queue)
    driver.driver_ok()
    return Disk(path, device, driver, queue), backend


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * (DISK_SECTORS * SECTOR_SIZE // 256))
    return path


@pytest.fixture
def disk(image: Path) -> Iterator[Disk]:
    with GuestMemory(MEMORY_SIZE) as memory:
        opened, backend = open_disk(image, memory, read_only=False)
        with backend:
            yield opened


@pytest.fixture
def read_only_disk(image: Path) -> Iterator[Disk]:
    with GuestMemory(MEMORY_SIZE) as memory:
        opened, backend = open_disk(image, memory, read_only=True)
        with backend:
            yield opened


def test_capacity_and_limits_in_config(disk: Disk) -> None:
    assert disk.driver.config(0, 8) == DISK_SECTORS
    assert disk.driver.config(8, 4) * disk.driver.config(12, 4) == REQUEST_BYTES_LIMIT


@pytest.mark.parametrize("indirect", [False, True])
def test_write_then_read_back(disk: Disk, indirect: bool) -> None:
    data = os.urandom(2 * SECTOR_SIZE)
    used = disk.request(TYPE_OUT, 3, data, indirect=indirect)
    assert (used.length, used.data) == (1, bytes([STATUS_OK]))
    assert disk.path.read_bytes()[3 * SECTOR_SIZE : 5 * SECTOR_SIZE] == data
    used = disk.request(TYPE_IN, 3, read_length=2 * SECTOR_SIZE, indirect=indirect)
    assert used.length == 2 * SECTOR_SIZE + 1
    assert used.data == data + bytes([STATUS_OK])


def test_flush_and_get_id(disk: Disk) -> None:
    assert disk.request(TYPE_FLUSH, 0).data == bytes([STATUS_OK])
    used = disk.request(TYPE_GET_ID, 0, read_length=lib.VIRTIO_BLK_ID_BYTES)
    assert used.data == SERIAL.encode().ljust(20, b"\0") + bytes([STATUS_OK])


def test_unsupported_type(disk: Disk) -> None:
    assert disk.request(lib.VIRTIO_BLK_T_DISCARD, 0, b"x" * 16).data == \
        bytes([STATUS_UNSUPPORTED])


@pytest.mark.parametrize("sector,length", [
    (DISK_SECTORS - 1, 2 * SECTOR_SIZE),   # runs past the end
    (DISK_SECTORS, SECTOR_SIZE),           # starts past the end
    ((1 << 64) - 1, SECTOR_SIZE),          # sector arithmetic must not wrap
    (0, SECTOR_SIZE + 1),                  # not whole sectors
])
def test_out_of_range_reads_fail_with_ioerr(disk: Disk, sector: int, length: int) -> None:
    used = disk.request(TYPE_IN, sector, read_length=length)
    assert used.length == 1  # only the status byte was written
    assert used.writable[-1] == bytes([STATUS_IOERR])


def test_read_only_disk_refuses_writes(read_only_disk: Disk) -> None:
    before = read_only_disk.path.read_bytes()
    used = read_only_disk.request(TYPE_OUT, 0, b"\xff" * SECTOR_SIZE)
    assert used.data == bytes([STATUS_IOERR])
    assert read_only_disk.path.read_bytes() == before
    used = read_only_disk.request(TYPE_IN, 1, read_length=SECTOR_SIZE)
    assert used.data == before[SECTOR_SIZE : 2 * SECTOR_SIZE] + bytes([STATUS_OK])


def test_request_without_a_header_needs_reset(disk: Disk,
                                              caplog: pytest.LogCaptureFixture) -> None:
    disk.queue.add([b"short"], [1])
    with caplog.at_level(logging.ERROR, logger="keel.vmm"):
        disk.driver.notify(0)
    assert disk.driver.status() & STATUS_NEEDS_RESET
    assert caplog.messages == ["disk0: block request 0 has 5 readable bytes; a 16-byte header "
                               "is required; device needs reset"]


def test_request_without_a_status_byte_needs_reset(disk: Disk) -> None:
    disk.queue.add([HEADER.pack(TYPE_IN, 0, 0)])
    disk.driver.notify(0)
    assert disk.driver.status() & STATUS_NEEDS_RESET


def test_construction_errors(tmp_path: Path) -> None:
    with pytest.raises(VirtioConfigError, match="cannot be opened read-only"):
        FileBlockBackend(tmp_path / "missing.img", read_only=True)
    path = tmp_path / "small.img"
    path.write_bytes(bytes(SECTOR_SIZE))
    with FileBlockBackend(path) as backend, pytest.raises(VirtioConfigError,
                                                          match="longer than 20 bytes"):
        BlockDevice(backend, serial="x" * 21)


def test_features_without_ring_extras_still_work(image: Path) -> None:
    with GuestMemory(MEMORY_SIZE) as memory, FileBlockBackend(image) as backend:
        transport = MmioTransport(BlockDevice(backend), memory, lambda: None)
        driver = MmioDriver(transport)
        assert driver.negotiate(F_VERSION_1)
        assert not transport.driver_features & (F_RING_EVENT_IDX | F_RING_INDIRECT_DESC)
        queue = SplitQueueDriver(memory, QUEUE_BASE, QUEUE_SIZE, BUFFERS, BUFFER_AREA)
        driver.setup_queue(0, queue)
        driver.driver_ok()
        disk = Disk(image, transport.device, driver, queue)  # type: ignore[arg-type]
        assert disk.request(TYPE_IN, 0, read_length=SECTOR_SIZE).writable[-1] == \
            bytes([STATUS_OK])
