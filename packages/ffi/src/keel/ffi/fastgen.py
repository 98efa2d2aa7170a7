"""The fast path: a tiny CPython extension for methods whose parameters are scalars, str or
bytes and whose result is a scalar or None (the shape of the cheapest, most frequent calls).

Why: through cffi, the cheapest call Python can make costs ~100 ns and a Python wrapper
that checks Go's status adds ~50 ns more, on top of cgo's own ~60-80 ns. A vectorcall C
function converts exact ints/floats/bools itself, releases the GIL around the cgo export
and raises on a non-zero status, with no Python frame in between. Anything unusual (a
wrong type, an out-of-range value, an int subclass, keywords) is handed to the method's
checked Python path, so errors and their messages are the same on both paths.
"""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

from keel.ffi import cdecl, fastdecode
from keel.ffi.errors import BuildError
from keel.ffi.model import (
    BytesType,
    Interface,
    ListType,
    Method,
    ScalarType,
    StringType,
    StructType,
    TypeRef,
)

COMPILE_TIMEOUT_SECONDS = 300
LONG_LONG_MAX = (1 << 63) - 1


FAST_VALUES = (ScalarType, StringType, BytesType)


def _scalar_list(type_ref: TypeRef) -> bool:
    return isinstance(type_ref, ListType) and isinstance(type_ref.element, ScalarType)


def _flat_struct(type_ref: TypeRef) -> bool:
    """A dataclass of scalars, str, bytes and lists of scalars: convertible in C."""
    return isinstance(type_ref, StructType) and all(
        isinstance(field.type, FAST_VALUES) or _scalar_list(field.type)
        for field in type_ref.fields)


def eligible(method: Method) -> bool:
    return (not method.is_async
            and all(isinstance(parameter.type, FAST_VALUES) or _flat_struct(parameter.type)
                    or _scalar_list(parameter.type) for parameter in method.parameters)
            and (method.returns is None or isinstance(method.returns, ScalarType)))


class _Context:
    """Counters for one generated function: held references and owned buffers."""

    def __init__(self, classes: list[StructType], names: list[str]) -> None:
        self.classes = classes
        self.names = names
        self.references = 0
        self.buffers = 0

    def class_index(self, struct: StructType) -> int:
        if struct not in self.classes:
            self.classes.append(struct)
        return self.classes.index(struct)

    def name_index(self, name: str) -> int:
        if name not in self.names:
            self.names.append(name)
        return self.names.index(name)


def _convert_struct(item: str, struct: StructType, target: str, context: _Context) -> str:
    """Exact type, then each attribute (held until the call returns) into its C field."""
    lines = [f"    if (Py_TYPE({item}) != (PyTypeObject *)keel_classes"
             f"[{context.class_index(struct)}]) goto fallback;"]
    for field in struct.fields:
        reference = f"references[{context.references}]"
        context.references += 1
        lines += [f"    {reference} = PyObject_GetAttr({item}, "
                  f"keel_names[{context.name_index(field.name)}]);",
                  f"    if ({reference} == NULL) {{",
                  "        PyErr_Clear();",
                  "        goto fallback;",
                  "    }"]
        field_target = f"{target}.{field.name}"
        if isinstance(field.type, ListType):
            lines.append(_convert_list(reference, field.type, field_target, context).rstrip())
        else:
            lines.append(_convert_item(reference, field.type, field_target, context).rstrip())
    return "\n".join(lines) + "\n"


def _convert_list(item: str, list_type: ListType, target: str, context: _Context) -> str:
    """An exact list of scalars, converted into one PyMem buffer freed after the call
    (array.array and other buffers take the checked path, which reads them in place)."""
    assert isinstance(list_type.element, ScalarType)
    element = list_type.element.scalar.c_type
    owned = f"buffers[{context.buffers}]"
    context.buffers += 1
    return "\n".join([
        f"    if (!PyList_CheckExact({item})) goto fallback;",
        "    {",
        f"        Py_ssize_t length = PyList_GET_SIZE({item});",
        f"        {element} *elements = NULL;",
        "        if (length > 0) {",
        f"            elements = PyMem_Malloc((size_t)length * sizeof({element}));",
        "            if (elements == NULL) goto fallback;",
        f"            {owned} = elements;",
        "        }",
        "        for (Py_ssize_t position = 0; position < length; position++) {",
        f"            PyObject *element = PyList_GET_ITEM({item}, position);",
        _convert_item("element", list_type.element, "elements[position]", context).rstrip(),
        "        }",
        f"        {target}.data = elements;",
        f"        {target}.size = (int64_t)length;",
        "    }"]) + "\n"


