"""`keel ffi generate` and `keel ffi build`: from a Python interface to a loadable library.

Why two artefacts per build: Go's c-shared library holds the code; a small API-mode cffi
extension, compiled against the header Go writes, calls its exports directly (no libffi on
the call path, GIL released around each call). Both land in one directory, the extension
finds the library through an $ORIGIN rpath, and a content hash names the directory in the
cache so an unchanged package is never rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cffi

from keel.ffi import cdecl, fastgen, gogen, pygen
from keel.ffi.errors import BuildError, InterfaceError
from keel.ffi.model import Interface, read_interface
from keel.ffi.toolchain import CACHE_ROOT, GoToolchain, find_toolchain

logger = logging.getLogger("keel.ffi")

MANIFEST = "keel_ffi.json"
BUILD_INFO = "keel_ffi_build.json"
FFI_CACHE = CACHE_ROOT / "ffi"
HASH_LENGTH = 16
SOURCE_SUFFIXES = (".go", ".h", ".c", ".mod", ".sum", ".json")


@dataclass(frozen=True)
class BuiltLibrary:
    """Where a build put its files: the Go library and the cffi extension beside it."""

    directory: Path
    interface: str
    module: str
    library: Path
    fast_module: str | None = None


def load_interface(path: Path, name: str | None = None) -> tuple[type, Interface]:
    """Import the interface file and read its Protocol (the only one, or the one named)."""
    path = path.resolve()
    if not path.is_file():
        raise InterfaceError(f"interface file {path} does not exist")
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module_name = path.stem
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise InterfaceError(f"cannot import {path}")
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(path):
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    protocols = {key: value for key, value in vars(module).items()
                 if isinstance(value, type) and getattr(value, "_is_protocol", False)
                 and value.__module__ == module.__name__}
    if name is not None:
        if name not in protocols:
            raise InterfaceError(f"{path} has no Protocol named {name}; found "
                                 f"{', '.join(sorted(protocols)) or 'none'}")
        protocol = protocols[name]
    elif len(protocols) == 1:
        (protocol,) = protocols.values()
    else:
        raise InterfaceError(f"{path} defines {len(protocols)} Protocols "
                             f"({', '.join(sorted(protocols)) or 'none'}); name one")
    return protocol, read_interface(protocol)


def generate(interface_path: Path, go_directory: Path, python_output: Path,
             name: str | None = None, toolchain: GoToolchain | None = None) -> list[Path]:
    """Write the Go glue into go_directory and the Python binding to python_output."""
    protocol, interface = load_interface(interface_path, name)
    toolchain = toolchain or find_toolchain()
    go_directory.mkdir(parents=True, exist_ok=True)
    lower = interface.name.lower()
    files = {
        go_directory / gogen.header_name(interface): cdecl.header(interface),
        go_directory / f"keel_{lower}_gen.go": toolchain.gofmt(gogen.generated_go(interface)),
        go_directory / "keel_runtime.go": toolchain.gofmt(gogen.runtime_go(interface)),
        go_directory / MANIFEST: json.dumps({
            "interface": interface.name,
            "header": gogen.header_name(interface),
            "cdef": cdecl.cffi_cdef(interface),
            "fast_source": fastgen.source(interface, f"libkeel_{lower}.h"),
        }, indent=2) + "\n",
        python_output: pygen.binding(interface, protocol.__module__),
    }
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return list(files)


def source_hash(go_directory: Path, toolchain: GoToolchain) -> str:
    """A hash of everything a build reads: the package's sources, Go and Python versions."""
    digest = hashlib.sha256()
    for path in sorted(go_directory.rglob("*")):
        if path.is_file() and path.suffix in SOURCE_SUFFIXES:
            digest.update(str(path.relative_to(go_directory)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    digest.update(toolchain.version.encode())
    digest.update(sys.version.encode())
    digest.update(cffi.__version__.encode())
    return digest.hexdigest()[:HASH_LENGTH]


def read_manifest(go_directory: Path) -> dict[str, str]:
    manifest = go_directory / MANIFEST
    if not manifest.is_file():
        raise BuildError(f"{go_directory} has no {MANIFEST}: run `keel ffi generate` first")
    data: dict[str, str] = json.loads(manifest.read_text())
    return data


def build(go_directory: Path, output: Path, toolchain: GoToolchain | None = None) -> BuiltLibrary:
    """Compile the Go package into output/: lib<name>.so and its cffi extension."""
    go_directory = go_directory.resolve()
    toolchain = toolchain or find_toolchain()
    manifest = read_manifest(go_directory)
    interface = manifest["interface"]
    digest = source_hash(go_directory, toolchain)
    output.mkdir(parents=True, exist_ok=True)
    library_name = f"keel_{interface.lower()}"
    library = output / f"lib{library_name}.so"
    logger.info("go build -buildmode=c-shared %s -> %s", go_directory, library)
    toolchain.run(["build", "-buildmode=c-shared", "-trimpath", "-o", str(library), "."],
                  go_directory, f"go build of {go_directory}")
    shutil.copy(go_directory / manifest["header"], output / manifest["header"])
    module = f"_keel_ffi_{interface.lower()}_{digest}"
    builder = cffi.FFI()
    builder.cdef(manifest["cdef"])
    builder.set_source(module, f'#include "lib{library_name}.h"\n', include_dirs=[str(output)],
                       library_dirs=[str(output)], libraries=[library_name],
                       extra_link_args=["-Wl,-rpath,$ORIGIN"],
                       extra_compile_args=["-O2", "-Wno-unused-function"])
    with tempfile.TemporaryDirectory(prefix="keel-ffi-cffi-") as scratch:
        try:
            built = Path(builder.compile(tmpdir=scratch, verbose=False))
        except Exception as error:  # cffi raises VerificationError and distutils errors
            raise BuildError(f"compiling the cffi binding {module} failed: {error}") from error
        shutil.copy(built, output / built.name)
    fast_module = f"_keel_fast_{interface.lower()}_{digest}"
    fastgen.compile_extension(manifest["fast_source"], fast_module, output, library_name)
    info = {"interface": interface, "module": module, "library": library.name,
            "fast": fast_module}
    (output / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return BuiltLibrary(output.resolve(), interface, module, library.resolve(), fast_module)


def read_build(directory: Path) -> BuiltLibrary:
    info_path = directory / BUILD_INFO
    if not info_path.is_file():
        raise BuildError(f"{directory} holds no keel.ffi build ({BUILD_INFO} missing): "
                         "run `keel ffi build`")
    info = json.loads(info_path.read_text())
    return BuiltLibrary(directory.resolve(), info["interface"], info["module"],
                        (directory / info["library"]).resolve(), info.get("fast"))


def build_cached(go_directory: Path, toolchain: GoToolchain | None = None) -> BuiltLibrary:
    """build() into ~/.cache/keel/ffi/<hash of the inputs>, reusing an earlier build."""
    toolchain = toolchain or find_toolchain()
    target = FFI_CACHE / source_hash(go_directory.resolve(), toolchain)
    if (target / BUILD_INFO).is_file():
        return read_build(target)
    FFI_CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="building-", dir=FFI_CACHE))
    try:
        build(go_directory, scratch, toolchain)
        try:
            os.rename(scratch, target)  # atomic: a concurrent build of the same inputs wins
        except OSError:
            if not (target / BUILD_INFO).is_file():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return read_build(target)
