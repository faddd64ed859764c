"""ruff and mypy are part of the suite: a lint or type error fails `make test` like any other defect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict-core"],
)
def test_code_is_clean(command):
    result = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exceptions_are_logged_through_the_redacting_helper():
    """A bare ``log.exception`` would print PostgreSQL's error details (customers' values) into the log."""
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for package in ("dispatch", "api", "mobile_api")
        for path in sorted((REPO / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ".exception(" in line and not line.lstrip().startswith("#")
    ]
    assert offenders == []
