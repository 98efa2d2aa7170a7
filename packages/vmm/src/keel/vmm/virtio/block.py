"""virtio-blk (virtio 1.2 section 5.2): a sans-IO request core over a BlockBackend.

Why split parse / execute / complete: the request format (a 16-byte header the device reads,
data buffers, one status byte the device writes) is checked here without I/O; the backend does
the reads and writes (a file with pread/pwrite here; io_uring through keel.runtime later) and
the core writes status and returns the chain. Requests are bounded: data a whole number of
512-byte sectors, inside the disk's capacity, at most REQUEST_BYTES_LIMIT per request. A
request that breaks these rules gets VIRTIO_BLK_S_IOERR (the guest's filesystem sees an I/O
error); a chain with no room for a header or a status byte breaks the transport's contract
and puts the device in NEEDS_RESET.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from keel.native._virtio import ffi, lib
from keel.vmm.virtio.chain import DescriptorChain
from keel.vmm.virtio.constants import DEVICE_ID_BLOCK
from keel.vmm.virtio.device import DRAIN_CHAIN_LIMIT, VirtioDevice
from keel.vmm.virtio.errors import VirtioConfigError, VirtqueueError

logger = logging.getLogger("keel.vmm")

SECTOR_SIZE = 512  # virtio-blk addresses in 512-byte sectors, whatever the backing store
BLOCK_QUEUE_SIZE = 256
REQUEST_QUEUE = 0
# What the driver is told it may put in one request (VIRTIO_BLK_F_SEG_MAX, F_SIZE_MAX):
# Linux keeps requests within seg_max * size_max, and anything larger is refused with IOERR.
SEGMENT_SIZE_LIMIT = 1 << 16
SEGMENT_COUNT_LIMIT = BLOCK_QUEUE_SIZE - 2  # header and status take one descriptor each
REQUEST_BYTES_LIMIT = SEGMENT_SIZE_LIMIT * SEGMENT_COUNT_LIMIT
HEADER = struct.Struct("<IIQ")  # struct virtio_blk_outhdr: type, ioprio, sector
HEADER_SIZE: int = ffi.sizeof("struct virtio_blk_outhdr")
STATUS_SIZE = 1
ID_BYTES: int = lib.VIRTIO_BLK_ID_BYTES
CONFIG_SIZE: int = ffi.sizeof("struct virtio_blk_config")
CONFIG_CAPACITY = struct.Struct("<Q")
CONFIG_LIMITS = struct.Struct("<II")  # size_max, seg_max

TYPE_IN: int = lib.VIRTIO_BLK_T_IN
TYPE_OUT: int = lib.VIRTIO_BLK_T_OUT
TYPE_FLUSH: int = lib.VIRTIO_BLK_T_FLUSH
TYPE_GET_ID: int = lib.VIRTIO_BLK_T_GET_ID
STATUS_OK: int = lib.VIRTIO_BLK_S_OK
STATUS_IOERR: int = lib.VIRTIO_BLK_S_IOERR
STATUS_UNSUPPORTED: int = lib.VIRTIO_BLK_S_UNSUPP
F_READ_ONLY: int = 1 << lib.VIRTIO_BLK_F_RO
F_FLUSH: int = 1 << lib.VIRTIO_BLK_F_FLUSH
F_SEGMENT_COUNT: int = 1 << lib.VIRTIO_BLK_F_SEG_MAX
F_SEGMENT_SIZE: int = 1 << lib.VIRTIO_BLK_F_SIZE_MAX


class BlockBackend(Protocol):
    """Where the sectors live. Offsets and lengths are checked by the core before any call."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...

    def write_at(self, offset: int, data: bytes) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class BlockIo:
    """The one backend operation a checked request needs (`kind`: read, write or flush)."""

    kind: str
    offset: int = 0
    length: int = 0
    data: bytes = b""


READ, WRITE, FLUSH = "read", "write", "flush"


