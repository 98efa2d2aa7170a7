"""The interface model: a Protocol and its dataclasses, read into plain descriptions.

Why a model: the Go generator, the C declarations and the Python codecs all need the same
facts (which types, in which order, with which C layout); reading the annotations once into
frozen descriptions keeps the three in agreement.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from keel.ffi import types as ffi_types
from keel.ffi.errors import InterfaceError
from keel.ffi.types import Scalar

# Bounds on what an interface may declare: generated code stays reviewable and finite.
MAX_METHODS = 256
MAX_PARAMETERS = 64
MAX_FIELDS = 256
MAX_NESTING = 16


@dataclass(frozen=True)
class ScalarType:
    scalar: Scalar

    @property
    def key(self) -> str:
        return self.scalar.name


@dataclass(frozen=True)
class StringType:
    key: str = "str"


@dataclass(frozen=True)
class BytesType:
    key: str = "bytes"


@dataclass(frozen=True)
class ListType:
    element: TypeRef

    @property
    def key(self) -> str:
        return f"list_{self.element.key}"


@dataclass(frozen=True)
class OptionalType:
    inner: TypeRef

    @property
    def key(self) -> str:
        return f"opt_{self.inner.key}"


@dataclass(frozen=True)
class Field:
    name: str
    type: TypeRef


@dataclass(frozen=True)
class StructType:
    python_class: type
    fields: tuple[Field, ...]

    @property
    def name(self) -> str:
        return self.python_class.__name__

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class CallbackType:
    """A Python callable Go may call (from any goroutine) while the call is in flight."""

    parameters: tuple[TypeRef, ...]
    returns: TypeRef | None

    @property
    def key(self) -> str:
        parts = "_".join(parameter.key for parameter in self.parameters) or "void"
        return f"cb_{parts}__{self.returns.key if self.returns else 'none'}"


TypeRef = ScalarType | StringType | BytesType | ListType | OptionalType | StructType | CallbackType


@dataclass(frozen=True)
class Parameter:
    name: str
    type: TypeRef


@dataclass(frozen=True)
class Method:
    name: str
    parameters: tuple[Parameter, ...]
    returns: TypeRef | None
    is_async: bool

    @property
    def go_name(self) -> str:
        return go_identifier(self.name)


@dataclass(frozen=True)
class Interface:
    name: str
    methods: tuple[Method, ...]
    structs: tuple[StructType, ...]  # dependency order: a struct after the structs it holds
    callbacks: tuple[CallbackType, ...]

    def method(self, name: str) -> Method:
        for method in self.methods:
            if method.name == name:
                return method
        raise KeyError(name)


def go_identifier(name: str) -> str:
    """snake_case -> CamelCase, exported (Go needs a capital letter to export)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


