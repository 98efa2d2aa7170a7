"""`keel ffi build-wheel`: the user's Go package as an installable, platform-tagged wheel.

Why a wheel of its own: a Go library used from Python is shipped like any extension, with
pip, and must not need Go (or keel.ffi's build step) where it is installed. The wheel holds
one import package: the interface file, a binding generated for its place in that package,
an `__init__` that opens the library shipped beside it, and the build (Go's c-shared library,
the cffi extension and the fast-path extension, which find the library through their
$ORIGIN rpath). The archive itself (RECORD hashes, dist-info last) is written by the `wheel`
project's WheelFile and the metadata by `packaging`, so the format is theirs, not ours.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging import tags
from packaging.metadata import Metadata, RawMetadata
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from wheel.wheelfile import WheelFile

from keel.ffi import cdecl, fastgen, gogen, pygen
from keel.ffi.build import BUILD_INFO, build_cached, load_interface, read_manifest
from keel.ffi.errors import BuildError
from keel.ffi.model import Interface
from keel.ffi.toolchain import GoToolchain, find_toolchain

logger = logging.getLogger("keel.ffi")

DEFAULT_VERSION = "0.1.0"
LIBRARY_FOLDER = "_library"
REQUIRES_PYTHON = ">=3.11"
# The Metadata-Version packaging writes; 2.1 has every field used here.
METADATA_VERSION = "2.1"
WHEEL_VERSION = "1.0"


@dataclass(frozen=True)
class WheelPlan:
    """What the wheel is called and what its one import package holds."""

    distribution: str
    version: str
    package: str
    interface_module: str
    binding_module: str
    tag: tags.Tag

    @property
    def filename(self) -> str:
        normalized = canonicalize_name(self.distribution).replace("-", "_")
        return f"{normalized}-{self.version}-{self.tag}.whl"

    @property
    def dist_info(self) -> str:
        normalized = canonicalize_name(self.distribution).replace("-", "_")
        return f"{normalized}-{self.version}.dist-info"


def platform_tag() -> tags.Tag:
    """This interpreter's CPython ABI on this platform, as bdist_wheel names it.

    Why not a manylinux tag: that promises the libraries were audited against an old glibc;
    a Go library built here is only known to load on systems like this one.
    """
    if tags.interpreter_name() != "cp":
        raise BuildError("keel ffi build-wheel needs CPython: the fast-path extension is "
                         f"compiled against CPython's C API, not {tags.interpreter_name()}")
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return next(iter(tags.cpython_tags(platforms=[platform])))


def plan(interface_path: Path, interface: Interface, distribution: str | None,
         version: str) -> WheelPlan:
    """Check the names and version the user gave (or their defaults) before building."""
    distribution = distribution or interface.name.lower()
    package = canonicalize_name(distribution).replace("-", "_")
    if not package.isidentifier():
        raise BuildError(f"wheel name {distribution!r} does not make a Python package name "
                         f"({package!r}); use letters, digits, '-' and '_'")
    try:
        normalized_version = str(Version(version))
    except InvalidVersion:
        raise BuildError(f"wheel version {version!r} is not a PEP 440 version "
                         "(for example 1.0.2)") from None
    interface_module = interface_path.stem
    if not interface_module.isidentifier():
        raise BuildError(f"interface file {interface_path.name} is not an importable module name")
    binding_module = f"{interface_module.removesuffix('_iface')}_binding"
    if binding_module == interface_module:
        binding_module = f"{interface_module}_generated_binding"
    return WheelPlan(distribution, normalized_version, package, interface_module,
                     binding_module, platform_tag())


def _check_glue_is_current(go_directory: Path, interface: Interface) -> None:
    """The Go glue must match the interface file, or the wheel would ship a stale binding."""
    manifest = read_manifest(go_directory)
    lower = interface.name.lower()
    if (manifest.get("interface") != interface.name
            or manifest.get("cdef") != cdecl.cffi_cdef(interface)
            or manifest.get("fast_source") != fastgen.source(interface, f"libkeel_{lower}.h")
            or manifest.get("header") != gogen.header_name(interface)):
        raise BuildError(f"the Go glue in {go_directory} does not match {interface.name}'s "
                         "interface file: run `keel ffi generate` again, then rebuild")


def _init_source(plan_: WheelPlan, interface: Interface) -> str:
    library_class = f"{interface.name}Library"
    exported = sorted({library_class, *(struct.name for struct in interface.structs)})
    structs = sorted(struct.name for struct in interface.structs)
    struct_import = (f"from {plan_.package}.{plan_.interface_module} import "
                     f"{', '.join(structs)}\n" if structs else "")
    names = ", ".join(f'"{name}"' for name in [*exported, "LIBRARY_DIRECTORY", "open_library"])
    return (
        f'"""{interface.name}, implemented in Go; packaged by `keel ffi build-wheel`.\n\n'
        "Do not edit: rebuild the wheel from the interface file instead.\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        "from pathlib import Path\n\n"
        f"{struct_import}"
        f"from {plan_.package}.{plan_.binding_module} import {library_class}\n\n"
        f"__all__ = [{names}]\n\n"
        "# The Go library and its two extensions, installed with this package.\n"
        f'LIBRARY_DIRECTORY = Path(__file__).resolve().parent / "{LIBRARY_FOLDER}"\n\n\n'
        f"def open_library() -> {library_class}:\n"
        f'    """The Go library shipped in this wheel; close it (or use `with`)."""\n'
        f"    return {library_class}.open(LIBRARY_DIRECTORY)\n"
    )


