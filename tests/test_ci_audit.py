""".ci/audit.py: what fails the build and what is only reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "ci_audit", Path(__file__).resolve().parents[1] / ".ci" / "audit.py"
)
assert SPEC is not None and SPEC.loader is not None
audit = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(audit)

CLEAN = {"name": "flask", "version": "3.1.2", "vulns": []}
SKIPPED = {"name": "werkzeug", "skip_reason": "Dependency not found on PyPI and could not be audited"}


def test_a_known_vulnerability_fails_and_names_the_fix() -> None:
    bad = {"name": "jinja2", "version": "3.1.4", "vulns": [{"id": "GHSA-x", "fix_versions": ["3.1.5"]}]}
    code, lines = audit.verdict({"dependencies": [CLEAN, bad]})
    assert code == 1
    assert lines == ["VULNERABLE jinja2 3.1.4: GHSA-x (fixed in 3.1.5)"]


def test_all_packages_audited_and_clean_passes() -> None:
    assert audit.verdict({"dependencies": [CLEAN, CLEAN]}) == (
        0,
        ["pip-audit: 2 packages, no known vulnerability"],
    )


def test_some_packages_not_audited_fails() -> None:
    code, lines = audit.verdict({"dependencies": [CLEAN, SKIPPED]})
    assert code == 1 and lines[0].startswith("NOT AUDITED werkzeug")


def test_no_advisory_data_at_all_is_reported_not_passed_silently() -> None:
    code, lines = audit.verdict({"dependencies": [SKIPPED, SKIPPED]})
    assert code == 0 and "NOT AUDITED" in lines[0]