C_KEYWORDS = frozenset((
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while", "_Bool"))


def _check_name(name: str, where: str) -> None:
    if name in C_KEYWORDS:
        raise InterfaceError(f"{where}: the name {name!r} is a C keyword and cannot be a "
                             "field or parameter name; rename it")


_PLAIN_SCALARS: dict[Any, Scalar] = {int: ffi_types.INT64, float: ffi_types.FLOAT64,
                                      bool: ffi_types.BOOL}
_CALLBACK_VALUE_KINDS = (ScalarType, StringType, BytesType)


class _Reader:
    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.structs: dict[type, StructType] = {}
        self.order: list[StructType] = []
        self.callbacks: dict[str, CallbackType] = {}
        self.in_progress: set[type] = set()

    def resolve(self, annotation: Any, where: str, depth: int = 0) -> TypeRef:
        if depth > MAX_NESTING:
            raise InterfaceError(f"{where}: types nest deeper than {MAX_NESTING} levels")
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            base, *metadata = typing.get_args(annotation)
            for item in metadata:
                if isinstance(item, Scalar):
                    if base is not item.python_type:
                        raise InterfaceError(f"{where}: {item.name} annotates {base!r}, "
                                             f"expected {item.python_type.__name__}")
                    return ScalarType(item)
            return self.resolve(base, where, depth + 1)
        if annotation in _PLAIN_SCALARS:
            return ScalarType(_PLAIN_SCALARS[annotation])
        if annotation is str:
            return StringType()
        if annotation is bytes:
            return BytesType()
        if origin is list:
            (element,) = typing.get_args(annotation) or (None,)
            if element is None:
                raise InterfaceError(f"{where}: list needs an element type, e.g. list[int32]")
            inner = self.resolve(element, f"{where}[]", depth + 1)
            if isinstance(inner, CallbackType | OptionalType):
                raise InterfaceError(f"{where}: list[{inner.key}] is not supported; "
                                     "expected a list of scalars, str, bytes, lists or dataclasses")
            return ListType(inner)
        if origin in (Union, types.UnionType):
            members = typing.get_args(annotation)
            others = [member for member in members if member is not type(None)]
            if len(members) != 2 or len(others) != 1:
                raise InterfaceError(f"{where}: only `T | None` unions are supported, "
                                     f"got {annotation!r}")
            inner = self.resolve(others[0], where, depth + 1)
            if isinstance(inner, OptionalType | CallbackType):
                raise InterfaceError(f"{where}: {annotation!r} cannot be optional")
            return OptionalType(inner)
        if origin is collections.abc.Callable:
            return self.callback(annotation, where, depth)
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            return self.struct(annotation, where, depth)
        raise InterfaceError(f"{where}: unsupported type {annotation!r}; expected bool, int, "
                             "float, keel.ffi.types.int8..uint64/float32, str, bytes, list[T], "
                             "T | None, a dataclass or a Callable")

    def callback(self, annotation: Any, where: str, depth: int) -> CallbackType:
        arguments, result = typing.get_args(annotation)
        if arguments is Ellipsis:
            raise InterfaceError(f"{where}: a callback needs explicit parameter types")
        parameters = tuple(self.resolve(argument, f"{where}(arg {index})", depth + 1)
                           for index, argument in enumerate(arguments))
        returns = None if result is None or result is type(None) else self.resolve(
            result, f"{where}(result)", depth + 1)
        for parameter in parameters:
            if not isinstance(parameter, _CALLBACK_VALUE_KINDS):
                raise InterfaceError(f"{where}: callback parameters must be scalars, str or "
                                     f"bytes, got {parameter.key}")
        if returns is not None and not isinstance(returns, ScalarType):
            raise InterfaceError(f"{where}: a callback returns None or a scalar, "
                                 f"got {returns.key}")
        callback = CallbackType(parameters, returns)
        self.callbacks.setdefault(callback.key, callback)
        return callback

    def struct(self, cls: type, where: str, depth: int) -> StructType:
        if cls in self.structs:
            return self.structs[cls]
        if cls in self.in_progress:
            raise InterfaceError(f"{where}: dataclass {cls.__name__} contains itself; "
                                 "recursive structures have no fixed C layout")
        self.in_progress.add(cls)
        hints = typing.get_type_hints(cls, globalns=self.namespace, include_extras=True)
        fields = []
        for field in dataclasses.fields(cls):
            _check_name(field.name, f"{cls.__name__}.{field.name}")
            resolved = self.resolve(hints[field.name], f"{cls.__name__}.{field.name}", depth + 1)
            if isinstance(resolved, CallbackType):
                raise InterfaceError(f"{cls.__name__}.{field.name}: callbacks cannot be fields")
            fields.append(Field(field.name, resolved))
        if not fields or len(fields) > MAX_FIELDS:
            raise InterfaceError(f"dataclass {cls.__name__} has {len(fields)} fields, "
                                 f"expected 1 to {MAX_FIELDS}")
        struct = StructType(cls, tuple(fields))
        self.in_progress.discard(cls)
        self.structs[cls] = struct
        self.order.append(struct)
        return struct


def read_interface(protocol: type) -> Interface:
    """Read a Protocol class into an Interface, or raise InterfaceError saying what is wrong."""
    if not getattr(protocol, "_is_protocol", False):
        raise InterfaceError(f"{protocol!r} is not a typing.Protocol")
    module = inspect.getmodule(protocol)
    reader = _Reader(dict(vars(module)) if module else {})
    methods = []
    for name, function in vars(protocol).items():
        if name.startswith("_") or not inspect.isfunction(function):
            continue
        where = f"{protocol.__name__}.{name}"
        hints = typing.get_type_hints(function, globalns=reader.namespace, include_extras=True)
        signature = inspect.signature(function)
        parameters = []
        for index, (parameter_name, parameter) in enumerate(signature.parameters.items()):
            if index == 0:
                continue  # self
            if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.POSITIONAL_ONLY):
                raise InterfaceError(f"{where}: parameter {parameter_name} must be positional")
            _check_name(parameter_name, where)
            if parameter_name not in hints:
                raise InterfaceError(f"{where}: parameter {parameter_name} has no annotation")
            resolved = reader.resolve(hints[parameter_name], f"{where}({parameter_name})")
            parameters.append(Parameter(parameter_name, resolved))
        if len(parameters) > MAX_PARAMETERS:
            raise InterfaceError(f"{where}: {len(parameters)} parameters, at most "
                                 f"{MAX_PARAMETERS} allowed")
        if "return" not in hints:
            raise InterfaceError(f"{where}: missing return annotation (use -> None)")
        result = hints["return"]
        returns = None if result is None or result is type(None) else reader.resolve(
            result, f"{where} return")
        if isinstance(returns, CallbackType):
            raise InterfaceError(f"{where}: methods cannot return callbacks")
        methods.append(Method(name, tuple(parameters), returns,
                              inspect.iscoroutinefunction(function)))
    if not methods:
        raise InterfaceError(f"{protocol.__name__} declares no methods")
    if len(methods) > MAX_METHODS:
        raise InterfaceError(f"{protocol.__name__}: {len(methods)} methods, at most "
                             f"{MAX_METHODS} allowed")
    return Interface(protocol.__name__, tuple(methods), tuple(reader.order),
                     tuple(reader.callbacks.values()))
