"""The kernel configuration fragment keel's guest kernel is built with, and its check.

Why a fragment on top of `make tinyconfig`: the smallest kernel that boots through the PVH
entry, prints on the 8250 serial console, unpacks an initramfs and drives keel's virtio-mmio
devices (declared on the command line), brings eth0 up from `ip=`, and has io_uring. SMP and
PTP_1588_CLOCK_KVM stay off: under an emulating hypervisor (ENVIRONMENT.md) SMP bring-up is
slow and kvm-ptp makes KVM hypercalls that spin forever. BINFMT_ELF/BINFMT_SCRIPT let /init
(a static binary or a busybox script) run; the menus (HYPERVISOR_GUEST, BLK_DEV, NETDEVICES,
VIRTIO_MENU, ...) are what make the wanted options visible at all. The system-call options
(EVENTFD, TIMERFD, ...) are off in tinyconfig and on in every distribution kernel; user space
such as keel.runtime (eventfd wake-ups) needs them where it can run.
"""

from __future__ import annotations

from pathlib import Path

ENABLED = (
    "64BIT", "PRINTK", "TTY", "SERIAL_8250", "SERIAL_8250_CONSOLE", "EARLY_PRINTK",
    "BLK_DEV_INITRD", "RD_GZIP", "BINFMT_ELF", "BINFMT_SCRIPT", "PROC_FS", "SYSFS",
    "DEVTMPFS", "DEVTMPFS_MOUNT", "SHMEM", "TMPFS", "FUTEX", "EPOLL", "MULTIUSER",
    "HYPERVISOR_GUEST", "PARAVIRT", "KVM_GUEST", "PVH",
    "BLOCK", "BLK_DEV", "VIRTIO_MENU", "VIRTIO_MMIO", "VIRTIO_MMIO_CMDLINE_DEVICES",
    "NETDEVICES", "NET_CORE", "VIRTIO_NET", "VIRTIO_BLK",
    "NET", "INET", "UNIX", "PACKET", "IP_PNP", "IO_URING",
    # What a general user space (busybox, CPython with keel.runtime) expects of the kernel:
    # eventfd/timerfd/signalfd, POSIX timers, file locks, madvise & co, ptys.
    "EVENTFD", "TIMERFD", "SIGNALFD", "POSIX_TIMERS", "FILE_LOCKING", "ADVISE_SYSCALLS",
    "UNIX98_PTYS",
)
DISABLED = ("SMP", "PTP_1588_CLOCK_KVM")
FRAGMENT_NAME = "keel_guest.config"


def fragment_text() -> str:
    """The fragment in Kconfig syntax (what `make <name>.config` merges)."""
    lines = [f"CONFIG_{name}=y" for name in ENABLED]
    lines += [f"# CONFIG_{name} is not set" for name in DISABLED]
    return "\n".join(lines) + "\n"


def read_config(path: Path) -> dict[str, str]:
    """CONFIG_NAME -> value ('y', 'm', a string) for every option set in a .config."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            values[name.removeprefix("CONFIG_")] = value
    return values


def missing_options(path: Path) -> list[str]:
    """Fragment options the resolved .config does not honour (a dependency was missing)."""
    values = read_config(path)
    problems = [f"{name} is not y" for name in ENABLED if values.get(name) != "y"]
    problems += [f"{name} is set" for name in DISABLED if name in values]
    return problems
