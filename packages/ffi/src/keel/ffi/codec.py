"""Python values to C memory and back, checked before anything crosses to Go.

Why two passes: `prepare` checks every value (type, range, None) and measures the bytes the
variable parts need; only then is one buffer allocated for the arguments, the result and
every nested array, and `write` fills it. A bad argument therefore raises before any memory
is written or any Go code runs. bytes, str and buffers of scalars are not copied: the C
structs point at Python's own memory, which the call keeps alive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from keel.ffi import cdecl
from keel.ffi.errors import ArgumentRangeError, ArgumentTypeError, CallbackError
from keel.ffi.model import (
    BytesType,
    CallbackType,
    ListType,
    OptionalType,
    ScalarType,
    StringType,
    StructType,
    TypeRef,
)
from keel.ffi.strings import utf8_address
from keel.ffi.types import Scalar

ALIGNMENT = 8
# One call may not ask for more than this much argument memory (a bound on caller input).
MAX_ARGUMENT_BYTES = 1 << 32
FLOAT32_MAX = 3.4028234663852886e38
# Buffer formats accepted in place for lists of each scalar (memoryview.format codes).
BUFFER_FORMATS: dict[str, frozenset[str]] = {
    "int8": frozenset("b"), "uint8": frozenset("Bc"), "int16": frozenset("h"),
    "uint16": frozenset("H"), "int32": frozenset("i"), "uint32": frozenset("I"),
    "int64": frozenset("ql"), "uint64": frozenset("QL"), "float32": frozenset("f"),
    "float64": frozenset("d"), "bool": frozenset("?"),
}


def align(size: int) -> int:
    return (size + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


class Arena:
    """Bump allocation inside the call's one buffer."""

    __slots__ = ("base", "ffi", "offset")

    def __init__(self, ffi: Any, base: Any, offset: int) -> None:
        self.ffi = ffi
        self.base = base
        self.offset = offset

    def alloc(self, size: int, pointer_type: Any) -> Any:
        """`size` bytes (8-aligned) as a pointer of `pointer_type` (a cffi ctype)."""
        pointer = self.ffi.cast(pointer_type, self.base + self.offset)
        self.offset += align(size)
        return pointer


def _set(owner: Any, key: str | int, value: Any) -> None:
    if type(key) is int:
        owner[key] = value
    else:
        setattr(owner, key, value)  # type: ignore[arg-type]


def _get(owner: Any, key: str | int) -> Any:
    return owner[key] if type(key) is int else getattr(owner, key)  # type: ignore[arg-type]


def _kind(value: Any) -> str:
    return type(value).__name__


class Codec:
    """Checks, measures, writes and reads one type."""

    c_type: str

    def prepare(self, value: Any, where: str) -> int:
        """Check value (TypeError/ValueError naming `where`); return arena bytes it needs."""
        raise NotImplementedError

    def write(self, owner: Any, key: str | int, value: Any, arena: Arena, keep: list[Any]) -> None:
        raise NotImplementedError

    def read(self, value: Any) -> Any:
        """The Python value of a C value (a cdata view, or an int/float for scalars)."""
        raise NotImplementedError


class ScalarCodec(Codec):
    def __init__(self, scalar: Scalar) -> None:
        self.scalar = scalar
        self.c_type = scalar.c_type
        self.is_bool = scalar.name == "bool"
        self.is_float = scalar.python_type is float
        self.minimum = scalar.minimum
        self.maximum = scalar.maximum

    def check(self, value: Any, where: str) -> None:
        if self.is_bool:
            if type(value) is not bool:
                raise ArgumentTypeError(f"{where} must be a bool, not {_kind(value)}")
        elif self.is_float:
            if type(value) is not float and (type(value) is not int):
                raise ArgumentTypeError(f"{where} must be a float, not {_kind(value)}")
            if (self.scalar.name == "float32" and math.isfinite(value)
                    and abs(value) > FLOAT32_MAX):
                raise ArgumentRangeError(f"{where} = {value} does not fit a float32")
        else:
            if type(value) is not int:
                if isinstance(value, int) and not isinstance(value, bool):
                    return self.check(int(value), where)
                raise ArgumentTypeError(f"{where} must be an int ({self.scalar.name}), "
                                        f"not {_kind(value)}")
            assert self.minimum is not None and self.maximum is not None
            if value < self.minimum or value > self.maximum:
                raise ArgumentRangeError(f"{where} = {value} is out of range for "
                                         f"{self.scalar.name} [{self.minimum}, {self.maximum}]")
        return None

    def prepare(self, value: Any, where: str) -> int:
        self.check(value, where)
        return 0

    def write(self, owner: Any, key: str | int, value: Any, arena: Arena, keep: list[Any]) -> None:
        _set(owner, key, value)

    def read(self, value: Any) -> Any:
        return bool(value) if self.is_bool else value


