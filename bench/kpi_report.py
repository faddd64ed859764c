"""KPI report benchmark (shared/QUALITY.md "Speed and scale", row 7), on PostgreSQL.

Data. One dedicated database, BENCH_KPI_DB (dispatch_bench_kpi) on BENCH_PG_HOST/PORT/USER (127.0.0.1:5432,
postgres), created if missing; its ``public`` schema is dropped and migrated afresh at the start and emptied
again at the end (BENCH_KPI_KEEP=1 keeps the data). Loaded by set-based SQL (``INSERT … SELECT
generate_series``): 100 teams of 20 engineers, each team in one of the Kunming districts the migrations seed
(5); 500 000 customers with one address each; BENCH_KPI_ORDERS (2 000 000) orders received 08:00–22:00 local
time over 2025: June holds 1/12 of them (≈ 170 000, the month measured), December is a peak month with a
quarter (the "larger share" case), the other ten months share the rest. Mix: broadband 40 %, repair 30 %,
IPTV 12 %, opportunity 10 %, move 8 %; 89 % completed 1–48 h after receipt (skewed early), 6 % cancelled
(half by the customer), 2 % returned (half refused by the customer), the rest suspended or in progress; each
order's engineer is in a team of the address's district (returned and half the cancelled orders have none).

Rollup. Each order's current contribution, as the incremental path leaves it (dispatch/reporting/kpi.py
``order_contributions`` with rollup.py's dims: received day in DISPATCH_TZ, order type, district, team,
engineer; ``orders.received`` / ``excluded`` / ``completed`` / ``completed_on_time``, on time = completed
within ON_TIME_HOURS of receipt, standing in for the completion clock), computed in SQL and summed per
(day, dims, metric). The sums of June's first week are written as ``kpi_deltas`` and folded by the real
``rollup.fold()``; every other day goes straight into ``kpi_daily`` by the SQL equivalent of
``rollup.project()`` (fold() moves ~5 500 deltas/s into an empty kpi_daily here, ~2 300/s into a full
one: all of them would take minutes). Then about 1 000
deltas stay unfolded, as between two folds: the per-order contributions of every PENDING_EVERY-th order
completed in June. Then VACUUM ANALYZE.

Check (exit 1 when it fails): for June and December, the report's received / excluded / completed /
completed-on-time per order type equal a GROUP BY over raw orders; for every grouping the groups add up to
the same; the HTTP answer equals the service's.

Measured, BENCH_KPI_RUNS (20) runs each after 3 warm-ups, median and p95, in ms:
(a) reference: the naive GROUP BY over raw ``orders`` for the month (received, excluded, completed per order
    type), as migrated, then with a covering index on (created_at) INCLUDE the columns it reads (created,
    VACUUMed, dropped after); (b) ``rollup.totals('order_type', …)`` alone; (c) ``reports.kpi_report`` for
    group_by=order_type in an app context; (d) ``GET /api/v1/reports/kpi`` with a manager's token over real
    HTTP to ``gunicorn wsgi:app`` (2 sync workers, which close the connection after each response), JSON by
    order type, also CSV and XLSX, and JSON by district, team and engineer; the same request through the
    Flask test client in this process.
Ratios are to (a) without the covering index, measured in the same run. Bar: (d) JSON by order type, median
≤ 50 ms. Exit 0 unless something broke or the check failed; BENCH_STRICT=1 also fails on a missed bar.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support import harness, sla_data  # noqa: E402
from support.fleet import login  # noqa: E402

from dispatch.reporting import kpi  # noqa: E402
from dispatch.vocabulary import (  # noqa: E402
    CUSTOMER_CAUSED_CANCEL_REASONS,
    CUSTOMER_CAUSED_RETURN_REASONS,
    ORDER_TYPES,
)

DBNAME = os.environ.get("BENCH_KPI_DB", "dispatch_bench_kpi")
ORDERS = int(os.environ.get("BENCH_KPI_ORDERS", "2000000"))
RUNS = int(os.environ.get("BENCH_KPI_RUNS", "20"))
KEEP = os.environ.get("BENCH_KPI_KEEP") == "1"
STRICT = os.environ.get("BENCH_STRICT") == "1"
WARMUP = 3
TEAMS, PER_TEAM, CUSTOMERS = 100, 20, 500_000
YEAR = 2025
MONTH = (date(YEAR, 6, 1), date(YEAR, 6, 30))  # measured
FOLDED = (date(YEAR, 6, 1), date(YEAR, 6, 7))  # its first week goes through rollup.fold()
PEAK = (date(YEAR, 12, 1), date(YEAR, 12, 31))  # a quarter of all orders
MONTH_SHARE, PEAK_SHARE = 1 / 12, 0.25
ON_TIME_HOURS = 36
PENDING_EVERY = 450  # every n-th completed June order stays unfolded (~3 deltas each)
TZ = "Asia/Shanghai"
BAR_MS = 50.0
SECRET = "bench-kpi-secret"


class Broken(RuntimeError):
    """The benchmark itself went wrong (not a missed bar)."""


def connect() -> psycopg.Connection:
    return sla_data.connect(DBNAME)


def step(label: str, func: Callable[[], Any]) -> Any:
    t0 = time.monotonic()
    result = func()
    print(f"  {label}: {time.monotonic() - t0:.1f} s", flush=True)
    return result


# ---------------------------------------------------------------- database and data


@contextmanager
def indexes_dropped(conn: psycopg.Connection, *tables: str, primary: bool = False) -> Iterator[None]:
    """Bulk loading: drop the tables' indexes and unique constraints (the primary key too if ``primary``),
    then build them again from their own definitions, which is several times faster than maintaining them
    row by row."""
    found = conn.execute(
        """SELECT t.relname, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid),
                  c.conname, pg_get_constraintdef(c.oid)
           FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
           LEFT JOIN pg_constraint c
             ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x')
           WHERE t.relname = ANY(%s) AND t.relnamespace = 'public'::regnamespace
             AND (%s OR NOT i.indisprimary)""",
        (list(tables), primary),
    ).fetchall()
    for table, index, _, constraint, _ in found:
        conn.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {constraint}" if constraint else f"DROP INDEX {index}"
        )
    yield
    conn.execute("SET maintenance_work_mem = '512MB'")
    for table, _, index_sql, constraint, constraint_sql in found:
        conn.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {constraint} {constraint_sql}" if constraint else index_sql
        )


def reset_database() -> None:
    """Create the database if missing; drop and recreate its public schema; migrate."""
    with sla_data._admin() as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DBNAME,)).fetchone() is None:
            sla_data._guard(DBNAME)
            admin.execute(f'CREATE DATABASE "{DBNAME}"')
    empty_schema()
    sla_data.migrate(DBNAME)


def empty_schema() -> None:
    with connect() as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


def day_counts() -> tuple[list[date], list[int]]:
    """Orders per local day: June and December get their shares, the other months the rest, evenly."""
    days = [
        date(YEAR, 1, 1) + timedelta(days=i) for i in range((date(YEAR + 1, 1, 1) - date(YEAR, 1, 1)).days)
    ]

    def inside(day: date, span: tuple[date, date]) -> bool:
        return span[0] <= day <= span[1]

    month_days = sum(inside(d, MONTH) for d in days)
    peak_days = sum(inside(d, PEAK) for d in days)
    other_days = len(days) - month_days - peak_days
    per_month_day = round(ORDERS * MONTH_SHARE / month_days)
    per_peak_day = round(ORDERS * PEAK_SHARE / peak_days)
    per_other_day = round(ORDERS * (1 - MONTH_SHARE - PEAK_SHARE) / other_days)
    counts = [
        per_month_day if inside(d, MONTH) else per_peak_day if inside(d, PEAK) else per_other_day
        for d in days
    ]
    return days, counts


_REFERENCE = (
    """INSERT INTO teams (id, name, leader_name, leader_phone)
       SELECT g, '装维' || g || '班', '班长' || g, '+86139' || lpad(g::text, 8, '0')
       FROM generate_series(1, %(teams)s) AS g""",
    # Engineer g is in team 1 + (g - 1) % teams: team t has engineers t, t + teams, t + 2 * teams, ...
    """INSERT INTO engineers (id, code, name, phone, team_id, daily_capacity, active, created_at, updated_at)
       SELECT g, 'K' || lpad(g::text, 5, '0'), '工程师' || g, '+86138' || lpad(g::text, 8, '0'),
              1 + (g - 1) %% %(teams)s, 6, true, now(), now()
       FROM generate_series(1, %(teams)s * %(per_team)s) AS g""",
    """INSERT INTO customers (id, name, phone, created_at)
       SELECT g, '客户' || g, '+86137' || lpad(g::text, 8, '0'), timestamptz '2024-12-01 00:00+08'
       FROM generate_series(1, %(customers)s) AS g""",
    # Customer c lives in district number (c - 1) % districts (by id), at the district's centroid.
    """INSERT INTO addresses (id, customer_id, text, district_name, district_id, lat, lng, location_source)
       SELECT c.id, c.id, '昆明市' || d.name || '幸福路' || c.id || '号', d.name, d.id, d.lat, d.lng,
              'centroid'
       FROM customers c
       JOIN (SELECT id, name, lat, lng, row_number() OVER (ORDER BY id) - 1 AS idx FROM districts) AS d
         ON d.idx = (c.id - 1) %% (SELECT count(*) FROM districts)""",
    "SELECT setval(pg_get_serial_sequence('teams', 'id'), (SELECT max(id) FROM teams))",
    "SELECT setval(pg_get_serial_sequence('engineers', 'id'), (SELECT max(id) FROM engineers))",
    "SELECT setval(pg_get_serial_sequence('customers', 'id'), (SELECT max(id) FROM customers))",
    "SELECT setval(pg_get_serial_sequence('addresses', 'id'), (SELECT max(id) FROM addresses))",
)

# Team t works in district number (t - 1) % districts; an order goes to a random team of its address's
# district and a random engineer of that team.
_ORDERS = """
INSERT INTO orders (external_id, order_type, pay_mode, priority, status, customer_id, address_id, engineer_id,
                    products, intake_fingerprint, cancel_reason, cancel_reason_code, return_reason,
                    suspend_reason, status_before_suspend, created_at, updated_at, completed_at, version)
