"""The example interface: what Python sees of the Go library in this folder.

`keel ffi generate hashing_iface.py --go-out . --python-out hashing_binding.py` writes the Go
glue beside hashing.go and the Python binding; `keel ffi build .` compiles the library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from keel.ffi.types import float32, int8, int16, int32, int64, uint8, uint16, uint32, uint64


@dataclass
class Location:
    latitude: float
    longitude: float32


@dataclass
class Record:
    """One parsed `id;name;score;tag,tag;lat,lon` line."""

    id: uint64
    name: str
    score: float
    tags: list[str]
    location: Location | None


@dataclass
class Widths:
    """Every scalar width, to prove each crosses with its own range."""

    small: int8
    half: int16
    medium: int32
    large: int64
    byte: uint8
    word: uint16
    double_word: uint32
    quad_word: uint64
    ratio: float32
    flag: bool


@dataclass
class Block:
    """256 bytes of scalars: the benchmark's structured argument."""

    values: list[int64]
    a0: int64
    a1: int64
    a2: int64
    a3: int64
    a4: int64
    a5: int64
    a6: int64
    a7: int64
    a8: int64
    a9: int64
    a10: int64
    a11: int64
    a12: int64
    a13: int64
    a14: int64
    a15: int64
    a16: int64
    a17: int64
    a18: int64
    a19: int64
    a20: int64
    a21: int64
    a22: int64
    a23: int64
    a24: int64
    a25: int64
    a26: int64
    a27: int64
    a28: int64
    a29: int64


class Hashing(Protocol):
    def empty(self) -> None: ...

    def hash(self, data: bytes) -> uint64:
        """FNV-1a 64 of data, read in place."""
        ...

    def hash_text(self, text: str) -> uint64: ...

    def sum_int32(self, values: list[int32]) -> int64: ...

    def parse_record(self, line: str) -> Record: ...

    def describe(self, record: Record) -> str: ...

    def echo_records(self, records: list[Record]) -> list[Record]: ...

    def echo_widths(self, widths: Widths) -> Widths: ...

    def maybe_double(self, value: int64 | None) -> int64 | None: ...

    def block_sum(self, block: Block) -> int64: ...

    def divide(self, dividend: int64, divisor: int64) -> int64:
        """Go's integer division: a zero divisor is a Go runtime panic."""
        ...

    def checked_add(self, left: int32, right: int32) -> int32:
        """left + right, or a Go error when the sum overflows int32."""
        ...

    def scale(self, value: float, factor: float32) -> float: ...

    def is_even(self, value: uint64) -> bool: ...

    def fail(self, message: str) -> None: ...

    def crash(self, message: str) -> None: ...

    def each_word(self, text: str, visit: Callable[[int64, str], bool]) -> int32:
        """Call visit(index, word) for each word until it returns False; calls made from a
        goroutine other than the calling thread's, to show callbacks from any goroutine."""
        ...

    async def slow_square(self, value: int64, delay_ms: uint32) -> int64:
        """value squared after delay_ms; returns early with an error when cancelled."""
        ...

    async def hash_async(self, data: bytes) -> uint64: ...

    async def empty_async(self) -> None: ...

    async def crash_async(self, message: str) -> None: ...

    async def stubborn_square(self, value: int64, delay_ms: uint32) -> int64:
        """Like slow_square but ignores cancellation: Go writes its result late."""
        ...

    # Probes the tests use to prove what the library promises.
    def address_of_bytes(self, data: bytes) -> uint64:
        """Where Go sees the bytes: equal to the Python object's buffer (no copy)."""
        ...

    def address_of_text(self, text: str) -> uint64: ...

    def address_of_int32s(self, values: list[int32]) -> uint64: ...

    def sleep(self, milliseconds: uint32) -> None:
        """Block in Go; other Python threads run meanwhile (the GIL is released)."""
        ...

    def cgocheck_probe(self) -> None:
        """Pass C an unpinned Go pointer inside Go memory: panics while cgocheck is on."""
        ...

    async def parse_record_async(self, line: str) -> Record: ...

    def goroutines(self) -> int64:
        """How many goroutines the Go runtime has: lets load tests prove none are leaked."""
        ...
