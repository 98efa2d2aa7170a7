"""The guest-kernel tooling's error, inside keel.vmm's hierarchy."""

from __future__ import annotations

from keel.vmm.errors import VmmError


class GuestKernelError(VmmError):
    """A guest kernel or initramfs could not be built; the message says what to install or
    which step failed (with the tail of its output)."""
