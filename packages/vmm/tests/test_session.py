"""The test API: GuestSession through the keel_vm / keel_test_guest pytest fixtures."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from keel.native.testing.skips import requires_kvm
from keel.vmm.boot.loader import KernelFormat
from keel.vmm.devices.console import open_console
from keel.vmm.errors import VmmError
from keel.vmm.machine import Vm
from keel.vmm.testing.session import GuestExitedError, GuestSession

pytestmark = [requires_kvm, pytest.mark.kvm]


def test_fixture_starts_waits_sends_and_sees_the_exit(
        keel_vm: Callable[..., GuestSession], keel_test_guest: Callable[[str], Path]) -> None:
    session = keel_vm(keel_test_guest("hello"), kernel_format=KernelFormat.FLAT).start()
    assert session.wait_for("at CPL ", timeout=20).startswith(b"hello from keel guest")
    session.wait_for("type a line:\n", timeout=20)
    session.send("fixture\n")
    assert session.wait_for("echo: fixture", timeout=20)
    outcome = session.wait_exit(timeout=20)
    assert (outcome.reason, outcome.status) == ("debug-exit", 42)


def test_waiting_for_text_that_never_comes_times_out_with_the_output(
        keel_vm: Callable[..., GuestSession], keel_test_guest: Callable[[str], Path]) -> None:
    session = keel_vm(keel_test_guest("hello"), kernel_format=KernelFormat.FLAT).start()
    with pytest.raises(TimeoutError, match="type a line"):
        session.wait_for("never printed", timeout=1)
    assert session.stop().reason == "stopped"


def test_waiting_past_the_guests_exit_says_it_exited(
        keel_vm: Callable[..., GuestSession], keel_test_guest: Callable[[str], Path]) -> None:
    session = keel_vm(keel_test_guest("bootinfo-bzimage"), command_line="short").start()
    with pytest.raises(GuestExitedError, match="debug-exit"):
        session.wait_for("not in the output", timeout=20)


def test_socket_console_carries_output_and_input(guests: dict[str, Path],
                                                 tmp_path: Path) -> None:
    path = str(tmp_path / "console.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(20)
        received = bytearray()
        with open_console(f"unix:{path}") as console:
            peer, _ = listener.accept()
            with peer, Vm(32 << 20, serial_output=console.write) as vm:
                peer.settimeout(20)
                vm.memory.write(0x100000, guests["hello"].read_bytes())
                from keel.vmm.boot.modes import CpuMode, EntryPoint

                vm.load(EntryPoint(CpuMode.LONG, 0x100000))
                console.start_input(vm.serial.feed_input)
                vm.start()
                while b"type a line:\n" not in received:
                    received += peer.recv(4096)
                peer.sendall(b"via socket\n")
                outcome = vm.wait(20)
                while b"echo: via socket\n" not in received:
                    received += peer.recv(4096)
    assert outcome.status == 42
    assert b"hello from keel guest at CPL 3" in received


def test_file_console_and_bad_specs(tmp_path: Path) -> None:
    target = tmp_path / "console.log"
    with open_console(f"file:{target}") as console:
        console.write(b"line\n")
    assert target.read_bytes() == b"line\n"
    for spec in ("serial", "tcp:notaport", "unix:"):
        with pytest.raises(VmmError, match="console"):
            open_console(spec)


def test_guest_session_closes_everything_on_a_loader_error(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(VmmError):
        GuestSession(bytes(4096))
    assert len(os.listdir("/proc/self/fd")) == before
    assert not [t for t in threading.enumerate() if t.name.startswith("keel-vcpu")]
