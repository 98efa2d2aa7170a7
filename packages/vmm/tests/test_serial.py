"""The 16550 UART as the guest's driver sees it (sans-IO: registers in, bytes out)."""

from __future__ import annotations

from keel.vmm.devices import serial as uart
from keel.vmm.devices.serial import INPUT_CAPACITY, Serial16550


class Harness:
    def __init__(self) -> None:
        self.output = bytearray()
        self.interrupts = 0
        self.device = Serial16550(self.output.extend, self.pulse)

    def pulse(self) -> None:
        self.interrupts += 1


def test_transmitted_bytes_reach_the_output() -> None:
    harness = Harness()
    for byte in b"hi\n":
        harness.device.write(uart.DATA, 1, byte)
    assert bytes(harness.output) == b"hi\n"
    status = harness.device.read(uart.LINE_STATUS, 1)
    assert status & uart.LSR_TRANSMITTER_HOLDING_EMPTY and status & uart.LSR_TRANSMITTER_EMPTY


def test_input_is_read_in_order_and_flags_data_ready() -> None:
    harness = Harness()
    assert not harness.device.read(uart.LINE_STATUS, 1) & uart.LSR_DATA_READY
    assert harness.device.feed_input(b"ok") == 2
    assert harness.device.read(uart.LINE_STATUS, 1) & uart.LSR_DATA_READY
    assert harness.device.read(uart.DATA, 1) == ord("o")
    assert harness.device.read(uart.DATA, 1) == ord("k")
    assert not harness.device.read(uart.LINE_STATUS, 1) & uart.LSR_DATA_READY


def test_input_beyond_capacity_is_refused_not_buffered() -> None:
    harness = Harness()
    assert harness.device.feed_input(bytes(INPUT_CAPACITY + 10)) == INPUT_CAPACITY
    assert harness.device.feed_input(b"x") == 0


def test_received_data_interrupt_when_enabled() -> None:
    harness = Harness()
    harness.device.feed_input(b"a")
    assert harness.interrupts == 0
    harness.device.write(uart.INTERRUPT_ENABLE, 1, uart.IER_RECEIVED_DATA)
    assert harness.interrupts == 1
    assert harness.device.read(uart.INTERRUPT_IDENTIFICATION, 1) & 0x0F == uart.IIR_RECEIVED_DATA
    harness.device.feed_input(b"b")
    assert harness.interrupts == 2


def test_transmitter_empty_interrupt_is_acknowledged_by_reading_iir() -> None:
    harness = Harness()
    harness.device.write(uart.INTERRUPT_ENABLE, 1, uart.IER_TRANSMITTER_EMPTY)
    assert harness.interrupts == 1
    iir = harness.device.read(uart.INTERRUPT_IDENTIFICATION, 1)
    assert iir & 0x0F == uart.IIR_TRANSMITTER_EMPTY and iir & uart.IIR_FIFO_ENABLED
    assert harness.device.read(uart.INTERRUPT_IDENTIFICATION, 1) & 0x0F == uart.IIR_NONE


def test_divisor_latch_and_scratch_read_back() -> None:
    device = Harness().device
    device.write(uart.LINE_CONTROL, 1, uart.LCR_DLAB)
    device.write(uart.DATA, 1, 0x01)
    device.write(uart.INTERRUPT_ENABLE, 1, 0x00)
    assert device.read(uart.DATA, 1) == 0x01
    device.write(uart.LINE_CONTROL, 1, 0x03)
    assert device.read(uart.INTERRUPT_ENABLE, 1) == 0
    device.write(uart.SCRATCH, 1, 0x5A)
    assert device.read(uart.SCRATCH, 1) == 0x5A


def test_loopback_mirrors_modem_lines_and_data_like_the_8250_probe_expects() -> None:
    harness = Harness()
    device = harness.device
    device.write(uart.MODEM_CONTROL, 1, uart.MCR_LOOPBACK | uart.MCR_OUT2 | uart.MCR_RTS)
    assert device.read(uart.MODEM_STATUS, 1) & 0xF0 == uart.MSR_DCD | uart.MSR_CTS
    device.write(uart.DATA, 1, 0x42)
    assert harness.output == b""
    assert device.read(uart.DATA, 1) == 0x42
    device.write(uart.MODEM_CONTROL, 1, uart.MCR_OUT2)
    assert device.read(uart.MODEM_STATUS, 1) == uart.MSR_CONNECTED
