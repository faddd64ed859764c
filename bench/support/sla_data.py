"""Throw-away PostgreSQL databases full of SLA clocks, for bench/sla_tick.py.

Everything is bulk SQL (``INSERT … SELECT generate_series``) straight into the migrated schema: customers,
addresses, orders (each dispatched to an engineer of a team with a leader phone) and five running clocks per
order, one of each kind, which is all the partial unique index on live clocks allows. A fixed set of
completion clocks, one per order on evenly spaced orders, is the "due" set that :func:`arm_due` makes due.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg

from support import harness

CLOCKS = ("take", "contact", "arrival", "acceptance", "completion")
TEAMS, ENGINEERS = 10, 50


def _admin() -> psycopg.Connection:
    return psycopg.connect(
        host=harness.PG_HOST, port=harness.PG_PORT, user=harness.PG_USER, dbname="postgres", autocommit=True
    )


def connect(dbname: str) -> psycopg.Connection:
    return psycopg.connect(
        host=harness.PG_HOST, port=harness.PG_PORT, user=harness.PG_USER, dbname=dbname, autocommit=True
    )


def _guard(name: str) -> None:
    assert name.startswith("dispatch_") and name.replace("_", "").isalnum(), name


def create_database(name: str) -> None:
    _guard(name)
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    _guard(name)
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_stale_databases(prefix: str) -> list[str]:
    """Drop ``<prefix><pid>_…`` databases whose creating process is gone (an earlier run that was killed)."""
    _guard(prefix)
    with _admin() as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))
        ]
    dropped = []
    for name in names:
        pid = name.removeprefix(prefix).split("_")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            drop_database(name)
            dropped.append(name)
    return dropped


def migrate(dbname: str) -> None:
    """``flask --app wsgi db upgrade`` against the database (a subprocess: Alembic's logging stays there)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = harness.pg_url(dbname)
    proc = subprocess.run(
        [str(harness.VENV_BIN / "flask"), "--app", "wsgi", "db", "upgrade"],
        cwd=harness.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"db upgrade failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


_LOAD = (
    """INSERT INTO teams (name, leader_name, leader_phone)
       SELECT '装维' || g || '班', '班长' || g, '+86139' || lpad(g::text, 8, '0')
       FROM generate_series(1, %(teams)s) AS g""",
    """INSERT INTO engineers (code, name, phone, team_id, daily_capacity, active, created_at, updated_at)
       SELECT 'B' || g, '工程师' || g, '+86138' || lpad(g::text, 8, '0'),
              (SELECT min(id) FROM teams) + g %% %(teams)s, 6, true, now(), now()
       FROM generate_series(1, %(engineers)s) AS g""",
    """INSERT INTO customers (name, phone, created_at)
       SELECT '客户' || g, '+86137' || lpad(g::text, 8, '0'), now()
       FROM generate_series(1, %(orders)s) AS g""",
    """INSERT INTO addresses (customer_id, text, district_name, location_source, lat, lng)
       SELECT id, '昆明市五华区人民中路' || id || '号', '五华区', 'intake', 25.04, 102.70 FROM customers""",
    """INSERT INTO orders (external_id, order_type, pay_mode, priority, status, customer_id, address_id,
                         engineer_id, products, intake_fingerprint, created_at, updated_at, version)
       SELECT 'bench-' || c.id, 'broadband_install', 'install_then_pay', 'normal', 'dispatched', c.id, a.id,
              e.ids[1 + c.id %% array_length(e.ids, 1)], '[]', repeat('0', 64), now(), now(), 1
       FROM customers c JOIN addresses a ON a.customer_id = c.id
       CROSS JOIN (SELECT array_agg(id ORDER BY id) AS ids FROM engineers) AS e""",
    # random() in the derived table is drawn per row; the engineer clocks carry the engineer, as on start.
    """INSERT INTO sla_clocks (order_id, clock, status, engineer_id, target_seconds, warn_percent, started_at,
                             due_at, warn_at, paused_seconds)
       SELECT order_id, clock, 'running', CASE WHEN clock <> 'completion' THEN engineer_id END, target, 75,
              now(), now() + target * interval '1 second', now() + target * 0.75 * interval '1 second', 0
       FROM (SELECT o.id AS order_id, o.engineer_id, k.clock, 3600 + (random() * 30 * 86400)::int AS target
             FROM orders o CROSS JOIN unnest(%(clocks)s::text[]) AS k(clock)) AS s""",
)


def load(dbname: str, orders: int) -> None:
    """``orders`` dispatched orders with five running clocks each, none due (deadlines 1 h .. 30 days ahead,
    warnings at 75 % of the target), then VACUUM ANALYZE."""
    params = {"teams": TEAMS, "engineers": ENGINEERS, "orders": orders, "clocks": list(CLOCKS)}
    with connect(dbname) as conn:
        conn.execute("SET synchronous_commit = off")
        for sql in _LOAD:
            conn.execute(sql, params)
        conn.execute("VACUUM ANALYZE")


def due_set(dbname: str, n: int) -> list[int]:
    """Ids of ``n`` completion clocks on evenly spaced orders (the clocks :func:`arm_due` makes due)."""
    with connect(dbname) as conn:
        total = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
        step = max(1, total // n)
        rows = conn.execute(
            "SELECT c.id FROM sla_clocks c JOIN orders o ON o.id = c.order_id"
            " WHERE c.clock = 'completion' AND o.id %% %s = 0 ORDER BY c.id LIMIT %s",
            (step, n),
        ).fetchall()
    return [r[0] for r in rows]


def arm_due(dbname: str, ids: list[int], *, vacuum: bool = True) -> None:
    """Make ``ids`` running and due 1–60 s ago; remove what earlier ticks recorded for them (the events log
    is append-only and keeps its rows). VACUUM leaves the tables as autovacuum would between bursts."""
    with connect(dbname) as conn:
        conn.execute("DELETE FROM outbox WHERE template IN ('sla_breach', 'sla_warning')")
        conn.execute("DELETE FROM alerts")
        conn.execute(
            "UPDATE sla_clocks SET status = 'running', breached_at = NULL, warned_at = NULL,"
            " due_at = now() - (1 + random() * 59) * interval '1 second',"
            " warn_at = now() - (61 + random() * 60) * interval '1 second' WHERE id = ANY(%s)",
            (ids,),
        )
        if vacuum:
            conn.execute("VACUUM sla_clocks, alerts, outbox")


def running_clocks(dbname: str) -> int:
    with connect(dbname) as conn:
        row = conn.execute("SELECT count(*) FROM sla_clocks WHERE status = 'running'").fetchone()
    return int(row[0]) if row else 0
