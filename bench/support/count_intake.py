"""Instructions per intake request, ours against the reference app (diagnostic, not run by ``make bench``).

On a shared, noisy 2-core machine the CPU time of the same loop varies by a quarter between blocks, which
hides the few-percent effect of most changes to the intake path. Instruction counts do not vary: this runs
``POST /api/v1/intake/orders`` in-process through the Flask test client (as bench/support/profile_intake.py
does) under ``valgrind --tool=callgrind``, counting only the measured requests (instrumentation is switched
on after the warm-up with ``callgrind_control``), and the reference app's ``POST /orders`` the same way, then
prints instructions (Ir) per request for each and their ratio. Only the web process is counted, not
PostgreSQL. About a minute per target.

Usage: ``.venv/bin/python bench/support/count_intake.py [N]`` (N measured requests per target, default 200);
``COUNT_KEEP=<dir>`` keeps the callgrind output files there for ``callgrind_annotate``; ``COUNT_ONLY=ours``
counts ours only (comparing a change: the counts repeat to within about 0.1 %); ``COUNT_CONFIG=<JSON object>``
adds configuration to ours (what a part costs: ``'{"RATELIMIT_ENABLED": false}'``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

from support import harness  # noqa: E402
from support.intake_load import UNLIMITED_INTAKE, intake_body, intake_databases  # noqa: E402

WARMUP = 200
UNLIMITED = {"INTAKE_RATE_LIMIT": UNLIMITED_INTAKE}


def _callgrind(switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True, capture_output=True)


def child(target: str, n: int) -> None:
    """Runs under valgrind: warm up, then ``n`` counted requests to ``target`` (``ours`` or ``reference``)."""
    if target == "ours":
        from dispatch.cli import CLI_ACTOR
        from dispatch.factory import create_app
        from dispatch.services.auth import create_api_key

        extra = json.loads(os.environ.get("COUNT_CONFIG", "{}"))
        app = create_app({"SQLALCHEMY_DATABASE_URI": os.environ["DATABASE_URL"], **UNLIMITED, **extra})
        with app.app_context():
            raw, _ = create_api_key("bench-count", ["intake"], actor=CLI_ACTOR)
        logging.getLogger("dispatch").handlers[0].setStream(open(os.devnull, "w"))  # type: ignore[attr-defined]  # noqa: SIM115
        client, path = app.test_client(), "/api/v1/intake/orders"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {raw}"}
    else:
        import reference_app  # type: ignore[import-not-found]

        client, path = reference_app.app.test_client(), "/orders"
        headers = {"Content-Type": "application/json"}
    bodies = [intake_body(f"10000-count-{i}", i) for i in range(WARMUP + n)]
    for body in bodies[:WARMUP]:
        assert client.post(path, data=body, headers=headers).status_code == 201
    _callgrind("on")
    answered = [client.post(path, data=body, headers=headers).status_code for body in bodies[WARMUP:]]
    _callgrind("off")
    if set(answered) != {201}:
        raise SystemExit(f"{target}: answered {sorted(set(answered))}, not only 201")


def count(target: str, n: int, env: dict[str, str], out: Path) -> int:
    """Instructions counted in ``n`` requests to ``target`` (a child process under callgrind)."""
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            target,
            str(n),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    match = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
        return 0
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    keep = os.environ.get("COUNT_KEEP")
    out_dir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="count_intake_"))
    out_dir.mkdir(parents=True, exist_ok=True)  # COUNT_KEEP may name a folder not made yet
    try:
        with intake_databases(f"dispatch_bench_count_{os.getpid()}_") as (ours_db, ref_db):
            env = dict(
                os.environ,
                DATABASE_URL=harness.pg_url(ours_db),
                BENCH_REF_DATABASE_URL=harness.pg_url(ref_db, "postgresql+psycopg"),
            )
            per_request = {}
            for target in [t for t in ("ours", "reference") if os.environ.get("COUNT_ONLY", t) == t]:
                total = count(target, n, env, out_dir / f"callgrind.{target}")
                per_request[target] = total / n
                print(
                    f"{target:9s} {total / n / 1e6:8.3f} M instructions per request ({n} requests)",
                    flush=True,
                )
            if len(per_request) == 2:
                print(f"reference / ours: {per_request['reference'] / per_request['ours']:.1%}")
    finally:
        if not keep:
            for path in out_dir.glob("*"):
                path.unlink()
            out_dir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