SELECT 'KPI-' || lpad(n::text, 8, '0'), order_type,
       CASE WHEN r_pay < 0.7 THEN 'install_then_pay' ELSE 'prepaid' END, 'normal', status,
       customer_id, customer_id,
       CASE WHEN status = 'returned' OR (status = 'cancelled' AND r_pay < 0.5) THEN NULL
            ELSE team_id + %(teams)s * floor(r_engineer * %(per_team)s)::int END,
       '[]', repeat('0', 64),
       CASE WHEN status = 'cancelled' THEN '客户来电取消' END,
       CASE WHEN status = 'cancelled' THEN (ARRAY['customer_withdrew', 'duplicate', 'provider', 'other'])
            [CASE WHEN r_reason < 0.5 THEN 1 ELSE 2 + floor((r_reason - 0.5) * 6)::int END] END,
       CASE WHEN status = 'returned' THEN (ARRAY['customer_refused', 'no_resource', 'wrong_address'])
            [CASE WHEN r_reason < 0.5 THEN 1 ELSE 2 + floor((r_reason - 0.5) * 4)::int END] END,
       CASE WHEN status = 'suspended' THEN 'customer_unavailable' END,
       CASE WHEN status = 'suspended' THEN 'appointed' END,
       created_at, coalesce(completed_at, created_at + interval '3 hours'), completed_at, 1
