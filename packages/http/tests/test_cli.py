"""`keel http serve`: help, bad input, and a real server with worker processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from keel.http.cli import http
from tests.conftest import request

APP_SOURCE = '''
import os
from keel.http import Router

app = Router()

@app.get("/")
async def index() -> str:
    return f"pid {os.getpid()}"
'''
START_TIMEOUT = 20.0


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(http, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--workers", "--backend", "--certfile"):
        assert option in result.output


def test_bad_app_names_fail_with_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(http, ["serve", "nocolon"])
    assert result.exit_code != 0 and "module:attribute" in result.output
    result = CliRunner().invoke(http, ["serve", "no_such_module_xyz:app"])
    assert result.exit_code != 0 and "cannot import" in result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start")


def test_serve_with_two_workers_and_stop_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "cli_app.py").write_text(APP_SOURCE)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keel.native", "http", "serve", "cli_app:app", "--port",
         str(port), "--workers", "2", "--no-access-log"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, process)
        pids = set()
        for _ in range(40):
            status, _, body = request(("127.0.0.1", port),
                                      b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert status == 200
            pids.add(body)
        assert len(pids) == 2, pids  # SO_REUSEPORT spread connections over both workers
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
