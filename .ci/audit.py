"""Known vulnerabilities in the installed dependencies (pip-audit over the project's virtualenv).

Fails (exit 1) when any installed package has a known vulnerability, or when only some packages could be
checked. pip-audit needs advisory data (PyPI's JSON API or OSV); where neither answers, every package comes
back "could not be audited": that is reported loudly as not audited, and does not fail the build, since a
machine without the data can neither pass nor fail the check honestly.
Usage: ``.venv/bin/python .ci/audit.py`` (``make audit``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


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
    code, lines = verdict(report)
    print("\n".join(lines))
    return code


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
    if vulnerable:
        return 1, lines
    if skipped and len(skipped) == len(dependencies):
        example = skipped[0]["skip_reason"]
        return 0, [
            f"pip-audit: NOT AUDITED: no advisory data reachable ({len(dependencies)} packages; {example})"
        ]
    if skipped:
        return 1, [f"NOT AUDITED {dep['name']}: {dep['skip_reason']}" for dep in skipped]
    return 0, [f"pip-audit: {len(dependencies)} packages, no known vulnerability"]


if __name__ == "__main__":
    sys.exit(main())
