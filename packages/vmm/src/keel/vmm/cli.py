"""`keel vmm ...`: run a kernel, check the host, build the test guests.

Why click through the `keel.cli` entry point: the `keel` command lives in keel.native, which
cannot import us; this group is found and mounted by name when installed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from keel.vmm.boot.loader import FlatBinary, KernelFormat, load_kernel
from keel.vmm.boot.modes import CpuMode
from keel.vmm.cpuid import DEFAULT_TEMPLATE, TEMPLATES
from keel.vmm.device_options import parse_net_option
from keel.vmm.devices.console import CONSOLE_SPECS, open_console
from keel.vmm.errors import VmmError
from keel.vmm.machine import MAX_VCPUS, Vm
from keel.vmm.sizes import parse_size

logger = logging.getLogger("keel.vmm")
WAIT_SLICE_SECONDS = 0.2
EXIT_CRASHED = 1
EXIT_TIMED_OUT = 124
EXIT_INTERRUPTED = 130


@click.group("vmm")
def vmm() -> None:
    """A KVM virtual machine monitor: boot kernels and test guests."""


@vmm.command("run")
@click.option("--kernel", "kernel_path", required=True, type=click.Path(exists=True,
              dir_okay=False, path_type=Path), help="bzImage, vmlinux (PVH), multiboot or flat")
@click.option("--initrd", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--append", "command_line", default="", help="Kernel command line.")
@click.option("--mem", "memory", default="128M", show_default=True, help="Guest RAM (e.g. 512M).")
@click.option("--cpus", default=1, show_default=True, type=click.IntRange(1, MAX_VCPUS))
@click.option("--serial", default="stdout", show_default=True,
              help=f"Console: {CONSOLE_SPECS}.")
@click.option("--format", "kernel_format", default="auto", show_default=True,
              type=click.Choice([f.value for f in KernelFormat]))
@click.option("--load-address", default=hex(FlatBinary().address), show_default=True,
              help="Flat binaries: where to load and start.")
@click.option("--mode", default=CpuMode.LONG.value, show_default=True,
              type=click.Choice([m.value for m in CpuMode]), help="Flat binaries: start mode.")
@click.option("--cpu-template", default=DEFAULT_TEMPLATE, show_default=True,
              type=click.Choice(sorted(TEMPLATES)))
@click.option("--timeout", type=float, default=None, help="Stop the VM after this many seconds.")
@click.option("--net", "nets", multiple=True, metavar="tap=NAME[,mac=MAC]",
              help="virtio-net on TAP device NAME (created if missing, in this namespace); "
                   "repeatable.")
@click.option("--disk", "disks", multiple=True, metavar="PATH",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="virtio-blk on a disk image file, read-write; repeatable.")
@click.option("--ro-disk", "read_only_disks", multiple=True, metavar="PATH",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="virtio-blk on a disk image file the guest cannot write; repeatable.")
@click.option("--rng", is_flag=True, help="A virtio-rng device fed from os.urandom.")
def run(kernel_path: Path, initrd: Path | None, command_line: str, memory: str, cpus: int,
        serial: str, kernel_format: str, load_address: str, mode: str, cpu_template: str,
        timeout: float | None, nets: tuple[str, ...], disks: tuple[Path, ...],
        read_only_disks: tuple[Path, ...], rng: bool) -> None:
    """Boot a kernel. The exit status is the guest's isa-debug-exit value (0 otherwise).

    virtio devices (--net, --disk, --ro-disk, --rng) are placed on virtio-mmio and declared
    to the guest by `virtio_mmio.device=` words appended to the command line; their I/O runs
    on keel.runtime beside the vCPU threads.
    """
    try:
        flat = FlatBinary(int(load_address, 0), CpuMode(mode))
        net_options = [parse_net_option(text) for text in nets]
        with open_console(serial) as console, Vm(parse_size(memory), cpus, cpu_template,
                                                  serial_output=console.write) as vm:
            for option in net_options:
                vm.add_virtio_net(option.tap, option.mac)
            for path in disks:
                vm.add_virtio_block(path)
            for path in read_only_disks:
                vm.add_virtio_block(path, read_only=True)
            if rng:
                vm.add_virtio_rng()
            command_line = " ".join(part for part in (command_line, vm.virtio_command_line())
                                    if part)
            entry = load_kernel(vm.memory, kernel_path.read_bytes(), command_line=command_line,
                                initrd=initrd.read_bytes() if initrd else None,
                                kernel_format=KernelFormat(kernel_format), flat=flat)
            vm.load(entry)
            console.start_input(vm.serial.feed_input)
            vm.start()
            status = _wait(vm, timeout)
    except (VmmError, OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    sys.exit(status)


def _wait(vm: Vm, timeout: float | None) -> int:
    waited = 0.0
    try:
        while True:
            try:
                outcome = vm.wait(WAIT_SLICE_SECONDS)
                break
            except TimeoutError:
                waited += WAIT_SLICE_SECONDS
                if timeout is not None and waited >= timeout:
                    vm.stop()
                    vm.wait()
                    click.echo(f"keel vmm: stopped the VM after {timeout} s", err=True)
                    return EXIT_TIMED_OUT
    except KeyboardInterrupt:
        vm.stop()
        vm.wait()
        return EXIT_INTERRUPTED
    if outcome.error is not None:
        click.echo(f"keel vmm: guest crashed: {outcome.error}", err=True)
        return EXIT_CRASHED
    if vm.boot_timer.boot_seconds is not None:
        click.echo(f"keel vmm: guest boot time {vm.boot_timer.boot_seconds * 1000:.1f} ms",
                   err=True)
    return outcome.status


@vmm.command("doctor")
def doctor() -> None:
    """What this host can run (KVM, native or emulated supervisor code, toolchain, QEMU)."""
    from keel.vmm.doctor import diagnose

    findings = diagnose()
    for finding in findings:
        click.echo(f"{'ok' if finding.ok else '--':>2}  {finding.name:<16} {finding.detail}")
    essential = [f for f in findings if f.name != "qemu"]
    sys.exit(0 if all(f.ok for f in essential) else 1)


@vmm.group("guest")
def guest() -> None:
    """Build guests: keel's test guests, a small Linux guest kernel and an initramfs."""


@guest.command("build-test-guests")
@click.option("--rebuild", is_flag=True, help="Build even if the cache has them.")
def build_test_guests(rebuild: bool) -> None:
    """Build keel's test guests into ~/.cache/keel/guests (cached by source hash)."""
    from keel.vmm.guests.build import GUESTS, build_all
    from keel.vmm.guests.lwip import lwip_source

    try:
        lwip_source(progress=click.echo)  # fetched once (minutes on a slow mirror): say so
        built = build_all(rebuild=rebuild)
    except VmmError as error:
        raise click.ClickException(str(error)) from None
    for name, path in built.items():
        click.echo(f"{name:<18} {path}  ({GUESTS[name].description})")


def _add_guest_kernel_commands() -> None:
    """`keel vmm guest build-kernel` and `build-initramfs` (keel.vmm.guest_kernel)."""
    from keel.vmm.guest_kernel.cli import build_initramfs_command, build_kernel_command

    guest.add_command(build_kernel_command)
    guest.add_command(build_initramfs_command)


_add_guest_kernel_commands()
