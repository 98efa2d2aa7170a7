"""virtio-rng (entropy device, virtio 1.2 section 5.4): fills the driver's buffers from
os.urandom.

Why bounded: the driver chooses the buffer sizes; one request gets at most
RNG_REQUEST_LIMIT bytes (the driver sees the used length and asks again), so a guest cannot
make the VMM allocate or read without bound.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from keel.vmm.virtio.chain import DescriptorChain
from keel.vmm.virtio.constants import DEVICE_ID_RNG
from keel.vmm.virtio.device import VirtioDevice

RNG_QUEUE_SIZE = 64
RNG_REQUEST_LIMIT = 1 << 16
REQUEST_QUEUE = 0


class RngDevice(VirtioDevice):
    """One request queue; the config space is empty."""

    device_id = DEVICE_ID_RNG
    name = "virtio-rng"

    def __init__(self, source: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__([RNG_QUEUE_SIZE])
        self._source = source

    def specific_features(self) -> int:
        return 0

    def config_space(self) -> bytes:
        return b""

    def process_queue(self, index: int) -> None:
        if index != REQUEST_QUEUE:
            return
        memory = self.require_memory()

        def fill(chain: DescriptorChain) -> int:
            wanted = min(chain.writable_length, RNG_REQUEST_LIMIT)
            return chain.write(memory, self._source(wanted)) if wanted else 0

        self.drain(self.queues[REQUEST_QUEUE], fill)
