"""Build an initramfs holding a working CPython user space: the host's own interpreter, its
standard library and shared libraries, a site-packages with the caller's distributions,
busybox-static with its applets, and the caller's /init.

Why the host's interpreter, at its host paths: it is the one CPython every keel machine has,
already built for this C library; copying it and every library `ldd` says it (and each
extension module) needs, each at the same absolute path it has on the host (symlinks such as
Debian's /lib -> usr/lib and /lib64/ld-linux-x86-64.so.2 kept as symlinks), means the
dynamic loader, the interpreter's RUNPATH, CPython's prefix discovery and console-script
shebangs all resolve in the guest exactly as on the host, with no relocation. `usr/bin/python3`
links to it. Left out of the standard library: test/ and tests/ directories, idlelib,
tkinter (and _tkinter, which would pull in X11), ensurepip, turtledemo, the host's
site-packages (replaced) and config-3.X-* (the static libpython and build Makefile, only for
compiling extensions). __pycache__ is dropped: the archive stores every file with mtime 0,
so the host's .pyc files, which record their source's mtime, would be stale in the guest
anyway; the guest compiles what it imports (in memory-backed rootfs, where it may write).
Debug information is stripped (`strip --strip-debug`) from ELF files that carry it (a pyenv
libpython has 20 MB of it); nothing else in them changes.

Why `pip install --target`: the caller names distributions as pip requirement strings (local
project directories or PyPI names), so keel.vmm needs to know nothing of what it packs (it
must not import keel.http). pip builds the local projects as it would for a user
(non-editable wheels, compiled extensions included) and resolves their dependencies, pure or
compiled, from PyPI (or pip's cache) for this interpreter; copying a venv's site-packages
instead would carry editable installs that point back into the host's checkout. The result is
cached under <cache>/initramfs/site-packages/<key>/, the key hashing the requirement strings,
the contents of each local project (sources and build files; not tests, benchmarks or build
outputs) and the interpreter's version, so a different /init reuses it.

The archive (newc, gzip'd) is cached under <cache>/initramfs/python-<key>.cpio.gz, the key
hashing every input: the recipe version, the interpreter (path, version, size and mtime of
the executable and libpython), the site-packages key, busybox, /init and the extra files.
Upgrading a host library the interpreter uses does not change the key; pass `rebuild=True`
(`--rebuild`) then. The cache keeps the six most recently used archives and site-packages
directories (every change to a packed local project makes new ones) and deletes older ones
no other process holds.
"""

from __future__ import annotations

import collections
import fcntl
import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from keel.vmm.cache_lock import exclusive_lock
from keel.vmm.guest_kernel import cpio
from keel.vmm.guest_kernel.errors import GuestKernelError
from keel.vmm.guest_kernel.initramfs import BUSYBOX_PATH, initramfs_entries
from keel.vmm.guest_kernel.kernel import cache_root

RECIPE_VERSION = "1"  # bump when what goes into the archive changes
KEY_LENGTH = 24
GZIP_LEVEL = 6  # level 9 takes three times as long here for about 2% less
ELF_MAGIC = b"\x7fELF"
GUEST_PYTHON_LINK = "usr/bin/python3"
# Standard-library directories left out, by name at any depth (test suites, GUI, installers).
SKIPPED_DIRECTORY_NAMES = frozenset({"test", "tests", "idle_test", "__pycache__", "idlelib",
                                     "tkinter", "turtledemo", "ensurepip", "site-packages"})
SKIPPED_DIRECTORY_PREFIXES = ("config-",)  # config-3.11-x86_64-linux-gnu: libpython.a, Makefile
SKIPPED_FILE_PREFIXES = ("_tkinter.",)
SKIPPED_SUFFIXES = (".pyc", ".pyo")
# Loaded with dlopen by glibc (pthread_exit and thread cancellation unwind through it), so no
# ldd output names it.
DLOPENED_LIBRARIES = ("libgcc_s.so.1",)
# Where the loader looks without /etc/ld.so.cache (Debian's glibc; `ld.so --help`).
LIBRARY_DIRECTORIES = (Path("/lib/x86_64-linux-gnu"), Path("/usr/lib/x86_64-linux-gnu"),
                       Path("/lib64"), Path("/usr/lib64"), Path("/lib"), Path("/usr/lib"))
