"""Shared fixtures: built test guests and Debian's stock kernel (fetched once, cached)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from keel.vmm.guests.build import cache_root, guest_path

DEBIAN_KERNEL_PACKAGE = "linux-image-amd64"
FETCH_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="session")
def guests() -> dict[str, Path]:
    """name -> path of every test guest (built with the package's own tooling)."""
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("needs gcc and binutils to build the test guests")
    from keel.vmm.guests.build import GUESTS

    return {name: guest_path(name) for name in GUESTS}


def _run(command: list[str], cwd: Path) -> str:
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=FETCH_TIMEOUT_SECONDS).stdout


@pytest.fixture(scope="session")
def debian_bzimage() -> bytes:
    """/boot/vmlinuz-* of Debian's linux-image-amd64 (downloaded with apt-get, cached)."""
    directory = cache_root().parent / "debian-kernel"
    cached = sorted(directory.glob("boot/vmlinuz-*"))
    if not cached:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            pytest.skip("needs apt-get and dpkg-deb to fetch Debian's kernel package")
        directory.mkdir(parents=True, exist_ok=True)
        try:
            _run(["apt-get", "download", DEBIAN_KERNEL_PACKAGE], directory)
            meta = sorted(directory.glob(f"{DEBIAN_KERNEL_PACKAGE}_*.deb"))[-1]
            depends = _run(["dpkg-deb", "-f", str(meta), "Depends"], directory)
            image_package = depends.split(",")[0].split("(")[0].strip()
            _run(["apt-get", "download", image_package], directory)
            deb = sorted(directory.glob(f"{image_package}_*.deb"))[-1]
            tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                                 capture_output=True, timeout=FETCH_TIMEOUT_SECONDS).stdout
            subprocess.run(["tar", "-x", "-C", str(directory), "./boot/"], input=tar,
                           check=True, capture_output=True, timeout=FETCH_TIMEOUT_SECONDS)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, IndexError) as error:
            pytest.skip(f"could not fetch Debian's kernel package from the archive: {error}")
        cached = sorted(directory.glob("boot/vmlinuz-*"))
    return cached[-1].read_bytes()
