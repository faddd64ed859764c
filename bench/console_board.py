"""The dispatchers' order board with 5 000 open orders (shared/QUALITY.md; the console's bar: ≤ 1 s).

A fresh migrated database (SQLite file, and PostgreSQL ``dispatch_bench_board`` when a server answers on
BENCH_PG_HOST) with 200 engineers and 5 000 open orders spread over them (bench/support/fleet.py: set-based
Core inserts, a running completion clock each, ANALYZE), then, through the Flask test client in this
process (WSGI, no socket; the console's session cookie checked on every request):

- ``GET /console/board``: the default page (50 orders, newest first, every filter off: all open orders
  counted), the largest page (200, the most the board shows at once: a dispatcher works a filtered queue,
  not 5 000 rows; the API has the same cap), and the ``sla=at_risk`` filter;
- ``GET /console/board/rows``: the partial the page fetches every 10 s;
- reference in the same run: ``GET /api/v1/orders`` for the same page (same service query, JSON).

RUNS runs after warm-ups, median and p95. Bar: the board's default page p95 ≤ 1 000 ms. Exit 0 unless
something broke; BENCH_STRICT=1 also fails on a missed bar.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support import harness  # noqa: E402
from support.fleet import load_fleet, login  # noqa: E402

ENGINEERS, OPEN_ORDERS, RUNS, WARMUPS = 200, 5000, 30, 3
DBNAME = "dispatch_bench_board"
STRICT = os.environ.get("BENCH_STRICT") == "1"
BAR_MS = 1000.0
OPEN = "new,dispatched,taken,appointed,on_site,pending_acceptance,in_progress,suspended,returned"


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def console_client(app: Any) -> Any:
    """A test client signed in to the console as a dispatcher (the login form, with its CSRF token)."""
    from dispatch.actors import Actor
    from dispatch.extensions import db
    from dispatch.services.auth import create_user

    with app.app_context():
        create_user(
            "bench-console", role="dispatcher", password="bench-password", actor=Actor.system(name="bench")
        )
        db.session.remove()
    client = app.test_client()
    client.get("/console/login")
    with client.session_transaction() as session:
        token = session["csrf"]
    form = {"csrf_token": token, "username": "bench-console", "password": "bench-password"}
    response = client.post("/console/login", data=form)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return client


def measure(url: str, backend: str) -> list[tuple[str, list[float], int]]:
    fleet = load_fleet(url, engineers=ENGINEERS, open_orders=OPEN_ORDERS, clocks=True)
    app = fleet.app
    client = console_client(app)
    api = app.test_client()
    headers = {"Authorization": f"Bearer {login(app, 'dispatcher')}"}

    def get(path: str, headers: dict[str, str] | None = None) -> Callable[[], int]:
        via = api if headers else client  # the API by bearer token; the console by its session cookie

        def call() -> int:
            response = via.get(path, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.get_data(as_text=True)[:300]}")
            return len(response.get_data())

        return call

    cases = [
        ("GET /console/board (50 per page)", get("/console/board")),
        ("GET /console/board/rows (the 10 s refresh)", get("/console/board/rows")),
        ("GET /console/board?page_size=200", get("/console/board?page_size=200")),
        ("GET /console/board?sla=at_risk", get("/console/board?sla=at_risk")),
        ("ref: GET /api/v1/orders (50, same filter)", get(f"/api/v1/orders?status={OPEN}", headers=headers)),
        (
            "ref: GET /api/v1/orders (200, same filter)",
            get(f"/api/v1/orders?status={OPEN}&page_size=200", headers=headers),
        ),
    ]
    results = []
    for name, call in cases:
        size = call()
        for _ in range(WARMUPS - 1):
            call()
        results.append((name, timed(call, RUNS), size))
    with app.app_context():
        from dispatch.extensions import db

        db.engine.dispose()
    print(f"\n[{backend}] order board, {OPEN_ORDERS + 1} open orders over {ENGINEERS} engineers, {RUNS} runs")
    for name, samples, size in results:
        print(
            f"  {name:46s} p50 {harness.percentile(samples, 50):7.1f} ms"
            f"  p95 {harness.percentile(samples, 95):7.1f} ms  ({size / 1024:.0f} KiB)"
        )
    return results


def report(results: list[tuple[str, list[float], int]]) -> bool:
    by_name = {name: samples for name, samples, _ in results}
    board = by_name["GET /console/board (50 per page)"]
    reference = by_name["ref: GET /api/v1/orders (50, same filter)"]
    p50, p95 = harness.percentile(board, 50), harness.percentile(board, 95)
    ratio = p50 / harness.percentile(reference, 50)
    met = p95 <= BAR_MS
    print(
        f"  board / API for the same page (p50): {ratio:.2f}x;  bar p95 <= {BAR_MS:.0f} ms: "
        + ("met" if met else "MISSED")
    )
    return met


def postgres_available() -> bool:
    try:
        with psycopg.connect(harness.pg_url("postgres"), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def main() -> int:
    logging.getLogger("dispatch.http").setLevel(logging.WARNING)  # one access-log line per request
    logging.getLogger("alembic").setLevel(logging.WARNING)
    met = True
    with tempfile.TemporaryDirectory() as tmp, harness.terminate_as_exit():
        met &= report(measure(f"sqlite:///{tmp}/board.db", "sqlite"))
    if postgres_available():
        harness.create_database(DBNAME)
        try:
            with harness.terminate_as_exit():
                met &= report(measure(harness.pg_url(DBNAME, "postgresql+psycopg"), "postgresql"))
        finally:
            harness.drop_database(DBNAME)
    else:
        print("\n[postgresql] skipped: no server at " + harness.pg_url("postgres"))
    return 1 if (STRICT and not met) else 0


if __name__ == "__main__":
    sys.exit(main())
