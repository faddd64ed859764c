"""An engineer's open orders on the PDA (shared/QUALITY.md "Speed and scale", row 6), on PostgreSQL.

A fresh migrated database with 2 000 engineers and 50 000 open orders spread over them (~25 each, every one
with a running completion clock), ANALYZE, then ``GET /mobile/v1/orders`` for one engineer through the Flask
app in this process (WSGI, no socket; token checked, orders, clocks and checklist serialised), 200 runs after
10 warm-ups, p50/p95. Reference in the same run: the indexed query alone (psycopg, the engineer's open orders
by engineer_id and status, soonest first). Bar: p95 ≤ 10 ms end to end.

The database is BENCH_MOBILE_DB_PREFIX (dispatch_bench_mobile_) + pid, dropped at the end. Exit 0 unless
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

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support import harness  # noqa: E402
from support.fleet import OPEN_STATUSES, load_fleet, login  # noqa: E402

ENGINEERS, OPEN_ORDERS, RUNS = 2000, 50_000, 200
PREFIX = os.environ.get("BENCH_MOBILE_DB_PREFIX", "dispatch_bench_mobile_")
STRICT = os.environ.get("BENCH_STRICT") == "1"
BAR_MS = 10.0


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> int:
    logging.getLogger("dispatch.http").setLevel(logging.WARNING)  # one access-log line per request
    harness.drop_stale_databases(PREFIX)
    dbname = f"{PREFIX}{os.getpid()}"
    harness.create_database(dbname)
    try:
        with harness.terminate_as_exit():
            fleet = load_fleet(
                harness.pg_url(dbname, "postgresql+psycopg"),
                engineers=ENGINEERS,
                open_orders=OPEN_ORDERS,
                clocks=True,
            )
            engineer_id = fleet.engineer_ids[0]
            token = login(fleet.app, "engineer", engineer_code=fleet.engineer_codes[0])
            client = fleet.app.test_client()
            headers = {"Authorization": f"Bearer {token}"}

            def endpoint() -> int:
                response = client.get("/mobile/v1/orders", headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code} {response.get_data(as_text=True)[:200]}")
                body = response.get_json()
                return len(body["items"] if isinstance(body, dict) else body)

            count = endpoint()
            for _ in range(9):
                endpoint()
            http = timed(endpoint, RUNS)
            with psycopg.connect(harness.pg_url(dbname)) as conn:
                query = (
                    "SELECT id, status, appointment_start, requested_start FROM orders"
                    " WHERE engineer_id = %s AND status = ANY(%s)"
                    " ORDER BY coalesce(appointment_start, requested_start, created_at), id"
                )
                statuses = list(OPEN_STATUSES) + ["suspended"]
                for _ in range(10):
                    conn.execute(query, (engineer_id, statuses)).fetchall()
                reference = timed(lambda: conn.execute(query, (engineer_id, statuses)).fetchall(), RUNS)
    finally:
        harness.drop_database(dbname)
    p50, p95 = harness.percentile(http, 50), harness.percentile(http, 95)
    print(f"engineer's open orders, {OPEN_ORDERS} open orders over {ENGINEERS} engineers (this one: {count})")
    print(f"  GET /mobile/v1/orders  p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  (bar: p95 <= {BAR_MS} ms)")
    print(
        f"  reference: the indexed query alone p50 {harness.percentile(reference, 50):.2f} ms"
        f"  p95 {harness.percentile(reference, 95):.2f} ms"
    )
    met = p95 <= BAR_MS
    print("  bar: " + ("met" if met else "MISSED"))
    return 1 if (STRICT and not met) else 0


if __name__ == "__main__":
    sys.exit(main())