FROM (
    SELECT n, created_at, customer_id, r_pay, r_reason, r_engineer,
           CASE WHEN r_type < 0.40 THEN 'broadband_install' WHEN r_type < 0.52 THEN 'iptv_install'
                WHEN r_type < 0.62 THEN 'opportunity' WHEN r_type < 0.92 THEN 'repair' ELSE 'move' END
               AS order_type,
           CASE WHEN r_status < 0.89 THEN 'completed' WHEN r_status < 0.95 THEN 'cancelled'
                WHEN r_status < 0.97 THEN 'returned' WHEN r_status < 0.98 THEN 'suspended'
                ELSE 'in_progress' END AS status,
           CASE WHEN r_status < 0.89 THEN created_at + (1 + 47 * r_done * r_done) * interval '1 hour' END
               AS completed_at,
           1 + district + %(districts)s
             * floor(r_team * ((%(teams)s - 1 - district) / %(districts)s + 1))::int AS team_id
    FROM (
        SELECT *, (customer_id - 1) %% %(districts)s AS district
        FROM (
            SELECT row_number() OVER () AS n,
                   (d.day + time '08:00' + random() * interval '14 hours') AT TIME ZONE %(tz)s AS created_at,
                   1 + floor(random() * %(customers)s)::int AS customer_id,
                   random() AS r_type, random() AS r_status, random() AS r_reason, random() AS r_pay,
                   random() AS r_team, random() AS r_engineer, random() AS r_done
            FROM unnest(%(days)s::date[], %(counts)s::int[]) AS d(day, n)
            CROSS JOIN LATERAL generate_series(1, d.n) AS g
        ) AS raw
    ) AS placed
) AS o
"""

# What each order contributes now (kpi.order_contributions with rollup's dims), one row per order;
# ``{where}`` picks the orders.
_FACTS = """
SELECT o.id AS order_id, (o.created_at AT TIME ZONE %(tz)s)::date AS day, o.order_type,
       a.district_name AS district, coalesce(e.team_id, 0) AS team_id,
       coalesce(o.engineer_id, 0) AS engineer_id,
       (o.status = 'cancelled' AND o.cancel_reason_code = ANY(%(cancel)s))
           OR (o.status = 'returned' AND o.return_reason = ANY(%(return)s)) AS excluded,
       o.status = 'completed' AS completed,
       o.status = 'completed' AND o.completed_at <= o.created_at + %(on_time)s * interval '1 hour' AS on_time
