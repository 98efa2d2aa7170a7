"""The demos run end to end, as a person would start them (one command each)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from echo_thread_per_core import CLIENT_CONNECTIONS

from keel.native.testing.skips import requires_kvm, requires_tap

DEMOS = Path(__file__).resolve().parents[1] / "demos"
DEMO_TIMEOUT_SECONDS = 120
WORKERS = 2


def run_demo(name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run([sys.executable, str(DEMOS / name), *arguments],
                               capture_output=True, text=True, timeout=DEMO_TIMEOUT_SECONDS,
                               check=False)
    assert completed.returncode == 0, f"{name} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed


@requires_kvm
def test_first_guest_demo_prints_the_guest_greeting() -> None:
    completed = run_demo("first_guest.py")
    assert "Hello from a keel guest!" in completed.stdout
    assert "halted=True" in completed.stdout


@requires_kvm
@requires_tap
def test_guest_http_demo_fetches_every_byte_from_the_lwip_guest() -> None:
    output = run_demo("guest_http.py").stdout
    assert "http: listening on 10.200.0.2:80" in output
    assert "GET / -> 200, <h1>Hello from lwIP</h1>" in output
    assert re.search(r"166 responses, \d+ body bytes checked byte for byte, 18 connections",
                     output), output
    assert output.rstrip().endswith("VM stopped, TAP and namespace removed")


@pytest.mark.go
def test_http_calls_go_demo_shows_go_answers_and_stops(go_library: object) -> None:
    # go_library: the session has built the Go library already, so the demo reuses the cache.
    output = run_demo("http_calls_go.py").stdout
    assert re.search(r"serving on http://127\.0\.0\.1:\d+", output)
    assert '200 {"text":"keel","fnv1a64":"585d68d75cf6d64c"}' in output  # FNV-1a 64 of "keel"
    assert '200 {"value":12,"square":144}' in output
    assert '"description":"#7 ada (9.5) [math logic] @ 51.50,-0.10"' in output
    assert '400 record "not-a-record" has 1 fields, expected 5' in output
    assert output.rstrip().endswith("server stopped, Go library closed")


def test_echo_thread_per_core_demo_spreads_connections_and_echoes_everything() -> None:
    output = run_demo("echo_thread_per_core.py", "--workers", str(WORKERS)).stdout
    rows = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)$", output, re.MULTILINE)
    assert [int(row[0]) for row in rows] == list(range(WORKERS)), output
    total_connections = sum(int(row[2]) for row in rows)
    total_bytes = sum(int(row[4]) for row in rows)
    assert total_connections == CLIENT_CONNECTIONS, output
    assert f"{total_bytes} bytes echoed in all (expected {total_bytes})" in output
    assert "workers stopped, listeners closed" in output


def test_echo_demo_refuses_a_silly_worker_count() -> None:
    completed = subprocess.run([sys.executable, str(DEMOS / "echo_thread_per_core.py"),
                                "--workers", "0"], capture_output=True, text=True,
                               timeout=DEMO_TIMEOUT_SECONDS, check=False)
    assert completed.returncode != 0
    assert "--workers must be between 1 and 64, got 0" in completed.stderr
