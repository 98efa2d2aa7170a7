"""keel.ffi's exceptions: one hierarchy, rooted at FfiError.

Why subclasses of TypeError/ValueError too: a wrong argument is still a wrong argument to
callers who catch the builtins, while `except FfiError` catches everything keel.ffi raises.
"""

from __future__ import annotations


class FfiError(Exception):
    """Base of every exception keel.ffi raises."""


class InterfaceError(FfiError):
    """The Python interface (Protocol and dataclasses) cannot be mapped to Go."""


class BuildError(FfiError):
    """`go build` (or compiling the cffi binding) failed; the message is the compiler's."""


class ToolchainError(FfiError):
    """No usable Go toolchain was found."""


class ArgumentTypeError(FfiError, TypeError):
    """An argument has the wrong Python type; nothing was sent to Go."""


class ArgumentRangeError(FfiError, ValueError):
    """An argument is out of range for its declared width; nothing was sent to Go."""


class ClosedLibraryError(FfiError):
    """A call was made on a library that was already closed."""


class GoError(FfiError):
    """A Go method returned a non-nil error; `go_message` is err.Error()."""

    def __init__(self, method: str, go_message: str) -> None:
        super().__init__(f"{method}: {go_message}")
        self.method = method
        self.go_message = go_message


class GoPanic(GoError):
    """A Go method panicked; the panic was recovered and its value is `go_message`."""


class CallbackError(FfiError):
    """A Python callback raised while Go was calling it (the original is the __cause__)."""


class TooManyCallsError(FfiError):
    """More async calls are in flight than the library allows (a bound against runaway input)."""
