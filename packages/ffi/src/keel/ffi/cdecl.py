"""C declarations shared by the Go side (cgo preamble header) and the cffi binding (cdef).

Why one source: cgo and cffi must agree byte for byte on every struct; both read these
declarations, so the layout is whatever gcc decides, once.
"""

from __future__ import annotations

from keel.ffi.model import (
    BytesType,
    CallbackType,
    Interface,
    ListType,
    Method,
    OptionalType,
    ScalarType,
    StringType,
    StructType,
    TypeRef,
)

COMMON_DECLARATIONS = """\
typedef struct { const uint8_t *data; int64_t size; } keel_bytes;
typedef struct { void *data; int64_t size; } keel_list;
typedef struct { void *function; void *handle; } keel_callback;
typedef struct { uint64_t call; int64_t status; } keel_completion;
"""

RUNTIME_EXPORTS = """\
int64_t keel_completer_open(int32_t fd);
void keel_completer_close(int64_t completer);
int64_t keel_completer_drain(int64_t completer, keel_completion *out, int64_t capacity);
void keel_cancel(uint64_t call);
int64_t keel_in_flight(void);
char *keel_error_take(int64_t error);
void keel_free(void *pointer);
"""


def c_type(type_ref: TypeRef) -> str:
    """The C type name that holds a value of `type_ref` inline."""
    match type_ref:
        case ScalarType(scalar):
            return scalar.c_type
        case StringType() | BytesType():
            return "keel_bytes"
        case ListType():
            return "keel_list"
        case OptionalType():
            return f"keel_{type_ref.key}"
        case StructType():
            return f"keel_s_{type_ref.name}"
        case CallbackType():
            return "keel_callback"
    raise AssertionError(type_ref)


def args_type(interface: Interface, method: Method) -> str:
    return f"keel_{interface.name}_{method.name}_args"


def result_type(interface: Interface, method: Method) -> str:
    return f"keel_{interface.name}_{method.name}_result"


def export_name(interface: Interface, method: Method) -> str:
    suffix = "_async" if method.is_async else ""
    return f"keel_{interface.name}_{method.name}{suffix}"


def callback_python_name(callback: CallbackType) -> str:
    return f"keel_{callback.key}_py"


def _optionals(interface: Interface) -> list[OptionalType]:
    found: dict[str, OptionalType] = {}

    def visit(type_ref: TypeRef) -> None:
        match type_ref:
            case OptionalType(inner):
                visit(inner)
                found.setdefault(type_ref.key, type_ref)
            case ListType(element):
                visit(element)

    for struct in interface.structs:
        for field in struct.fields:
            visit(field.type)
    for method in interface.methods:
        for parameter in method.parameters:
            visit(parameter.type)
        if method.returns is not None:
            visit(method.returns)
    return list(found.values())


def type_declarations(interface: Interface) -> str:
    """Every typedef the interface needs, in an order C accepts (dependencies first)."""
    lines = [COMMON_DECLARATIONS]
    optionals = _optionals(interface)
    emitted: set[str] = set()

    def emit_optional(optional: OptionalType) -> None:
        if optional.key in emitted:
            return
        emitted.add(optional.key)
        lines.append(f"typedef struct {{ uint8_t present; {c_type(optional.inner)} value; }} "
                     f"{c_type(optional)};")

    def needed_optionals(type_ref: TypeRef) -> None:
        if isinstance(type_ref, OptionalType):
            needed_optionals(type_ref.inner)
            emit_optional(type_ref)

    for optional in optionals:  # optionals of scalars, strings and lists need no struct first
        if not _holds_struct(optional):
            emit_optional(optional)
    for struct in interface.structs:
        for field in struct.fields:
            needed_optionals(field.type)
        body = " ".join(f"{c_type(field.type)} {field.name};" for field in struct.fields)
        lines.append(f"typedef struct {{ {body} }} {c_type(struct)};")
    for optional in optionals:
        emit_optional(optional)
    for callback in interface.callbacks:
        parameters = " ".join(f"{c_type(parameter)} p{index};"
                              for index, parameter in enumerate(callback.parameters))
        returned = c_type(callback.returns) if callback.returns else "uint8_t"
        lines.append(f"typedef struct {{ {parameters or 'uint8_t unused;'} }} "
                     f"keel_{callback.key}_args;")
        lines.append(f"typedef struct {{ {returned} value; }} keel_{callback.key}_result;")
    for method in interface.methods:
        if method.parameters:
            body = " ".join(f"{c_type(parameter.type)} {parameter.name};"
                            for parameter in method.parameters)
            lines.append(f"typedef struct {{ {body} }} {args_type(interface, method)};")
        if method.returns is not None:
            lines.append(f"typedef struct {{ void *arena; {c_type(method.returns)} value; }} "
                         f"{result_type(interface, method)};")
    return "\n".join(lines) + "\n"


def _holds_struct(type_ref: TypeRef) -> bool:
    match type_ref:
        case StructType():
            return True
        case OptionalType(inner):
            return _holds_struct(inner)
    return False


def export_parameters(interface: Interface, method: Method) -> list[tuple[str, str]]:
    """(C type, name) of each parameter of the method's export."""
    parameters: list[tuple[str, str]] = []
    if method.is_async:
        parameters += [("int64_t", "completer"), ("uint64_t", "call")]
    if method.parameters:
        parameters.append((f"{args_type(interface, method)} *", "args"))
    if method.returns is not None:
        parameters.append((f"{result_type(interface, method)} *", "result"))
    return parameters


def export_prototypes(interface: Interface) -> str:
    lines = []
    for method in interface.methods:
        parameters = ", ".join(f"{kind} {name}".replace("* ", "*")
                               for kind, name in export_parameters(interface, method)) or "void"
        lines.append(f"int64_t {export_name(interface, method)}({parameters});")
    return "\n".join(lines) + "\n" + RUNTIME_EXPORTS


def header(interface: Interface) -> str:
    """The C header the Go package includes: typedefs and the callback trampolines."""
    guard = f"KEEL_{interface.name.upper()}_H"
    trampolines = []
    for callback in interface.callbacks:
        trampolines.append(
            f"typedef int32_t (*keel_{callback.key}_fn)(void *, keel_{callback.key}_args *, "
            f"keel_{callback.key}_result *);\n"
            f"static inline int32_t keel_invoke_{callback.key}(void *function, void *handle, "
            f"keel_{callback.key}_args *args, keel_{callback.key}_result *result) {{\n"
            f"    return ((keel_{callback.key}_fn)function)(handle, args, result);\n}}")
    return (f"/* Generated by keel ffi generate: do not edit. */\n#ifndef {guard}\n"
            f"#define {guard}\n#include <stdint.h>\n#include <stdlib.h>\n\n"
            f"{type_declarations(interface)}\n" + "\n".join(trampolines)
            + f"\n#endif /* {guard} */\n")


def cffi_cdef(interface: Interface) -> str:
    """What the cffi binding declares: the typedefs, the exports and the Python callbacks."""
    externs = [
        f'extern "Python" int32_t {callback_python_name(callback)}(void *, '
        f"keel_{callback.key}_args *, keel_{callback.key}_result *);"
        for callback in interface.callbacks
    ]
    return type_declarations(interface) + export_prototypes(interface) + "\n".join(externs) + "\n"
