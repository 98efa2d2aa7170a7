"""`keel vmm` as a person runs it (a real subprocess: stdin, stdout, exit status)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from keel.native.netns import NetworkNamespace
from keel.native.testing.skips import requires_kvm, requires_tap

TIMEOUT = 60


def keel(*arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel.native", "vmm", *arguments],
                          input=stdin, capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)


@requires_kvm
@pytest.mark.kvm
def test_run_a_flat_guest_with_console_input_and_its_exit_status(
        guests: dict[str, Path]) -> None:
    result = keel("run", "--kernel", str(guests["hello"]), "--format", "flat", "--mem", "32M",
                  stdin="from stdin\n")
    assert result.returncode == 42, result.stderr
    assert result.stdout.splitlines() == ["hello from keel guest at CPL 3", "type a line:",
                                          "echo: from stdin"]
    assert "boot time" in result.stderr


@requires_kvm
@pytest.mark.kvm
def test_run_a_bzimage_with_append_and_initrd_to_a_file_console(
        guests: dict[str, Path], tmp_path: Path) -> None:
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"x" * 5000)
    log = tmp_path / "serial.log"
    result = keel("run", "--kernel", str(guests["bootinfo-bzimage"]), "--initrd", str(initrd),
                  "--append", "from the cli", "--mem", "64M", "--cpus", "2",
                  "--serial", f"file:{log}")
    assert result.returncode == 0, result.stderr
    text = log.read_text()
    assert "cmdline=from the cli" in text and "ramdisk_size=0x1388" in text


@requires_kvm
@pytest.mark.kvm
def test_run_reports_a_crash_in_one_line_and_fails(tmp_path: Path) -> None:
    kernel = tmp_path / "ud2.bin"
    kernel.write_bytes(b"\x0f\x0b")
    result = keel("run", "--kernel", str(kernel), "--format", "flat", "--mem", "16M")
    assert result.returncode == 1
    assert "guest crashed" in result.stderr and "triple fault" in result.stderr


@requires_kvm
@pytest.mark.kvm
def test_timeout_stops_a_guest_that_never_ends(tmp_path: Path) -> None:
    kernel = tmp_path / "spin.bin"
    kernel.write_bytes(b"\xeb\xfe")
    result = keel("run", "--kernel", str(kernel), "--format", "flat", "--mem", "16M",
                  "--timeout", "0.5")
    assert result.returncode == 124 and "stopped the VM" in result.stderr


def test_bad_arguments_fail_with_one_clear_line(tmp_path: Path) -> None:
    kernel = tmp_path / "garbage"
    kernel.write_bytes(bytes(4096))
    result = keel("run", "--kernel", str(kernel), "--mem", "lots")
    assert result.returncode == 1
    assert "memory size 'lots'" in result.stderr


@requires_kvm
@pytest.mark.kvm
def test_doctor_says_what_the_host_runs() -> None:
    result = keel("doctor")
    assert "kvm" in result.stdout and "supervisor-code" in result.stdout
    assert "test-guest" in result.stdout
    assert result.returncode == 0, result.stdout


def test_build_test_guests_lists_each_guest() -> None:
    result = keel("guest", "build-test-guests")
    assert result.returncode == 0, result.stderr
    for name in ("hello", "modes", "bootinfo-bzimage", "bootinfo-elf", "exit-loop"):
        assert name in result.stdout


@requires_kvm
@requires_tap
@pytest.mark.kvm
@pytest.mark.tap
def test_run_adds_virtio_devices_and_declares_them_on_the_command_line(
        guests: dict[str, Path], tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    log = tmp_path / "serial.log"
    with NetworkNamespace() as namespace:
        result = subprocess.run(
            ["ip", "netns", "exec", namespace.name, sys.executable, "-m", "keel.native", "vmm",
             "run", "--kernel", str(guests["bootinfo-bzimage"]), "--append", "console=ttyS0",
             "--mem", "64M", "--serial", f"file:{log}",
             "--net", "tap=keelcli0,mac=02:00:00:00:00:09",
             "--disk", str(disk), "--ro-disk", str(disk), "--rng"],
            capture_output=True, text=True, timeout=TIMEOUT, check=False)
        assert result.returncode == 0, result.stderr
    text = log.read_text()
    expected = " ".join(f"virtio_mmio.device=4K@{0xd0001000 + index * 0x1000:#x}:{5 + index}"
                        for index in range(4))
    assert f"cmdline=console=ttyS0 {expected}" in text


@pytest.mark.parametrize(("spec", "message"), [
    ("keeltap0", "is not one of tap=..., mac=..."),
    ("tap=", "tap=NAME is required"),
    ("tap=a-name-far-too-long-for-linux", "is not a valid interface name"),
    ("tap=t0,mac=01:00:00:00:00:01", "multicast"),
    ("tap=t0,tap=t1", "given twice"),
])
def test_bad_net_options_fail_with_one_clear_line(tmp_path: Path, spec: str,
                                                  message: str) -> None:
    kernel = tmp_path / "spin.bin"
    kernel.write_bytes(b"\xeb\xfe")
    result = keel("run", "--kernel", str(kernel), "--format", "flat", "--net", spec)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
