"""keel's guest kernel and initramfs tooling (see kernel.py, initramfs.py)."""

from keel.vmm.guest_kernel.errors import GuestKernelError
from keel.vmm.guest_kernel.initramfs import build_initramfs
from keel.vmm.guest_kernel.kernel import KernelBuild, build_kernel

__all__ = ["GuestKernelError", "KernelBuild", "build_initramfs", "build_kernel"]
