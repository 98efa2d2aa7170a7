"""One exclusive file lock for keel.vmm's build caches (guest kernel, initramfs, lwIP source).

Why a lock file: parallel test sessions (nox sessions, pytest-xdist, two terminals) ask for
the same artifact at once; the first builds it and the others wait and then find it, instead
of racing to write the same cache directory.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created with its parent directories) meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