FROM orders o
JOIN addresses a ON a.id = o.address_id
LEFT JOIN engineers e ON e.id = o.engineer_id
WHERE {where}
"""
_IN_FOLDED = "o.created_at >= %(fold_from)s AND o.created_at < %(fold_to)s"
_PENDING_ORDER = (
    "o.created_at >= %(month_from)s AND o.created_at < %(month_to)s"
    " AND o.status = 'completed' AND o.id %% %(pending_every)s = 0"
)
_COUNTS = """count(*) AS received, count(*) FILTER (WHERE excluded) AS excluded,
             count(*) FILTER (WHERE completed) AS completed, count(*) FILTER (WHERE on_time) AS on_time"""
_METRICS = """CROSS JOIN LATERAL (VALUES (%(received)s, s.received), (%(excluded)s, s.excluded),
                                      (%(completed)s, s.completed), (%(on_time_metric)s, s.on_time))
             AS m(metric, value)
WHERE m.value > 0"""

# The first week's contributions summed per (day, dims, metric), as deltas for rollup.fold().
_FOLDED_DELTAS = f"""
INSERT INTO kpi_deltas (day, order_type, district, team_id, engineer_id, metric, value)
SELECT s.day, s.order_type, s.district, s.team_id, s.engineer_id, m.metric, m.value
FROM (SELECT day, order_type, district, team_id, engineer_id, {_COUNTS}
      FROM ({_FACTS.format(where=f"{_IN_FOLDED} AND NOT ({_PENDING_ORDER})")}) AS f
      GROUP BY day, order_type, district, team_id, engineer_id) AS s
{_METRICS}
ORDER BY s.day, s.engineer_id, s.order_type, m.metric
"""

# rollup.project() in SQL for every other order: each grouping of the dims (a grouping set), split by order
# type; in day order, roughly as the fold creates them.
_PROJECT = f"""
INSERT INTO kpi_daily (grouping, day, key, order_type, metric, value)
SELECT s.grouping, s.day, s.key, s.order_type, m.metric, m.value
FROM (SELECT CASE WHEN GROUPING(district) = 0 THEN 'district' WHEN GROUPING(team_id) = 0 THEN 'team'
                  WHEN GROUPING(engineer_id) = 0 THEN 'engineer' ELSE 'order_type' END AS grouping,
             day, coalesce(district, team_id::text, engineer_id::text, '') AS key, order_type, {_COUNTS}
      FROM ({_FACTS.format(where=f"NOT ({_IN_FOLDED}) AND NOT ({_PENDING_ORDER})")}) AS f
      GROUP BY GROUPING SETS ((day, order_type), (day, order_type, district), (day, order_type, team_id),
                              (day, order_type, engineer_id))) AS s
{_METRICS}
ORDER BY s.day
"""

# Left unfolded: each pending order's own deltas, as its transactions wrote them.
_PENDING = f"""
INSERT INTO kpi_deltas (day, order_type, district, team_id, engineer_id, metric, value)
SELECT s.day, s.order_type, s.district, s.team_id, s.engineer_id, m.metric, m.value
FROM (SELECT order_id, day, order_type, district, team_id, engineer_id, 1 AS received,
             excluded::int AS excluded, completed::int AS completed, on_time::int AS on_time
      FROM ({_FACTS.format(where=_PENDING_ORDER)}) AS f) AS s
{_METRICS}
ORDER BY s.order_id, m.metric
"""


def bounds(span: tuple[date, date]) -> tuple[str, str]:
    """[first local midnight, midnight after the last day) as timestamptz literals in DISPATCH_TZ."""
    return f"{span[0].isoformat()} 00:00+08", f"{(span[1] + timedelta(days=1)).isoformat()} 00:00+08"


def params() -> dict[str, Any]:
    month_from, month_to = bounds(MONTH)
    fold_from, fold_to = bounds(FOLDED)
    return {
        "teams": TEAMS,
        "per_team": PER_TEAM,
        "customers": CUSTOMERS,
        "tz": TZ,
        "on_time": ON_TIME_HOURS,
        "cancel": sorted(CUSTOMER_CAUSED_CANCEL_REASONS),
        "return": sorted(CUSTOMER_CAUSED_RETURN_REASONS),
        "month_from": month_from,
        "month_to": month_to,
        "pending_every": PENDING_EVERY,
        "fold_from": fold_from,
        "fold_to": fold_to,
        "received": kpi.RECEIVED,
        "excluded": kpi.EXCLUDED,
        "completed": kpi.COMPLETED,
        "on_time_metric": kpi.ON_TIME,
    }


def load_orders() -> int:
    days, counts = day_counts()
    with connect() as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SELECT setseed(0.42)")
        # Foreign keys hold by construction: no per-row trigger checks (superuser only; skipped otherwise).
        with suppress(psycopg.Error):
            conn.execute("SET session_replication_role = replica")
        districts = conn.execute("SELECT count(*) FROM districts").fetchone()
        if not districts or not districts[0]:
            raise Broken("no districts: the migrations seed Kunming's")
        values = {**params(), "districts": districts[0], "days": days, "counts": counts}
        with indexes_dropped(conn, "customers", "addresses", "orders"):
            for sql in (*_REFERENCE, _ORDERS):
                conn.execute(sql, values)
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
    return int(row[0]) if row else 0


@dataclass
class Rollup:
    folded_deltas: int
    fold_seconds: float
    projected_rows: int
    pending: int
    daily_rows: dict[str, int]


def build_rollup(app: Any) -> Rollup:
    from dispatch.extensions import db
    from dispatch.reporting import rollup

    with connect() as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET work_mem = '256MB'")
        folded = conn.execute(_FOLDED_DELTAS, params()).rowcount
        conn.execute("ANALYZE kpi_deltas")
        with app.app_context():
            t0 = time.monotonic()
            result = rollup.fold()
            fold_seconds = time.monotonic() - t0
            db.session.remove()
        left = conn.execute("SELECT count(*) FROM kpi_deltas").fetchone()
        if (left and left[0]) or result.deltas != folded:
            raise Broken(f"fold() took {result.deltas} of {folded} deltas, {left} left")
        with indexes_dropped(conn, "kpi_daily", primary=True):
            projected = conn.execute(_PROJECT, params()).rowcount
        pending = conn.execute(_PENDING, params()).rowcount
        daily: dict[str, int] = dict(
            conn.execute("SELECT grouping, count(*) FROM kpi_daily GROUP BY grouping").fetchall()
        )
    return Rollup(
        folded_deltas=result.deltas,
        fold_seconds=fold_seconds,
        projected_rows=projected,
        pending=pending,
        daily_rows=daily,
    )


def vacuum() -> None:
    with connect() as conn:
        conn.execute("VACUUM ANALYZE")


# ---------------------------------------------------------------- the reference: raw orders

NAIVE = """
SELECT order_type, count(*) AS received,
       count(*) FILTER (WHERE (status = 'cancelled' AND cancel_reason_code = 'customer_withdrew')
                           OR (status = 'returned' AND return_reason = 'customer_refused')) AS excluded,
       count(*) FILTER (WHERE status = 'completed') AS completed
