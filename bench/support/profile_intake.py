"""Where one intake request's time goes (diagnostic, not a benchmark; not run by ``make bench``).

Runs ``POST /api/v1/intake/orders`` in-process through the Flask test client against a fresh migrated
PostgreSQL database, and the reference app's ``POST /orders`` the same way, then prints: one request's SQL,
wall/CPU ms per request without the profiler, and a cProfile of N requests grouped by package plus the top
functions. Usage: ``.venv/bin/python bench/support/profile_intake.py [N] [--what-if]``
(``--what-if`` instead compares configuration-only variants: expire_on_commit, pool_pre_ping). The
profiler's timer is CPU time (``PROFILE_TIMER=wall`` for wall time, which charges the PostgreSQL round trips);
``PROFILE_FOCUS=<function name>`` also prints where that function's time goes, ``PROFILE_CALLERS=<function
name>`` who calls it.
"""

from __future__ import annotations

import cProfile
import io
import logging
import os
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

from support import harness  # noqa: E402
from support.intake_load import UNLIMITED_INTAKE, intake_body, intake_databases  # noqa: E402

_ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
N = int(_ARGS[0]) if _ARGS else 500
_seq = iter(range(1, 10**8))
UNLIMITED = {"INTAKE_RATE_LIMIT": UNLIMITED_INTAKE}


def body(tag: str) -> bytes:
    n = next(_seq)
    return intake_body(f"10000-{tag}-{n}", n)


PHASE_FILES = ("/work/main/api/", "/work/main/dispatch/", "reference_app.py")
PHASE_FUNCS = {
    "preprocess_request",
    "process_response",
    "do_teardown_request",
    "commit",
    "_flush",
    "do_ping",
    "normalise_cn_mobile",
    "_checkout",
    "load",
    "dump",
    "_parse",
    "jsonify",
    "log",
    "_connection_for_bind",
    "parse_args",
    "_prepare_response_content",
    "_instance_processor",
    "_load_expired",
    "load_scalar_attributes",
}


def group_of(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins/C"
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0].removesuffix(".py")
    if str(harness.REPO) in filename:
        rel = Path(filename).relative_to(harness.REPO)
        return f"ours:{rel.parts[0]}/{rel.parts[1] if len(rel.parts) > 2 else ''}".rstrip("/")
    return f"stdlib:{Path(filename).name}"


def profile(label: str, client: Any, path: str, headers: dict[str, str], engine: Any) -> None:
    import sqlalchemy as sa

    statements: list[str] = []

    def trace(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split())[:150])

    for _ in range(200):  # warm-up
        assert client.post(path, data=body(label), headers=headers).status_code == 201
    sa.event.listen(engine, "before_cursor_execute", trace)
    checkouts = [0]

    def on_checkout(*args: Any) -> None:
        checkouts[0] += 1

    sa.event.listen(engine, "checkout", on_checkout)
    response = client.post(path, data=body(label), headers=headers)
    sa.event.remove(engine, "before_cursor_execute", trace)
    sa.event.remove(engine, "checkout", on_checkout)
    print(
        f"\n=== {label}: one request: HTTP {response.status_code}, {len(statements)} SQL statements "
        f"(+ BEGIN/COMMIT per transaction), {checkouts[0]} pool checkout(s), "
        f"response {len(response.data)} bytes"
    )
    for s in statements:
        print(f"    {s}")

    for block in range(3):
        w0, c0 = time.perf_counter(), time.process_time()
        answered = [client.post(path, data=body(label), headers=headers).status_code for _ in range(N)]
        w, c = time.perf_counter() - w0, time.process_time() - c0
        print(f"  block {block}: wall {1000 * w / N:.2f} ms/req, CPU {1000 * c / N:.2f} ms/req (no profiler)")
        if set(answered) != {201}:
            raise SystemExit(
                f"  answered {sorted(set(answered))}, not only 201: the figures are not an intake's"
            )

    timer = time.process_time if os.environ.get("PROFILE_TIMER", "cpu") == "cpu" else time.perf_counter
    prof = cProfile.Profile(timer)
    prof.enable()
    for _ in range(N):
        client.post(path, data=body(label), headers=headers)
    prof.disable()
    stats = pstats.Stats(prof)
    groups: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, _func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        groups[group_of(filename)] += tt
        total += tt
    kind = "CPU" if timer is time.process_time else "wall"
    print(
        f"  cProfile ({kind} timer): {1000 * total / N:.2f} ms/req profiled (inflated); self time by package:"
    )
    for name, tt in sorted(groups.items(), key=lambda kv: -kv[1])[:18]:
        print(f"    {name:40s} {1000 * tt / N:7.3f} ms/req  {tt / total:6.1%}")
    print("  phases (cumulative, ms/req; nested phases overlap):")
    for (filename, line, func), (_cc, nc, _tt, ct, _callers) in sorted(
        stats.stats.items(),
        key=lambda kv: -kv[1][3],  # type: ignore[attr-defined]
    ):
        if (any(part in filename for part in PHASE_FILES) or func in PHASE_FUNCS) and ct / N >= 0.00005:
            short = filename.replace(str(harness.REPO) + "/", "").split("site-packages/")[-1]
            print(f"    {1000 * ct / N:7.3f}  {nc / N:5.1f}x  {short}:{line}({func})")
    # A function name: where its time goes (PROFILE_FOCUS), who calls it and how often (PROFILE_CALLERS).
    for variable, report in (("PROFILE_FOCUS", "print_callees"), ("PROFILE_CALLERS", "print_callers")):
        if name := os.environ.get(variable):
            out = io.StringIO()
            getattr(pstats.Stats(prof, stream=out).sort_stats("cumulative"), report)(name)
            print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(45)
    print("  top cumulative:")
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    for line in lines[start : start + 46]:
        print("   " + line[:200])
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    print("  top self time:")
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    for line in lines[start : start + 26]:
        print("   " + line[:200])


