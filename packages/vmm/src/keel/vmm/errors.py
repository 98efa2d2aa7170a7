"""keel.vmm's exceptions: one hierarchy, so callers can catch everything the VMM raises.

Why separate classes: a test or a CLI wants to tell a broken kernel image (LoaderError) from a
guest that crashed (GuestCrashError) from a hostile access the VMM refused (GuestMemoryError).
"""

from __future__ import annotations


class VmmError(Exception):
    """Base of every error keel.vmm raises on purpose."""


class GuestMemoryError(VmmError):
    """A guest-physical access fell outside guest memory (or overflowed)."""


class BusError(VmmError):
    """A device registration overlapped another, or an access had an impossible size."""


class LoaderError(VmmError):
    """A kernel image is malformed, unsupported, or does not fit in guest memory."""


class CpuTemplateError(VmmError):
    """An unknown CPU template name, or a CPUID feature name the template does not know."""


class GuestCrashError(VmmError):
    """The guest stopped in a way no device asked for: failed entry, internal error, shutdown."""

    def __init__(self, message: str, *, reason: str, vcpu_id: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.vcpu_id = vcpu_id


class GuestBuildError(VmmError):
    """Building a test guest with gcc/ld/objcopy failed; the message holds the tool's output."""


class VmStateError(VmmError):
    """An operation was asked of a VM in the wrong state (started twice, used after close)."""
