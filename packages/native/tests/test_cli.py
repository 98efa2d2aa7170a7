"""The keel command: help, plugins and doctor, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from keel.native.cli import keel


def test_help_lists_doctor() -> None:
    result = CliRunner().invoke(keel, ["--help"])
    assert result.exit_code == 0
    assert "doctor" in result.output


def test_doctor_json_reports_io_uring_opcodes() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "keel.native", "doctor", "--json", "--only", "io_uring"],
        capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    (check,) = report["checks"]
    assert check["name"] == "io_uring"
    assert check["status"] in {"ok", "warn"}
    assert "nop" in check["details"]["supported"]


def test_unknown_subcommand_is_a_clear_error() -> None:
    result = CliRunner().invoke(keel, ["no-such-command"])
    assert result.exit_code != 0
    assert "No such command" in result.output