def what_if(ours_db: str, headers: dict[str, str]) -> None:
    """Configuration-only variants of our intake, interleaved blocks, CPU and wall ms per request."""
    import sqlalchemy as sa

    from dispatch.extensions import db
    from dispatch.factory import create_app

    url = harness.pg_url(ours_db)
    apps = {
        "pre_ping": create_app({"SQLALCHEMY_DATABASE_URI": url, **UNLIMITED}),
        "no_pre_ping": create_app(
            {"SQLALCHEMY_DATABASE_URI": url, "SQLALCHEMY_ENGINE_OPTIONS": {}, **UNLIMITED}
        ),
        "no_limiter": create_app({"SQLALCHEMY_DATABASE_URI": url, "RATELIMIT_ENABLED": False}),
    }
    variants = [
        ("as configured (expire_on_commit=True, pool_pre_ping)", "pre_ping", True),
        ("expire_on_commit=False", "pre_ping", False),
        ("expire_on_commit=False, no pool_pre_ping", "no_pre_ping", False),
        ("no rate limiter (RATELIMIT_ENABLED=False)", "no_limiter", True),
    ]
    results: dict[str, list[tuple[float, float]]] = defaultdict(list)
    print("\n=== what-if (configuration only, ours): statements per request, then interleaved blocks")
    for label, app_key, expire in variants:
        app = apps[app_key]
        db.session.session_factory.configure(expire_on_commit=expire)  # sessions live per request
        client = app.test_client()
        for _ in range(100):
            assert client.post("/api/v1/intake/orders", data=body("wi"), headers=headers).status_code == 201
        with app.app_context():
            engine = db.engine
        count = [0, 0]
        seen: list[str] = []

        def trace(
            conn: Any, cursor: Any, statement: str, *args: Any, _c: list[int] = count, _s: list[str] = seen
        ) -> None:
            _c[0] += 1
            _s.append(" ".join(statement.split()[:4])[:60])

        def checkout(*args: Any, _c: list[int] = count) -> None:
            _c[1] += 1

        sa.event.listen(engine, "before_cursor_execute", trace)
        sa.event.listen(engine, "checkout", checkout)
        client.post("/api/v1/intake/orders", data=body("wi"), headers=headers)
        sa.event.remove(engine, "before_cursor_execute", trace)
        sa.event.remove(engine, "checkout", checkout)
        print(f"  {label}: {count[0]} SQL statements, {count[1]} pool checkout(s); last: {seen[-2:]}")
    for _round in range(3):
        for label, app_key, expire in variants:
            db.session.session_factory.configure(expire_on_commit=expire)
            client = apps[app_key].test_client()
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(N):
                client.post("/api/v1/intake/orders", data=body("wi"), headers=headers)
            results[label].append(
                ((time.process_time() - c0) / N * 1000, (time.perf_counter() - w0) / N * 1000)
            )
    db.session.session_factory.configure(expire_on_commit=True)
    for label, _k, _e in variants:
        cpu = sorted(c for c, _w in results[label])[1]
        wall = sorted(w for _c, w in results[label])[1]
        print(f"  {label:55s} CPU {cpu:6.2f} ms/req, wall {wall:6.2f} ms/req (median of 3 blocks of {N})")


def main() -> int:
    with intake_databases(f"dispatch_bench_intake_{os.getpid()}_prof") as (ours_db, ref_db):
        os.environ["DATABASE_URL"] = harness.pg_url(ours_db)
        os.environ["BENCH_REF_DATABASE_URL"] = harness.pg_url(ref_db, "postgresql+psycopg")

        from dispatch.cli import CLI_ACTOR
        from dispatch.extensions import db
        from dispatch.factory import create_app
        from dispatch.services.auth import create_api_key

        app = create_app({"SQLALCHEMY_DATABASE_URI": harness.pg_url(ours_db), **UNLIMITED})
        with app.app_context():
            raw, _ = create_api_key("bench-profile", ["intake"], actor=CLI_ACTOR)
            engine = db.engine
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {raw}"}
        with open(os.devnull, "w") as sink:  # the access log is part of the request; not on the terminal
            logging.getLogger("dispatch").handlers[0].setStream(sink)  # type: ignore[attr-defined]
            if "--what-if" in sys.argv:
                what_if(ours_db, headers)
                return 0
            profile("ours", app.test_client(), "/api/v1/intake/orders", headers, engine)

        import reference_app  # type: ignore[import-not-found]

        with reference_app.app.app_context():
            ref_engine = reference_app.db.engine
        profile(
            "reference",
            reference_app.app.test_client(),
            "/orders",
            {"Content-Type": "application/json"},
            ref_engine,
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
