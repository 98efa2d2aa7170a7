"""A KVM virtual machine monitor.

The main names are importable from here: `Vm` and `VmExit` (keel.vmm.machine), `load_kernel`
(keel.vmm.boot.loader), `GuestSession` (keel.vmm.testing) and the `VmmError` hierarchy. The
machine and loaders load on first use, so `import keel.vmm` stays cheap.
"""

from importlib import import_module
from importlib.metadata import version as _version
from typing import Any

from keel.vmm.errors import (
    BusError,
    CpuTemplateError,
    GuestBuildError,
    GuestCrashError,
    GuestMemoryError,
    LoaderError,
    VmmError,
    VmStateError,
)

__version__: str = _version("keel-vmm")

_LAZY = {
    "Vm": "keel.vmm.machine",
    "VmExit": "keel.vmm.machine",
    "load_kernel": "keel.vmm.boot.loader",
    "KernelFormat": "keel.vmm.boot.loader",
    "GuestSession": "keel.vmm.testing.session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.vmm' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "BusError",
    "CpuTemplateError",
    "GuestBuildError",
    "GuestCrashError",
    "GuestMemoryError",
    "GuestSession",
    "KernelFormat",
    "LoaderError",
    "VmStateError",
    "Vm",
    "VmExit",
    "VmmError",
    "__version__",
    "load_kernel",
]
