"""Call Go from Python: generated bindings, sync and async calls, zero copy."""

from importlib.metadata import version as _version

from keel.ffi.errors import (
    ArgumentRangeError,
    ArgumentTypeError,
    BuildError,
    CallbackError,
    ClosedLibraryError,
    FfiError,
    GoError,
    GoPanic,
    InterfaceError,
    ToolchainError,
    TooManyCallsError,
)

__version__: str = _version("keel-ffi")

__all__ = [
    "ArgumentRangeError",
    "ArgumentTypeError",
    "BuildError",
    "CallbackError",
    "ClosedLibraryError",
    "FfiError",
    "GoError",
    "GoPanic",
    "InterfaceError",
    "ToolchainError",
    "TooManyCallsError",
    "__version__",
]
