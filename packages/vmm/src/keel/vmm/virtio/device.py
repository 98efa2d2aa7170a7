"""What every virtio device has in common, whatever its transport.

Why a base class: the rules that keep a hostile driver from taking the VMM down live here
once. Every entry point from outside (a queue notification, a frame from the host, activation)
runs under the device's lock and through `_guarded`, which turns a VirtqueueError (or a guest
memory error) into the NEEDS_RESET state with ONE log line; after that the device ignores its
queues until the driver resets it. Nothing the guest does raises out to the VMM.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from keel.vmm.errors import GuestMemoryError
from keel.vmm.virtio.chain import DescriptorChain
from keel.vmm.virtio.constants import F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1
from keel.vmm.virtio.errors import VirtqueueError
from keel.vmm.virtio.memory import GuestMemoryAccess
from keel.vmm.virtio.virtqueue import Virtqueue

logger = logging.getLogger("keel.vmm")

# Features every keel device offers: modern virtio only, plus the two ring features the
# virtqueue implements.
COMMON_FEATURES = F_VERSION_1 | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC
# Chains handled per notification before the device yields its thread (see drain()).
DRAIN_CHAIN_LIMIT = 4096


def _ignore() -> None:
    return None


class VirtioDevice(ABC):
    """A device core: features, config space, queues; sans-IO except through its backend."""

    device_id: int
    name: str

    def __init__(self, queue_max_sizes: Sequence[int]) -> None:
        self.queue_max_sizes = tuple(queue_max_sizes)
        self.lock = threading.RLock()
        self.driver_features = 0
        self.queues: list[Virtqueue] = []
        self.memory: GuestMemoryAccess | None = None
        self.active = False
        self.broken = False
        self.config_generation = 0
        # Queues left with work when drain() hit its limit; the event loop notifies them again.
        self.backlog: set[int] = set()
        # Wired by the transport: raise the used-buffer or config-change interrupt.
        self.interrupt_used: Callable[[], None] = _ignore
        self.interrupt_config: Callable[[], None] = _ignore
        self.on_needs_reset: Callable[[], None] = _ignore
        self.label = self.name

    # -- what a concrete device says about itself -------------------------------------------

    @property
    def device_features(self) -> int:
        return COMMON_FEATURES | self.specific_features()

    @abstractmethod
    def specific_features(self) -> int:
        """The device-type feature bits this device offers (on top of COMMON_FEATURES)."""

    @abstractmethod
    def config_space(self) -> bytes:
        """The device-specific configuration structure, as the driver reads it."""

    def write_config(self, offset: int, data: bytes) -> None:
        """Driver writes to config space; read-only for every keel device so far."""
        logger.debug("%s: ignored config write of %d bytes at %#x", self.label, len(data), offset)

    @abstractmethod
    def process_queue(self, index: int) -> None:
        """Handle whatever the driver made available on queue `index` (under the lock)."""

    def on_activate(self) -> None:
        """Hook: the driver set DRIVER_OK and every queue checked out (under the lock)."""
        return None

    def on_reset(self) -> None:
        """Hook: the driver reset the device; drop any per-activation state."""
        return None

    # -- entry points (transport and I/O edges) ---------------------------------------------

    def activate(self, memory: GuestMemoryAccess, queues: list[Virtqueue],
                 driver_features: int) -> bool:
        """DRIVER_OK: check every ready queue, then start; False if the device broke."""
        with self.lock:
            self.memory = memory
            self.queues = queues
            self.driver_features = driver_features

            def start() -> None:
                for queue in queues:
                    if not queue.ready:
                        raise VirtqueueError(f"queue {queue.index} was not made ready before "
                                             "DRIVER_OK")
                    queue.activate(driver_features)
                self.active = True
                self.on_activate()

            self._guarded(start)
            return self.active and not self.broken

    def notify(self, queue_index: int) -> None:
        """The driver kicked queue `queue_index` (QueueNotify write or ioeventfd)."""
        with self.lock:
            if not self.active or self.broken:
                return
            if not 0 <= queue_index < len(self.queues):
                logger.debug("%s: notify for queue %d of %d ignored", self.label, queue_index,
                             len(self.queues))
                return
            self.backlog.discard(queue_index)
            self._guarded(lambda: self.process_queue(queue_index))

    def reset(self) -> None:
        with self.lock:
            self.active = False
            self.broken = False
            self.driver_features = 0
            self.backlog.clear()
            for queue in self.queues:
                queue.reset()
            self.on_reset()

    def config_changed(self) -> None:
        """The device changed its config space: new generation, config interrupt."""
        with self.lock:
            self.config_generation += 1
            self.interrupt_config()

    # -- helpers for concrete devices -------------------------------------------------------

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except (VirtqueueError, GuestMemoryError) as error:
            self.broken = True
            logger.error("%s: %s; device needs reset", self.label, error)
            self.on_needs_reset()

    def guarded(self, action: Callable[[], None]) -> None:
        """Run `action` under the lock if the device is live; faults become NEEDS_RESET."""
        with self.lock:
            if self.active and not self.broken:
                self._guarded(action)

    def drain(self, queue: Virtqueue, handle: Callable[[DescriptorChain], int]) -> bool:
        """Handle chains until the ring is empty with kicks re-enabled; interrupt if wanted.

        `handle` returns how many bytes it wrote into the chain. At most DRAIN_CHAIN_LIMIT
        chains are handled per call (a guest refilling as fast as we drain cannot hold the
        device thread forever); True means the limit was hit and the caller should call again.
        """
        handled = 0
        more = False
        queue.disable_notifications()  # no kicks while we drain (drivers without EVENT_IDX)
        while True:
            while handled < DRAIN_CHAIN_LIMIT and (chain := queue.pop()) is not None:
                queue.push(chain.head, handle(chain))
                handled += 1
            if handled >= DRAIN_CHAIN_LIMIT:
                more = queue.pending() != 0
                if more:
                    self.backlog.add(queue.index)
                break
            if not queue.enable_notifications():
                break
        self.signal_used(queue)
        return more

    def signal_used(self, queue: Virtqueue) -> None:
        """Raise the used-buffer interrupt if the driver wants one for what was pushed."""
        if queue.needs_interrupt():
            self.interrupt_used()

    def require_memory(self) -> GuestMemoryAccess:
        if self.memory is None:
            raise VirtqueueError(f"{self.label} used before activation")
        return self.memory
