"""Candidate ranking benchmark (shared/QUALITY.md "Speed and scale", row 5), on PostgreSQL.

* Pure scoring: :func:`dispatch.assignment.scoring.rank` over a pool of 2 000 engineers around Kunming (a
  third of them failing some hard filter), BENCH_ASSIGN_RUNS (300) runs, p50/p95. Reference in the same run:
  geopy's geodesic from the order to all 2 000 engineers (what ranking would cost without numpy), and numpy's
  haversine alone. Bar: rank p95 ≤ 5 ms.
* The endpoint, twice: a fresh migrated database with 2 000 active engineers with the order's skill who all
  cover the order's district (the worst case: every one passes the SQL prefilter and is scored), and one where
  they cover Kunming's five districts in turn (a city: ~400 pass); 4 000 open orders spread over them (load,
  urgency and team balance have something to count), ANALYZE, then
  ``GET /api/v1/orders/{id}/candidates`` through the Flask app in this process (WSGI, no socket), 100 runs
  after 5 warm-ups, p50/p95. Bar: p95 ≤ 50 ms.

The database is BENCH_ASSIGN_DB_PREFIX (dispatch_bench_assign_) + pid, dropped at the end. Exit 0 unless
something broke; BENCH_STRICT=1 also fails on a missed bar.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support import harness  # noqa: E402
from support.fleet import load_fleet, login  # noqa: E402

from dispatch.assignment.scoring import HARD_FILTERS, Pool, Weights, rank  # noqa: E402
from dispatch.geo.distance import geodesic_km, haversine_km  # noqa: E402

RUNS = int(os.environ.get("BENCH_ASSIGN_RUNS", "300"))
HTTP_RUNS = 100
ENGINEERS = 2000
OPEN_ORDERS = 4000
PREFIX = os.environ.get("BENCH_ASSIGN_DB_PREFIX", "dispatch_bench_assign_")
STRICT = os.environ.get("BENCH_STRICT") == "1"
ORDER = (25.0423, 102.7065)
BAR_RANK_MS, BAR_ENDPOINT_MS = 5.0, 50.0


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    """Milliseconds per call."""
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def p(values: list[float], pct: float) -> float:
    return harness.percentile(values, pct)


def synthetic_pool(rng: np.random.Generator) -> Pool:
    n = ENGINEERS
    broken = rng.random((n, len(HARD_FILTERS))) < 0.06  # ~1/3 of engineers fail at least one rule
    return Pool(
        ids=np.arange(1, n + 1, dtype=np.int64),
        broken=broken,
        lat=rng.uniform(24.85, 25.2, n),
        lng=rng.uniform(102.55, 102.95, n),
        load=rng.integers(0, 6, n),
        capacity=np.full(n, 6, dtype=np.int64),
        urgent=rng.integers(0, 3, n),
        team=rng.integers(0, 12, n),
        open_orders=rng.integers(0, 8, n),
    )


def pure_scoring() -> dict[str, float]:
    pool = synthetic_pool(np.random.default_rng(7))
    weights = Weights()
    rank(pool, *ORDER, weights, max_km=30, limit=10)  # warm-up
    ranking = timed(lambda: rank(pool, *ORDER, weights, max_km=30, limit=10), RUNS)
    haversine = timed(lambda: haversine_km(*ORDER, pool.lat, pool.lng), RUNS)
    points = list(zip(pool.lat.tolist(), pool.lng.tolist(), strict=True))
    geodesic = timed(lambda: [geodesic_km(ORDER, pt) for pt in points], 10)
    return {
        "rank_p50": p(ranking, 50),
        "rank_p95": p(ranking, 95),
        "haversine_p50": p(haversine, 50),
        "geodesic_all_p50": p(geodesic, 50),
    }


def endpoint(dbname: str, spread: int) -> dict[str, float]:
    fleet = load_fleet(
        harness.pg_url(dbname, "postgresql+psycopg"),
        engineers=ENGINEERS,
        open_orders=OPEN_ORDERS,
        spread=spread,
    )
    app, order_id, token = fleet.app, fleet.waiting_order_id, login(fleet.app, "dispatcher")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/orders/{order_id}/candidates"

    def call() -> None:
        response = client.get(url, headers=headers)
        if response.status_code != 200 or len(response.get_json()) != 10:
            raise RuntimeError(
                f"candidates failed: {response.status_code} {response.get_data(as_text=True)[:200]}"
            )

    for _ in range(5):
        call()
    latencies = timed(call, HTTP_RUNS)
    return {"endpoint_p50": p(latencies, 50), "endpoint_p95": p(latencies, 95)}


def main() -> int:
    logging.getLogger("dispatch.http").setLevel(logging.WARNING)  # one access-log line per request
    harness.drop_stale_databases(PREFIX)
    pure = pure_scoring()
    http: dict[int, dict[str, float]] = {}
    for spread in (1, 5):
        dbname = f"{PREFIX}{os.getpid()}_{spread}"
        harness.create_database(dbname)
        try:
            with harness.terminate_as_exit():
                http[spread] = endpoint(dbname, spread)
        finally:
            harness.drop_database(dbname)
    print(f"candidate ranking, 1 order x {ENGINEERS} engineers (PostgreSQL {harness.server_version()})")
    print(
        f"  pure rank()      p50 {pure['rank_p50']:7.3f} ms  p95 {pure['rank_p95']:7.3f} ms"
        f"  (bar: p95 <= {BAR_RANK_MS} ms)"
    )
    print(
        f"    reference: numpy haversine alone p50 {pure['haversine_p50']:.3f} ms;"
        f" geopy geodesic to all {ENGINEERS} p50 {pure['geodesic_all_p50']:.1f} ms"
        f" ({pure['geodesic_all_p50'] / pure['rank_p50']:.0f}x the whole ranking)"
    )
    for spread, label in ((1, "all 2000 in the order's district"), (5, "2000 over 5 districts, ~400 pass")):
        figures = http[spread]
        print(
            f"  GET /candidates  p50 {figures['endpoint_p50']:7.2f} ms  p95 {figures['endpoint_p95']:7.2f} ms"
            f"  ({label}; {OPEN_ORDERS} open orders; bar: p95 <= {BAR_ENDPOINT_MS} ms)"
        )
    missed = [
        name
        for name, ok in (
            ("rank p95", pure["rank_p95"] <= BAR_RANK_MS),
            ("endpoint p95 (2000 pass)", http[1]["endpoint_p95"] <= BAR_ENDPOINT_MS),
            ("endpoint p95 (5 districts)", http[5]["endpoint_p95"] <= BAR_ENDPOINT_MS),
        )
        if not ok
    ]
    print("  bars: " + ("all met" if not missed else "MISSED " + ", ".join(missed)))
    return 1 if (STRICT and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