FROM orders WHERE created_at >= %s AND created_at < %s
GROUP BY order_type
"""
COVERING = (
    "CREATE INDEX bench_orders_kpi_covering ON orders (created_at)"
    " INCLUDE (order_type, status, cancel_reason_code, return_reason)"
)
ON_TIME = f"""
SELECT order_type, count(*) FILTER (WHERE status = 'completed'
                                      AND completed_at <= created_at + interval '{ON_TIME_HOURS} hours')
FROM orders WHERE created_at >= %s AND created_at < %s GROUP BY order_type
"""

Counts = dict[str, tuple[int, int, int, int]]  # order type -> (received, excluded, completed, on time)


def naive_counts(conn: psycopg.Connection, span: tuple[date, date]) -> Counts:
    start, end = bounds(span)
    on_time: dict[str, int] = dict(conn.execute(ON_TIME, (start, end)).fetchall())
    return {t: (r, x, c, on_time[t]) for t, r, x, c in conn.execute(NAIVE, (start, end)).fetchall()}


def timed(fn: Callable[[], Any], runs: int = RUNS, warmup: int = WARMUP) -> list[float]:
    """Milliseconds per call, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def plan_of(conn: psycopg.Connection, span: tuple[date, date]) -> str:
    """The scan node(s) the planner picked for the naive query, for the output."""
    rows = conn.execute("EXPLAIN " + NAIVE, bounds(span)).fetchall()
    nodes = [r[0].strip().lstrip("-> ").split("  ")[0] for r in rows if "Scan" in r[0]]
    return "; ".join(nodes)


