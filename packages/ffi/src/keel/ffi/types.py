"""Width-annotated scalar types for interfaces.

Why Annotated: a Python `int` has no width, Go's do. `int32` is `Annotated[int, Width(...)]`,
so type checkers see a plain int while keel.ffi sees the C and Go type and the range to check.
A bare `int` means int64 and a bare `float` means float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Scalar:
    """A fixed-width scalar: its C type, Go type, struct-module code and range."""

    name: str
    c_type: str
    go_type: str
    struct_code: str
    python_type: type
    minimum: int | None = None
    maximum: int | None = None


def _signed(bits: int) -> Scalar:
    code = {8: "b", 16: "h", 32: "i", 64: "q"}[bits]
    return Scalar(f"int{bits}", f"int{bits}_t", f"int{bits}", code, int, -(1 << (bits - 1)),
                  (1 << (bits - 1)) - 1)


def _unsigned(bits: int) -> Scalar:
    return Scalar(f"uint{bits}", f"uint{bits}_t", f"uint{bits}",
                  {8: "B", 16: "H", 32: "I", 64: "Q"}[bits], int, 0, (1 << bits) - 1)


INT8, INT16, INT32, INT64 = (_signed(bits) for bits in (8, 16, 32, 64))
UINT8, UINT16, UINT32, UINT64 = (_unsigned(bits) for bits in (8, 16, 32, 64))
FLOAT32 = Scalar("float32", "float", "float32", "f", float)
FLOAT64 = Scalar("float64", "double", "float64", "d", float)
BOOL = Scalar("bool", "uint8_t", "bool", "?", bool)

int8 = Annotated[int, INT8]
int16 = Annotated[int, INT16]
int32 = Annotated[int, INT32]
int64 = Annotated[int, INT64]
uint8 = Annotated[int, UINT8]
uint16 = Annotated[int, UINT16]
uint32 = Annotated[int, UINT32]
uint64 = Annotated[int, UINT64]
float32 = Annotated[float, FLOAT32]
float64 = Annotated[float, FLOAT64]

__all__ = ["float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
           "uint32", "uint64"]
