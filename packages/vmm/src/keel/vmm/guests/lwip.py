"""lwIP for test guests: Debian's `lwip` source package, fetched with apt and cached.

Why Debian's source package and not a vendored copy: the stack is third-party code with its
own releases and security fixes (Debian's patches include a CVE fix); keel keeps only its port
(lwipopts.h, arch/cc.h, the netif driver and the guest program) and compiles the upstream core
files below into the guest. `apt-get source --download-only` needs a `deb-src` entry; instead
of changing the machine's apt configuration, keel gives apt a private one (a copy of the
system's Debian sources with `Types: deb-src`, its own lists and archive directories) under
~/.cache/keel/lwip/apt/, so nothing outside the cache is touched and no root is needed. The
unpacked tree lives in ~/.cache/keel/lwip/<debian version>/ (or under $KEEL_CACHE_DIR).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keel.vmm.cache_lock import exclusive_lock
from keel.vmm.errors import GuestBuildError
from keel.vmm.guests.build import GuestLibrary

logger = logging.getLogger("keel.vmm")

SOURCE_PACKAGE = "lwip"
EXPECTED_UPSTREAM_SERIES = "2.1."
CACHE_ENVIRONMENT_VARIABLE = "KEEL_CACHE_DIR"
APT_TIMEOUT_SECONDS = 300
UNPACK_TIMEOUT_SECONDS = 120
COMPLETE_MARKER = ".keel-complete"
FETCH_LOCK = ".fetch-lock"
SYSTEM_SOURCE_FILES = (Path("/etc/apt/sources.list.d/debian.sources"),
                       Path("/etc/apt/sources.list"))
INCLUDE_DIRECTORY = "src/include"

# The core of lwIP for IPv4 + TCP with NO_SYS=1 (upstream's COREFILES and CORE4FILES in
# src/Filelists.mk, less DNS, DHCP, AutoIP, IGMP and the altcp layers this guest leaves off),
# plus the Ethernet layer.
CORE_SOURCES: tuple[str, ...] = (
    "src/core/init.c", "src/core/def.c", "src/core/inet_chksum.c", "src/core/ip.c",
    "src/core/mem.c", "src/core/memp.c", "src/core/netif.c", "src/core/pbuf.c",
    "src/core/raw.c", "src/core/stats.c", "src/core/sys.c", "src/core/tcp.c",
    "src/core/tcp_in.c", "src/core/tcp_out.c", "src/core/timeouts.c", "src/core/udp.c",
    "src/core/ipv4/etharp.c", "src/core/ipv4/icmp.c", "src/core/ipv4/ip4.c",
    "src/core/ipv4/ip4_addr.c", "src/core/ipv4/ip4_frag.c",
    "src/netif/ethernet.c",
)
# Upstream code is not held to keel's -Werror: a newer gcc's new warning must not break it.
LIBRARY_CFLAGS = ("-Wno-error", "-Wno-unused-parameter", "-Wno-address")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LwipSource:
    """An unpacked lwIP tree: where it is and which Debian version it came from."""

    root: Path
    version: str

    @property
    def include_directory(self) -> Path:
        return self.root / INCLUDE_DIRECTORY

    def sources(self) -> tuple[Path, ...]:
        return tuple(self.root / name for name in CORE_SOURCES)


def cache_directory() -> Path:
    base = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    root = Path(base) if base else Path.home() / ".cache" / "keel"
    return root / "lwip"


def _log_progress(message: str) -> None:
    logger.info("%s", message)


def cached_source(directory: Path | None = None) -> LwipSource | None:
    """The newest complete unpacked tree in the cache, or None."""
    root = directory or cache_directory()
    if not root.is_dir():
        return None
    trees = sorted(path for path in root.iterdir()
                   if path.is_dir() and (path / COMPLETE_MARKER).exists())
    if not trees:
        return None
    return LwipSource(trees[-1], trees[-1].name)


def lwip_source(*, progress: Progress = _log_progress,
                directory: Path | None = None) -> LwipSource:
    """Debian's lwIP sources, unpacked: from the cache, or fetched with apt-get now."""
    root = directory or cache_directory()
    cached = cached_source(root)
    if cached is not None:
        return cached
    for tool in ("apt-get", "dpkg-source"):
        if shutil.which(tool) is None:
            raise GuestBuildError(f"{tool} not found: fetching lwIP's Debian source package "
                                  "needs apt and dpkg-dev (apt-get install dpkg-dev)")
    with exclusive_lock(root / FETCH_LOCK):  # one fetch at a time; the others then find it
        cached = cached_source(root)
        if cached is not None:
            return cached
        return _fetch(root, progress)


