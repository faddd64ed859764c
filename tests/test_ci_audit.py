""".ci/audit.py: what fails the build, what is only reported, and the audit from PyPI's project pages."""

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


def page(latest: str, *vulns: dict) -> dict:
    return {"info": {"version": latest}, "releases": {}, "vulnerabilities": list(vulns)}


def test_a_known_vulnerability_fails_and_names_the_fix() -> None:
    bad = {"name": "jinja2", "version": "3.1.4", "vulns": [{"id": "GHSA-x", "fix_versions": ["3.1.5"]}]}
    code, lines = audit.verdict({"dependencies": [CLEAN, bad]})
    assert code == 1
    assert lines == ["VULNERABLE jinja2 3.1.4: GHSA-x (fixed in 3.1.5)"]


def test_all_packages_audited_and_clean_passes() -> None:
    assert audit.verdict({"dependencies": [CLEAN, CLEAN]}) == (
        0,
        ["pip-audit: 2 of 2 packages audited, no known vulnerability"],
    )


def test_packages_without_advisory_data_are_named_not_passed_silently() -> None:
    code, lines = audit.verdict({"dependencies": [CLEAN, SKIPPED]})
    assert code == 0
    assert lines == [
        "pip-audit: 1 of 2 packages audited, no known vulnerability",
        f"NOT AUDITED werkzeug: {SKIPPED['skip_reason']}",
    ]


def test_a_package_at_its_latest_release_is_audited_from_the_project_page() -> None:
    advisory = {"id": "GHSA-wj6h-64fc-37mp", "fixed_in": [], "aliases": ["CVE-2024-23342"], "withdrawn": None}
    withdrawn = {"id": "PYSEC-0", "fixed_in": ["1.0"], "withdrawn": "2025-01-01T00:00:00Z"}
    report = {"dependencies": [{"name": "ecdsa", "skip_reason": SKIPPED["skip_reason"]}]}

    report = audit.with_latest_release_advisories(
        report, {"ecdsa": page("0.19.2", advisory, withdrawn)}, {"ecdsa": "0.19.2"}
    )

    [dep] = report["dependencies"]
    assert dep == {
        "name": "ecdsa",
        "version": "0.19.2",
        "vulns": [{"id": "GHSA-wj6h-64fc-37mp", "fix_versions": [], "aliases": ["CVE-2024-23342"]}],
    }
    assert audit.verdict(report) == (
        1,
        ["VULNERABLE ecdsa 0.19.2: GHSA-wj6h-64fc-37mp (fixed in no fix released)"],
    )


def test_a_clean_latest_release_passes_and_an_older_one_is_named_not_audited() -> None:
    report = {
        "dependencies": [
            {"name": "Jinja2", "skip_reason": SKIPPED["skip_reason"]},
            {"name": "numpy", "skip_reason": SKIPPED["skip_reason"]},
            {"name": "private-lib", "skip_reason": SKIPPED["skip_reason"]},  # no page on PyPI
            CLEAN,  # audited by pip-audit itself: left as it is
        ]
    }
    pages = {"Jinja2": page("3.1.6"), "numpy": page("2.5.5"), "private-lib": None}
    installed = {"jinja2": "3.1.6", "numpy": "2.4.6", "private-lib": "1.0", "flask": "3.1.2"}

    report = audit.with_latest_release_advisories(report, pages, installed)

    assert report["dependencies"] == [
        {"name": "Jinja2", "version": "3.1.6", "vulns": []},
        {
            "name": "numpy",
            "skip_reason": "installed 2.4.6; PyPI answers only for its latest release here, 2.5.5",
        },
        {"name": "private-lib", "skip_reason": SKIPPED["skip_reason"]},
        CLEAN,
    ]
    code, lines = audit.verdict(report)
    assert code == 0 and lines[0] == "pip-audit: 2 of 4 packages audited, no known vulnerability"


def test_a_skip_for_another_reason_is_not_looked_up() -> None:
    report = {"dependencies": [{"name": "pip", "skip_reason": "some other reason"}]}
    assert audit.with_latest_release_advisories(report, {"pip": page("26.3")}, {"pip": "26.3"}) == report