class TextCodec(Codec):
    """str and bytes: a keel_bytes pointing into the Python object itself."""

    c_type = "keel_bytes"

    def __init__(self, ffi: Any, is_text: bool) -> None:
        self.ffi = ffi
        self.is_text = is_text

    def prepare(self, value: Any, where: str) -> int:
        if self.is_text:
            if type(value) is not str and not isinstance(value, str):
                raise ArgumentTypeError(f"{where} must be a str, not {_kind(value)}")
        elif not isinstance(value, bytes | bytearray | memoryview):
            raise ArgumentTypeError(f"{where} must be bytes (or a buffer), not {_kind(value)}")
        return 0

    def write(self, owner: Any, key: str | int, value: Any, arena: Arena, keep: list[Any]) -> None:
        target = _get(owner, key)
        if self.is_text:
            located = utf8_address(value)
            if located is None:
                encoded = value.encode("utf-8", "surrogatepass")
                pointer = self.ffi.from_buffer("uint8_t[]", encoded)
                keep.append(pointer)
                target.data, target.size = pointer, len(encoded)
            else:
                target.data = self.ffi.cast("uint8_t *", located[0])
                target.size = located[1]
        else:
            pointer = self.ffi.from_buffer("uint8_t[]", value)
            keep.append(pointer)
            target.data, target.size = pointer, len(pointer)

    def read(self, value: Any) -> Any:
        size = value.size
        data = self.ffi.unpack(self.ffi.cast("char *", value.data), size) if size else b""
        return data.decode("utf-8", "replace") if self.is_text else data


