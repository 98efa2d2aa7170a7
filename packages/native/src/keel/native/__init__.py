"""keel.native: cffi bindings to KVM, io_uring, TUN/TAP, eventfd and epoll, and the `keel` command.

The compiled modules (`_kvm`, `_uring`, `_sys`) are imported by the wrappers that need them,
so `import keel.native` stays cheap.
"""

from importlib.metadata import version as _version

from keel.native.errors import ClosedResourceError, KeelNativeError, SyscallError

__version__: str = _version("keel-native")

__all__ = ["ClosedResourceError", "KeelNativeError", "SyscallError", "__version__"]