def _fetch(root: Path, progress: Progress) -> LwipSource:
    apt_options = _private_apt(root / "apt")
    progress("lwip: updating a private deb-src package list (apt-get update)")
    update_output = _run(["apt-get", *apt_options, "update"], root,
                         "apt-get update for the deb-src list", APT_TIMEOUT_SECONDS)
    # apt-get update exits 0 when a source is unreachable; keep its warnings for the error
    update_problems = "\n".join(line for line in update_output.splitlines()
                                if line.startswith(("W:", "E:", "Err:")))
    with tempfile.TemporaryDirectory(prefix="keel-lwip-", dir=root) as scratch_name:
        scratch = Path(scratch_name)
        progress(f"lwip: downloading Debian source package {SOURCE_PACKAGE!r} "
                 "(apt-get source --download-only)")
        _run(["apt-get", *apt_options, "source", "--download-only", SOURCE_PACKAGE], scratch,
             f"apt-get source --download-only {SOURCE_PACKAGE}", APT_TIMEOUT_SECONDS,
             context=update_problems)
        descriptions = sorted(scratch.glob(f"{SOURCE_PACKAGE}_*.dsc"))
        if not descriptions:
            raise GuestBuildError(f"apt-get source left no {SOURCE_PACKAGE}_*.dsc in {scratch}")
        version = descriptions[-1].name.removeprefix(f"{SOURCE_PACKAGE}_").removesuffix(".dsc")
        if not re.fullmatch(r"[0-9A-Za-z.+~:-]+", version):
            raise GuestBuildError(f"unexpected lwip source version {version!r}")
        if not version.startswith(EXPECTED_UPSTREAM_SERIES):
            raise GuestBuildError(f"Debian's lwip is {version}; keel's port expects "
                                  f"{EXPECTED_UPSTREAM_SERIES}x")
        progress(f"lwip: unpacking {descriptions[-1].name} (dpkg-source -x)")
        unpacked = scratch / "tree"
        _run(["dpkg-source", "-x", descriptions[-1].name, str(unpacked)], scratch,
             "dpkg-source -x", UNPACK_TIMEOUT_SECONDS)
        missing = [name for name in CORE_SOURCES if not (unpacked / name).is_file()]
        if missing:
            raise GuestBuildError(f"lwip {version} lacks the core files {missing}")
        (unpacked / COMPLETE_MARKER).write_text(version + "\n")
        target = root / version
        if target.exists():
            shutil.rmtree(target)
        os.replace(unpacked, target)
    progress(f"lwip: {version} unpacked in {target}")
    return LwipSource(target, version)


def _private_apt(directory: Path) -> list[str]:
    """apt options for a private deb-src configuration beside (not in) the system's."""
    parts = directory / "sources.list.d"
    lists = directory / "lists"
    archives = directory / "cache" / "archives"
    for path in (parts, lists / "partial", archives / "partial"):
        path.mkdir(parents=True, exist_ok=True)
    (parts / "keel-deb-src.sources").write_text(_deb_src_entries())
    settings = [f"Dir::Etc::SourceList={os.devnull}", f"Dir::Etc::SourceParts={parts}",
                f"Dir::State::Lists={lists}", f"Dir::Cache={directory / 'cache'}"]
    if os.geteuid() == 0:
        settings.append("APT::Sandbox::User=root")  # the cache belongs to root, not _apt
    return ["-q", *(part for setting in settings for part in ("-o", setting))]


def _deb_src_entries() -> str:
    """The system's Debian sources with `Types: deb-src` (as one-line entries, deb822 text)."""
    stanzas: list[str] = []
    for path in SYSTEM_SOURCE_FILES:
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                if re.search(r"^Types:.*\bdeb\b", stanza, re.MULTILINE):
                    stanzas.append(re.sub(r"^Types:.*$", "Types: deb-src", stanza,
                                          flags=re.MULTILINE).strip())
        else:
            for line in text.splitlines():
                match = re.match(r"deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)", line.strip())
                if match:
                    options = match.group(1) or ""
                    signed_by = re.search(r"signed-by=(\S+?)\]?(\s|$)", options)
                    stanza = (f"Types: deb-src\nURIs: {match.group(2)}\n"
                              f"Suites: {match.group(3)}\nComponents: {match.group(4)}")
                    if signed_by:
                        stanza += f"\nSigned-By: {signed_by.group(1).rstrip(']')}"
                    stanzas.append(stanza)
    if not stanzas:
        raise GuestBuildError("no Debian apt sources found in "
                              f"{', '.join(str(path) for path in SYSTEM_SOURCE_FILES)}: keel "
                              "derives its deb-src entry for lwIP from them")
    return "\n\n".join(stanzas) + "\n"


def _run(command: list[str], cwd: Path, what: str, timeout: float, context: str = "") -> str:
    try:
        completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                                   timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise GuestBuildError(f"{what} took over {timeout:.0f} s") from None
    if completed.returncode != 0:
        earlier = f"apt-get update reported:\n{context[-2000:]}\n" if context else ""
        raise GuestBuildError(f"{what} failed (exit {completed.returncode}); apt could not "
                              f"fetch Debian's {SOURCE_PACKAGE} source package:\n"
                              f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}{earlier}")
    return completed.stdout + completed.stderr


# keel's port headers that lwIP includes by fixed paths: (path in the build, packaged file).
PORT_HEADERS: tuple[tuple[str, str], ...] = (("arch/cc.h", "lwip_arch_cc.h"),)


def guest_library() -> GuestLibrary:
    """lwIP as a library for build.py: core sources, include directory, flags, port headers."""
    source = lwip_source()
    return GuestLibrary(identity=f"{SOURCE_PACKAGE} {source.version}", sources=source.sources(),
                        include_directories=(source.include_directory,),
                        cflags=LIBRARY_CFLAGS, staged_headers=PORT_HEADERS)
