"""keel.runtime: an io_uring thread-per-core async runtime with an epoll fallback.

`keel.runtime.run(main)` runs `main()` as the first task; everything else (spawn, task
groups, timeouts, sockets, files, channels) is used from inside it.
"""

from importlib.metadata import version as _version

from keel.runtime.errors import (
    BrokenChannelError,
    BusyResourceError,
    Cancelled,
    ClosedResourceError,
    DriverError,
    EndOfChannel,
    LeakError,
    NoRuntimeError,
    RuntimeError_,
    TooSlowError,
    WouldBlock,
)
from keel.runtime.net import (
    TcpListener,
    TcpStream,
    UdpSocket,
    UnixDatagram,
    UnixListener,
    UnixStream,
)
from keel.runtime.scheduler import (
    CancelScope,
    JoinHandle,
    Task,
    TaskCancelledError,
    checkpoint,
    current_runtime,
    current_task,
    fail_after,
    move_on_after,
    move_on_at,
    run,
    sleep,
    spawn,
)
from keel.runtime.taskgroup import TaskGroup

__version__: str = _version("keel-runtime")

__all__ = [
    "BrokenChannelError",
    "BusyResourceError",
    "CancelScope",
    "Cancelled",
    "ClosedResourceError",
    "DriverError",
    "EndOfChannel",
    "JoinHandle",
    "LeakError",
    "NoRuntimeError",
    "RuntimeError_",
    "Task",
    "TaskCancelledError",
    "TaskGroup",
    "TcpListener",
    "TcpStream",
    "TooSlowError",
    "UdpSocket",
    "UnixDatagram",
    "UnixListener",
    "UnixStream",
    "WouldBlock",
    "__version__",
    "checkpoint",
    "current_runtime",
    "current_task",
    "fail_after",
    "move_on_after",
    "move_on_at",
    "run",
    "sleep",
    "spawn",
]