# ---------------------------------------------------------------- the app side


def report_counts(report: dict[str, Any]) -> Counts:
    """Per order type, summed over the report's groups."""
    out: dict[str, list[int]] = {}
    for group in report["groups"]:
        for entry in group["completion"]:
            acc = out.setdefault(entry["order_type"], [0, 0, 0, 0])
            for i, name in enumerate(("received", "excluded", "completed", "completed_on_time")):
                acc[i] += entry[name]
    return {t: (v[0], v[1], v[2], v[3]) for t, v in out.items()}


class Http:
    """Sequential GETs to the gunicorn app (http.client reconnects when a sync worker closes)."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise Broken(f"GET {path}: HTTP {response.status} {body[:300]!r}")
        return body

    def close(self) -> None:
        self.conn.close()


def kpi_path(span: tuple[date, date], group_by: str = "order_type", fmt: str = "json") -> str:
    return f"/api/v1/reports/kpi?from={span[0]}&to={span[1]}&group_by={group_by}&format={fmt}"


# ---------------------------------------------------------------- output


@dataclass
class Row:
    label: str
    values: list[float] | None  # ms; None: a heading
    note: str = ""


def table(rows: list[Row], reference: float) -> str:
    header = ("what", "median ms", "p95 ms", "× ref", "")
    cells = [header]
    for row in rows:
        if row.values is None:
            cells.append((row.label, "", "", "", row.note))
            continue
        median = statistics.median(row.values)
        cells.append(
            (
                row.label,
                f"{median:.2f}" if median < 10 else f"{median:.1f}",
                f"{harness.percentile(row.values, 95):.1f}",
                f"{median / reference:.3f}",
                row.note,
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    just = [str.ljust, str.rjust, str.rjust, str.rjust, str.ljust]
    lines = ["  ".join(j(c, w) for c, w, j in zip(cell, widths, just, strict=True)) for cell in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def describe(counts: Counts) -> str:
    return ", ".join(f"{t} {counts[t][2]}/{counts[t][0]}" for t in ORDER_TYPES if t in counts)


# ---------------------------------------------------------------- main

SPANS = ((MONTH, "June"), (PEAK, "December"))


def check(app: Any, http_client: Http, manager: Any, expected: dict[tuple[date, date], Counts]) -> list[str]:
    """The report against the raw counts: each grouping's groups add up to them; so does the HTTP answer."""
    from dispatch.extensions import db
    from dispatch.services import reports

    failures = []
    with app.app_context():
        for span, name in SPANS:
            for group_by in ("order_type", "district", "team", "engineer"):
                report = reports.kpi_report(actor=manager, start=span[0], end=span[1], group_by=group_by)
                got = report_counts(report)
                if got != expected[span]:
                    failures.append(f"{name} by {group_by}: report {got} != raw {expected[span]}")
        db.session.remove()
    if report_counts(json.loads(http_client.get(kpi_path(MONTH)))) != expected[MONTH]:
        failures.append("June over HTTP: the report differs from the raw counts")
    return failures


