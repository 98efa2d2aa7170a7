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

from keel.ffi import cdecl
from keel.ffi.errors import BuildError
from keel.ffi.model import BytesType, Interface, Method, ScalarType, StringType, TypeRef

COMPILE_TIMEOUT_SECONDS = 300


FAST_PARAMETERS = (ScalarType, StringType, BytesType)


def eligible(method: Method) -> bool:
    return (not method.is_async
            and all(isinstance(parameter.type, FAST_PARAMETERS)
                    for parameter in method.parameters)
            and (method.returns is None or isinstance(method.returns, ScalarType)))


def _convert(index: int, parameter_type: TypeRef, target: str) -> str:
    """C statements converting args[index] into target, or `goto fallback`."""
    item = f"args[{index}]"
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
            f"        if (number < {scalar.minimum}LL || number > {scalar.maximum}LL) "
            "goto fallback;\n"
            f"        {target} = ({scalar.c_type})number;\n    }}\n")


def _result(returns: ScalarType | None) -> str:
    if returns is None:
        return "    Py_RETURN_NONE;\n"
    scalar = returns.scalar
    if scalar.name == "bool":
        return "    return PyBool_FromLong(result.value != 0);\n"
    if scalar.python_type is float:
        return "    return PyFloat_FromDouble((double)result.value);\n"
    if scalar.name == "uint64":
        return "    return PyLong_FromUnsignedLongLong(result.value);\n"
    return "    return PyLong_FromLongLong((long long)result.value);\n"


def _function(interface: Interface, method: Method, index: int) -> str:
    export = cdecl.export_name(interface, method)
    lines = [f"static PyObject *fast_{method.name}(PyObject *self, PyObject *const *args, "
             "size_t nargsf, PyObject *kwnames) {",
             "    Py_ssize_t count = PyVectorcall_NARGS(nargsf);",
             f"    if (kwnames != NULL || count != {len(method.parameters)}) goto fallback;"]
    call_arguments = []
    if method.parameters:
        lines.append(f"    {cdecl.args_type(interface, method)} arguments;")
        call_arguments.append("&arguments")
    if method.returns is not None:
        lines.append(f"    {cdecl.result_type(interface, method)} result;")
        lines.append("    result.arena = NULL;")
        call_arguments.append("&result")
    for position, parameter in enumerate(method.parameters):
        lines.append(_convert(position, parameter.type, f"arguments.{parameter.name}").rstrip())
    lines += ["    int64_t status;",
              "    Py_BEGIN_ALLOW_THREADS",
              f"    status = {export}({', '.join(call_arguments)});",
              "    Py_END_ALLOW_THREADS",
              f"    if (status) return keel_raise({index}, status);"]
    returns = method.returns if isinstance(method.returns, ScalarType) else None
    lines.append(_result(returns).rstrip())
    lines += ["fallback:",
              f"    return keel_fallback({index}, args, nargsf, kwnames);", "}", ""]
    return "\n".join(lines)


MODULE_PLACEHOLDER = "@MODULE@"


def source(interface: Interface, library_header: str) -> str:
    """The module's C source; the build puts its module name in place of @MODULE@."""
    module = MODULE_PLACEHOLDER
    methods = [method for method in interface.methods if eligible(method)]
    functions = "\n".join(_function(interface, method, index)
                          for index, method in enumerate(methods))
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
static PyObject *keel_setup(PyObject *self, PyObject *arguments) {{
    PyObject *fallbacks, *factories;
    if (!PyArg_ParseTuple(arguments, "O!O!", &PyTuple_Type, &fallbacks, &PyTuple_Type,
                          &factories))
        return NULL;
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
    {{NULL, NULL, 0, NULL}}
}};

static struct PyModuleDef keel_module = {{
    PyModuleDef_HEAD_INIT, "{module}", NULL, -1, keel_methods
}};

PyMODINIT_FUNC PyInit_{module}(void) {{ return PyModule_Create(&keel_module); }}
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
