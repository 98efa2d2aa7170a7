"""`keel vmm doctor`: what this host can run, measured rather than guessed.

Why a timed guest: whether guest supervisor code runs natively (VT-x/AMD-V) or emulated (PVM)
decides whether Linux boots in a second or in minutes, and CPU flags cannot tell. The probe
from keel.native times a CPL 0 loop; a CPL 3 test guest proves the whole VMM path works.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

from keel.vmm.errors import VmmError


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str


def _kvm() -> Finding:
    if not os.path.exists("/dev/kvm"):
        return Finding("kvm", False, "/dev/kvm is missing: no KVM on this host")
    from keel.native.kvm import Kvm

    try:
        with Kvm() as kvm:
            return Finding("kvm", True, f"/dev/kvm API {kvm.api_version()}")
    except OSError as error:
        return Finding("kvm", False, f"/dev/kvm unusable: {error}")


def _supervisor_speed() -> Finding:
    from keel.native.guest_speed import measure_supervisor_speed

    try:
        speed = measure_supervisor_speed()
    except (OSError, RuntimeError, TimeoutError) as error:
        return Finding("supervisor-code", False, f"probe failed: {error}")
    rate = speed.iterations_per_second
    if speed.native:
        return Finding("supervisor-code", True, f"native ({rate / 1e6:.0f}M loop iterations/s): "
                       "Linux guests boot at full speed; CPU template 'host' is fine")
    return Finding("supervisor-code", True, f"EMULATED ({rate / 1e6:.1f}M iterations/s, e.g. PVM): "
                   "use CPU template 'emulation-safe'; Linux boots take minutes, guest user "
                   "space cannot make system calls; CPL 3 test guests run natively")


def _toolchain() -> Finding:
    missing = [tool for tool in ("gcc", "ld", "objcopy") if shutil.which(tool) is None]
    if missing:
        return Finding("guest-toolchain", False, f"missing {', '.join(missing)}: test guests "
                       "cannot be built (apt-get install gcc binutils)")
    return Finding("guest-toolchain", True, "gcc, ld and objcopy present")


def _test_guest() -> Finding:
    from keel.vmm.guests.build import guest_path
    from keel.vmm.testing.session import GuestSession

    try:
        started = time.monotonic()
        with GuestSession(guest_path("bootinfo-bzimage"), command_line="doctor") as session:
            session.start()
            session.wait_for("end\n", timeout=20)
            outcome = session.wait_exit(timeout=10)
        elapsed = time.monotonic() - started
    except (VmmError, OSError, TimeoutError) as error:
        return Finding("test-guest", False, f"CPL 3 test guest failed: {error}")
    return Finding("test-guest", outcome.reason == "debug-exit",
                   f"bzImage test guest booted, echoed its zero page and exited "
                   f"({outcome.reason}, status {outcome.status}) in {elapsed * 1000:.0f} ms")


def _cpuid_template() -> Finding:
    from keel.vmm.cpuid import EMULATION_SAFE_HIDDEN, guest_visible_cpuid, has_feature
    from keel.vmm.guests.build import guest_path

    try:
        seen = guest_visible_cpuid(guest_path("cpuid"), "emulation-safe")
    except (VmmError, OSError, TimeoutError) as error:
        return Finding("cpu-template", False, f"cpuid guest failed: {error}")
    leaking = sorted(name for name in EMULATION_SAFE_HIDDEN if has_feature(seen, name))
    if not leaking:
        return Finding("cpu-template", True, "the guest sees CPUID as 'emulation-safe' sets it")
    return Finding("cpu-template", True, "this hypervisor overrides CPUID: with "
                   f"'emulation-safe' the guest still sees {', '.join(leaking)}; give Linux "
                   "guests 'noxsave nofsgsbase' (and avoid kernels that need the rest hidden)")


def _qemu() -> Finding:
    path = shutil.which("qemu-system-x86_64")
    return Finding("qemu", path is not None,
                   f"{path} (benchmark peer)" if path else "qemu-system-x86_64 not installed "
                   "(only needed for the benchmark)")


def diagnose() -> list[Finding]:
    findings = [_kvm(), _toolchain()]
    if findings[0].ok:
        findings.append(_supervisor_speed())
        if findings[1].ok:
            findings.append(_test_guest())
            findings.append(_cpuid_template())
    findings.append(_qemu())
    return findings
