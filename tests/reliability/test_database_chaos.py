"""Database restart during load (shared/QUALITY.md "Reliability": 0 acknowledged writes lost; requests
succeed again within 10 s; 503, not 500, meanwhile).

A throwaway PostgreSQL 15 cluster (``initdb`` in a temporary directory, as the ``postgres`` user when the
tests run as root, on a free loopback port; the machine's own server is never touched) gets the schema from
the migrations. ``gunicorn -w 2 wsgi:app`` and ``flask run-scheduler`` run against it while four client
threads post hotline intakes (unique ``external_id``s), one PDA thread reports its position (with an
``Idempotency-Key``) and one polls /healthz. During the load the database is restarted (``pg_ctl restart
-m fast``), stopped for 3 s and started again, and the app's backends are killed (``pg_terminate_backend``).
Pass:

* every intake answered 201 is in the database afterwards, and those answered 503 can be replayed;
* every answer is a success or a 503 with ``Retry-After`` (never a 500, a dropped connection or a hang
  past the client timeout);
* after each event, requests succeed again within 10 s of the database being back;
* the scheduler process is still alive and still ticking (it folds the KPI deltas of a later intake).

``-s`` prints the measured recovery times.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch.extensions import db
from tests.conftest import SYSTEM, intake_payload, make_app, migrate_up

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
VENV_BIN = Path(sys.executable).parent
CLIENT_TIMEOUT = 10.0
RECOVERY_LIMIT = 10.0
WEB_APP_NAME = "dispatch-chaos-web"
SCHEDULER_APP_NAME = "dispatch-chaos-scheduler"
CST = timezone(timedelta(hours=8))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the throwaway cluster ------------------------------------------------------------------------------


class Cluster:
    """A PostgreSQL cluster of its own; ``initdb`` refuses root, so as root it runs as ``postgres``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self.as_user, str(PG_BIN / tool), *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{tool} {args}: {result.stdout}\n{result.stderr}"

    def _ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, *args)

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def terminate(self, *application_names: str) -> int:
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = ANY(:names)"
                ),
                {"names": list(application_names)},
            ).scalar_one()
        engine.dispose()
        return int(killed)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not at {PG_BIN}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user for initdb")
    # Not pytest's tmp_path: its parents are 0700 root, which the postgres user could not traverse.
    root = Path(tempfile.mkdtemp(prefix="dispatch-pg-chaos-"))
    try:
        pg = Cluster(root)
        pg.start()
        try:
            yield pg
        finally:
            with contextlib.suppress(AssertionError):  # already stopped
                pg.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- processes ------------------------------------------------------------------------------------------