# Local project contents that do not change what pip builds.
FINGERPRINT_SKIPPED_DIRECTORIES = frozenset({
    "build", "dist", "__pycache__", ".git", ".nox", ".mypy_cache", ".pytest_cache",
    ".ruff_cache", ".hypothesis", "tests", "bench", "node_modules"})
FINGERPRINT_SKIPPED_SUFFIXES = (".so", ".pyc", ".o", ".egg-info")
PIP_TIMEOUT_SECONDS = 900
TOOL_TIMEOUT_SECONDS = 60
OUTPUT_TAIL_LINES = 30
SYMLINK_DEPTH_LIMIT = 40  # Linux's own limit on symlinks followed in one lookup
HOSTS_FILE = b"127.0.0.1 localhost\n::1 localhost\n"
# Archives and site-packages kept in the cache (the newest by use); every change to a packed
# local project makes new ones, 14 MiB and 30 MiB apiece for keel's three packages.
KEPT_BUILDS = 6
LAYOUT_QUERY = ("import site, sys, sysconfig; print(sys.prefix, sysconfig.get_paths()['stdlib'], "
                "site.getsitepackages()[0], sys.version.split()[0], sep='\\n')")


def _silent(_message: str) -> None:
    return None


@dataclass(frozen=True)
class Interpreter:
    """The host CPython to pack: its executable (symlinks resolved) and its layout."""

    executable: Path
    prefix: Path
    standard_library: Path  # <prefix>/lib/python3.X
    extension_directory: Path  # lib-dynload
    site_packages: Path  # where the caller's distributions go, in the guest
    version: str

    @classmethod
    def current(cls) -> Interpreter:
        """The interpreter running this code, outside any venv it runs in.

        Asked of the real executable itself, started isolated (-I) so no venv or user site
        applies: where its standard library is and which site-packages directory its own
        `site` puts first on sys.path (Debian's python3 uses /usr/local/lib/python3.X/
        dist-packages, a pyenv build <prefix>/lib/python3.X/site-packages)."""
        executable = Path(os.path.realpath(sys.executable))
        try:
            completed = subprocess.run(
                [str(executable), "-I", "-c", LAYOUT_QUERY], capture_output=True, text=True,
                check=True, timeout=TOOL_TIMEOUT_SECONDS)
            prefix, standard_library, site_packages, version = (
                completed.stdout.strip().split("\n"))
        except (OSError, subprocess.SubprocessError, ValueError) as error:
            raise GuestKernelError(f"cannot ask {executable} for its layout: {error}") from None
        library = Path(standard_library)
        if not (library / "os.py").is_file():
            raise GuestKernelError(f"the standard library of {executable} is not at {library} "
                                   "(no os.py there)")
        extensions = library / "lib-dynload"
        if not extensions.is_dir():
            raise GuestKernelError(f"{extensions} (CPython's extension modules) is missing")
        return cls(executable, Path(prefix), library, extensions, Path(site_packages), version)


@dataclass(frozen=True)
class PythonInitramfs:
    """The built (or cached) archive and what is in it."""

    path: Path
    key: str
    built: bool
    size: int
    python: str  # the interpreter's path in the guest (also reachable as /usr/bin/python3)
    site_packages: str


# ---------------------------------------------------------------------------------------------
# Cache keys


def _hash_parts(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:KEY_LENGTH]


def _project_files(directory: Path) -> Iterator[Path]:
    for current, subdirectories, files in os.walk(directory):
        subdirectories[:] = sorted(
            name for name in subdirectories
            if name not in FINGERPRINT_SKIPPED_DIRECTORIES
            and not name.endswith(FINGERPRINT_SKIPPED_SUFFIXES))
        for name in sorted(files):
            if not name.endswith(FINGERPRINT_SKIPPED_SUFFIXES):
                yield Path(current) / name


def requirement_fingerprint(requirement: str) -> bytes:
    """What identifies a requirement: a local project by its contents, anything else by its
    text (a PyPI name resolves to whatever pip picks the first time; `rebuild` refreshes)."""
    directory = Path(requirement)
    if not directory.is_dir():
        return requirement.encode()
    parts = [b"directory", str(directory.resolve()).encode()]
    for path in _project_files(directory):
        parts += [str(path.relative_to(directory)).encode(), path.read_bytes()]
    return _hash_parts(parts).encode()


def _stat_signature(path: Path) -> bytes:
    info = path.stat()
    return f"{path}:{info.st_size}:{info.st_mtime_ns}".encode()