def _convert(index: int, parameter_type: TypeRef, target: str, context: _Context) -> str:
    return _convert_item(f"args[{index}]", parameter_type, target, context)


def _convert_item(item: str, parameter_type: TypeRef, target: str, context: _Context) -> str:
    """C statements converting the object `item` into target, or `goto fallback`."""
    if isinstance(parameter_type, StructType):
        return _convert_struct(item, parameter_type, target, context)
    if isinstance(parameter_type, ListType):
        return _convert_list(item, parameter_type, target, context)
    if isinstance(parameter_type, BytesType):
        # Exact bytes only (other buffers take the checked path); read in place.
        return (f"    if (!PyBytes_CheckExact({item})) goto fallback;\n"
                f"    {target}.data = (const uint8_t *)PyBytes_AS_STRING({item});\n"
                f"    {target}.size = (int64_t)PyBytes_GET_SIZE({item});\n")
    if isinstance(parameter_type, StringType):
        # The str's own UTF-8 (in place for ASCII, cached in the object otherwise).
        return (f"    if (!PyUnicode_CheckExact({item})) goto fallback;\n"
                "    {\n        Py_ssize_t size;\n"
                f"        const char *text = PyUnicode_AsUTF8AndSize({item}, &size);\n"
                "        if (text == NULL) {\n            PyErr_Clear();\n"
                "            goto fallback;\n        }\n"
                f"        {target}.data = (const uint8_t *)text;\n"
                f"        {target}.size = (int64_t)size;\n    }}\n")
    assert isinstance(parameter_type, ScalarType)
    scalar = parameter_type.scalar
    if scalar.name == "bool":
        return (f"    if ({item} == Py_True) {target} = 1;\n"
                f"    else if ({item} == Py_False) {target} = 0;\n"
                "    else goto fallback;\n")
    if scalar.python_type is float:
        limit = ("    if (isfinite(number) && fabs(number) > FLT_MAX) goto fallback;\n"
                 if scalar.name == "float32" else "")
        return ("    {\n        double number;\n"
                f"        if (PyFloat_CheckExact({item})) number = PyFloat_AS_DOUBLE({item});\n"
                f"        else if (PyLong_CheckExact({item})) {{\n"
                f"            number = PyLong_AsDouble({item});\n"
                "            if (number == -1.0 && PyErr_Occurred()) {\n"
                "                PyErr_Clear();\n                goto fallback;\n            }\n"
                "        } else goto fallback;\n"
                f"    {limit}        {target} = ({scalar.c_type})number;\n    }}\n")
    if scalar.name == "uint64":
        return (f"    if (!PyLong_CheckExact({item})) goto fallback;\n"
                f"    {{\n        unsigned long long number = PyLong_AsUnsignedLongLong({item});\n"
                "        if (number == (unsigned long long)-1 && PyErr_Occurred()) "
                "{ PyErr_Clear(); goto fallback; }\n"
                f"        {target} = (uint64_t)number;\n    }}\n")
    return (f"    if (!PyLong_CheckExact({item})) goto fallback;\n"
            f"    {{\n        int overflow = 0;\n"
            f"        long long number = PyLong_AsLongLongAndOverflow({item}, &overflow);\n"
            "        if (overflow || (number == -1 && PyErr_Occurred())) "
            "{ PyErr_Clear(); goto fallback; }\n"
            f"        if (number < {_c_integer(scalar.minimum)} || "
            f"number > {_c_integer(scalar.maximum)}) goto fallback;\n"
            f"        {target} = ({scalar.c_type})number;\n    }}\n")


def _c_integer(value: int | None) -> str:
    """A long long literal; -2**63 is written as an expression (the literal 2**63 does not
    fit a long long, so `-9223372036854775808LL` is not one)."""
    assert value is not None
    if value < -LONG_LONG_MAX:
        return f"(-{LONG_LONG_MAX}LL - 1)"
    return f"{value}LL"