class Process:
    """A child process in its own session, output to a file, stopped by pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def environment(url: str, application_name: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"{url}?application_name={application_name}",
        "SECRET_KEY": "chaos-test-secret",  # shared by both workers, so a token from one is good at the other
        "SCHEDULER_TICK_SECONDS": "1",
        "SMS_BACKEND": "outbox",
        "GEOCODER": "none",
        "INTAKE_RATE_LIMIT": "100000 per minute",  # the load is not what a rate limit is tested with
    }


def wait_healthy(port: int, proc: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.alive(), proc.output()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise AssertionError(f"gunicorn not healthy after {timeout} s:\n{proc.output()}")


def tracebacks(log: str, limit: int = 3) -> str:
    """The first ``limit`` tracebacks in a log, to show why a request failed."""
    chunks = log.split("Traceback (most recent call last):")[1 : limit + 1]
    return "\n---\n".join(chunk[:6000] for chunk in chunks)


# --- load -----------------------------------------------------------------------------------------------


@dataclass
class Answer:
    kind: str  # "intake", "location" or "healthz"
    started: float
    ended: float
    status: int  # -1: no answer (connection dropped, timeout)
    retry_after: str | None
    external_id: str | None  # intake: its external_id; location: its Idempotency-Key
    detail: str = ""


class Client(threading.Thread):
    """One keep-alive HTTP client posting as fast as it gets answers, until halted."""

    def __init__(self, port: int, kind: str, headers: dict[str, str], answers: list[Answer]) -> None:
        super().__init__(daemon=True)
        self.port, self.kind, self.headers, self.answers = port, kind, headers, answers
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def _request(self) -> tuple[str, dict[str, Any] | None, str | None]:
        if self.kind == "healthz":
            return "/healthz", None, None
        if self.kind == "intake":
            body = intake_payload()
            return "/api/v1/intake/orders", body, body["external_id"]
        at = datetime.now(UTC).astimezone(CST).isoformat(timespec="seconds")
        return (
            "/mobile/v1/location",
            {"lat": 25.04, "lng": 102.70, "accuracy_m": 10, "at": at},
            uuid.uuid4().hex,
        )

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            while not self.halt.is_set():
                path, body, external_id = self._request()
                started = time.monotonic()
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
                    headers = dict(self.headers)
                    if self.kind == "location":  # the PDA sends every mutation with an Idempotency-Key
                        headers["Idempotency-Key"] = str(external_id)
                    if body is None:
                        conn.request("GET", path, headers=headers)
                    else:
                        conn.request(
                            "POST",
                            path,
                            body=json.dumps(body),
                            headers={"Content-Type": "application/json", **headers},
                        )
                    response = conn.getresponse()
                    text = response.read().decode(errors="replace")
                    answer = Answer(
                        self.kind,
                        started,
                        time.monotonic(),
                        response.status,
                        response.getheader("Retry-After"),
                        external_id,
                        "" if response.status < 300 else text[:300],
                    )
                except (OSError, http.client.HTTPException) as exc:
                    if conn is not None:
                        conn.close()
                    conn = None
                    answer = Answer(self.kind, started, time.monotonic(), -1, None, external_id, repr(exc))
                self.answers.append(answer)
                if self.kind != "intake":
                    self.halt.wait(0.05)
        except BaseException as exc:
            self.error = exc
        finally:
            if conn is not None:
                conn.close()


def post(port: int, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request(
            "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **headers}
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def seed(url: str) -> tuple[str, str]:
    """An intake API key and an engineer's PDA login (username); the password is ``password123``."""
    from dispatch.services.auth import create_api_key, create_user
    from dispatch.services.engineers import create_engineer

    app = make_app(url, CLOCK=None)
    with app.app_context():
        raw, _ = create_api_key("hotline-chaos", ["intake"], actor=SYSTEM)
        create_engineer(
            {
                "code": "CHAOS1",
                "name": "工程师",
                "phone": "+8613900000009",
                "team": "五华装维一班",
                "skills": ["broadband_install"],
                "districts": ["五华区"],
                "home": {"lat": 25.04, "lng": 102.70},
                "daily_capacity": 6,
                "shifts": None,
            },
            actor=SYSTEM,
        )
        create_user(
            "chaos-pda", role="engineer", password="password123", engineer_code="CHAOS1", actor=SYSTEM
        )
        db.engine.dispose()
    return raw, "chaos-pda"


# --- the test -------------------------------------------------------------------------------------------


