"""SyscallError names the call and arguments and keeps Python's errno-specific classes."""

import errno

import pytest

from keel.native.checks import require_buffer, require_int, require_writable_buffer
from keel.native.errors import ClosedResourceError, SyscallError, check_result, syscall_error
from keel.native.fd import OwnedFd


def test_error_message_names_call_and_arguments() -> None:
    error = syscall_error(errno.ENOENT, "open", path="/dev/nothing")
    assert isinstance(error, SyscallError)
    assert isinstance(error, FileNotFoundError)
    assert error.errno == errno.ENOENT
    assert "open(path='/dev/nothing')" in str(error)
    assert "No such file or directory" in str(error)


def test_unmapped_errno_is_plain_syscall_error() -> None:
    error = syscall_error(errno.EINVAL, "KVM_RUN", vcpu_id=0)
    assert type(error) is SyscallError
    assert error.arguments == {"vcpu_id": 0}


def test_check_result_passes_non_negative_and_raises_negative() -> None:
    assert check_result(7, "x") == 7
    with pytest.raises(PermissionError, match=r"ioctl\(fd=3\)"):
        check_result(-errno.EPERM, "ioctl", fd=3)


@pytest.mark.parametrize("value", [True, 1.5, "3", None])
def test_require_int_rejects_non_ints(value: object) -> None:
    with pytest.raises(TypeError, match="size must be an int"):
        require_int("size", value)


def test_require_int_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"size must be in \[0, 10\], got -1"):
        require_int("size", -1, 0, 10)


def test_buffer_checks() -> None:
    with pytest.raises(TypeError, match="buffer protocol"):
        require_buffer("data", 3)
    with pytest.raises(TypeError, match="writable"):
        require_writable_buffer("data", b"abc")
    assert require_writable_buffer("data", bytearray(4)).nbytes == 4


def test_owned_fd_closes_once_and_refuses_use_after_close() -> None:
    import os

    read_end, write_end = os.pipe()
    os.close(write_end)
    owned = OwnedFd(read_end, "pipe")
    owned.close()
    owned.close()
    with pytest.raises(ClosedResourceError, match="pipe is closed"):
        owned.fileno()
    with pytest.raises(ValueError, match="not a file descriptor"):
        OwnedFd(-1, "nothing")
