"""Reading interfaces: every supported type maps, every unsupported one is refused clearly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pytest

from keel.ffi import cdecl
from keel.ffi.errors import InterfaceError
from keel.ffi.model import (
    BytesType,
    CallbackType,
    ListType,
    OptionalType,
    ScalarType,
    StringType,
    StructType,
    read_interface,
)
from keel.ffi.types import INT64, UINT8, float32, int16, uint8


@dataclass
class Inner:
    value: int16


@dataclass
class Outer:
    inner: Inner
    maybe: Inner | None
    many: list[Inner]


class Everything(Protocol):
    def plain(self, flag: bool, count: int, ratio: float, small: uint8, single: float32) -> None:
        ...

    def text(self, name: str, data: bytes) -> str: ...

    def nested(self, outer: Outer, items: list[list[int]], maybe: str | None) -> Outer: ...

    def visit(self, callback: Callable[[int, str], bool]) -> None: ...

    async def later(self, value: int) -> int: ...


def test_every_supported_type_is_read() -> None:
    interface = read_interface(Everything)
    plain = interface.method("plain")
    names = [parameter.type.scalar.name for parameter in plain.parameters
             if isinstance(parameter.type, ScalarType)]
    assert names == ["bool", "int64", "float64", "uint8", "float32"]
    assert plain.parameters[1].type == ScalarType(INT64)
    assert plain.parameters[3].type == ScalarType(UINT8)
    text = interface.method("text")
    assert [parameter.type for parameter in text.parameters] == [StringType(), BytesType()]
    nested = interface.method("nested")
    outer = nested.parameters[0].type
    assert isinstance(outer, StructType) and outer.python_class is Outer
    assert isinstance(outer.fields[1].type, OptionalType)
    assert nested.parameters[1].type == ListType(ListType(ScalarType(INT64)))
    assert [struct.name for struct in interface.structs] == ["Inner", "Outer"]
    visit = interface.method("visit").parameters[0].type
    assert isinstance(visit, CallbackType) and visit.parameters == (ScalarType(INT64),
                                                                    StringType())
    assert interface.method("later").is_async and not plain.is_async


def test_c_declarations_put_dependencies_first() -> None:
    declarations = cdecl.type_declarations(read_interface(Everything))
    assert declarations.index("keel_s_Inner;") < declarations.index("keel_opt_Inner;")
    assert declarations.index("keel_opt_Inner;") < declarations.index("keel_s_Outer;")


class Unsupported(Protocol):
    def wrong(self, value: dict[str, int]) -> None: ...


class WideUnion(Protocol):
    def wrong(self, value: int | str) -> None: ...


@dataclass
class Loop:
    again: Loop | None


class Recursive(Protocol):
    def wrong(self, value: Loop) -> None: ...


class Keyword(Protocol):
    def wrong(self, short: int) -> None: ...


class Unannotated(Protocol):
    def wrong(self, value) -> None: ...  # type: ignore[no-untyped-def]


class NoReturn(Protocol):
    def wrong(self, value: int): ...  # type: ignore[no-untyped-def]


class NotAProtocol:
    def method(self) -> None: ...


@pytest.mark.parametrize(("protocol", "expected"), [
    (Unsupported, "unsupported type"),
    (WideUnion, "only `T | None` unions"),
    (Recursive, "contains itself"),
    (Keyword, "C keyword"),
    (Unannotated, "has no annotation"),
    (NoReturn, "missing return annotation"),
    (NotAProtocol, "is not a typing.Protocol"),
])
def test_unsupported_interfaces_are_refused_with_the_reason(protocol: type, expected: str) -> None:
    with pytest.raises(InterfaceError, match=expected):
        read_interface(protocol)