def _metadata(plan_: WheelPlan, interface: Interface) -> bytes:
    keel_ffi = importlib.metadata.version("keel-ffi")
    raw: RawMetadata = {
        "metadata_version": METADATA_VERSION,
        "name": plan_.distribution,
        "version": plan_.version,
        "summary": f"{interface.name}, a Go library callable from Python through keel.ffi",
        "requires_python": REQUIRES_PYTHON,
        # The generated binding runs on keel.ffi's runtime of the same minor version.
        "requires_dist": [f"keel-ffi~={keel_ffi}"],
    }
    return bytes(Metadata.from_raw(raw).as_rfc822())


def _wheel_file(plan_: WheelPlan) -> str:
    keel_ffi = importlib.metadata.version("keel-ffi")
    return (f"Wheel-Version: {WHEEL_VERSION}\n"
            f"Generator: keel-ffi {keel_ffi}\n"
            # Platform-specific files: install into platlib.
            "Root-Is-Purelib: false\n"
            f"Tag: {plan_.tag}\n")


def _copy_build(build_directory: Path, target: Path) -> None:
    """The files a loaded library needs: the build record, Go's library, the extensions."""
    target.mkdir(parents=True)
    built = [build_directory / BUILD_INFO, *sorted(build_directory.glob("*.so"))]
    for path in built:
        shutil.copy2(path, target / path.name)


def build_wheel(interface_path: Path, output: Path, go_directory: Path | None = None,
                distribution: str | None = None, version: str = DEFAULT_VERSION,
                interface_name: str | None = None,
                toolchain: GoToolchain | None = None) -> Path:
    """Build the Go package (cached) and write its wheel into output/; returns the wheel."""
    interface_path = interface_path.resolve()
    go_directory = (go_directory or interface_path.parent).resolve()
    protocol, interface = load_interface(interface_path, interface_name)
    plan_ = plan(interface_path, interface, distribution, version)
    _check_glue_is_current(go_directory, interface)
    built = build_cached(go_directory, toolchain or find_toolchain())
    output.mkdir(parents=True, exist_ok=True)
    wheel_path = output / plan_.filename
    with tempfile.TemporaryDirectory(prefix="keel-ffi-wheel-") as scratch:
        root = Path(scratch)
        package = root / plan_.package
        _copy_build(built.directory, package / LIBRARY_FOLDER)
        shutil.copy2(interface_path, package / f"{plan_.interface_module}.py")
        (package / f"{plan_.binding_module}.py").write_text(
            pygen.binding(interface, f"{plan_.package}.{plan_.interface_module}"))
        (package / "__init__.py").write_text(_init_source(plan_, interface))
        (package / "py.typed").write_text("")
        dist_info = root / plan_.dist_info
        dist_info.mkdir()
        (dist_info / "METADATA").write_bytes(_metadata(plan_, interface))
        (dist_info / "WHEEL").write_text(_wheel_file(plan_))
        try:
            with WheelFile(str(wheel_path), "w") as wheel:
                wheel.write_files(str(root))
        except BaseException:
            wheel_path.unlink(missing_ok=True)  # never leave half a wheel behind
            raise
    logger.info("wrote %s (%s from %s)", wheel_path, protocol.__name__, go_directory)
    return wheel_path
