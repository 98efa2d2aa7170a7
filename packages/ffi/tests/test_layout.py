"""Compiled layouts against cffi's own view of the C structs (no Go needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cffi
import pytest

from keel.ffi.codec import Arena, ListCodec, ScalarCodec, TextCodec
from keel.ffi.errors import ArgumentRangeError, ArgumentTypeError
from keel.ffi.layout import compile_layout
from keel.ffi.types import INT16, INT64, UINT8

DECLARATIONS = """
typedef struct { const uint8_t *data; int64_t size; } keel_bytes;
typedef struct { void *data; int64_t size; } keel_list;
typedef struct { int16_t first; keel_bytes name; uint8_t second; keel_list items;
                 int64_t third; } mixed;
typedef struct { int64_t a; int64_t b; int64_t c; int64_t d; keel_list rest;
                 int64_t e; } uniform;
"""


@dataclass
class Mixed:
    first: int
    name: str
    second: int
    items: list[int]
    third: int


@dataclass
class Uniform:
    a: int
    b: int
    c: int
    d: int
    rest: list[int]
    e: int


@pytest.fixture(scope="module")
def ffi() -> Any:
    built = cffi.FFI()
    built.cdef(DECLARATIONS)
    return built


def round_trip(ffi: Any, c_type: str, fields: list[tuple[str, Any]], value: Any) -> Any:
    prepare, write, read = compile_layout(ffi, c_type, fields, type(value))
    extra = prepare(value, "value")
    buffer = ffi.new("char[]", ffi.sizeof(c_type) + extra)
    keep: list[Any] = []
    write(ffi.cast(f"{c_type} *", buffer), value, Arena(ffi, buffer, ffi.sizeof(c_type)), keep)
    assert read is not None
    return read(ffi.cast(f"{c_type} *", buffer)), buffer, keep


def test_interleaved_scalar_and_variable_fields(ffi: Any) -> None:
    fields = [("first", ScalarCodec(INT16)), ("name", TextCodec(ffi, True)),
              ("second", ScalarCodec(UINT8)), ("items", ListCodec(ffi, ScalarCodec(INT64))),
              ("third", ScalarCodec(INT64))]
    value = Mixed(-7, "name", 200, [1, 2, 3], 2**62)
    read_back, _buffer, _keep = round_trip(ffi, "mixed", fields, value)
    assert read_back == value
    prepare, _write, _read = compile_layout(ffi, "mixed", fields, Mixed)
    with pytest.raises(ArgumentRangeError, match=r"value\.second = 256"):
        prepare(Mixed(0, "", 256, [], 0), "value")
    with pytest.raises(ArgumentTypeError, match=r"value\.name is None"):
        prepare(Mixed(0, None, 0, [], 0), "value")  # type: ignore[arg-type]


def test_uniform_fields_are_checked_together_and_named_when_wrong(ffi: Any) -> None:
    fields = [("a", ScalarCodec(INT64)), ("b", ScalarCodec(INT64)), ("c", ScalarCodec(INT64)),
              ("d", ScalarCodec(INT64)), ("rest", ListCodec(ffi, ScalarCodec(INT64))),
              ("e", ScalarCodec(INT64))]
    value = Uniform(1, -2, 3, -(2**63), [5, 6], 2**63 - 1)
    read_back, _buffer, _keep = round_trip(ffi, "uniform", fields, value)
    assert read_back == value
    prepare, _write, _read = compile_layout(ffi, "uniform", fields, Uniform)
    with pytest.raises(ArgumentRangeError, match=r"value\.e = 9223372036854775808"):
        prepare(Uniform(0, 0, 0, 0, [], 2**63), "value")
    with pytest.raises(ArgumentTypeError, match=r"value\.c must be an int"):
        prepare(Uniform(0, 0, True, 0, [], 0), "value")
    with pytest.raises(ArgumentTypeError, match=r"value\.b is None"):
        prepare(Uniform(0, None, 0, 0, [], 0), "value")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="must be a Uniform, not Mixed"):
        prepare(Mixed(0, "", 0, [], 0), "value")