def measure_reference(conn: psycopg.Connection) -> list[Row]:
    """(a) for both months, as migrated, then with the covering index (dropped after)."""
    plain: dict[tuple[date, date], tuple[list[float], str]] = {}
    covered: dict[tuple[date, date], tuple[list[float], str]] = {}

    def naive(args: tuple[str, str]) -> None:
        conn.execute(NAIVE, args).fetchall()

    for index in (False, True):
        if index:
            conn.execute(COVERING)
            conn.execute("VACUUM ANALYZE orders")
        for span, _ in SPANS:
            args = bounds(span)
            result = (timed(partial(naive, args)), plan_of(conn, span))
            (covered if index else plain)[span] = result
    conn.execute("DROP INDEX bench_orders_kpi_covering")
    rows = []
    for span, name in SPANS:
        rows.append(Row(f"{name} ({span[0]} .. {span[1]})", None))
        rows.append(Row("(a) naive GROUP BY over raw orders", plain[span][0], plain[span][1]))
        rows.append(Row("(a) same, covering index", covered[span][0], covered[span][1]))
    return rows


def measure_app(app: Any, http_client: Http, token: str, manager: Any) -> list[Row]:
    """(b), (c), (d); the by-format and by-grouping variants for June only."""
    from dispatch.extensions import db
    from dispatch.reporting import rollup
    from dispatch.services import reports

    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}

    def via_client(path: str) -> None:
        response = client.get(path, headers=headers)
        if response.status_code != 200:
            raise Broken(f"GET {path}: {response.status_code} {response.get_data(as_text=True)[:300]}")

    def totals(span: tuple[date, date]) -> None:
        rollup.totals("order_type", span[0], span[1])
        db.session.rollback()

    def service(span: tuple[date, date], group_by: str = "order_type") -> None:
        reports.kpi_report(actor=manager, start=span[0], end=span[1], group_by=group_by)
        db.session.rollback()

    rows: list[Row] = []
    with app.app_context():
        for span, name in SPANS:
            path = kpi_path(span)
            rows.append(Row(f"{name}, through the rollup", None))
            rows.append(Row("(b) rollup.totals('order_type')", timed(partial(totals, span))))
            rows.append(Row("(c) reports.kpi_report(order_type)", timed(partial(service, span))))
            rows.append(Row("(d) HTTP GET json, order_type", timed(partial(http_client.get, path))))
            rows.append(Row("(d) test client GET json, order_type", timed(partial(via_client, path))))
            if span != MONTH:
                continue
            for fmt in ("csv", "xlsx"):
                path = kpi_path(span, fmt=fmt)
                rows.append(Row(f"(d) HTTP GET {fmt}, order_type", timed(partial(http_client.get, path))))
            for group_by in ("district", "team", "engineer"):
                path = kpi_path(span, group_by)
                rows.append(
                    Row(f"(c) reports.kpi_report({group_by})", timed(partial(service, MONTH, group_by)))
                )
                rows.append(Row(f"(d) HTTP GET json, {group_by}", timed(partial(http_client.get, path))))
        db.session.remove()
    return rows