def _result(returns: ScalarType | None) -> str:
    if returns is None:
        return "    returned = Py_NewRef(Py_None);\n"
    scalar = returns.scalar
    if scalar.name == "bool":
        return "    returned = PyBool_FromLong(result.value != 0);\n"
    if scalar.python_type is float:
        return "    returned = PyFloat_FromDouble((double)result.value);\n"
    if scalar.name == "uint64":
        return "    returned = PyLong_FromUnsignedLongLong(result.value);\n"
    return "    returned = PyLong_FromLongLong((long long)result.value);\n"


def fast_classes(interface: Interface) -> list[type]:
    """The dataclasses the fast path checks, in the order its C table holds them."""
    classes: list[type] = []
    for method in interface.methods:
        if eligible(method):
            for parameter in method.parameters:
                if (isinstance(parameter.type, StructType)
                        and parameter.type.python_class not in classes):
                    classes.append(parameter.type.python_class)
    return classes


def _function(interface: Interface, method: Method, index: int, context: _Context) -> str:
    export = cdecl.export_name(interface, method)
    context.references = context.buffers = 0
    body = []
    call_arguments = []
    if method.parameters:
        body.append(f"    {cdecl.args_type(interface, method)} arguments;")
        call_arguments.append("&arguments")
    if method.returns is not None:
        body.append(f"    {cdecl.result_type(interface, method)} result;")
        body.append("    result.arena = NULL;")
        call_arguments.append("&result")
    for position, parameter in enumerate(method.parameters):
        body.append(_convert(position, parameter.type, f"arguments.{parameter.name}",
                             context).rstrip())
    returns = method.returns if isinstance(method.returns, ScalarType) else None
    references, buffers = context.references, context.buffers
    held = ([f"    PyObject *references[{references}] = {{NULL}};"] if references else []) + (
        [f"    void *buffers[{buffers}] = {{NULL}};"] if buffers else [])
    release = ([f"    for (int held = 0; held < {references}; held++) "
                "Py_XDECREF(references[held]);"] if references else []) + (
        [f"    for (int held = 0; held < {buffers}; held++) PyMem_Free(buffers[held]);"]
        if buffers else [])
    lines = [f"static PyObject *fast_{method.name}(PyObject *self, PyObject *const *args, "
             "size_t nargsf, PyObject *kwnames) {",
             *held,
             "    PyObject *returned = NULL;",
             "    int fell_back = 0;",
             "    int64_t status;",
             "    Py_ssize_t count = PyVectorcall_NARGS(nargsf);",
             f"    if (kwnames != NULL || count != {len(method.parameters)}) goto fallback;",
             *body,
             "    Py_BEGIN_ALLOW_THREADS",
             f"    status = {export}({', '.join(call_arguments)});",
             "    Py_END_ALLOW_THREADS",
             "    if (status) {",
             f"        returned = keel_raise({index}, status);",
             "        goto done;",
             "    }",
             _result(returns).rstrip(),
             "    goto done;",
             "fallback:",
             "    fell_back = 1;",
             "done:",
             *release,
             f"    if (fell_back) return keel_fallback({index}, args, nargsf, kwnames);",
             "    return returned;",
             "}", ""]
    return "\n".join(lines)


MODULE_PLACEHOLDER = "@MODULE@"


