"""Known vulnerabilities in the installed dependencies (pip-audit over the project's virtualenv).

pip-audit asks PyPI for the advisories of each installed release (``/pypi/<name>/<version>/json``). Where
that answers nothing (a registry mirror that serves only the project pages, as on this project's build
machines), a package still gets audited when it is installed at its latest release: the project page
(``/pypi/<name>/json``) lists the advisories that affect the latest release. A package installed at an
older release, or unknown to PyPI, then has no advisory data anywhere: it is named NOT AUDITED with the
reason, which can neither pass nor fail the check honestly, so it does not fail the build.

Fails (exit 1) on any known vulnerability. Usage: ``.venv/bin/python .ci/audit.py`` (``make audit``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

BIN = Path(sys.executable).parent
PYPI = "https://pypi.org/pypi"
EDITABLE = "distribution marked as editable"
NOT_FOUND = "Dependency not found on PyPI"  # pip-audit's reason when the release's page did not answer


def main() -> int:
    result = subprocess.run(  # noqa: S603 (a fixed command line)
        [str(BIN / "pip-audit"), "--skip-editable", "--progress-spinner", "off", "-f", "json"],
        capture_output=True,
        text=True,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit failed (exit {result.returncode}):\n{result.stderr[-2000:]}", file=sys.stderr)
        return 1
    # The project itself (installed editable) is what is under review, not a dependency.
    report["dependencies"] = [d for d in report["dependencies"] if d.get("skip_reason") != EDITABLE]
    skipped = [d for d in report["dependencies"] if not_found(d)]
    with ThreadPoolExecutor(8) as pool:
        names = [d["name"] for d in skipped]
        pages = dict(zip(names, pool.map(project_page, names), strict=True))
    report = with_latest_release_advisories(report, pages, installed_versions())
    code, lines = verdict(report)
    print("\n".join(lines))
    return code


def installed_versions() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def not_found(dep: dict) -> bool:
    """pip-audit skipped the package because PyPI's page of its release did not answer."""
    return (dep.get("skip_reason") or "").startswith(NOT_FOUND)


def project_page(name: str) -> dict[str, Any] | None:
    """PyPI's JSON page of a project, or None where it does not answer."""
    try:
        with urllib.request.urlopen(f"{PYPI}/{canonicalize_name(name)}/json", timeout=15) as response:  # noqa: S310
            return json.load(response)
    except (OSError, ValueError):  # no network, 404, a broken page
        return None


def with_latest_release_advisories(
    report: dict, pages: dict[str, dict[str, Any] | None], installed: dict[str, str]
) -> dict:
    """pip-audit's report, each package it skipped audited from its project page where it is installed at
    the latest release (the page's advisories are that release's), else given the reason it was not."""
    dependencies = []
    for dep in report["dependencies"]:
        page = pages.get(dep["name"]) if not_found(dep) else None
        version = installed.get(canonicalize_name(dep["name"]))
        if page is None or version is None:
            dependencies.append(dep)
            continue
        latest = page["info"]["version"]
        if latest != version:
            reason = f"installed {version}; PyPI answers only for its latest release here, {latest}"
            dependencies.append({"name": dep["name"], "skip_reason": reason})
            continue
        vulns = [
            {"id": v["id"], "fix_versions": v.get("fixed_in") or [], "aliases": v.get("aliases") or []}
            for v in page.get("vulnerabilities") or []
            if not v.get("withdrawn")
        ]
        dependencies.append({"name": dep["name"], "version": version, "vulns": vulns})
    return {**report, "dependencies": dependencies}


def verdict(report: dict) -> tuple[int, list[str]]:
    """(exit code, lines to print) for pip-audit's JSON report."""
    dependencies = report["dependencies"]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    lines = []
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix released"
            lines.append(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    audited = len(dependencies) - len(skipped)
    if not vulnerable:
        lines.append(f"pip-audit: {audited} of {len(dependencies)} packages audited, no known vulnerability")
    lines += [f"NOT AUDITED {dep['name']}: {dep['skip_reason']}" for dep in skipped]
    return (1 if vulnerable else 0), lines


if __name__ == "__main__":
    sys.exit(main())