class ListCodec(Codec):
    c_type = "keel_list"

    def __init__(self, ffi: Any, element: Codec) -> None:
        self.ffi = ffi
        self.element = element
        self.element_size = ffi.sizeof(element.c_type)
        self.pointer_type = ffi.typeof(f"{element.c_type} *")
        self.scalar = element.scalar if isinstance(element, ScalarCodec) else None
        self.formats = BUFFER_FORMATS[self.scalar.name] if self.scalar else frozenset()

    def _in_place(self, value: Any) -> memoryview | None:
        kind = type(value)
        if self.scalar is None or kind is list or kind is tuple or isinstance(value, list | tuple):
            return None
        try:
            view = memoryview(value)
        except TypeError:
            return None
        return view

    def _all_valid(self, values: list[Any] | tuple[Any, ...]) -> bool:
        """The common case checked by C loops (all, min, max); False sends the caller to
        the per-element checks, which name the first bad element."""
        scalar = self.scalar
        if scalar is None or not values:
            return not values
        kinds = set(map(type, values))  # one C loop
        if scalar.name == "bool":
            return kinds == {bool}
        if scalar.python_type is float:
            return kinds <= {float, int} and scalar.name == "float64"
        assert scalar.minimum is not None and scalar.maximum is not None
        return kinds == {int} and min(values) >= scalar.minimum and max(values) <= scalar.maximum

    def prepare(self, value: Any, where: str) -> int:
        view = self._in_place(value)
        if view is not None:
            if view.format not in self.formats or view.itemsize != self.element_size:
                raise ArgumentTypeError(
                    f"{where}: a buffer of format {view.format!r} cannot be read as "
                    f"list[{self.scalar.name if self.scalar else '?'}]; expected format "
                    f"{'/'.join(sorted(self.formats))} with itemsize {self.element_size}")
            if not view.c_contiguous:
                raise ArgumentTypeError(f"{where}: the buffer must be C-contiguous")
            return 0
        if not isinstance(value, list | tuple):
            raise ArgumentTypeError(f"{where} must be a list, not {_kind(value)}")
        needed = align(len(value) * self.element_size)
        if isinstance(self.element, ScalarCodec):
            if not self._all_valid(value):
                check = self.element.check
                for index, item in enumerate(value):
                    check(item, f"{where}[{index}]")
        else:
            prepare = self.element.prepare
            for index, item in enumerate(value):
                needed += prepare(item, f"{where}[{index}]")
        if needed > MAX_ARGUMENT_BYTES:
            raise ArgumentRangeError(f"{where}: {len(value)} elements need {needed} bytes, "
                                     f"more than the {MAX_ARGUMENT_BYTES} allowed per call")
        return needed

    def write(self, owner: Any, key: str | int, value: Any, arena: Arena, keep: list[Any]) -> None:
        target = _get(owner, key)
        view = self._in_place(value)
        if view is not None:
            pointer = self.ffi.from_buffer(view)
            keep.append(pointer)
            target.data, target.size = pointer, len(view)
            return
        count = len(value)
        target.size = count
        if count == 0:
            target.data = self.ffi.NULL
            return
        elements = arena.alloc(count * self.element_size, self.pointer_type)
        target.data = elements
        if self.scalar is not None:
            elements[0:count] = value  # converted by cffi in C (values already checked)
            return
        write = self.element.write
        for index, item in enumerate(value):
            write(elements, index, item, arena, keep)

    def read(self, value: Any) -> Any:
        count = value.size
        if count == 0:
            return []
        elements = self.ffi.cast(f"{self.element.c_type} *", value.data)
        if self.scalar is not None:
            unpacked = self.ffi.unpack(elements, count)
            return [bool(item) for item in unpacked] if self.scalar.name == "bool" else unpacked
        read = self.element.read
        return [read(elements[index]) for index in range(count)]


class OptionalCodec(Codec):
    def __init__(self, inner: Codec, c_type: str) -> None:
        self.inner = inner
        self.c_type = c_type

    def prepare(self, value: Any, where: str) -> int:
        return 0 if value is None else self.inner.prepare(value, where)

    def write(self, owner: Any, key: str | int, value: Any, arena: Arena, keep: list[Any]) -> None:
        target = _get(owner, key)
        if value is None:
            target.present = 0
            return
        target.present = 1
        self.inner.write(target, "value", value, arena, keep)

    def read(self, value: Any) -> Any:
        return self.inner.read(value.value) if value.present else None


class StructCodec(Codec):
    """A dataclass as its C struct; checks and writes are compiled (keel.ffi.layout)."""

    def __init__(self, ffi: Any, struct_type: StructType, c_type: str) -> None:
        self.ffi = ffi
        self.python_class = struct_type.python_class
        self.c_type = c_type
        self.fields: list[tuple[str, Codec]] = []

    def compile(self) -> None:
        from keel.ffi.layout import compile_layout

        prepare, write, read = compile_layout(self.ffi, self.c_type, self.fields,
                                              self.python_class)
        assert read is not None
        self._prepare, self._write, self._read = prepare, write, read
        self._addressof = self.ffi.addressof

    def prepare(self, value: Any, where: str) -> int:
        return self._prepare(value, where)

    def write(self, owner: Any, key: str | int, value: Any, arena: Arena, keep: list[Any]) -> None:
        pointer = owner + key if type(key) is int else self._addressof(owner, key)
        self._write(pointer, value, arena, keep)

    def read(self, value: Any) -> Any:
        return self._read(self._addressof(value))

    def use_c_decoder(self, decode: Callable[[tuple[type, ...], int, int], Any],
                      classes: tuple[type, ...], index: int) -> None:
        """Read through the fast-path extension's C decoder (struct `index` of the
        interface, built as `classes` say): one C call builds the whole dataclass, nested
        values included."""
        addressof, cast = self.ffi.addressof, self.ffi.cast

        def read(value: Any) -> Any:
            return decode(classes, index, int(cast("uintptr_t", addressof(value))))

        self.read = read  # type: ignore[method-assign]