@dataclass(frozen=True)
class BlockRequest:
    """A checked request: what to do, where, and how much data it carries."""

    chain: DescriptorChain
    type: int
    sector: int
    data_length: int  # IN: bytes to read into the guest; OUT: bytes from the guest


class BlockDevice(VirtioDevice):
    """A disk of `backend.size // 512` sectors; read-only disks refuse writes with IOERR."""

    device_id = DEVICE_ID_BLOCK
    name = "virtio-blk"

    def __init__(self, backend: BlockBackend, *, read_only: bool = False,
                 serial: str = "keel") -> None:
        super().__init__([BLOCK_QUEUE_SIZE])
        encoded = serial.encode()
        if len(encoded) > ID_BYTES:
            raise VirtioConfigError(f"disk serial {serial!r} is longer than {ID_BYTES} bytes")
        self.backend = backend
        self.read_only = read_only
        self.serial = encoded
        self.capacity_sectors = backend.size // SECTOR_SIZE
        # Set by an event loop that performs the backend I/O itself (io_uring through
        # keel.runtime): process_queue() then leaves the queue to take_requests()/finish().
        self.defers_io = False
        if backend.size % SECTOR_SIZE:
            logger.warning("disk of %d bytes is not a whole number of %d-byte sectors; the last "
                           "%d bytes are not visible to the guest", backend.size, SECTOR_SIZE,
                           backend.size % SECTOR_SIZE)

    def specific_features(self) -> int:
        features = F_FLUSH | F_SEGMENT_COUNT | F_SEGMENT_SIZE
        return features | (F_READ_ONLY if self.read_only else 0)

    def config_space(self) -> bytes:
        config = bytearray(CONFIG_SIZE)
        CONFIG_CAPACITY.pack_into(config, ffi.offsetof("struct virtio_blk_config", "capacity"),
                                  self.capacity_sectors)
        CONFIG_LIMITS.pack_into(config, ffi.offsetof("struct virtio_blk_config", "size_max"),
                                SEGMENT_SIZE_LIMIT, SEGMENT_COUNT_LIMIT)
        return bytes(config)

    def process_queue(self, index: int) -> None:
        if index == REQUEST_QUEUE and not self.defers_io:
            self.drain(self.queues[REQUEST_QUEUE], self._handle)

    # -- the event loop's side: take a batch, do its I/O elsewhere, finish it ----------------

    def take_requests(self) -> list[BlockRequest]:
        """Pop and check what the driver made available (at most DRAIN_CHAIN_LIMIT), with
        kicks re-enabled once the ring is empty; [] when there is nothing or the device broke."""
        taken: list[BlockRequest] = []

        def take() -> None:
            queue = self.queues[REQUEST_QUEUE]
            queue.disable_notifications()
            while len(taken) < DRAIN_CHAIN_LIMIT:
                chain = queue.pop()
                if chain is None:
                    if queue.enable_notifications():
                        continue
                    break
                taken.append(self.parse(chain))

        with self.lock:
            if self.active and not self.broken:
                self._guarded(take)
            return taken if not self.broken else []

    def finish(self, results: list[tuple[BlockRequest, int, bytes]]) -> None:
        """Write each request's data and status, return the chains, interrupt if wanted."""
        with self.lock:
            if not self.active or self.broken:
                return  # reset meanwhile: the chains belong to an old ring

            def complete_all() -> None:
                queue = self.queues[REQUEST_QUEUE]
                for request, status, data in results:
                    queue.push(request.chain.head, self.complete(request, status, data))
                self.signal_used(queue)

            self._guarded(complete_all)

    # -- the three steps --------------------------------------------------------------------

    def parse(self, chain: DescriptorChain) -> BlockRequest:
        """Check the chain's shape (raises VirtqueueError if it cannot carry a request)."""
        memory = self.require_memory()
        if chain.readable_length < HEADER_SIZE:
            raise VirtqueueError(f"block request {chain.head} has {chain.readable_length} "
                                 f"readable bytes; a {HEADER_SIZE}-byte header is required")
        if chain.writable_length < STATUS_SIZE:
            raise VirtqueueError(f"block request {chain.head} has no writable byte for its "
                                 "status")
        request_type, _priority, sector = HEADER.unpack(chain.read(memory, HEADER_SIZE))
        if request_type == TYPE_OUT:
            data_length = chain.readable_length - HEADER_SIZE
        else:
            data_length = chain.writable_length - STATUS_SIZE
        return BlockRequest(chain, request_type, sector, data_length)

    def plan(self, request: BlockRequest) -> tuple[int, bytes] | BlockIo:
        """The answer for requests that need no I/O (status, data), else the I/O to do."""
        if request.type == TYPE_GET_ID:
            return STATUS_OK, self.serial.ljust(ID_BYTES, b"\0")[: request.data_length]
        if request.type == TYPE_FLUSH:
            return BlockIo(FLUSH)
        if request.type not in (TYPE_IN, TYPE_OUT):
            logger.debug("%s: unsupported request type %d", self.label, request.type)
            return STATUS_UNSUPPORTED, b""
        problem = self._range_problem(request)
        if problem:
            logger.debug("%s: request %d refused: %s", self.label, request.chain.head, problem)
            return STATUS_IOERR, b""
        offset = request.sector * SECTOR_SIZE
        if request.type == TYPE_IN:
            return BlockIo(READ, offset, request.data_length)
        data = request.chain.read(self.require_memory(), request.data_length,
                                  offset=HEADER_SIZE)
        return BlockIo(WRITE, offset, len(data), data)

    def execute(self, request: BlockRequest) -> tuple[int, bytes]:
        """Do the I/O with the backend's blocking calls: (status, bytes for the guest)."""
        step = self.plan(request)
        if not isinstance(step, BlockIo):
            return step
        return self._backend_call(request, lambda: self._run(step))

    def _run(self, step: BlockIo) -> bytes:
        if step.kind == READ:
            return self.backend.read_at(step.offset, step.length)
        if step.kind == WRITE:
            self.backend.write_at(step.offset, step.data)
        else:
            self.backend.flush()
        return b""

    def failed(self, request: BlockRequest, error: OSError) -> tuple[int, bytes]:
        """A backend error becomes IOERR for the guest and one warning for the operator."""
        logger.warning("%s: request %d (type %d, sector %d) failed: %s", self.label,
                       request.chain.head, request.type, request.sector, error)
        return STATUS_IOERR, b""

    def complete(self, request: BlockRequest, status: int, data: bytes) -> int:
        """Write data and status into the chain; returns the used length."""
        memory = self.require_memory()
        written = request.chain.write(memory, data) if data else 0
        request.chain.write(memory, bytes([status]), offset=request.chain.writable_length - 1)
        return written + STATUS_SIZE

    # -- helpers ----------------------------------------------------------------------------

    def _handle(self, chain: DescriptorChain) -> int:
        request = self.parse(chain)
        status, data = self.execute(request)
        return self.complete(request, status, data)

    def _range_problem(self, request: BlockRequest) -> str:
        if request.type == TYPE_OUT and self.read_only:
            return "write to a read-only disk"
        if request.data_length % SECTOR_SIZE:
            return f"{request.data_length} bytes is not a whole number of {SECTOR_SIZE}-byte " \
                   "sectors"
        if request.data_length > REQUEST_BYTES_LIMIT:
            return f"{request.data_length} bytes exceeds the request limit of " \
                   f"{REQUEST_BYTES_LIMIT}"
        sectors = request.data_length // SECTOR_SIZE
        if request.sector + sectors > self.capacity_sectors:
            return f"sectors [{request.sector}, {request.sector + sectors}) beyond the " \
                   f"capacity of {self.capacity_sectors}"
        return ""

    def _backend_call(self, request: BlockRequest,
                      call: Callable[[], bytes]) -> tuple[int, bytes]:
        try:
            return STATUS_OK, call()
        except OSError as error:
            return self.failed(request, error)
