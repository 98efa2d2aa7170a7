"""Compiled layouts: check and write a group of fields (a dataclass, or a method's
arguments) with generated Python instead of a loop over codecs.

Why: a 256-byte struct is thirty-odd fields; checking and writing each through a codec
object costs microseconds of interpreter dispatch. The generated functions inline every
scalar check (type and range, one comparison chain each) and write all scalar fields with
one `struct.pack_into` whose format mirrors the C layout (padding included, offsets from
cffi, so from the compiler); only variable-size fields go through their codecs.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from typing import Any

from keel.ffi.codec import FLOAT32_MAX, Codec, OptionalCodec, ScalarCodec
from keel.ffi.errors import ArgumentTypeError

Prepare = Callable[[Any, str], int]
Write = Callable[[Any, Any, Any, list[Any]], None]
Read = Callable[[Any], Any]
# From this many scalar fields of one type on, a dataclass is checked with C loops over a
# tuple of its fields (set of types, min, max) instead of one Python test per field.
VECTORIZED_FIELDS = 4


def _uniform_condition(codecs: list[ScalarCodec]) -> str | None:
    """A condition true when the tuple `scalars` is fine, if every field has one type."""
    names = {codec.scalar.name for codec in codecs}
    if len(codecs) < VECTORIZED_FIELDS or len(names) != 1:
        return None
    codec = codecs[0]
    name = codec.scalar.name
    if name == "bool":
        return "set(map(type, scalars)) == BOOL_ONLY"
    if name == "float64":
        return "set(map(type, scalars)) <= FLOAT_OR_INT"
    if name == "float32":
        return None
    return (f"set(map(type, scalars)) == INT_ONLY and min(scalars) >= {codec.minimum} "
            f"and max(scalars) <= {codec.maximum}")


def _scalar_condition(codec: ScalarCodec, variable: str) -> str:
    """A Python condition true when `variable` needs the slow check (maybe an error)."""
    name = codec.scalar.name
    if name == "bool":
        return f"type({variable}) is not bool"
    if name == "float64":
        return f"type({variable}) is not float"
    if name == "float32":
        return (f"type({variable}) is not float or {variable} > FLOAT32_MAX "
                f"or {variable} < -FLOAT32_MAX")
    return (f"type({variable}) is not int or {variable} < {codec.minimum} "
            f"or {variable} > {codec.maximum}")


def packer_for(ffi: Any, c_type: str, fields: list[tuple[str, Codec]]) -> struct.Struct | None:
    """A struct.Struct covering the scalar fields at their C offsets (pad bytes between)."""
    scalars = sorted((ffi.offsetof(c_type, name), name, codec) for name, codec in fields
                     if isinstance(codec, ScalarCodec))
    if not scalars:
        return None
    layout, position = "=", 0
    for offset, _name, codec in scalars:
        assert isinstance(codec, ScalarCodec)
        if offset > position:
            layout += f"{offset - position}x"
        layout += codec.scalar.struct_code
        position = offset + ffi.sizeof(codec.c_type)
    return struct.Struct(layout)


def compile_layout(ffi: Any, c_type: str, fields: list[tuple[str, Codec]],
                   python_class: type | None) -> tuple[Prepare, Write, Read | None]:
    """(prepare, write, read) for fields read from a dataclass (python_class) or a tuple.

    prepare(value, where) -> arena bytes; write(pointer, value, arena, keep) where pointer
    is a `c_type *`; read(pointer) -> a python_class instance (dataclasses only).
    """
    from_object = python_class is not None
    namespace: dict[str, Any] = {
        "ArgumentTypeError": ArgumentTypeError, "FLOAT32_MAX": FLOAT32_MAX,
        "python_class": python_class, "buffer": ffi.buffer, "BOOL_ONLY": {bool},
        "FLOAT_OR_INT": {float, int}, "INT_ONLY": {int},
    }
    ordered = sorted(fields, key=lambda item: ffi.offsetof(c_type, item[0]))
    scalar_names = [name for name, codec in ordered if isinstance(codec, ScalarCodec)]
    packer = packer_for(ffi, c_type, fields)
    namespace["packer"] = packer
    index_of = {name: index for index, (name, _codec) in enumerate(fields)}

    def access(name: str) -> str:
        return f"value.{name}" if from_object else f"value[{index_of[name]}]"

    def label(name: str) -> str:
        return f"where + '.{name}'" if from_object else f"where + '({name})'"

    prepare = ["def prepare(value, where):"]
    if from_object:
        prepare += ["    if not isinstance(value, python_class):",
                    "        raise ArgumentTypeError(f'{where} must be a ' + "
                    "python_class.__name__ + ', not ' + type(value).__name__)"]
    prepare.append("    needed = 0")
    scalar_codecs = [codec for _name, codec in ordered if isinstance(codec, ScalarCodec)]
    uniform = _uniform_condition(scalar_codecs) if from_object else None
    indent = "    "
    if uniform is not None:
        namespace["get_scalars"] = operator.attrgetter(*scalar_names)
        prepare += ["    scalars = get_scalars(value)", f"    if not ({uniform}):"]
        indent = "        "  # the per-field checks below run only to name what is wrong
    for index, (name, codec) in enumerate(fields):
        namespace[f"codec{index}"] = codec
        if isinstance(codec, ScalarCodec):
            variable = f"v{index}"
            none_check = (f"raise ArgumentTypeError({label(name)} + "
                          "' is None but is not optional')")
            prepare += [f"{indent}{variable} = {access(name)}",
                        f"{indent}if {_scalar_condition(codec, variable)}:",
                        f"{indent}    if {variable} is None:",
                        f"{indent}        {none_check}",
                        f"{indent}    codec{index}.check({variable}, {label(name)})"]
    for index, (name, codec) in enumerate(fields):
        if isinstance(codec, ScalarCodec):
            continue
        variable = f"v{index}"
        prepare.append(f"    {variable} = {access(name)}")
        if not isinstance(codec, OptionalCodec):
            prepare += [f"    if {variable} is None:",
                        f"        raise ArgumentTypeError({label(name)} + "
                        "' is None but is not optional')"]
        prepare.append(f"    needed += codec{index}.prepare({variable}, {label(name)})")
    prepare.append("    return needed")

    write = ["def write(pointer, value, arena, keep):"]
    if packer is not None and uniform is not None:
        write.append("    packer.pack_into(buffer(pointer), 0, *get_scalars(value))")
    elif packer is not None:
        values = ", ".join(access(name) for name in scalar_names)
        write.append(f"    packer.pack_into(buffer(pointer), 0, {values})")
    for index, (name, codec) in enumerate(fields):
        if not isinstance(codec, ScalarCodec):
            write.append(f"    codec{index}.write(pointer, {name!r}, {access(name)}, "
                         "arena, keep)")
    if len(write) == 1:
        write.append("    pass")

    read: list[str] = []
    if from_object:
        read = ["def read(pointer):"]
        if packer is not None:
            read.append("    scalars = packer.unpack_from(buffer(pointer))")
        arguments = []
        for index, (name, codec) in enumerate(fields):
            if isinstance(codec, ScalarCodec):
                arguments.append(f"scalars[{scalar_names.index(name)}]")
            else:
                arguments.append(f"codec{index}.read(pointer.{name})")
        read.append(f"    return python_class({', '.join(arguments)})")

    source = "\n".join(prepare + write + read) + "\n"
    exec(compile(source, f"<keel.ffi layout {c_type}>", "exec"), namespace)
    return namespace["prepare"], namespace["write"], namespace.get("read")
