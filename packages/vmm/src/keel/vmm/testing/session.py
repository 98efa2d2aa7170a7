"""GuestSession: start a guest, wait for serial text, send input, stop (the test API).

Why: a test of a guest is a conversation over its console: "boot, wait until it prints X
(but not forever), type Y, expect Z, make sure it exits with status N". Every wait has a
timeout and reports what the guest did print, so a failing test says why.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Self

from keel.vmm.boot.loader import FlatBinary, KernelFormat, load_kernel
from keel.vmm.cpuid import DEFAULT_TEMPLATE
from keel.vmm.errors import VmmError
from keel.vmm.machine import DEFAULT_MEMORY_SIZE, Vm, VmExit

OUTPUT_LIMIT = 16 * 1024 * 1024  # a chatty guest cannot grow the buffer without bound
DEFAULT_TIMEOUT = 30.0


class GuestExitedError(VmmError):
    """The guest ended before printing what the test waited for."""


class GuestSession:
    """One VM running one kernel, with its serial output captured (a context manager)."""

    def __init__(self, kernel: Path | str | bytes, *, command_line: str = "",
                 initrd: bytes | None = None, kernel_format: KernelFormat = KernelFormat.AUTO,
                 flat: FlatBinary | None = None, memory_size: int = DEFAULT_MEMORY_SIZE,
                 vcpu_count: int = 1, cpu_template: str = DEFAULT_TEMPLATE) -> None:
        image = kernel if isinstance(kernel, bytes) else Path(kernel).read_bytes()
        self._output = bytearray()
        self._cursor = 0
        self._changed = threading.Condition()
        self.vm = Vm(memory_size, vcpu_count, cpu_template, serial_output=self._capture)
        try:
            self.entry = load_kernel(self.vm.memory, image, command_line=command_line,
                                     initrd=initrd, kernel_format=kernel_format, flat=flat)
            self.vm.load(self.entry)
        except BaseException:
            self.vm.close()
            raise
        self._watcher: threading.Thread | None = None

    def _capture(self, data: bytes) -> None:
        with self._changed:
            if len(self._output) + len(data) <= OUTPUT_LIMIT:
                self._output += data
            self._changed.notify_all()

    def _watch_exit(self) -> None:
        self.vm.wait()
        with self._changed:
            self._changed.notify_all()

    def start(self) -> Self:
        self.vm.start()
        self._watcher = threading.Thread(target=self._watch_exit, name="keel-session-watch")
        self._watcher.start()
        return self

    @property
    def output(self) -> bytes:
        with self._changed:
            return bytes(self._output)

    def wait_for(self, text: str | bytes, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Wait until `text` appears after what earlier waits consumed; returns the output up
        to its end. TimeoutError or GuestExitedError (with the output so far) otherwise."""
        wanted = text.encode() if isinstance(text, str) else text
        with self._changed:
            def found() -> int:
                return self._output.find(wanted, self._cursor)

            if not self._changed.wait_for(lambda: found() >= 0 or self.vm.exit is not None,
                                          timeout):
                raise TimeoutError(f"guest did not print {wanted!r} within {timeout} s; it "
                                   f"printed: {bytes(self._output[self._cursor:])!r}")
            position = found()
            if position < 0:
                raise GuestExitedError(f"guest ended ({self.vm.exit}) without printing "
                                       f"{wanted!r}; it printed: "
                                       f"{bytes(self._output[self._cursor:])!r}")
            end = position + len(wanted)
            consumed = bytes(self._output[self._cursor : end])
            self._cursor = end
            return consumed

    def send(self, data: str | bytes) -> None:
        """Type `data` on the guest's serial console."""
        self.vm.serial.feed_input(data.encode() if isinstance(data, str) else data)

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT) -> VmExit:
        return self.vm.wait(timeout)

    def stop(self) -> VmExit:
        self.vm.stop()
        return self.vm.wait()

    def close(self) -> None:
        self.vm.close()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
