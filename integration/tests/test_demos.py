"""The demos run end to end, as a person would start them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parents[1] / "demos"


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm (KVM not available)")
def test_first_guest_demo_prints_the_guest_greeting() -> None:
    completed = subprocess.run([sys.executable, str(DEMOS / "first_guest.py")],
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "Hello from a keel guest!" in completed.stdout
    assert "halted=True" in completed.stdout
