"""OR-Tools is loaded only by a process that plans: a web worker importing the app stays under QUALITY.md's
memory bar (the import adds about 20 MB to each worker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_importing_the_app_does_not_load_or_tools() -> None:
    probe = "import sys, wsgi; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ortools'))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