def interpreter_fingerprint(interpreter: Interpreter) -> bytes:
    parts = [interpreter.version.encode(), _stat_signature(interpreter.executable)]
    library = sysconfig.get_config_var("LDLIBRARY")
    library_directory = sysconfig.get_config_var("LIBDIR")
    if isinstance(library, str) and isinstance(library_directory, str):
        shared = Path(library_directory) / library
        if shared.is_file() and library.endswith(".so"):
            parts.append(_stat_signature(shared))
    return _hash_parts(parts).encode()


def site_packages_key(requirements: Sequence[str], interpreter: Interpreter) -> str:
    return _hash_parts([RECIPE_VERSION.encode(), interpreter_fingerprint(interpreter),
                        *(requirement_fingerprint(spec) for spec in requirements)])


# ---------------------------------------------------------------------------------------------
# site-packages through pip


def _pip_argument(requirement: str) -> str:
    directory = Path(requirement)
    return str(directory.resolve()) if directory.is_dir() else requirement


def install_site_packages(requirements: Sequence[str], *, root: Path | None = None,
                          interpreter: Interpreter | None = None,
                          progress: Callable[[str], None] = _silent,
                          rebuild: bool = False) -> Path:
    """A directory with `requirements` and their dependencies installed by pip (cached)."""
    interpreter = interpreter or Interpreter.current()
    key = site_packages_key(requirements, interpreter)
    directory = (root or cache_root()) / "initramfs" / "site-packages" / key
    with exclusive_lock(directory.parent / f"{key}.lock"):
        if directory.is_dir() and not rebuild:
            progress(f"site-packages {key} is cached: {directory}")
            os.utime(directory)
            return directory
        partial = directory.with_name(key + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            if requirements:
                command = [*pip_command(interpreter), "install", "--target", str(partial),
                           "--no-compile", "--disable-pip-version-check", "--no-input",
                           "--progress-bar", "off",
                           *(_pip_argument(requirement) for requirement in requirements)]
                progress(f"pip: installing {' '.join(requirements)} and their dependencies")
                _run_pip(command, progress)
            else:
                partial.mkdir(parents=True)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)
    os.utime(directory)
    return directory


def pip_command(interpreter: Interpreter) -> list[str]:
    """`python -m pip` for the interpreter being packed (its pip builds for exactly that
    CPython; with --target it leaves its own site-packages alone), else for the one running
    this code (a venv may have pip where the base has none, or, as nox's may, the reverse)."""
    for python in dict.fromkeys((str(interpreter.executable), sys.executable)):
        try:
            subprocess.run([python, "-m", "pip", "--version"], capture_output=True, check=True,
                           timeout=TOOL_TIMEOUT_SECONDS)
        except (OSError, subprocess.SubprocessError):
            continue
        return [python, "-m", "pip"]
    raise GuestKernelError(f"neither {interpreter.executable} nor {sys.executable} has pip; "
                           "install it (apt-get install -y python3-pip, or python -m "
                           "ensurepip)")


