"""`keel runtime info` and `keel runtime selftest` through click's runner."""

from __future__ import annotations

import json

from click.testing import CliRunner

from keel.runtime.cli import runtime_command


def test_info_reports_the_probe_and_the_override(monkeypatch) -> None:
    monkeypatch.setenv("KEEL_RUNTIME_DRIVER", "epoll")
    result = CliRunner().invoke(runtime_command, ["info", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["chosen"] == "epoll" and facts["environment_override"] == "epoll"
    assert facts["probe"] in ("io_uring", "epoll")


def test_selftest_echoes(driver: str) -> None:
    result = CliRunner().invoke(runtime_command, ["selftest", "--driver", driver])
    assert result.exit_code == 0, result.output
    assert f"{driver}: 1000 echoes ok" in result.output
