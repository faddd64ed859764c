"""The pieces of the hotline intake load benchmark (bench/load.py): request bodies, the servers under
test (ours and the bare reference app, bench/support/reference_app.py), one closed-loop throughput run, one
open-loop latency run, and the scheduler process that runs beside our web workers.

Every request carries a unique ``external_id`` and a new customer phone (the order, its customer, address and
intake event are created each time).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support import harness
from support.reference_app import DDL

INTAKE_PATH = "/api/v1/intake/orders"
# The per-key intake limit is a policy, not a cost: far above what one loopback client sends, so every
# request is served (the limiter still runs on each one).
UNLIMITED_INTAKE = "1000000 per minute"
Beside = tuple[Sequence[int], Sequence[str]]  # pids and database names of known processes alongside
_phones = itertools.count(1)


def intake_body(external_id: str, n: int) -> bytes:
    """A valid intake body (tests/conftest.py intake_payload) with this external_id and customer phone n."""
    doc = {
        "external_id": external_id,
        "order_type": "broadband_install",
        "pay_mode": "install_then_pay",
        "priority": "normal",
        "customer": {"name": "张三", "phone": f"139{n:08d}"},
        "address": {"text": "昆明市五华区人民中路1号", "district": "五华区", "lat": 25.0423, "lng": 102.7065},
        "requested_window": {"start": "2026-11-26T09:00:00+08:00", "end": "2026-11-26T12:00:00+08:00"},
        "products": ["broadband_300m"],
        "notes": "",
    }
    return json.dumps(doc, ensure_ascii=False).encode()


def make_body_factory(tag: str) -> harness.BodyFactory:
    """Intake bodies with a unique external_id and customer phone per request."""

    def body(thread: int, seq: int) -> bytes:
        return intake_body(f"10000-{tag}-{thread}-{seq}", next(_phones))

    return body


def flask_cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [str(harness.VENV_BIN / "flask"), "--app", "wsgi", *args],
        cwd=harness.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"flask {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


@contextmanager
def intake_databases(prefix: str) -> Iterator[tuple[str, str]]:
    """Two fresh databases, ``(ours, reference)``, dropped afterwards: ours migrated, the reference app's with
    its table (bench/support/reference_app.py)."""
    ours, ref = f"{prefix}ours", f"{prefix}ref"
    created = []
    try:
        for name in (ours, ref):
            harness.create_database(name)
            created.append(name)
        harness.execute_sql(ref, DDL)
        flask_cli(dict(os.environ, DATABASE_URL=harness.pg_url(ours)), "db", "upgrade")
        yield ours, ref
    finally:
        for name in created:  # DROP ... WITH (FORCE) also ends this process's pooled connections
            harness.drop_database(name)


class Target:
    """One server under test: its gunicorn, request path and headers."""

    def __init__(
        self, label: str, server: harness.Gunicorn, path: str, headers: dict[str, str], dbname: str
    ) -> None:
        self.label, self.server, self.path, self.headers, self.dbname = label, server, path, headers, dbname
        self.runs: list[dict[str, Any]] = []
        self.ok_responses = 0  # every 201 received, also in warm-up and sanity requests
        self.errors = 0
        self.error_samples: list[str] = []
        self.latency: harness.LoadResult | None = None
        self.latency_foreign = 0.0
        self.discarded = 0  # throughput runs discarded for foreign load
        self.latency_discarded = 0

    def account(self, result: harness.LoadResult) -> None:
        self.ok_responses += result.statuses.get(201, 0)
        self.errors += result.errors(201)
        self.error_samples.extend(result.error_samples[: max(0, 5 - len(self.error_samples))])


def _beside_cpu(beside: Beside) -> float:
    pids, dbnames = beside
    cpu = sum(harness.proc_cpu_seconds(pid) for pid in pids)
    return cpu + (harness.postgres_cpu_seconds(*dbnames) if dbnames else 0.0)


def measured_run(
    target: Target, tag: str, *, connections: int, seconds: float, beside: Beside = ((), ())
) -> dict[str, Any]:
    """One closed-loop run. ``beside``: (pids, database names) of known processes running alongside (the
    scheduler and its PostgreSQL backends): their CPU is reported, not counted as foreign load."""
    harness.checkpoint()
    time.sleep(0.3)
    gun0, pg0 = target.server.cpu_seconds(), harness.postgres_cpu_seconds(target.dbname)
    side0 = _beside_cpu(beside)
    busy0 = harness.machine_busy_seconds()
    t0 = time.perf_counter()
    result = harness.closed_loop(
        target.server.port,
        target.path,
        target.headers,
        make_body_factory(tag),
        connections=connections,
        duration=seconds,
    )
    wall = time.perf_counter() - t0
    gun, pg = target.server.cpu_seconds() - gun0, harness.postgres_cpu_seconds(target.dbname) - pg0
    side = _beside_cpu(beside) - side0
    busy = harness.machine_busy_seconds() - busy0
    target.account(result)
    lat_ms = [x * 1000 for x in result.latencies]
    run = {
        "rate": result.rate,
        "p50": harness.percentile(lat_ms, 50),
        "p99": harness.percentile(lat_ms, 99),
        "errors": result.errors(201),
        "gunicorn_cores": gun / wall,
        "postgres_cores": pg / wall,
        "client_cores": result.client_cpu / wall,
        "busy_cores": busy / wall,
        "beside_cores": side / wall,
        "foreign_cores": max(0.0, (busy - gun - pg - side - result.client_cpu) / wall),
        "gunicorn_ms_per_req": 1000 * gun / max(1, sum(result.statuses.values())),
        "postgres_ms_per_req": 1000 * pg / max(1, sum(result.statuses.values())),
        "cpu_ms_per_req": 1000 * (gun + pg) / max(1, sum(result.statuses.values())),
    }
    target.runs.append(run)
    print(
        f"  run {len(target.runs) + target.discarded} {target.label:9s} {run['rate']:7.1f} req/s  "
        f"p50 {run['p50']:6.1f} ms  "
        f"p99 {run['p99']:6.1f} ms  errors {run['errors']}  cores: gunicorn {run['gunicorn_cores']:.2f}, "
        f"postgres {run['postgres_cores']:.2f}, client {run['client_cores']:.2f}, "
        f"scheduler {run['beside_cores']:.2f}, foreign {run['foreign_cores']:.2f}",
        flush=True,
    )
    return run


def latency_run(
    target: Target, tag: str, *, rate: float, seconds: float, connections: int, beside: Beside = ((), ())
) -> harness.LoadResult:
    """One open-loop run at ``rate`` requests/s; ``beside`` as in :func:`measured_run`."""
    gun0, pg0 = target.server.cpu_seconds(), harness.postgres_cpu_seconds(target.dbname)
    side0 = _beside_cpu(beside)
    busy0, t0 = harness.machine_busy_seconds(), time.perf_counter()
    result = harness.open_loop(
        target.server.port,
        target.path,
        target.headers,
        make_body_factory(tag),
        rate=rate,
        duration=seconds,
        connections=connections,
    )
    wall = time.perf_counter() - t0
    gun, pg = target.server.cpu_seconds() - gun0, harness.postgres_cpu_seconds(target.dbname) - pg0
    side = _beside_cpu(beside) - side0
    target.latency_foreign = (
        max(0.0, harness.machine_busy_seconds() - busy0 - gun - pg - side - result.client_cpu) / wall
    )
    target.account(result)
    target.latency = result
    lat_ms = [x * 1000 for x in result.latencies]
    print(
        f"  {rate:.0f} req/s {target.label:9s} p50 {harness.percentile(lat_ms, 50):6.1f}  p95 "
        f"{harness.percentile(lat_ms, 95):6.1f}  p99 {harness.percentile(lat_ms, 99):6.1f}  max "
        f"{max(lat_ms, default=math.nan):6.1f} ms  ({result.completed} answered, "
        f"errors {result.errors(201)}, late starts {result.late_starts}, shed {result.shed}; cores: gunicorn "
        f"{gun / wall:.2f}, postgres {pg / wall:.2f}, scheduler {side / wall:.2f}, "
        f"foreign {target.latency_foreign:.2f})",
        flush=True,
    )
    return result


def sanity(target: Target, tag: str) -> None:
    result = harness.closed_loop(
        target.server.port, target.path, target.headers, make_body_factory(tag), connections=1, duration=0.2
    )
    target.account(result)
    if result.errors(201) or not result.statuses.get(201):
        raise RuntimeError(f"{target.label}: sanity POST failed: {result.statuses} {result.error_samples}")


def ms(value: float) -> str:
    return "> 5 s (shed)" if math.isinf(value) else f"{value:.1f}"


def median_min_max(values: list[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


class Scheduler:
    """``flask --app wsgi run-scheduler`` beside the web workers, its output in a log file; stopped by pid."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.name = "scheduler"
        self.log_path = log_dir / "scheduler.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(harness.VENV_BIN / "flask"), "--app", "wsgi", "run-scheduler"],
            cwd=harness.REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_started(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scheduler exited with {self.proc.returncode}\n{self.log_tail()}")
            if b"scheduler started" in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"scheduler: not started after {timeout}s\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