def source(interface: Interface, library_header: str) -> str:
    """The module's C source; the build puts its module name in place of @MODULE@."""
    module = MODULE_PLACEHOLDER
    methods = [method for method in interface.methods if eligible(method)]
    context = _Context([], [])
    functions = "\n".join(_function(interface, method, index, context)
                          for index, method in enumerate(methods))
    assert [struct.python_class for struct in context.classes] == fast_classes(interface)
    names = ", ".join(f'"{name}"' for name in context.names) or "NULL"
    table = "\n".join(f'    {{"{method.name}", (PyCFunction)(void (*)(void))fast_{method.name}, '
                      "METH_FASTCALL | METH_KEYWORDS, NULL},"
                      for method in methods)
    return f"""/* Generated by keel.ffi: the scalar fast path for {interface.name}. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include "{library_header}"

#define KEEL_METHODS {len(methods)}
#define KEEL_CLASSES {len(context.classes)}
#define KEEL_NAMES {len(context.names)}
/* The dataclasses (exact types) and interned field names the conversions use. */
static PyObject *keel_classes[KEEL_CLASSES > 0 ? KEEL_CLASSES : 1];
static PyObject *keel_names[KEEL_NAMES > 0 ? KEEL_NAMES : 1];
static const char *keel_name_texts[KEEL_NAMES > 0 ? KEEL_NAMES : 1] = {{{names}}};
/* Per method: the checked Python path (used for anything unusual) and the error factory. */
static PyObject *keel_fallbacks[KEEL_METHODS > 0 ? KEEL_METHODS : 1];
static PyObject *keel_error_factories[KEEL_METHODS > 0 ? KEEL_METHODS : 1];

static PyObject *keel_fallback(int index, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames) {{
    PyObject *fallback = keel_fallbacks[index];
    if (fallback == NULL) {{
        PyErr_SetString(PyExc_RuntimeError, "keel.ffi fast path used before setup");
        return NULL;
    }}
    return PyObject_Vectorcall(fallback, args, nargsf, kwnames);
}}

static PyObject *keel_raise(int index, int64_t status) {{
    PyObject *error = PyObject_CallFunction(keel_error_factories[index], "L", (long long)status);
    if (error != NULL) {{
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
    }}
    return NULL;
}}

{functions}
{fastdecode.source(interface)}
static PyObject *keel_setup(PyObject *self, PyObject *arguments) {{
    PyObject *fallbacks, *factories, *classes;
    if (!PyArg_ParseTuple(arguments, "O!O!O!", &PyTuple_Type, &fallbacks, &PyTuple_Type,
                          &factories, &PyTuple_Type, &classes))
        return NULL;
    if (PyTuple_GET_SIZE(classes) != KEEL_CLASSES) {{
        PyErr_SetString(PyExc_ValueError, "keel.ffi fast path: wrong number of classes");
        return NULL;
    }}
    for (int index = 0; index < KEEL_CLASSES; index++) {{
        PyObject *cls = PyTuple_GET_ITEM(classes, index);
        Py_INCREF(cls);
        Py_XSETREF(keel_classes[index], cls);
    }}
    if (PyTuple_GET_SIZE(fallbacks) != KEEL_METHODS
            || PyTuple_GET_SIZE(factories) != KEEL_METHODS) {{
        PyErr_SetString(PyExc_ValueError, "keel.ffi fast path: wrong number of methods");
        return NULL;
    }}
    for (int index = 0; index < KEEL_METHODS; index++) {{
        PyObject *fallback = PyTuple_GET_ITEM(fallbacks, index);
        PyObject *factory = PyTuple_GET_ITEM(factories, index);
        Py_INCREF(fallback);
        Py_INCREF(factory);
        Py_XSETREF(keel_fallbacks[index], fallback);
        Py_XSETREF(keel_error_factories[index], factory);
    }}
    Py_RETURN_NONE;
}}

static PyMethodDef keel_methods[] = {{
{table}
    {{"_setup", keel_setup, METH_VARARGS, NULL}},
    {{"_decode", (PyCFunction)(void (*)(void))keel_decode, METH_FASTCALL, NULL}},
    {{NULL, NULL, 0, NULL}}
}};

static struct PyModuleDef keel_module = {{
    PyModuleDef_HEAD_INIT, "{module}", NULL, -1, keel_methods
}};

PyMODINIT_FUNC PyInit_{module}(void) {{
    for (int index = 0; index < KEEL_NAMES; index++) {{
        keel_names[index] = PyUnicode_InternFromString(keel_name_texts[index]);
        if (keel_names[index] == NULL) return NULL;
    }}
    return PyModule_Create(&keel_module);
}}
"""


def compile_extension(source_text: str, module: str, output: Path, library_name: str) -> Path:
    """Compile the fast-path module into output/ with gcc, linked to the Go library."""
    source_path = output / f"{module}.c"
    source_path.write_text(source_text.replace(MODULE_PLACEHOLDER, module))
    target = output / f"{module}{sysconfig.get_config_var('EXT_SUFFIX')}"
    command = ["gcc", "-O2", "-fPIC", "-shared", "-Wall", "-Wno-unused-label",
               "-Wno-unused-function", f"-I{sysconfig.get_paths()['include']}", f"-I{output}",
               str(source_path), f"-L{output}", f"-l{library_name}", "-Wl,-rpath,$ORIGIN",
               "-o", str(target)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False,
                                   timeout=COMPILE_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildError(f"compiling the fast path {module} failed: {error}") from error
    if completed.returncode != 0:
        raise BuildError(f"compiling the fast path {module} failed:\n{completed.stderr}")
    return target
