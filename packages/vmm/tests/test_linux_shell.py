"""keel's guest kernel with a busybox user space, booted to a shell that `keel vmm run` puts on
its standard input and output, as a person at a terminal would use it.

This needs guest supervisor code to run natively (VT-x/AMD-V): where KVM emulates it (PVM),
the guest's first system call faults and user space cannot run at all (ENVIRONMENT.md), so
the test is skipped there with the probe's figure as the reason.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

from keel.native.guest_speed import measure_supervisor_speed
from keel.native.testing.skips import requires_kvm
from keel.vmm.guest_kernel import build_initramfs, build_kernel

pytestmark = [requires_kvm, pytest.mark.kvm, pytest.mark.timeout(2400)]

SHELL_INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "keel shell ready"
exec /bin/sh
"""
SESSION = "echo $((6 * 7))-from-the-guest-shell\nuname -r\nreboot -f\n"
BOOT_TIMEOUT_SECONDS = 300


@functools.cache
def supervisor_code_is_native() -> tuple[bool, str]:
    speed = measure_supervisor_speed()
    return speed.native, f"{speed.iterations_per_second:,.0f} loop iterations/s at CPL 0"


def test_busybox_shell_on_the_terminal(tmp_path: Path) -> None:
    native, figure = supervisor_code_is_native()
    if not native:
        pytest.skip(f"guest supervisor code is emulated on this host ({figure}, `keel vmm "
                    "doctor`): Linux user space cannot make system calls here")
    kernel = build_kernel().vmlinux
    init = tmp_path / "init"
    init.write_text(SHELL_INIT)
    init.chmod(0o755)
    initrd = build_initramfs(init, output=tmp_path / "initrd.gz")
    process = subprocess.Popen(
        [sys.executable, "-m", "keel.native", "vmm", "run", "--kernel", str(kernel),
         "--initrd", str(initrd), "--append", "console=ttyS0 quiet", "--mem", "256M",
         "--cpu-template", "host", "--timeout", str(BOOT_TIMEOUT_SECONDS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        # Type only once the shell is there, as a person would (the UART has a small FIFO).
        before = []
        for line in process.stdout:
            before.append(line)
            if "keel shell ready" in line:
                break
        assert any("keel shell ready" in line for line in before), "".join(before)
        output, errors = process.communicate(SESSION, timeout=BOOT_TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, errors
    assert "42-from-the-guest-shell" in output
    assert "6.1." in output
