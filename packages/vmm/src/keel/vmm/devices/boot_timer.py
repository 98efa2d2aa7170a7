"""The boot-timer register (Firecracker's protocol): the guest writes 123 once it has booted.

Why: boot time is measured from VM start to that write, by the VMM, with no guest clock.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("keel.vmm")

BOOT_TIMER_LENGTH = 8
BOOT_COMPLETE_MAGIC = 123


class BootTimer:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.boot_seconds: float | None = None

    def restart(self) -> None:
        self.started = time.monotonic()
        self.boot_seconds = None

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and value & 0xFF == BOOT_COMPLETE_MAGIC and self.boot_seconds is None:
            self.boot_seconds = time.monotonic() - self.started
            logger.info("guest boot time: %.1f ms", self.boot_seconds * 1000)
