"""Errors of keel.vmm's virtio layer, inside keel.vmm's one hierarchy (VmmError).

Why two classes: a VirtqueueError is the guest's fault (a malformed ring or request); the
device catches it, sets NEEDS_RESET and keeps the VMM running. A VirtioConfigError is the
caller's fault (a bad MAC, a disk file that cannot be opened) and reaches the caller.
"""

from __future__ import annotations

from keel.vmm.errors import VmmError


class VirtioError(VmmError):
    """Base of every error the virtio layer raises on purpose."""


class VirtqueueError(VirtioError):
    """The driver broke the virtqueue or request format; the device needs a reset."""


class VirtioConfigError(VirtioError):
    """A device was configured with an impossible value by the VMM's caller."""