def test_database_restart_during_load_loses_no_acknowledged_write_and_recovers(
    cluster: Cluster, tmp_path: Path
) -> None:
    test_started = time.monotonic()
    migrate_up(make_app(cluster.url))
    api_key, pda_user = seed(cluster.url)

    port = free_port()
    web = Process(
        "gunicorn",
        [str(VENV_BIN / "gunicorn"), "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}", "wsgi:app"],
        environment(cluster.url, WEB_APP_NAME),
        tmp_path,
    )
    scheduler = Process(
        "scheduler",
        [sys.executable, "-m", "flask", "--app", "wsgi", "run-scheduler"],
        environment(cluster.url, SCHEDULER_APP_NAME),
        tmp_path,
    )
    clients: list[Client] = []
    answers: list[Answer] = []  # list.append is atomic; every client appends to the one list
    events: list[tuple[str, float, float]] = []  # (what, database unavailable from, database back at)
    try:
        wait_healthy(port, web)
        status, body = post(
            port,
            "/mobile/v1/auth/token",
            {"username": pda_user, "password": "password123", "device_id": "p1"},
            {},
        )
        assert status == 200, body
        clients = [Client(port, "intake", {"Authorization": f"Bearer {api_key}"}, answers) for _ in range(4)]
        clients.append(Client(port, "location", {"Authorization": f"Bearer {body['access_token']}"}, answers))
        clients.append(Client(port, "healthz", {}, answers))
        for client in clients:
            client.start()

        time.sleep(3)
        down = time.monotonic()
        cluster.restart()
        events.append(("pg_ctl restart -m fast", down, time.monotonic()))

        time.sleep(4)
        down = time.monotonic()
        cluster.stop()
        time.sleep(3)  # an outage the clients see
        cluster.start()
        events.append(("stopped 3 s, started", down, time.monotonic()))

        time.sleep(4)
        down = time.monotonic()
        killed = cluster.terminate(WEB_APP_NAME, SCHEDULER_APP_NAME)
        events.append((f"pg_terminate_backend x{killed}", down, time.monotonic()))

        time.sleep(4)
    finally:
        for client in clients:
            client.halt.set()
        for client in clients:
            client.join(timeout=CLIENT_TIMEOUT + 5)

    try:
        assert all(c.error is None for c in clients), [c.error for c in clients]
        assert all(not c.is_alive() for c in clients), "a client hung past its timeout"

        # never a 500, a dropped connection or a hang; every 503 says when to retry
        allowed = {"intake": {201, 503}, "location": {200, 503}, "healthz": {200, 503}}
        wrong = [a for a in answers if a.status not in allowed[a.kind]]
        assert not wrong, f"{wrong[:5]}\n{tracebacks(web.output())}"
        unavailable = [a for a in answers if a.status == 503]
        assert unavailable, "the outage never reached a client"
        assert all(a.retry_after and int(a.retry_after) > 0 for a in unavailable), unavailable[:5]
        assert all(a.ended - a.started < CLIENT_TIMEOUT for a in answers)

        # requests succeed again within 10 s of the database being back
        print()
        for what, went_down, back in events:
            # a 503 belongs to the last event that began before it was answered
            next_event = min([e[1] for e in events if e[1] > went_down], default=float("inf"))
            failures = [a for a in unavailable if went_down <= a.ended < next_event]
            last_failure = max((a.ended for a in failures), default=back)
            first_success = min(
                (a.ended for a in answers if a.status < 300 and a.started >= back), default=float("inf")
            )
            recovery = max(last_failure, first_success) - back
            print(
                f"{what}: database unavailable {back - went_down:.2f} s, {len(failures)} answers 503,"
                f" recovered {recovery:.2f} s after it was back"
            )
            assert recovery <= RECOVERY_LIMIT, (what, recovery)

        # 0 acknowledged writes lost; the 503'd ones replay to exactly one order each
        acknowledged = {a.external_id for a in answers if a.kind == "intake" and a.status == 201}
        refused = {a.external_id for a in answers if a.kind == "intake" and a.status == 503}
        engine = sa.create_engine(cluster.url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT external_id FROM orders")).scalars())
        missing = acknowledged - stored
        assert not missing, f"{len(missing)} acknowledged intakes lost, e.g. {sorted(missing)[:5]}"
        probe = intake_payload()
        for external_id in sorted(refused)[:20]:
            replay = intake_payload(external_id=external_id)
            assert post(port, "/api/v1/intake/orders", replay, {"Authorization": f"Bearer {api_key}"})[0] in (
                200,
                201,
            )
        print(f"{len(acknowledged)} intakes acknowledged, all stored; {len(refused)} answered 503")

        # the scheduler survived and still ticks: it folds the KPI deltas of an intake made now
        assert scheduler.alive(), scheduler.output()[-3000:]
        seen = len(scheduler.output())
        assert post(port, "/api/v1/intake/orders", probe, {"Authorization": f"Bearer {api_key}"})[0] == 201
        deadline = time.monotonic() + 10
        while "job kpi-fold: FoldResult" not in scheduler.output()[seen:]:
            assert time.monotonic() < deadline, (
                "the scheduler stopped ticking:\n" + scheduler.output()[-3000:]
            )
            assert scheduler.alive(), scheduler.output()[-3000:]
            time.sleep(0.2)
        with engine.connect() as conn:
            assert (
                conn.execute(
                    sa.text("SELECT count(*) FROM orders WHERE external_id = :e"), {"e": probe["external_id"]}
                ).scalar_one()
                == 1
            )
        engine.dispose()

        log = web.output()
        assert "WORKER TIMEOUT" not in log and "unhandled error" not in log, log[-3000:]
        print(f"test body {time.monotonic() - test_started:.1f} s")
    finally:
        web.stop()
        scheduler.stop()
