"""Plumbing for the HTTP benchmarks: free ports, throw-away PostgreSQL databases, gunicorn processes,
CPU accounting from /proc, and an http.client load generator (closed loop and open-loop paced).

Nothing here measures anything by itself; bench/*.py scripts compose it and print their figures.
"""

from __future__ import annotations

import http.client
import math
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


# ---------------------------------------------------------------- ports and databases


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_url(dbname: str, driver: str = "postgresql") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def _admin() -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)


def create_database(name: str) -> None:
    assert name.startswith("dispatch_bench_"), name
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    assert name.startswith("dispatch_bench_"), name
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_stale_databases(prefix: str) -> list[str]:
    """Drop ``<prefix><pid>`` databases left by an earlier run of the same script whose process is gone."""
    assert prefix.startswith("dispatch_bench_"), prefix
    dropped = []
    with _admin() as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))
        ]
    for name in names:
        pid = name.removeprefix(prefix).split("_")[0]
        if pid.isdigit() and not _alive(int(pid)):
            drop_database(name)
            dropped.append(name)
    return dropped


def execute_sql(dbname: str, *statements: str) -> None:
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)  # type: ignore[arg-type]


def checkpoint() -> None:
    with _admin() as conn:
        conn.execute("CHECKPOINT")


def server_version() -> str:
    with _admin() as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- processes and CPU


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0.0 if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set size of one process in MB (``VmRSS`` of /proc/<pid>/status; NaN if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
            out.append(int(entry))
    return out


def postgres_cpu_seconds(*dbnames: str) -> float:
    """CPU of the ``postgres`` processes: all of them, or only the backends serving ``dbnames`` (the server is
    shared with other work, so a benchmark counts its own backends)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
            if not raw[raw.index("(") + 1 : raw.rindex(")")].startswith("postgres"):
                continue
            if dbnames:
                cmdline = (
                    Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
                if not any(f" {name} " in cmdline for name in dbnames):
                    continue
        except (OSError, ValueError):
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine (all cores) from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + values[4]  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / CLK_TCK


class Gunicorn:
    """``gunicorn -w N APP`` on a free loopback port, its output in a log file; stopped by pid."""

    def __init__(
        self,
        name: str,
        app: str,
        *,
        env: dict[str, str],
        cwd: Path,
        workers: int = 2,
        extra_args: tuple[str, ...] = (),
        log_dir: Path,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self.argv = [
            str(VENV_BIN / "gunicorn"),
            "-w",
            str(workers),
            "-k",
            "sync",
            "-b",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "warning",
            *extra_args,
            app,
        ]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.workers: list[int] = []

    def wait_ready(self, path: str, timeout: float = 30.0, expected_workers: int = 2) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: gunicorn exited with {self.proc.returncode}\n{self.log_tail()}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", path)
                conn.getresponse().read()
                conn.close()
                self.workers = children(self.proc.pid)
                if len(self.workers) >= expected_workers:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: not ready after {timeout}s\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """Workers' CPU (the master only supervises)."""
        return sum(proc_cpu_seconds(pid) for pid in self.workers)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        workers = children(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pid in workers or self.workers:
            if _alive(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks clean up."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------- load generation


BodyFactory = Callable[[int, int], bytes]  # (thread index, sequence in thread) -> request body


@dataclass
class LoadResult:
    duration: float
    completed: int = 0  # 2xx as expected, finished inside the window
    statuses: dict[int, int] = field(default_factory=dict)  # every response, also after the window
    socket_errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, requests finished inside the window
    late_starts: int = 0  # open loop: requests that left more than 1 ms after their slot
    shed: int = 0  # open loop: requests not sent because they were already max_lag behind their slot
    client_cpu: float = 0.0  # CPU seconds of this process during the run
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.completed / self.duration if self.duration else 0.0

    def errors(self, expected_status: int) -> int:
        return self.socket_errors + sum(n for s, n in self.statuses.items() if s != expected_status)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


class _Client:
    """One keep-alive connection (http.client reconnects by itself when the server closes it)."""

    def __init__(
        self, port: int, path: str, headers: dict[str, str], expected: int, result: LoadResult
    ) -> None:
        self.port, self.path, self.headers, self.expected, self.result = port, path, headers, expected, result
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.statuses: dict[int, int] = {}
        self.socket_errors = 0
        self.samples: list[str] = []

    def post(self, body: bytes) -> bool:
        try:
            self.conn.request("POST", self.path, body=body, headers=self.headers)
            response = self.conn.getresponse()
            payload = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            self.socket_errors += 1
            if len(self.samples) < 3:
                self.samples.append(f"{type(exc).__name__}: {exc}")
            self.conn.close()
            return False
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status != self.expected and len(self.samples) < 3:
            self.samples.append(f"HTTP {status}: {payload[:300]!r}")
        return status == self.expected

    def merge(self) -> None:
        for status, n in self.statuses.items():
            self.result.statuses[status] = self.result.statuses.get(status, 0) + n
        self.result.socket_errors += self.socket_errors
        self.result.error_samples.extend(self.samples[: max(0, 5 - len(self.result.error_samples))])
        self.conn.close()


def closed_loop(
    port: int,
    path: str,
    headers: dict[str, str],
    body: BodyFactory,
    *,
    connections: int,
    duration: float,
    expected: int = 201,
) -> LoadResult:
    """``connections`` threads, each sending the next request as soon as the previous answer arrived."""
    result = LoadResult(duration=duration)
    lock = threading.Lock()
    start_gate = threading.Barrier(connections + 1)
    window: dict[str, float] = {}

    def worker(index: int) -> None:
        client = _Client(port, path, headers, expected, result)
        local: list[float] = []
        seq = 0
        start_gate.wait()
        end = window["end"]
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            ok = client.post(body(index, seq))
            seq += 1
            t1 = time.perf_counter()
            if ok and t1 <= end:
                local.append(t1 - t0)
        with lock:
            result.latencies.extend(local)
            client.merge()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    window["start"] = time.perf_counter()
    window["end"] = window["start"] + duration
    start_gate.wait()
    for t in threads:
        t.join(timeout=duration + 60)
    result.client_cpu = time.process_time() - cpu0
    result.completed = len(result.latencies)
    return result


def open_loop(
    port: int,
    path: str,
    headers: dict[str, str],
    body: BodyFactory,
    *,
    rate: float,
    duration: float,
    connections: int,
    expected: int = 201,
    max_lag: float = 5.0,
) -> LoadResult:
    """Requests scheduled at a fixed ``rate``; latency counts from the scheduled send time (no coordinated
    omission: a request that waits for a free connection is charged for the wait). A request already
    ``max_lag`` seconds behind its slot is not sent (``shed``) and counts as an infinite latency, so an
    overloaded server cannot stretch the run far beyond ``duration``."""
    total = int(rate * duration)
    result = LoadResult(duration=duration)
    lock = threading.Lock()
    counter = iter(range(total))
    start_gate = threading.Barrier(connections + 1)
    window: dict[str, float] = {}

    def worker(index: int) -> None:
        client = _Client(port, path, headers, expected, result)
        local: list[float] = []
        late = shed = 0
        seq = 0
        start_gate.wait()
        t_start = window["start"]
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            scheduled = t_start + i / rate
            wait = scheduled - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif wait < -max_lag:
                shed += 1
                local.append(math.inf)
                continue
            elif wait < -0.001:
                late += 1
            ok = client.post(body(index, seq))
            seq += 1
            if ok:
                local.append(time.perf_counter() - scheduled)
        with lock:
            result.latencies.extend(local)
            result.late_starts += late
            result.shed += shed
            client.merge()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    window["start"] = time.perf_counter() + 0.05
    start_gate.wait()
    for t in threads:
        t.join(timeout=duration + 60)
    result.client_cpu = time.process_time() - cpu0
    result.duration = time.perf_counter() - window["start"]
    result.completed = len(result.latencies) - result.shed
    return result
