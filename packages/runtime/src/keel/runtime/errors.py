"""keel.runtime's exceptions: one hierarchy, so callers can catch the runtime's own failures.

Why `RuntimeError_`: the base must not shadow the builtin `RuntimeError` for code that does
`from keel.runtime import *`; `Cancelled` is a BaseException (as in trio) so that a bare
`except Exception` in user code does not swallow a cancellation.
"""

from __future__ import annotations

from keel.native.errors import ClosedResourceError as NativeClosedResourceError


class RuntimeError_(Exception):
    """Base of every error keel.runtime raises on its own account."""


class NoRuntimeError(RuntimeError_):
    """A runtime API was called outside a running keel runtime (or from another thread)."""


class ClosedResourceError(RuntimeError_, NativeClosedResourceError):
    """The stream, listener, file or channel was closed (by this task or another)."""


class BusyResourceError(RuntimeError_):
    """Two tasks tried the same one-at-a-time operation (two readers on one stream)."""


class DriverError(RuntimeError_):
    """The requested I/O driver is unknown or this kernel cannot run it."""


class EndOfChannel(RuntimeError_):
    """Every sender of a channel is gone and nothing is left to receive."""


class BrokenChannelError(RuntimeError_):
    """Every receiver of a channel is gone, so a sent value could never be read."""


class WouldBlock(RuntimeError_):
    """A *_nowait operation could not complete immediately."""


class LeakError(RuntimeError_):
    """The runtime shut down with tasks or operations still alive."""


class Cancelled(BaseException):
    """Raised inside a task whose cancel scope was cancelled; let it propagate."""


class TooSlowError(RuntimeError_, TimeoutError):
    """A `fail_after` deadline passed before its block finished."""
