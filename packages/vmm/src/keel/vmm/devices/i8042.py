"""The i8042 keyboard controller, as far as a VMM needs it: the reset line.

Why: Linux reboots (and many tiny kernels reset) by writing 0xFE to the command port; the VMM
treats that as the guest asking to stop, and ends the VM cleanly.
"""

from __future__ import annotations

from collections.abc import Callable

I8042_DATA_PORT = 0x60
I8042_COMMAND_PORT = 0x64
I8042_PORT_BASE = I8042_DATA_PORT
I8042_PORT_LENGTH = I8042_COMMAND_PORT - I8042_DATA_PORT + 1
COMMAND_OFFSET = I8042_COMMAND_PORT - I8042_DATA_PORT
COMMAND_PULSE_RESET = 0xFE
STATUS_EMPTY = 0x00  # no output byte waiting, input buffer empty: "ready for a command"


class I8042:
    def __init__(self, on_reset: Callable[[], None]) -> None:
        self._on_reset = on_reset

    def read(self, offset: int, size: int) -> int:
        return STATUS_EMPTY

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == COMMAND_OFFSET and value & 0xFF == COMMAND_PULSE_RESET:
            self._on_reset()