class CallbackRecord:
    """A Python callable handed to Go for one call, and the first exception it raised."""

    __slots__ = ("codec", "error", "function", "handle")

    def __init__(self, function: Callable[..., Any], codec: CallbackCodec) -> None:
        self.function = function
        self.codec = codec
        self.error: BaseException | None = None
        self.handle: Any = None


class CallbackCodec(Codec):
    c_type = "keel_callback"

    def __init__(self, ffi: Any, callback: CallbackType, trampoline: Any,
                 parameters: list[Codec], returns: ScalarCodec | None) -> None:
        self.ffi = ffi
        self.callback = callback
        self.trampoline = ffi.cast("void *", trampoline)
        self.parameters = parameters
        self.returns = returns

    def prepare(self, value: Any, where: str) -> int:
        if not callable(value):
            raise ArgumentTypeError(f"{where} must be callable, not {_kind(value)}")
        return 0

    def write(self, owner: Any, key: str | int, value: Any, arena: Arena, keep: list[Any]) -> None:
        record = CallbackRecord(value, self)
        record.handle = self.ffi.new_handle(record)
        keep.append(record)
        target = _get(owner, key)
        target.function = self.trampoline
        target.handle = record.handle

    def invoke(self, record: CallbackRecord, arguments: Any, result: Any) -> int:
        """Run from the Go thread that called; never raises into C (status 1 instead)."""
        try:
            values = [codec.read(getattr(arguments, f"p{index}"))
                      for index, codec in enumerate(self.parameters)]
            returned = record.function(*values)
            if self.returns is None:
                return 0
            self.returns.check(returned, "the callback's return value")
            result.value = returned
            return 0
        except BaseException as error:  # handed back to the caller, never lost in C
            if record.error is None:
                record.error = error
            return 1

    def read(self, value: Any) -> Any:
        raise CallbackError("callbacks cannot be returned from Go")


def raise_callback_errors(keep: list[Any]) -> None:
    for item in keep:
        if type(item) is CallbackRecord and item.error is not None:
            raise CallbackError("a Python callback raised while Go was calling it") from item.error


def make_codec(ffi: Any, lib: Any, type_ref: TypeRef, structs: dict[str, StructCodec]) -> Codec:
    match type_ref:
        case ScalarType(scalar):
            return ScalarCodec(scalar)
        case StringType():
            return TextCodec(ffi, True)
        case BytesType():
            return TextCodec(ffi, False)
        case ListType(element):
            return ListCodec(ffi, make_codec(ffi, lib, element, structs))
        case OptionalType(inner):
            return OptionalCodec(make_codec(ffi, lib, inner, structs), cdecl.c_type(type_ref))
        case StructType(_, fields):
            existing = structs.get(type_ref.name)
            if existing is not None:
                return existing
            codec = StructCodec(ffi, type_ref, cdecl.c_type(type_ref))
            structs[type_ref.name] = codec
            codec.fields = [(field.name, make_codec(ffi, lib, field.type, structs))
                            for field in fields]
            codec.compile()
            return codec
        case CallbackType(parameters, returns):
            parameter_codecs = [make_codec(ffi, lib, parameter, structs)
                                for parameter in parameters]
            return_codec = make_codec(ffi, lib, returns, structs) if returns else None
            assert return_codec is None or isinstance(return_codec, ScalarCodec)
            trampoline = getattr(lib, cdecl.callback_python_name(type_ref))
            return CallbackCodec(ffi, type_ref, trampoline, parameter_codecs, return_codec)
    raise AssertionError(type_ref)