def _run_pip(command: list[str], progress: Callable[[str], None]) -> None:
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    environment = {**os.environ, "PIP_ROOT_USER_ACTION": "ignore", "LC_ALL": "C"}
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True, env=environment)
    except OSError as error:
        raise GuestKernelError(f"cannot run pip ({command[0]}): {error}") from None
    assert process.stdout is not None
    try:
        for line in process.stdout:
            line = line.rstrip()
            tail.append(line)
            if line.startswith(("Processing", "Collecting", "Building wheel for",
                                "Successfully", "ERROR")):
                progress(f"pip: {line.strip()}")
        status = process.wait(timeout=PIP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise GuestKernelError(f"pip did not finish within {PIP_TIMEOUT_SECONDS} s: "
                               f"{' '.join(command)}") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    if status != 0:
        output = "\n".join(tail)
        raise GuestKernelError(f"pip failed with exit status {status} ({' '.join(command)}); "
                               f"last output:\n{output}")


# ---------------------------------------------------------------------------------------------
# Shared libraries


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(len(ELF_MAGIC)) == ELF_MAGIC
    except OSError:
        return False


def parse_ldd_output(subject: Path, text: str) -> list[Path]:
    """The library paths in `ldd subject`'s output; a "not found" line is an error naming
    both the library and the file that needs it."""
    libraries: list[Path] = []
    for line in text.splitlines():
        line = line.strip()
        if "=>" in line:
            name, _, target = line.partition("=>")
            target = target.strip()
            if target.startswith("not found"):
                raise GuestKernelError(f"{subject} needs {name.strip()}, which the host does "
                                       "not have (ldd: not found); install the package that "
                                       "provides it")
            path = target.split(" (", 1)[0].strip()
            if path.startswith("/"):
                libraries.append(Path(path))
        elif line.startswith("/"):  # the dynamic loader: "/lib64/ld-linux-x86-64.so.2 (0x...)"
            libraries.append(Path(line.split(" (", 1)[0].strip()))
    return libraries


def shared_libraries(files: Iterable[Path]) -> set[Path]:
    """Every library (with the dynamic loader) the ELF `files` load, as ldd resolves them."""
    if shutil.which("ldd") is None:
        raise GuestKernelError("ldd is missing; install it with: apt-get install -y libc-bin")
    found: set[Path] = set()
    for path in files:
        try:
            completed = subprocess.run(["ldd", str(path)], capture_output=True, text=True,
                                       timeout=TOOL_TIMEOUT_SECONDS,
                                       env={**os.environ, "LC_ALL": "C"})
        except (OSError, subprocess.SubprocessError) as error:
            raise GuestKernelError(f"ldd {path} failed: {error}") from None
        if completed.returncode != 0:
            if "not a dynamic executable" in completed.stdout + completed.stderr:
                continue
            raise GuestKernelError(f"ldd {path} failed with exit status "
                                   f"{completed.returncode}: {completed.stderr.strip()}")
        found.update(parse_ldd_output(path, completed.stdout))
    return found


def find_library(name: str) -> Path | None:
    for directory in LIBRARY_DIRECTORIES:
        if (directory / name).exists():
            return directory / name
    return None


# ---------------------------------------------------------------------------------------------
# The archive's entries


class _Tree:
    """The archive's entries by name, parents before children, each name once."""

    def __init__(self, entries: Iterable[cpio.Entry]) -> None:
        self.entries: dict[str, cpio.Entry] = {}
        for entry in entries:
            self.entries.setdefault(entry.name.lstrip("/"), entry)

    def _directory(self, name: str) -> None:
        if not name or name == ".":
            return
        existing = self.entries.get(name)
        if existing is not None:
            if not (stat.S_ISDIR(existing.mode) or stat.S_ISLNK(existing.mode)):
                raise GuestKernelError(f"/{name} is both a file and a directory in the "
                                       "initramfs")
            return
        self._directory(str(PurePosixPath(name).parent))
        self.entries[name] = cpio.directory(name)

    def add(self, entry: cpio.Entry) -> None:
        name = entry.name.lstrip("/")
        existing = self.entries.get(name)
        if existing is not None:
            if existing.mode != entry.mode or existing.data != entry.data:
                raise GuestKernelError(f"/{name} would be added twice with different contents "
                                       "(the host's layout clashes with busybox's)")
            return
        self._directory(str(PurePosixPath(name).parent))
        self.entries[name] = entry

    def add_host_path(self, path: Path, *, content: Callable[[Path], bytes] | None = None,
                      depth: int = 0) -> None:
        """Add `path` at the same absolute path, every symlink on the way kept a symlink."""
        if depth > SYMLINK_DEPTH_LIMIT:
            raise GuestKernelError(f"too many symlinks resolving {path}")
        parts = PurePosixPath(os.path.abspath(path)).parts[1:]
        current = PurePosixPath("/")
        for index, part in enumerate(parts):
            current = current / part
            host = Path(current)
            if host.is_symlink():
                target = os.readlink(host)
                self.add(cpio.symlink(str(current).lstrip("/"), target))
                resolved = PurePosixPath(os.path.normpath(current.parent / target))
                rest = parts[index + 1:]
                self.add_host_path(Path(resolved.joinpath(*rest)), content=content,
                                   depth=depth + 1)
                return
            if index < len(parts) - 1:
                self._directory(str(current).lstrip("/"))
        info = Path(current).stat()
        data = (content or Path.read_bytes)(Path(current))
        self.add(cpio.regular_file(str(current).lstrip("/"), data, stat.S_IMODE(info.st_mode)))

    def add_host_tree(self, host: Path, guest: PurePosixPath,
                      content: Callable[[Path], bytes], *,
                      skipped: Callable[[Path], bool] = lambda path: False) -> int:
        """Copy a directory tree (regular files and symlinks) to `guest`; returns bytes added."""
        added = 0
        for current, subdirectories, files in os.walk(host):
            subdirectories[:] = sorted(name for name in subdirectories
                                       if not skipped(Path(current) / name))
            relative = Path(current).relative_to(host)
            self._directory(str(guest / relative).lstrip("/"))
            for name in sorted(files):
                path = Path(current) / name
                if skipped(path):
                    continue
                target = str(guest / relative / name).lstrip("/")
                if path.is_symlink():
                    self.add(cpio.symlink(target, os.readlink(path)))
                elif path.is_file():
                    data = content(path)
                    self.add(cpio.regular_file(target, data,
                                               stat.S_IMODE(path.stat().st_mode)))
                    added += len(data)
            for name in subdirectories:
                if (Path(current) / name).is_symlink():
                    target = str(guest / relative / name).lstrip("/")
                    self.add(cpio.symlink(target, os.readlink(Path(current) / name)))
        return added

    def list(self) -> list[cpio.Entry]:
        return list(self.entries.values())


def _standard_library_skipped(path: Path) -> bool:
    name = path.name
    if path.is_dir():
        return name in SKIPPED_DIRECTORY_NAMES or name.startswith(SKIPPED_DIRECTORY_PREFIXES)
    return name.startswith(SKIPPED_FILE_PREFIXES) or name.endswith(SKIPPED_SUFFIXES)


def _site_packages_skipped(path: Path) -> bool:
    return (path.is_dir() and path.name == "__pycache__") or path.name.endswith(
        SKIPPED_SUFFIXES)


class _Stripper:
    """File contents with debug information removed from ELF files that carry it."""

    def __init__(self, scratch: Path) -> None:
        self._strip = shutil.which("strip")
        self._scratch = scratch
        self.saved = 0

    def __call__(self, path: Path) -> bytes:
        data = path.read_bytes()
        if self._strip is None or not data.startswith(ELF_MAGIC) or not _has_debug_info(path):
            return data
        output = self._scratch / "stripped"
        try:
            subprocess.run([self._strip, "--strip-debug", "-o", str(output), str(path)],
                           check=True, capture_output=True, timeout=TOOL_TIMEOUT_SECONDS)
        except (OSError, subprocess.SubprocessError):
            return data  # unstripped is still correct, only larger
        stripped = output.read_bytes()
        self.saved += len(data) - len(stripped)
        return stripped


def _has_debug_info(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            return ELFFile(stream).get_section_by_name(".debug_info") is not None
    except (ELFError, OSError):
        return False


def _elf_files(directory: Path, skipped: Callable[[Path], bool]) -> list[Path]:
    found = []
    for current, subdirectories, files in os.walk(directory):
        subdirectories[:] = [name for name in subdirectories
                             if not skipped(Path(current) / name)]
        for name in files:
            path = Path(current) / name
            if not skipped(path) and not path.is_symlink() and _is_elf(path):
                found.append(path)
    return sorted(found)


def python_entries(interpreter: Interpreter, site_packages: Path, tree: _Tree,
                   scratch: Path, progress: Callable[[str], None] = _silent) -> None:
    """Add the interpreter, its standard library, `site_packages` and every library needed."""
    content = _Stripper(scratch)
    guest_site_packages = PurePosixPath(interpreter.site_packages)
    tree.add_host_path(interpreter.executable, content=content)
    progress(f"python: {interpreter.executable} and {interpreter.standard_library} "
             "(without tests, GUI, installers, __pycache__)")
    tree.add_host_tree(interpreter.standard_library,
                       PurePosixPath(interpreter.standard_library), content,
                       skipped=_standard_library_skipped)
    progress(f"python: site-packages from {site_packages}")
    tree.add_host_tree(site_packages, guest_site_packages, content,
                       skipped=_site_packages_skipped)
    elf = [interpreter.executable,
           *_elf_files(interpreter.standard_library, _standard_library_skipped),
           *_elf_files(site_packages, _site_packages_skipped)]
    libraries = shared_libraries(elf)
    for name in DLOPENED_LIBRARIES:
        extra = find_library(name)
        if extra is not None:
            libraries.add(extra)
    staged = str(site_packages.resolve()) + os.sep
    host_only = sorted(path for path in libraries
                       if not os.path.realpath(path).startswith(staged))
    progress(f"python: {len(elf)} ELF files need {len(host_only)} host libraries")
    for library in host_only:
        tree.add_host_path(library, content=content)
    if content.saved:
        progress(f"python: stripped {content.saved / (1 << 20):.1f} MiB of debug information")
    guest_python = str(interpreter.executable)
    depth = GUEST_PYTHON_LINK.count("/")
    tree.add(cpio.symlink(GUEST_PYTHON_LINK, "../" * depth + guest_python.lstrip("/")))
    tree.add(cpio.regular_file("etc/hosts", HOSTS_FILE))


def prune_cache(cache: Path, keep: int = KEPT_BUILDS) -> None:
    """Delete all but the `keep` most recently used archives and site-packages directories;
    one whose lock another process holds (being built or read) is left alone."""
    groups = [sorted(cache.glob("python-*.cpio.gz")),
              sorted(path for path in (cache / "site-packages").glob("*") if path.is_dir()
                     and not path.name.endswith(".partial"))]
    for group in groups:
        by_use = sorted(group, key=lambda path: path.stat().st_mtime, reverse=True)
        for stale in by_use[keep:]:
            key = stale.name.removesuffix(".cpio.gz")
            lock_path = stale.with_name(f"{key}.lock")
            with open(lock_path, "w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    if stale.is_dir():
                        shutil.rmtree(stale, ignore_errors=True)
                    else:
                        stale.unlink(missing_ok=True)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# The whole archive


def archive_key(init: bytes, requirements_key: str, interpreter: Interpreter,
                busybox: Path | None, files: Mapping[str, bytes]) -> str:
    parts = [RECIPE_VERSION.encode(), interpreter_fingerprint(interpreter),
             requirements_key.encode(), init]
    parts.append(hashlib.sha256(busybox.read_bytes()).digest() if busybox is not None
                 else b"no busybox")
    for name, data in sorted(files.items()):
        parts += [name.encode(), data]
    return _hash_parts(parts)


def build_python_initramfs(init: bytes | Path, *, install: Sequence[str] = (),
                           busybox: Path | None = BUSYBOX_PATH,
                           files: Mapping[str, bytes] | None = None,
                           output: Path | None = None, root: Path | None = None,
                           rebuild: bool = False,
                           progress: Callable[[str], None] = _silent) -> PythonInitramfs:
    """A gzip'd newc initramfs with CPython, `install`ed distributions, busybox and /init.

    `install` takes pip requirement strings (local project directories or PyPI names);
    `files` adds more executables by guest path (e.g. the program /init starts). Cached (see
    the module docstring) unless `rebuild`; `output` copies the result there as well.
    """
    init_bytes = init.read_bytes() if isinstance(init, Path) else init
    if not init_bytes:
        raise GuestKernelError("the /init given is empty")
    if busybox is not None and not busybox.is_file():
        raise GuestKernelError(f"{busybox} is missing; install it with: apt-get install -y "
                               "busybox-static")
    interpreter = Interpreter.current()
    extra = dict(files or {})
    key = archive_key(init_bytes, site_packages_key(install, interpreter), interpreter,
                      busybox, extra)
    cache = (root or cache_root()) / "initramfs"
    cached = cache / f"python-{key}.cpio.gz"
    guest_python = str(interpreter.executable)
    built = False
    with exclusive_lock(cache / f"python-{key}.lock"):
        if rebuild or not cached.is_file():
            site_packages = install_site_packages(install, root=root, interpreter=interpreter,
                                                  progress=progress, rebuild=rebuild)
            progress("initramfs: busybox, /init and the Python user space")
            tree = _Tree(initramfs_entries(init_bytes, busybox=busybox, files=extra))
            with tempfile.TemporaryDirectory(prefix="keel-initramfs-") as scratch:
                python_entries(interpreter, site_packages, tree, Path(scratch), progress)
            entries = tree.list()
            data = cpio.archive(entries)
            progress(f"initramfs: {len(entries)} entries, {len(data) / (1 << 20):.1f} MiB; "
                     f"compressing (gzip -{GZIP_LEVEL})")
            partial = cached.with_name(cached.name + ".partial")
            partial.write_bytes(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))
            partial.rename(cached)
            built = True
    os.utime(cached)  # marks it used, for prune_cache
    prune_cache(cache)
    size = cached.stat().st_size
    progress(f"initramfs {'built' if built else 'is cached'}: {cached} "
             f"({size / (1 << 20):.1f} MiB)")
    path = cached
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, output)
        path = output
    return PythonInitramfs(path, key, built, size, guest_python,
                           str(interpreter.site_packages))
