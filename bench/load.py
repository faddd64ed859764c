"""Load benchmark of the hotline intake (shared/QUALITY.md "Speed and scale": the intake rows and memory).

The production shape: ``gunicorn -w 2 wsgi:app`` (sync workers) on a fresh migrated PostgreSQL database with
the scheduler process (``flask run-scheduler``: SLA tick, SMS relay to the outbox, billing feed,
auto-dispatch, KPI fold ...) running beside it on the same database, so the orders the load creates are
picked up by the jobs as they would be in production.

1. Throughput: ``POST /api/v1/intake/orders`` beside the reference measured in the same run: a bare Flask +
   Flask-SQLAlchemy app with one POST doing one ORM INSERT, same driver (psycopg 3) and pool, same gunicorn,
   its own fresh database (bench/support/reference_app.py). Closed loop, keep-alive http.client threads on
   loopback (gunicorn's sync workers close the connection after each response, so each request reconnects);
   runs alternate reference/ours; the median of each is compared. Bar: ours >= 60 % of the reference, every
   response 201. A run during which other processes used more than RERUN_FOREIGN_CORES is discarded and run
   again (at most BENCH_LOAD_MAX_RERUNS times in this phase); the CPU cost per request (gunicorn workers + own
   PostgreSQL backends) is printed as a second, load-robust view of the same comparison. Our scheduler's CPU
   counts as ours (it is part of the system under load), not as foreign load.
2. Latency: ours at a fixed 100 requests/s for 20 s, open loop (latency counted from the scheduled send time,
   so a stall is charged to every request queued behind it). Bar: p99 <= 50 ms. The reference at the same rate
   is printed for context. Foreign load discards a run as in 1 (its own BENCH_LOAD_MAX_RERUNS): a load
   generator that other processes delay measures them, not the server.
3. Memory: VmRSS (/proc/<pid>/status) of each web worker and of the scheduler after the load. Bars: <= 150 MB
   per worker, <= 200 MB for the scheduler (MB = 2^20 bytes here).

Pool: the reference keeps Flask-SQLAlchemy's defaults (QueuePool 5 + 10 overflow, as in
shared/reference/ceilings.md); ours runs with its own config (the same QueuePool).

Knobs (environment): BENCH_LOAD_RUNS (3), BENCH_LOAD_SECONDS (10), BENCH_LOAD_CONNECTIONS (16),
BENCH_LOAD_RATE (100), BENCH_LOAD_LATENCY_SECONDS (20), BENCH_STRICT=1 (exit 1 when a bar is missed; by
default only errors or a broken setup fail the script). 2–3 minutes in all (runs discarded for foreign
load are run again).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import harness  # noqa: E402
from support.intake_load import (  # noqa: E402
    INTAKE_PATH,
    UNLIMITED_INTAKE,
    Scheduler,
    Target,
    flask_cli,
    latency_run,
    make_body_factory,
    measured_run,
    median_min_max,
    ms,
    sanity,
)
from support.reference_app import DDL  # noqa: E402

RUNS = int(os.environ.get("BENCH_LOAD_RUNS", "3"))
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_LOAD_CONNECTIONS", "16"))
WARMUP_SECONDS = 2.0
RATE = float(os.environ.get("BENCH_LOAD_RATE", "100"))
LATENCY_SECONDS = float(os.environ.get("BENCH_LOAD_LATENCY_SECONDS", "20"))
LATENCY_CONNECTIONS = 8
STRICT = os.environ.get("BENCH_STRICT") == "1"

FOREIGN_WARN_CORES = 0.25
RERUN_FOREIGN_CORES = 0.15  # a run with more foreign CPU than this is discarded and run again ...
MAX_RERUNS = int(os.environ.get("BENCH_LOAD_MAX_RERUNS", "3"))  # ... at most this many times per phase
BAR_RATIO = 0.60
BAR_P99_MS = 50.0
BAR_WORKER_RSS_MB = 150.0
BAR_SCHEDULER_RSS_MB = 200.0
DB_PREFIX = "dispatch_bench_load_"


def report(
    ref: Target,
    ours: Target,
    pg_version: str,
    rows: dict[str, int],
    rss: dict[str, list[float]],
    scheduler_ok: bool,
) -> bool:
    ref_rate = statistics.median(r["rate"] for r in ref.runs)
    our_rate = statistics.median(r["rate"] for r in ours.runs)
    ratio = our_rate / ref_rate if ref_rate else 0.0
    assert ours.latency is not None and ref.latency is not None
    our_lat = [x * 1000 for x in ours.latency.latencies]
    ref_lat = [x * 1000 for x in ref.latency.latencies]
    our_p99 = harness.percentile(our_lat, 99)
    errors_ok = ours.errors == 0 and ref.errors == 0 and rows["ours"] == ours.ok_responses
    errors_ok = errors_ok and rows["reference"] == ref.ok_responses
    ratio_ok, p99_ok = ratio >= BAR_RATIO, our_p99 <= BAR_P99_MS
    workers_ok = bool(rss["workers"]) and all(v <= BAR_WORKER_RSS_MB for v in rss["workers"])
    sched_rss_ok = bool(rss["scheduler"]) and all(v <= BAR_SCHEDULER_RSS_MB for v in rss["scheduler"])

    def col(target: Target, key: str, fmt: str = "{:.0f}") -> str:
        return median_min_max([r[key] for r in target.runs], fmt)

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lines = [
        "",
        "Load benchmark — POST /api/v1/intake/orders (scheduler running beside) vs bare Flask + ORM INSERT",
        f"  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; box: {harness.NCPU} CPUs, "
        f"Python {platform.python_version()}, PostgreSQL {pg_version} on "
        f"{harness.PG_HOST}:{harness.PG_PORT}; gunicorn -w 2 (sync) each; http.client load on loopback",
        f"  throughput: {CONNECTIONS} connections, {RUNS} runs x {SECONDS:.0f} s per server, alternating, "
        f"after a {WARMUP_SECONDS:.0f} s warm-up; figures are median (min–max) over the runs",
        "",
        f"| {'measurement':44s} | {'reference':22s} | {'ours':22s} | {'bar':14s} | verdict |",
        f"|{'-' * 46}|{'-' * 24}|{'-' * 24}|{'-' * 16}|---------|",
    ]

    def row(name: str, a: str, b: str, bar: str = "", v: str = "") -> None:
        lines.append(f"| {name:44s} | {a:22s} | {b:22s} | {bar:14s} | {v:7s} |")

    row("throughput, req/s", col(ref, "rate"), col(ours, "rate"))
    row("ratio ours / reference (medians)", "100 %", f"{ratio:.1%}", f">= {BAR_RATIO:.0%}", verdict(ratio_ok))
    row(
        "errors (non-201 or socket), all requests", str(ref.errors), str(ours.errors), "0", verdict(errors_ok)
    )
    row(
        "201 responses = rows inserted",
        f"{ref.ok_responses} = {rows['reference']}",
        f"{ours.ok_responses} = {rows['ours']}",
        "equal",
        verdict(errors_ok),
    )
    row(f"p50 ms at saturation ({CONNECTIONS} conns)", col(ref, "p50", "{:.1f}"), col(ours, "p50", "{:.1f}"))
    row(f"p99 ms at saturation ({CONNECTIONS} conns)", col(ref, "p99", "{:.1f}"), col(ours, "p99", "{:.1f}"))
    row(
        "gunicorn worker CPU, ms per request",
        col(ref, "gunicorn_ms_per_req", "{:.2f}"),
        col(ours, "gunicorn_ms_per_req", "{:.2f}"),
    )
    row(
        "postgres CPU (own backends), ms per request",
        col(ref, "postgres_ms_per_req", "{:.2f}"),
        col(ours, "postgres_ms_per_req", "{:.2f}"),
    )
    ref_cpu = statistics.median(r["cpu_ms_per_req"] for r in ref.runs)
    our_cpu = statistics.median(r["cpu_ms_per_req"] for r in ours.runs)
    row(
        "CPU cost ratio reference/ours (gunicorn+pg)",
        f"{ref_cpu:.2f} ms",
        f"{our_cpu:.2f} ms = {ref_cpu / our_cpu:.1%}",
        "(context)",
    )
    row(
        "gunicorn workers busy, cores",
        col(ref, "gunicorn_cores", "{:.2f}"),
        col(ours, "gunicorn_cores", "{:.2f}"),
    )
    row("load generator CPU, cores", col(ref, "client_cores", "{:.2f}"), col(ours, "client_cores", "{:.2f}"))
    row(
        "foreign load (other processes), cores",
        col(ref, "foreign_cores", "{:.2f}"),
        col(ours, "foreign_cores", "{:.2f}"),
    )
    row(
        f"runs discarded for foreign load > {RERUN_FOREIGN_CORES} cores",
        str(ref.discarded),
        str(ours.discarded),
    )
    lines.append(f"| {'':44s} | {'':22s} | {'':22s} | {'':14s} | {'':7s} |")
    label = f"latency at {RATE:.0f} req/s open loop, {LATENCY_SECONDS:.0f} s"
    row(label + ": p50 ms", ms(harness.percentile(ref_lat, 50)), ms(harness.percentile(our_lat, 50)))
    row("  p95 ms", ms(harness.percentile(ref_lat, 95)), ms(harness.percentile(our_lat, 95)))
    row(
        "  p99 ms",
        ms(harness.percentile(ref_lat, 99)),
        ms(our_p99),
        f"<= {BAR_P99_MS:.0f} ms",
        verdict(p99_ok),
    )
    row("  max ms", ms(max(ref_lat, default=math.nan)), ms(max(our_lat, default=math.nan)))
    row(
        "  answered / late starts (>1 ms) / shed",
        f"{ref.latency.completed} / {ref.latency.late_starts} / {ref.latency.shed}",
        f"{ours.latency.completed} / {ours.latency.late_starts} / {ours.latency.shed}",
    )
    row(
        "  foreign load (other processes), cores", f"{ref.latency_foreign:.2f}", f"{ours.latency_foreign:.2f}"
    )
    row("  runs discarded for foreign load", str(ref.latency_discarded), str(ours.latency_discarded))
    lines.append(f"| {'':44s} | {'':22s} | {'':22s} | {'':14s} | {'':7s} |")

    def mb(values: list[float]) -> str:
        return " / ".join(f"{v:.0f}" for v in values) or "-"

    row(
        "RSS after the load, MB: web workers",
        mb(rss["ref_workers"]),
        mb(rss["workers"]),
        f"<= {BAR_WORKER_RSS_MB:.0f} each",
        verdict(workers_ok),
    )
    row("  scheduler", "-", mb(rss["scheduler"]), f"<= {BAR_SCHEDULER_RSS_MB:.0f}", verdict(sched_rss_ok))
    row(
        "  scheduler alive, no ERROR in its log",
        "-",
        "yes" if scheduler_ok else "no",
        "yes",
        verdict(scheduler_ok),
    )
    lines.append("")
    foreign = max(
        statistics.median(r["foreign_cores"] for r in ref.runs + ours.runs),
        ref.latency_foreign,
        ours.latency_foreign,
    )
    if foreign > FOREIGN_WARN_CORES:
        lines.append(
            f"WARNING: other processes used up to {foreign:.2f} of {harness.NCPU} cores (median of the "
            "throughput runs, or a latency run); "
            "absolute req/s and latencies are depressed and noisy. The alternating ratio and the CPU cost "
            "ratio hold up better."
        )
    overall = ratio_ok and p99_ok and errors_ok and workers_ok and sched_rss_ok and scheduler_ok
    lines.append(
        f"RESULT: throughput {verdict(ratio_ok)} ({ratio:.1%} of the reference, bar {BAR_RATIO:.0%}); "
        f"latency {verdict(p99_ok)} (p99 {ms(our_p99)} ms, bar {BAR_P99_MS:.0f} ms); "
        f"errors {verdict(errors_ok)}; memory {verdict(workers_ok and sched_rss_ok)} (workers "
        f"{mb(rss['workers'])} MB, bar {BAR_WORKER_RSS_MB:.0f}; scheduler {mb(rss['scheduler'])} MB, bar "
        f"{BAR_SCHEDULER_RSS_MB:.0f}); scheduler {verdict(scheduler_ok)}"
    )
    for target in (ref, ours):
        for sample in target.error_samples:
            lines.append(f"  {target.label} error sample: {sample}")
    print("\n".join(lines), flush=True)
    return overall


class Reruns:
    """The reruns left in one phase (throughput, latency) for runs during which other processes took more than
    RERUN_FOREIGN_CORES of the machine."""

    def __init__(self, budget: int) -> None:
        self.left = budget

    def again(self, foreign_cores: float) -> bool:
        """Whether the run just done (with that foreign load) is discarded and run again."""
        if foreign_cores <= RERUN_FOREIGN_CORES or self.left == 0:
            return False
        self.left -= 1
        print(f"    (discarded: foreign load {foreign_cores:.2f} cores; running again)", flush=True)
        time.sleep(1.0)
        return True


def main() -> int:
    started = time.monotonic()
    pid = os.getpid()
    ref_db, our_db = f"{DB_PREFIX}{pid}_ref", f"{DB_PREFIX}{pid}_ours"
    servers: list[harness.Gunicorn] = []
    scheduler: Scheduler | None = None
    created: list[str] = []
    log_dir = Path(tempfile.mkdtemp(prefix="bench_load_"))
    failed = False
    with harness.terminate_as_exit():
        try:
            stale = harness.drop_stale_databases(DB_PREFIX)
            if stale:
                print(f"dropped stale databases from an earlier run: {', '.join(stale)}")
            pg_version = harness.server_version()
            for name in (ref_db, our_db):
                harness.create_database(name)
                created.append(name)
            harness.execute_sql(ref_db, DDL)

            base_env = {
                k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "BENCH_REF_"))
            }
            our_env = dict(
                base_env,
                DATABASE_URL=harness.pg_url(our_db),
                SECRET_KEY="bench-load-secret",
                GEOCODER="none",
                SMS_BACKEND="outbox",
                INTAKE_RATE_LIMIT=UNLIMITED_INTAKE,
            )
            flask_cli(our_env, "db", "upgrade")
            key = (
                flask_cli(our_env, "create-api-key", "bench-load", "--scope", "intake")
                .strip()
                .splitlines()[-1]
            )
            ref_env = dict(base_env, BENCH_REF_DATABASE_URL=harness.pg_url(ref_db, "postgresql+psycopg"))

            ref_server = harness.Gunicorn(
                "reference",
                "reference_app:app",
                env=ref_env,
                cwd=Path(__file__).resolve().parent / "support",
                log_dir=log_dir,
            )
            servers.append(ref_server)
            our_server = harness.Gunicorn("ours", "wsgi:app", env=our_env, cwd=harness.REPO, log_dir=log_dir)
            servers.append(our_server)
            scheduler = Scheduler(our_env, log_dir)
            ref_server.wait_ready("/ping")
            our_server.wait_ready("/healthz")
            scheduler.wait_started()
            beside_ours = ([scheduler.proc.pid], [])  # its backends are in our database: counted as ours
            beside_ref = ([scheduler.proc.pid], [our_db])
            json_headers = {"Content-Type": "application/json"}
            ref = Target("reference", ref_server, "/orders", json_headers, ref_db)
            ours = Target(
                "ours", our_server, INTAKE_PATH, dict(json_headers, Authorization=f"Bearer {key}"), our_db
            )
            print(
                f"setup done in {time.monotonic() - started:.1f} s (databases {ref_db}, {our_db})", flush=True
            )

            for target in (ref, ours):
                sanity(target, f"s{target.label[0]}")
                warm = harness.closed_loop(
                    target.server.port,
                    target.path,
                    target.headers,
                    make_body_factory(f"w{target.label[0]}"),
                    connections=CONNECTIONS,
                    duration=WARMUP_SECONDS,
                )
                target.account(warm)
            print(f"throughput, {CONNECTIONS} connections x {SECONDS:.0f} s, alternating:", flush=True)
            reruns = Reruns(MAX_RERUNS)
            for i in range(RUNS):
                for target in (ref, ours):
                    attempt = 0
                    while True:
                        run = measured_run(
                            target,
                            f"r{i}{target.label[0]}{attempt}",
                            connections=CONNECTIONS,
                            seconds=SECONDS,
                            beside=beside_ours if target is ours else beside_ref,
                        )
                        if not reruns.again(run["foreign_cores"]):
                            break
                        target.runs.pop()
                        target.discarded += 1
                        attempt += 1
            print(f"latency at {RATE:.0f} req/s, open loop, {LATENCY_SECONDS:.0f} s:", flush=True)
            reruns = Reruns(MAX_RERUNS)
            for target, tag, side in ((ref, "lr", beside_ref), (ours, "lo", beside_ours)):
                attempt = 0
                while True:
                    latency_run(
                        target,
                        f"{tag}{attempt}",
                        rate=RATE,
                        seconds=LATENCY_SECONDS,
                        connections=LATENCY_CONNECTIONS,
                        beside=side,
                    )
                    if not reruns.again(target.latency_foreign):
                        break
                    target.latency_discarded += 1
                    attempt += 1
            time.sleep(2 * 5)  # two scheduler ticks: the jobs work through what the load left behind
            rss = {
                "workers": [harness.rss_mb(p) for p in harness.children(our_server.proc.pid)],
                "ref_workers": [harness.rss_mb(p) for p in harness.children(ref_server.proc.pid)],
                "scheduler": [harness.rss_mb(scheduler.proc.pid)],
            }
            scheduler_ok = scheduler.alive() and b" ERROR " not in scheduler.log_path.read_bytes()

            rows = {}
            for label, name, table in (("reference", ref_db, "work_orders"), ("ours", our_db, "orders")):
                with psycopg.connect(harness.pg_url(name)) as conn:
                    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                    rows[label] = int(row[0]) if row else -1
            overall = report(ref, ours, pg_version, rows, rss, scheduler_ok)
            errors = ref.errors + ours.errors
            failed = (
                not scheduler_ok
                or errors > 0
                or rows["ours"] != ours.ok_responses
                or rows["reference"] != ref.ok_responses
            )
            if STRICT and not overall:
                failed = True
        except Exception as exc:
            failed = True
            print(f"bench/load.py failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            for server in servers:
                print(f"--- {server.name} log tail ---\n{server.log_tail()}", file=sys.stderr)
            if scheduler is not None:
                print(f"--- scheduler log tail ---\n{scheduler.log_tail()}", file=sys.stderr)
        finally:
            if scheduler is not None:
                try:
                    scheduler.stop()
                except Exception as exc:  # keep cleaning up
                    print(f"stopping the scheduler: {exc}", file=sys.stderr)
            for server in servers:
                try:
                    server.stop()
                except Exception as exc:  # keep cleaning up
                    print(f"stopping {server.name}: {exc}", file=sys.stderr)
            for name in created:
                try:
                    harness.drop_database(name)
                except Exception as exc:
                    print(f"dropping {name}: {exc}", file=sys.stderr)
            for path in log_dir.glob("*"):
                path.unlink()
            log_dir.rmdir()
    print(f"(total {time.monotonic() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
