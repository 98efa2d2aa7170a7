"""Read integer macros straight out of the system's kernel headers at build time.

Why: keel must never copy a kernel constant by hand. The C preprocessor lists every macro
the headers define (`cc -dM -E`); we keep the object-like ones whose names start with the
prefixes a module asks for, and hand them to cffi as `#define NAME ...` so that the
compiler, not us, works out each value.
"""

from __future__ import annotations

import os
import re
import subprocess
import sysconfig

_OBJECT_LIKE_DEFINE = re.compile(r"^#define ([A-Z_][A-Z0-9_]*) (.+)$")


def _compiler() -> str:
    configured = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return configured.split()[0]


def _preprocess(includes: list[str], *flags: str) -> str:
    """The C preprocessor's output for a file that includes `includes`."""
    source = "".join(f"#include <{header}>\n" for header in includes)
    return subprocess.run(
        [_compiler(), "-D_GNU_SOURCE", *flags, "-x", "c", "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def integer_macros(
    includes: list[str], prefixes: tuple[str, ...], exclude: frozenset[str] = frozenset()
) -> list[str]:
    """Names of the object-like macros with one of `prefixes` that `includes` define."""
    listing = _preprocess(includes, "-dM", "-E")
    names: set[str] = set()
    for line in listing.splitlines():
        match = _OBJECT_LIKE_DEFINE.match(line)
        if not match:
            continue
        name, body = match.groups()
        if name.startswith(prefixes) and name not in exclude and '"' not in body:
            names.add(name)
    return sorted(names)


def cdef_defines(names: list[str]) -> str:
    """cffi declarations that let the compiler compute each macro's value."""
    return "".join(f"#define {name} ...\n" for name in names)


def read_helper(filename: str) -> str:
    """The text of a C helper kept beside this file."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), filename)) as handle:
        return handle.read()


_ENUM_BODY = re.compile(r"\benum\b[^{;]*\{([^}]*)\}", re.S)
_ENUMERATOR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:=|$)")


def enum_constants(includes: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """Names of the enumerators with one of `prefixes` declared by `includes`.

    Why: io_uring's opcodes and register codes are enumerators, which `cc -dM` does not
    list; we read them from the preprocessed header instead of copying them.
    """
    preprocessed = _preprocess(includes, "-E", "-P")
    names: set[str] = set()
    for body in _ENUM_BODY.findall(preprocessed):
        for item in body.split(","):
            match = _ENUMERATOR.match(item.strip())
            if match and match.group(1).startswith(prefixes):
                names.add(match.group(1))
    return sorted(names)


def cdef_enum_constants(names: list[str]) -> str:
    """cffi declarations for enumerators whose values the compiler supplies."""
    return "".join(f"static const int {name};\n" for name in names)
