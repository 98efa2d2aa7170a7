"""Errors raised by keel.native.

Why: a failed syscall deep in a VMM or runtime is only debuggable if the exception says which
call failed with which arguments. `SyscallError` keeps `errno` (so `except OSError` and the
errno-specific builtins such as `FileNotFoundError` still match) and adds the call and its
arguments to the message.
"""

from __future__ import annotations

import errno as errno_codes
import os
from typing import Any


class KeelNativeError(Exception):
    """Base for keel.native's own errors that are not operating-system failures."""


class ClosedResourceError(KeelNativeError, ValueError):
    """An operation was attempted on a file descriptor or mapping that was already closed."""


class SyscallError(OSError):
    """A system call or ioctl failed; the message names the call and its arguments."""

    call: str
    arguments: dict[str, Any]

    def __init__(self, error_number: int, call: str, arguments: dict[str, Any]) -> None:
        rendered = ", ".join(f"{name}={value!r}" for name, value in arguments.items())
        super().__init__(error_number, f"{call}({rendered}) failed: {os.strerror(error_number)}")
        self.call = call
        self.arguments = dict(arguments)


# errno -> the builtin OSError subclass Python itself would raise for it.
_BUILTIN_FOR_ERRNO: dict[int, type[OSError]] = {
    errno_codes.ENOENT: FileNotFoundError,
    errno_codes.EEXIST: FileExistsError,
    errno_codes.EACCES: PermissionError,
    errno_codes.EPERM: PermissionError,
    errno_codes.EAGAIN: BlockingIOError,
    errno_codes.EINTR: InterruptedError,
    errno_codes.EBADF: OSError,
    errno_codes.ECONNRESET: ConnectionResetError,
    errno_codes.ECONNREFUSED: ConnectionRefusedError,
    errno_codes.EPIPE: BrokenPipeError,
    errno_codes.ETIMEDOUT: TimeoutError,
    errno_codes.ENOTDIR: NotADirectoryError,
    errno_codes.EISDIR: IsADirectoryError,
    errno_codes.ECHILD: ChildProcessError,
}
_COMBINED: dict[type[OSError], type[SyscallError]] = {}


def _class_for(error_number: int) -> type[SyscallError]:
    builtin = _BUILTIN_FOR_ERRNO.get(error_number, OSError)
    if builtin is OSError:
        return SyscallError
    combined = _COMBINED.get(builtin)
    if combined is None:
        combined = type(f"Syscall{builtin.__name__}", (SyscallError, builtin), {})
        _COMBINED[builtin] = combined
    return combined


def syscall_error(error_number: int, call: str, **arguments: Any) -> SyscallError:
    """Build the error for a failed `call`, typed like Python's own for that errno."""
    return _class_for(error_number)(error_number, call, arguments)


def check_result(result: int, call: str, **arguments: Any) -> int:
    """Return `result`, or raise the SyscallError for a negative `-errno` result."""
    if result < 0:
        raise syscall_error(-result, call, **arguments)
    return result