def setup() -> tuple[Any, Rollup, int]:
    from dispatch.factory import create_app

    step("reset schema and migrate", reset_database)
    orders = step(f"load {ORDERS:,} orders (set-based SQL)", load_orders)
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": harness.pg_url(DBNAME, "postgresql+psycopg"),
            "RATELIMIT_ENABLED": False,
            "SECRET_KEY": SECRET,
        }
    )
    built: Rollup = step(
        "contributions; fold() one week; SQL projection of the rest", lambda: build_rollup(app)
    )
    step("VACUUM ANALYZE", vacuum)
    return app, built, orders


def main() -> int:
    from dispatch.actors import Actor

    logging.getLogger("dispatch.http").setLevel(logging.WARNING)  # one access-log line per request
    started = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="bench_kpi_"))
    server: harness.Gunicorn | None = None
    http_client: Http | None = None
    manager = Actor(kind="user", id=1, name="bench-manager", role="manager", source="api")
    with harness.terminate_as_exit():
        try:
            print(
                f"KPI report benchmark: PostgreSQL {harness.server_version()}, Python"
                f" {platform.python_version()}, {harness.NCPU} CPUs; database {DBNAME}",
                flush=True,
            )
            app, built, orders = setup()
            token = login(app, "manager")
            env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_URL")}
            env.update(DATABASE_URL=harness.pg_url(DBNAME), SECRET_KEY=SECRET)
            server = harness.Gunicorn("kpi", "wsgi:app", env=env, cwd=harness.REPO, log_dir=log_dir)
            server.wait_ready("/healthz")
            http_client = Http(server.port, token)
            setup_seconds = time.monotonic() - started
            print(
                f"setup {setup_seconds:.0f} s: {orders:,} orders; the contributions of"
                f" {FOLDED[0]:%d}–{FOLDED[1]:%d %b} summed per (day, dims, metric) into"
                f" {built.folded_deltas:,} deltas, folded by"
                f" rollup.fold() in {built.fold_seconds:.1f} s"
                f" ({built.folded_deltas / max(built.fold_seconds, 1e-9):,.0f} deltas/s), the other days"
                f" projected by SQL ({built.projected_rows:,} rows); {built.pending:,} deltas left unfolded;"
                " kpi_daily rows: " + ", ".join(f"{g} {n:,}" for g, n in sorted(built.daily_rows.items())),
                flush=True,
            )
            with connect() as conn:
                expected = {span: naive_counts(conn, span) for span, _ in SPANS}
                failures = check(app, http_client, manager, expected)
                print(
                    f"check: June {sum(v[0] for v in expected[MONTH].values()):,} orders"
                    f" (completed/received: {describe(expected[MONTH])});"
                    f" December {sum(v[0] for v in expected[PEAK].values()):,};"
                    " report = raw GROUP BY, for every grouping and over HTTP: "
                    + ("yes" if not failures else "NO"),
                    flush=True,
                )
                rows = measure_reference(conn)
            rows += measure_app(app, http_client, token, manager)
        except (Broken, psycopg.Error, RuntimeError) as exc:
            print(f"BROKEN: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            if http_client is not None:
                http_client.close()
            if server is not None:
                server.stop()
            if not KEEP:
                empty_schema()

    reference = statistics.median(rows[1].values or [float("nan")])
    bar = next(r for r in rows if r.label == "(d) HTTP GET json, order_type")
    assert bar.values is not None
    met = statistics.median(bar.values) <= BAR_MS
    bar.note = f"bar: median ≤ {BAR_MS:.0f} ms: {'met' if met else 'MISSED'}"
    print()
    print(table(rows, reference))
    print(
        f"\n× ref: median / June's naive GROUP BY without the covering index ({reference:.0f} ms), same run;"
        f" {RUNS} runs each after {WARMUP} warm-ups. Total {time.monotonic() - started:.0f} s"
        f" (setup {setup_seconds:.0f} s)."
    )
    if failures:
        print("CHECK FAILED:\n  " + "\n  ".join(failures))
        return 1
    if not met:
        print("the bar was missed" + ("" if STRICT else " (BENCH_STRICT=1 makes that an error)"))
    return 1 if STRICT and not met else 0


if __name__ == "__main__":
    sys.exit(main())
