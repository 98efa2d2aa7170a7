"""`keel ffi`: doctor, generate, build and build-wheel, for people at a terminal."""

from __future__ import annotations

from pathlib import Path

import click

from keel.ffi.build import build, generate
from keel.ffi.errors import FfiError
from keel.ffi.toolchain import GO_CACHE, find_toolchain
from keel.ffi.wheels import DEFAULT_VERSION, build_wheel


@click.group("ffi")
def ffi() -> None:
    """Call Go from Python: generate glue from a Python interface, build, inspect."""


@ffi.command("doctor")
def doctor() -> None:
    """Show which Go toolchain keel.ffi builds with, and where its caches are."""
    try:
        toolchain = find_toolchain()
    except FfiError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"go:      {toolchain.version}")
    click.echo(f"binary:  {toolchain.binary}")
    click.echo(f"GOROOT:  {toolchain.root}")
    click.echo(f"caches:  {GO_CACHE} (GOCACHE, GOPATH); GOPROXY=off, GOTOOLCHAIN=local")


@ffi.command("generate")
@click.argument("interface_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--go-out", type=click.Path(file_okay=False, path_type=Path),
              help="Go package directory for the glue (default: beside the interface file).")
@click.option("--python-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Python binding file (default: <interface file stem>_binding.py beside it).")
@click.option("--interface", "name", help="The Protocol to use when the file has several.")
def generate_command(interface_file: Path, go_out: Path | None, python_out: Path | None,
                     name: str | None) -> None:
    """Write the Go interface, C structs and cgo exports, and the Python binding."""
    stem = interface_file.stem.removesuffix("_iface")
    go_directory = go_out or interface_file.parent
    python_output = python_out or interface_file.parent / f"{stem}_binding.py"
    try:
        written = generate(interface_file, go_directory, python_output, name)
    except FfiError as error:
        raise click.ClickException(str(error)) from error
    for path in written:
        click.echo(f"wrote {path}")


@ffi.command("build")
@click.argument("go_package", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (default: <package>/build).")
def build_command(go_package: Path, output: Path | None) -> None:
    """Compile the Go package into a shared library and its Python extension."""
    try:
        built = build(go_package, output or go_package / "build")
    except FfiError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"built {built.library}")
    click.echo(f"extension {built.module} in {built.directory}")


@ffi.command("build-wheel")
@click.argument("interface_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--go-package", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The Go package (default: the interface file's directory).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              default=Path("dist"), show_default=True, help="Where the wheel is written.")
@click.option("--name", "distribution",
              help="Distribution and import package name (default: the interface's name).")
@click.option("--version", "version", default=DEFAULT_VERSION, show_default=True,
              help="The wheel's version (PEP 440).")
@click.option("--interface", "name", help="The Protocol to use when the file has several.")
def build_wheel_command(interface_file: Path, go_package: Path | None, output: Path,
                        distribution: str | None, version: str, name: str | None) -> None:
    """Build the Go package and write a platform wheel: the Python package, the Go
    library and its extensions, installable with pip where no Go toolchain exists."""
    try:
        wheel = build_wheel(interface_file, output, go_package, distribution, version, name)
    except FfiError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"wrote {wheel}")
