"""Types of keel.runtime._hotpath (the per-message path in C; see _hotpath.c)."""

from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

_Writable = TypeVar("_Writable", bound=bytearray | memoryview)
_Readable = TypeVar("_Readable", bound=bytes | bytearray | memoryview)

SEND_NOW_FLAGS: int

class Done:
    """An awaitable that completes at once with its result."""

    def __await__(self) -> Generator[Any, Any, Any]: ...
    def send(self, value: Any) -> Any: ...

class Receiver:
    """One socket's multishot recv, the awaitable of its reads and their trap."""

    task: Any
    limit: int
    armed: bool | int
    closed: bool | int
    eof: bool | int
    error: int
    user_data: int
    @property
    def buffer(self) -> Any: ...
    @property
    def pending(self) -> bytearray: ...
    @property
    def pending_size(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def fd(self) -> int: ...
    def __init__(self, fd: int, ring_address: int, entries: int, pool_address: int,
                 buffer_size: int) -> None: ...
    def start(self, target: Any, limit: int, owner: Any) -> Any: ...
    def abort(self) -> bool: ...
    def close(self) -> None: ...
    def send(self, value: Any) -> Any: ...
    def __await__(self) -> Generator[Any, Any, Any]: ...

class StreamCore:
    """The C half of a socket stream: read and write on the hot path."""

    _receiver: Receiver | None
    _fd: int
    _closed: bool
    _writing: bool
    def read(self, buffer: _Writable,
             size: int | None = None) -> Awaitable[tuple[int, _Writable]]: ...
    def write(self, buffer: _Readable,
              size: int | None = None) -> Awaitable[tuple[int, _Readable]]: ...

class CompletionQueue:
    """A mapped io_uring completion queue and the dispatch of its completions."""

    def __init__(self, head_address: int, tail_address: int, mask: int, entries: int,
                 cqes_address: int, first_operation: int, operations: dict[int, Any],
                 operation_class: type, ready_append: Callable[[Any], None],
                 own_completion: Callable[[int, int, int], None], runtime: Any) -> None: ...
    def dispatch(self) -> int: ...

def run_ready(ready: deque[tuple[Any, Any, BaseException | None]], runtime: Any) -> None: ...
def configure(busy_error: type[BaseException],
              read_error: Callable[[int, int, bool], BaseException]) -> None: ...
def register_task_class(kind: type) -> None: ...
