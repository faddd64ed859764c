"""SLA tick benchmark (shared/QUALITY.md "Speed and scale", rows 3 and 4), on PostgreSQL.

* Tick cost. Two fresh migrated databases loaded by bulk SQL (bench/support/sla_data.py): 1 000 000 running
  clocks (200 000 dispatched orders × the five clock kinds, the most the partial unique index on live clocks
  allows per order) and, as the reference, 10 000 (2 000 orders × 5). In each, the same kind of 1 000 clocks
  (completion clocks of evenly spaced orders) is made due 1–60 s ago before every run (alerts and SMS rows of
  the previous run deleted, VACUUM). Timed in this process on the same code path as the scheduler
  (:func:`dispatch.sla.tick.tick`, DISPATCH_DESK_PHONE set; every order's engineer is in a team with a leader
  phone, so each breach writes an alert, an event and two SMS rows): the tick, the claim alone (both batches
  of 500, rolled back) and a tick with nothing due. One warm-up run, then BENCH_SLA_RUNS (5) runs alternating
  between the databases; medians. Bars: ≤ 1 s per tick with 1 000 000 clocks; the cost follows due clocks,
  not all clocks: tick(1 000 000) / tick(10 000) ≤ 1.5 (a cost following all clocks would make it ~100).
* Breach lateness. A real ``flask run-scheduler`` (SCHEDULER_TICK_SECONDS=1) on the 1 000 000-clock database
  while BENCH_SLA_RATE (50) clocks per second fall due for BENCH_SLA_SECONDS (20) s, each warned 5 s before.
  Lateness = the first poll (every 0.1 s) that sees the breach committed − due_at; the stored breached_at −
  due_at (the tick's start) is printed beside it. Bar: p99 ≤ tick interval + 2 s = 3 s. The scheduler's peak
  RSS is printed against QUALITY.md's memory bar (≤ 200 MB).

Databases are named BENCH_SLA_DB_PREFIX (dispatch_bench_sla_) + pid and dropped at the end (also after
Ctrl-C or SIGTERM); ones left by a killed run are dropped at the next start. Exit 0 unless something broke
(a wrong breach count, a scheduler failure); BENCH_STRICT=1 also fails on a missed bar.
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import harness, sla_data  # noqa: E402

RUNS = int(os.environ.get("BENCH_SLA_RUNS", "5"))
RATE = float(os.environ.get("BENCH_SLA_RATE", "50"))
SECONDS = float(os.environ.get("BENCH_SLA_SECONDS", "20"))
PREFIX = os.environ.get("BENCH_SLA_DB_PREFIX", "dispatch_bench_sla_")
STRICT = os.environ.get("BENCH_STRICT") == "1"
BIG_ORDERS, SMALL_ORDERS = 200_000, 2_000  # × 5 clocks
DUE = 1000
TICK_SECONDS = 1
DESK_PHONE = "+8613800000000"
BAR_TICK_S, BAR_RATIO, BAR_LATENESS_S, BAR_RSS_MB = 1.0, 1.5, TICK_SECONDS + 2.0, 200.0


class Broken(RuntimeError):
    """The benchmark itself went wrong (not a missed bar)."""


# ---------------------------------------------------------------- the tick, in this process


class TickTarget:
    """One database, its app (the tick runs in this process) and its due set."""

    def __init__(self, label: str, dbname: str) -> None:
        from dispatch.factory import create_app

        self.label, self.dbname = label, dbname
        self.app = create_app(
            {"SQLALCHEMY_DATABASE_URI": harness.pg_url(dbname), "DISPATCH_DESK_PHONE": DESK_PHONE}
        )
        self.due = sla_data.due_set(dbname, DUE)
        if len(self.due) != DUE:
            raise Broken(f"{label}: {len(self.due)} clocks in the due set, expected {DUE}")
        self.running = sla_data.running_clocks(dbname)
        self.ticks: list[float] = []
        self.claims: list[float] = []
        self.empty: list[float] = []

    def run(self, record: bool = True) -> None:
        from dispatch.extensions import db
        from dispatch.sla import tick

        sla_data.arm_due(self.dbname, self.due)
        with self.app.app_context():
            try:
                t0 = time.perf_counter()
                claimed = tick.claim_breaches(datetime.now(UTC))
                claimed += tick.claim_breaches(datetime.now(UTC))
                claim = time.perf_counter() - t0
                db.session.rollback()
                if len(claimed) != DUE:
                    raise Broken(f"{self.label}: the claim took {len(claimed)} clocks, expected {DUE}")

                t0 = time.perf_counter()
                result = tick.tick(datetime.now(UTC))
                elapsed = time.perf_counter() - t0
                if (result.breaches, result.warnings) != (DUE, 0):
                    raise Broken(f"{self.label}: the tick recorded {result}, expected {DUE} breaches")

                t0 = time.perf_counter()
                result = tick.tick(datetime.now(UTC))
                empty = time.perf_counter() - t0
                if result:
                    raise Broken(f"{self.label}: a second tick still found {result}")
            finally:
                db.session.remove()
        if record:
            self.ticks.append(elapsed)
            self.claims.append(claim)
            self.empty.append(empty)

    def dispose(self) -> None:
        from dispatch.extensions import db

        with self.app.app_context():
            db.engine.dispose()


# ---------------------------------------------------------------- lateness, with a real scheduler


class Scheduler:
    """``flask --app wsgi run-scheduler`` with its output in a file; stopped by pid."""

    def __init__(self, dbname: str, log_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(
            DATABASE_URL=harness.pg_url(dbname),
            SCHEDULER_TICK_SECONDS=str(TICK_SECONDS),
            DISPATCH_DESK_PHONE=DESK_PHONE,
        )
        self.log_path = log_dir / "scheduler.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(harness.VENV_BIN / "python"), "-m", "flask", "--app", "wsgi", "run-scheduler"],
            cwd=harness.REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "scheduler started:" in self.output():
                return
            if self.proc.poll() is not None:
                raise Broken(f"the scheduler exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        raise Broken(f"the scheduler did not start in {timeout} s:\n{self.output()[-3000:]}")

    def peak_rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


class Watcher(threading.Thread):
    """Polls the committed breach alerts every 0.1 s; keeps the poll start at which each first showed."""

    def __init__(self, dbname: str) -> None:
        super().__init__(daemon=True)
        self.dbname = dbname
        self.first_seen: dict[int, float] = {}
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            with sla_data.connect(self.dbname) as conn:
                while not self._halt.is_set():
                    polled = time.time()
                    for (clock_id,) in conn.execute("SELECT clock_id FROM alerts WHERE kind = 'breach'"):
                        self.first_seen.setdefault(clock_id, polled)
                    self._halt.wait(0.1)
        except BaseException as exc:
            self.error = exc

    def halt(self) -> None:
        self._halt.set()
        if self.ident is not None:
            self.join(timeout=10)


def lateness_run(dbname: str, log_dir: Path) -> dict[str, Any]:
    n = int(RATE * SECONDS)
    with sla_data.connect(dbname) as conn:
        conn.execute("DELETE FROM outbox WHERE template IN ('sla_breach', 'sla_warning')")
        conn.execute("DELETE FROM alerts")
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM sla_clocks WHERE clock = 'acceptance' AND status = 'running'"
                " ORDER BY id LIMIT %s",
                (n,),
            )
        ]
    scheduler = Scheduler(dbname, log_dir)
    watcher = Watcher(dbname)
    try:
        scheduler.wait_started()
        watcher.start()
        start = datetime.now(UTC) + timedelta(seconds=2)
        dues = [start + timedelta(seconds=i / RATE) for i in range(n)]
        with sla_data.connect(dbname) as conn:
            conn.execute(
                "UPDATE sla_clocks c SET due_at = d.due, warn_at = d.due - interval '5 seconds',"
                " warned_at = NULL FROM unnest(%s::bigint[], %s::timestamptz[]) AS d(id, due)"
                " WHERE c.id = d.id",
                (ids, dues),
            )
        deadline = time.time() + (start - datetime.now(UTC)).total_seconds() + SECONDS + 30
        while time.time() < deadline and len(watcher.first_seen) < n:
            if watcher.error is not None or not watcher.is_alive():
                raise Broken(f"the watcher stopped: {watcher.error!r}")
            time.sleep(0.2)
        rss = scheduler.peak_rss_mb()
    finally:
        watcher.halt()
        code = scheduler.stop()
    failures = [line for line in scheduler.output().splitlines() if " failed" in line or "Traceback" in line]
    if failures or code != 0:
        raise Broken(f"scheduler exit {code}, failures: {failures[:5]}\n{scheduler.output()[-3000:]}")
    with sla_data.connect(dbname) as conn:
        rows = conn.execute(
            "SELECT id, due_at, breached_at, status FROM sla_clocks WHERE id = ANY(%s)", (ids,)
        ).fetchall()
        warned = conn.execute("SELECT count(*) FROM alerts WHERE kind = 'warning'").fetchone()
    missing = [r[0] for r in rows if r[3] != "breached" or r[0] not in watcher.first_seen]
    if missing:
        raise Broken(f"{len(missing)} of {n} clocks not breached within 30 s of the last deadline")
    return {
        "n": n,
        "observed": [watcher.first_seen[r[0]] - r[1].timestamp() for r in rows],
        "stored": [(r[2] - r[1]).total_seconds() for r in rows],
        "warnings": warned[0] if warned else 0,
        "rss_mb": rss,
    }


# ---------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def table(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("what", "measured", "bar", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def timed(label: str, func: Callable[[], Any]) -> Any:
    t0 = time.monotonic()
    result = func()
    print(f"  {label}: {time.monotonic() - t0:.1f} s", flush=True)
    return result


def main() -> int:
    started = time.monotonic()
    pid = os.getpid()
    big_db, small_db = f"{PREFIX}{pid}_big", f"{PREFIX}{pid}_small"
    created: list[str] = []
    targets: list[TickTarget] = []
    log_dir = Path(tempfile.mkdtemp(prefix="bench_sla_"))
    missed = broken = False
    with harness.terminate_as_exit():
        try:
            stale = sla_data.drop_stale_databases(PREFIX)
            if stale:
                print(f"dropped stale databases from an earlier run: {', '.join(stale)}")
            print(
                f"SLA tick benchmark: PostgreSQL {harness.server_version()},"
                f" Python {platform.python_version()}, {harness.NCPU} CPUs; databases {big_db}, {small_db}",
                flush=True,
            )
            for name, orders in ((small_db, SMALL_ORDERS), (big_db, BIG_ORDERS)):
                sla_data.create_database(name)
                created.append(name)
                timed(f"migrate {name}", lambda name=name: sla_data.migrate(name))
                timed(
                    f"load {orders * 5:,} clocks",
                    lambda name=name, orders=orders: sla_data.load(name, orders),
                )
            big, small = TickTarget("1 000 000 clocks", big_db), TickTarget("10 000 clocks", small_db)
            targets += [big, small]
            for target in (big, small):
                target.run(record=False)  # warm-up: connections, caches, plans
            for i in range(RUNS):
                for target in (big, small) if i % 2 == 0 else (small, big):
                    target.run()
            print(
                f"  {RUNS} tick runs each: 1 000 000 clocks {', '.join(f'{t:.2f}' for t in big.ticks)} s;"
                f" 10 000 clocks {', '.join(f'{t:.2f}' for t in small.ticks)} s",
                flush=True,
            )
            late = timed("lateness run", lambda: lateness_run(big_db, log_dir))
        except Exception as exc:  # reported; the databases are dropped all the same
            print(f"BROKEN: {type(exc).__name__}: {exc}", file=sys.stderr)
            broken = True
        finally:
            for target in targets:
                target.dispose()
            for name in created:
                sla_data.drop_database(name)
    if broken:
        return 1

    tick_big, tick_small = statistics.median(big.ticks), statistics.median(small.ticks)
    ratio = tick_big / tick_small
    p50, p99 = harness.percentile(late["observed"], 50), harness.percentile(late["observed"], 99)
    s50, s99 = harness.percentile(late["stored"], 50), harness.percentile(late["stored"], 99)
    ok_tick, ok_ratio = tick_big <= BAR_TICK_S, ratio <= BAR_RATIO
    ok_late, ok_rss = p99 <= BAR_LATENESS_S, late["rss_mb"] <= BAR_RSS_MB
    missed = not (ok_tick and ok_ratio and ok_late and ok_rss)
    rows = [
        (
            f"tick, {big.running:,} running clocks, {DUE:,} due (median of {RUNS})",
            ms(big.ticks),
            f"≤ {BAR_TICK_S:.0f} s",
            verdict(ok_tick),
        ),
        (f"  reference: the same with {small.running:,} running clocks", ms(small.ticks), "—", ""),
        (
            "  ratio 1 000 000 / 10 000",
            f"{ratio:.2f}",
            f"≤ {BAR_RATIO} (cost follows due clocks)",
            verdict(ok_ratio),
        ),
        (
            "  of which the claim (2 batches of 500), 1 000 000 / 10 000",
            f"{ms(big.claims)} / {ms(small.claims)}",
            "—",
            "",
        ),
        ("  tick with nothing due, 1 000 000 / 10 000", f"{ms(big.empty)} / {ms(small.empty)}", "—", ""),
        (
            f"breach lateness (tick {TICK_SECONDS} s, {RATE:g} clocks/s for {SECONDS:g} s): p50 / p99",
            f"{p50:.2f} / {p99:.2f} s",
            f"p99 ≤ {BAR_LATENESS_S:.0f} s",
            verdict(ok_late),
        ),
        ("  as stored (breached_at − due_at): p50 / p99", f"{s50:.2f} / {s99:.2f} s", "—", ""),
        (
            "scheduler peak RSS during that run",
            f"{late['rss_mb']:.0f} MB",
            f"≤ {BAR_RSS_MB:.0f} MB",
            verdict(ok_rss),
        ),
    ]
    print()
    print(table(rows))
    print(
        f"\n{late['n']} clocks breached once each in the lateness run ({late['warnings']} warnings);"
        f" a breach writes 1 alert + 1 event + 2 SMS rows. Total {time.monotonic() - started:.0f} s."
    )
    if missed:
        print("some bars were missed" + ("" if STRICT else " (BENCH_STRICT=1 makes that an error)"))
    return 1 if missed and STRICT else 0


if __name__ == "__main__":
    sys.exit(main())
