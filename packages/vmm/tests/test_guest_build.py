"""Test-guest tooling: built from the packaged sources, cached by content, rebuilt on change."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest

from keel.vmm.errors import GuestBuildError
from keel.vmm.guests.build import CACHE_ENVIRONMENT_VARIABLE, GUESTS, guest_path

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build guests")


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    copy = tmp_path / "sources"
    packaged = resources.files("keel.vmm.guests").joinpath("sources")
    copy.mkdir()
    for entry in packaged.iterdir():
        (copy / entry.name).write_bytes(entry.read_bytes())
    return copy


def test_cached_guest_is_reused_and_a_source_change_rebuilds(
        sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENVIRONMENT_VARIABLE, str(tmp_path / "cache"))
    first = guest_path("hello", source_directory=sources)
    assert first.is_relative_to(tmp_path / "cache" / "guests")
    modified = first.stat().st_mtime_ns
    again = guest_path("hello", source_directory=sources)
    assert again == first and again.stat().st_mtime_ns == modified
    hello = sources / "hello.c"
    hello.write_text(hello.read_text().replace("hello from keel guest", "changed greeting"))
    rebuilt = guest_path("hello", source_directory=sources)
    assert rebuilt != first and b"changed greeting" in rebuilt.read_bytes()
    assert b"hello from keel guest" in first.read_bytes()


def test_compiler_errors_are_reported_with_the_compilers_message(
        sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENVIRONMENT_VARIABLE, str(tmp_path / "cache"))
    (sources / "hello.c").write_text("void guest_main(void) { undefined_thing(); }\n")
    with pytest.raises(GuestBuildError, match="undefined_thing"):
        guest_path("hello", source_directory=sources)


def test_every_guest_builds_and_flat_ones_have_no_elf_header(
        guests: dict[str, Path]) -> None:
    assert set(guests) == set(GUESTS)
    for name, path in guests.items():
        is_elf = path.read_bytes()[:4] == b"\x7fELF"
        assert is_elf == (not GUESTS[name].flat), name


def test_unknown_guest_names_are_refused() -> None:
    with pytest.raises(GuestBuildError, match="'nope'"):
        guest_path("nope")
