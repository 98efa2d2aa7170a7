"""A 16550A UART: the guest's console, with output to any sink and input from the host.

Why this much of the chip: Linux's 8250 driver probes the scratch register, the divisor latch
and the modem-control loopback before it trusts a port, and it drives transmit by the
THR-empty interrupt. Everything else (baud rates, FIFOs thresholds) only needs to read back.
The receive buffer is bounded: host input beyond it is refused, never grows memory.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("keel.vmm")

COM1_PORT = 0x3F8
COM1_IRQ = 4
SERIAL_PORT_LENGTH = 8
INPUT_CAPACITY = 64 * 1024

# Register offsets
DATA = 0  # RBR on read, THR on write, DLL when DLAB is set
INTERRUPT_ENABLE = 1  # IER, DLM when DLAB is set
INTERRUPT_IDENTIFICATION = 2  # IIR on read, FCR on write
LINE_CONTROL = 3
MODEM_CONTROL = 4
LINE_STATUS = 5
MODEM_STATUS = 6
SCRATCH = 7
# Bits
LCR_DLAB = 0x80
IER_RECEIVED_DATA = 0x01
IER_TRANSMITTER_EMPTY = 0x02
IIR_NONE = 0x01
IIR_TRANSMITTER_EMPTY = 0x02
IIR_RECEIVED_DATA = 0x04
IIR_FIFO_ENABLED = 0xC0
LSR_DATA_READY = 0x01
LSR_TRANSMITTER_HOLDING_EMPTY = 0x20
LSR_TRANSMITTER_EMPTY = 0x40
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOPBACK = 0x10
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
# Out of reset: carrier, data set ready and clear to send asserted, like a connected terminal.
MSR_CONNECTED = MSR_DCD | MSR_DSR | MSR_CTS
DEFAULT_DIVISOR_LOW = 0x0C  # 9600 baud


class Serial16550:
    """COM-port registers; `output` receives each transmitted byte, `interrupt` pulses the IRQ."""

    def __init__(self, output: Callable[[bytes], None],
                 interrupt: Callable[[], None] | None = None) -> None:
        self._output = output
        self._interrupt = interrupt or (lambda: None)
        self._lock = threading.Lock()
        self._input: collections.deque[int] = collections.deque()
        self._interrupt_enable = 0
        self._line_control = 0
        self._modem_control = MCR_OUT2
        self._scratch = 0
        self._divisor_low = DEFAULT_DIVISOR_LOW
        self._divisor_high = 0
        self._transmitter_empty_pending = False

    # Host side ------------------------------------------------------------------------------
    def feed_input(self, data: bytes) -> int:
        """Queue bytes for the guest to read; returns how many fitted (the rest is refused)."""
        with self._lock:
            room = INPUT_CAPACITY - len(self._input)
            accepted = data[:room]
            self._input.extend(accepted)
            notify = bool(accepted) and self._interrupt_enable & IER_RECEIVED_DATA
        if len(accepted) < len(data):
            logger.warning("serial input buffer full: dropped %d bytes",
                           len(data) - len(accepted))
        if notify:
            self._interrupt()
        return len(accepted)

    # Guest side -----------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        with self._lock:
            return self._read_register(offset)

    def _read_register(self, offset: int) -> int:
        dlab = self._line_control & LCR_DLAB
        if offset == DATA:
            if dlab:
                return self._divisor_low
            return self._input.popleft() if self._input else 0
        if offset == INTERRUPT_ENABLE:
            return self._divisor_high if dlab else self._interrupt_enable
        if offset == INTERRUPT_IDENTIFICATION:
            return self._identify() | IIR_FIFO_ENABLED
        if offset == LINE_CONTROL:
            return self._line_control
        if offset == MODEM_CONTROL:
            return self._modem_control
        if offset == LINE_STATUS:
            ready = LSR_DATA_READY if self._input else 0
            return ready | LSR_TRANSMITTER_HOLDING_EMPTY | LSR_TRANSMITTER_EMPTY
        if offset == MODEM_STATUS:
            return self._modem_status()
        if offset == SCRATCH:
            return self._scratch
        return 0

    def _identify(self) -> int:
        if self._interrupt_enable & IER_RECEIVED_DATA and self._input:
            return IIR_RECEIVED_DATA
        if self._interrupt_enable & IER_TRANSMITTER_EMPTY and self._transmitter_empty_pending:
            self._transmitter_empty_pending = False  # reading IIR acknowledges it
            return IIR_TRANSMITTER_EMPTY
        return IIR_NONE

    def _modem_status(self) -> int:
        if not self._modem_control & MCR_LOOPBACK:
            return MSR_CONNECTED
        # In loopback the modem outputs feed the modem inputs (the 8250 driver tests this).
        control = self._modem_control
        return ((MSR_CTS if control & MCR_RTS else 0) | (MSR_DSR if control & MCR_DTR else 0)
                | (MSR_RI if control & MCR_OUT1 else 0) | (MSR_DCD if control & MCR_OUT2 else 0))

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        transmitted: bytes | None = None
        pulse = False
        with self._lock:
            dlab = self._line_control & LCR_DLAB
            if offset == DATA and dlab:
                self._divisor_low = value
            elif offset == DATA:
                if self._modem_control & MCR_LOOPBACK:
                    if len(self._input) < INPUT_CAPACITY:
                        self._input.append(value)
                else:
                    transmitted = bytes((value,))
                if self._interrupt_enable & IER_TRANSMITTER_EMPTY:
                    self._transmitter_empty_pending = True
                    pulse = True
            elif offset == INTERRUPT_ENABLE and dlab:
                self._divisor_high = value
            elif offset == INTERRUPT_ENABLE:
                newly_enabled = value & ~self._interrupt_enable
                self._interrupt_enable = value & (IER_RECEIVED_DATA | IER_TRANSMITTER_EMPTY)
                if newly_enabled & IER_TRANSMITTER_EMPTY:
                    self._transmitter_empty_pending = True
                    pulse = True
                if newly_enabled & IER_RECEIVED_DATA and self._input:
                    pulse = True
            elif offset == LINE_CONTROL:
                self._line_control = value
            elif offset == MODEM_CONTROL:
                self._modem_control = value
            elif offset == SCRATCH:
                self._scratch = value
        if transmitted is not None:
            self._output(transmitted)
        if pulse:
            self._interrupt()
