"""C decoders for dataclass results, compiled into the fast-path extension.

Why: a dataclass that Go returns (a `Record` with a str, a list of str and a nested optional
dataclass) decoded field by field through cffi cost 13-24 us on the loaded benchmark
machine, more than the Go call; the same walk in C, building the str/list/dataclass objects
directly from the result arena, cost 7 us there, most of it the dataclasses' own __init__.
Sync and async calls of every method (not only fast-path ones) use it through their
StructCodec, so a nested result is decoded in one C call.

Go wrote the memory read here (the result arena of the call, in the layout of the shared
header), so sizes are Go's own; a negative size is refused rather than trusted.
"""

from __future__ import annotations

from keel.ffi import cdecl
from keel.ffi.model import (
    BytesType,
    Interface,
    ListType,
    OptionalType,
    ScalarType,
    StringType,
    StructType,
    TypeRef,
)


def _name(type_ref: TypeRef) -> str:
    match type_ref:
        case ScalarType(scalar):
            return f"keel_value_{scalar.name}"
        case StringType():
            return "keel_value_str"
        case BytesType():
            return "keel_value_bytes"
        case ListType(element):
            return f"{_name(element)}_list"
        case OptionalType(inner):
            return f"{_name(inner)}_optional"
        case StructType():
            return f"keel_value_struct_{type_ref.name}"
    raise AssertionError(type_ref)


def _scalar_body(scalar_type: ScalarType) -> str:
    scalar = scalar_type.scalar
    if scalar.name == "bool":
        return "    return PyBool_FromLong(*value != 0);"
    if scalar.python_type is float:
        return "    return PyFloat_FromDouble((double)*value);"
    if scalar.name == "uint64":
        return "    return PyLong_FromUnsignedLongLong((unsigned long long)*value);"
    return "    return PyLong_FromLongLong((long long)*value);"


SIZE_CHECK = """    if (value->size < 0) {
        PyErr_Format(PyExc_ValueError, "keel.ffi: Go returned a negative size %lld",
                     (long long)value->size);
        return NULL;
    }"""


class _Decoders:
    """Emits one static C function per type a dataclass result can hold, each once."""

    def __init__(self, structs: list[StructType]) -> None:
        self.structs = structs
        self.prototypes: list[str] = []
        self.bodies: list[str] = []
        self.done: set[str] = set()

    def emit(self, type_ref: TypeRef) -> str:
        name = _name(type_ref)
        if name in self.done:
            return name
        self.done.add(name)
        c_type = cdecl.c_type(type_ref)
        signature = f"static PyObject *{name}(PyObject *classes, const {c_type} *value)"
        self.prototypes.append(signature + ";")
        self.bodies.append(f"{signature} {{\n{self._body(type_ref)}\n}}\n")
        return name

    def _body(self, type_ref: TypeRef) -> str:
        match type_ref:
            case ScalarType():
                return _scalar_body(type_ref)
            case StringType():
                return (SIZE_CHECK + "\n    return PyUnicode_DecodeUTF8("
                        "value->size ? (const char *)value->data : \"\", "
                        "(Py_ssize_t)value->size, \"replace\");")
            case BytesType():
                return (SIZE_CHECK + "\n    return PyBytes_FromStringAndSize("
                        "value->size ? (const char *)value->data : \"\", "
                        "(Py_ssize_t)value->size);")
            case ListType(element):
                element_name = self.emit(element)
                element_type = cdecl.c_type(element)
                return "\n".join([
                    SIZE_CHECK,
                    f"    const {element_type} *elements = (const {element_type} *)value->data;",
                    "    PyObject *list = PyList_New((Py_ssize_t)value->size);",
                    "    if (list == NULL) return NULL;",
                    "    for (int64_t index = 0; index < value->size; index++) {",
                    f"        PyObject *item = {element_name}(classes, &elements[index]);",
                    "        if (item == NULL) {",
                    "            Py_DECREF(list);",
                    "            return NULL;",
                    "        }",
                    "        PyList_SET_ITEM(list, (Py_ssize_t)index, item);",
                    "    }",
                    "    return list;"])
            case OptionalType(inner):
                inner_name = self.emit(inner)
                return ("    if (!value->present) Py_RETURN_NONE;\n"
                        f"    return {inner_name}(classes, &value->value);")
            case StructType():
                index = self.structs.index(type_ref)
                count = len(type_ref.fields)
                lines = [f"    PyObject *fields[{count}] = {{NULL}};",
                         "    PyObject *made = NULL;"]
                for position, field in enumerate(type_ref.fields):
                    field_name = self.emit(field.type)
                    lines += [f"    fields[{position}] = {field_name}(classes, "
                              f"&value->{field.name});",
                              f"    if (fields[{position}] == NULL) goto done;"]
                lines += [f"    made = PyObject_Vectorcall(PyTuple_GET_ITEM(classes, {index}), "
                          f"fields, {count}, NULL);",
                          "done:",
                          f"    for (int held = 0; held < {count}; held++) "
                          "Py_XDECREF(fields[held]);",
                          "    return made;"]
                return "\n".join(lines)
        raise AssertionError(type_ref)


def source(interface: Interface) -> str:
    """C for `_decode(classes, struct_index, address)`: `classes` is the library's tuple of
    its dataclasses in `interface.structs` order. Why passed per call, not stored in the
    module: the extension is loaded once per process while every opened library has its
    own model (its interface module may have been imported again), so a stored table would
    belong to whichever library opened last."""
    structs = list(interface.structs)
    decoders = _Decoders(structs)
    for struct in structs:
        decoders.emit(struct)
    cases = "\n".join(
        f"    case {index}: return {_name(struct)}(classes, "
        f"(const {cdecl.c_type(struct)} *)address);"
        for index, struct in enumerate(structs))
    return f"""
#define KEEL_STRUCTS {len(structs)}

{chr(10).join(decoders.prototypes)}

{chr(10).join(decoders.bodies)}
static PyObject *keel_decode(PyObject *self, PyObject *const *args, Py_ssize_t count) {{
    if (count != 3 || !PyTuple_CheckExact(args[0])
            || PyTuple_GET_SIZE(args[0]) != KEEL_STRUCTS) {{
        PyErr_Format(PyExc_TypeError, "_decode(classes: tuple of %d dataclasses, "
                     "struct_index, address)", KEEL_STRUCTS);
        return NULL;
    }}
    PyObject *classes = args[0];
    long index = PyLong_AsLong(args[1]);
    if (index == -1 && PyErr_Occurred()) return NULL;
    void *address = PyLong_AsVoidPtr(args[2]);
    if (address == NULL) {{
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "keel.ffi: _decode of a NULL address");
        return NULL;
    }}
    switch (index) {{
{cases}
    }}
    PyErr_Format(PyExc_ValueError, "keel.ffi: no dataclass %ld to decode", index);
    return NULL;
}}
"""
