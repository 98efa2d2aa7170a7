"""isa-debug-exit (port 0xf4): the guest ends the VM with a status of its choosing.

Why: with the in-kernel irqchip `hlt` never leaves KVM, so test guests end by writing here.
The value written becomes the VM's exit status (QEMU reports (value << 1) | 1; keel reports
the value itself, which is what a test wants to compare).
"""

from __future__ import annotations

from collections.abc import Callable

DEBUG_EXIT_PORT = 0xF4
DEBUG_EXIT_LENGTH = 4


class DebugExit:
    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self._on_exit(value)
