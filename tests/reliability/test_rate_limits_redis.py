"""Rate limits shared by several web processes through Redis (shared/QUALITY.md "login brute force"; issue 9).

Two separate gunicorn processes (one worker each, two ports) serve one migrated SQLite file with
``RATELIMIT_STORAGE_URI=redis://127.0.0.1:6379/7`` (db 7 flushed before and after). Requests are sent
concurrently and alternate between the two ports, so each process alone sees about half of them:

* login, one username from four client addresses (below the per-address limit each): at most
  ``LOGIN_RATE_LIMIT`` + 1 answers that are not 429 across both processes; another user still logs in;
* login, many usernames from one address: the same bound for the address; another address still gets in;
* intake, one API key: at most ``INTAKE_RATE_LIMIT`` + 1 orders created across both processes (as many as
  the database holds); another key is not limited.

Every 429 is CONTRACT §3's JSON error with ``Retry-After``. Client addresses are 127.0.0.x source addresses
(all of 127/8 is this machine). Skipped when Redis is not reachable (CI runs it).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import SYSTEM, intake_payload, make_app, migrate_up

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 7
LOGIN_LIMIT = 5
INTAKE_LIMIT = 20
PASSWORD = "password123"


# --- Redis, the database, the servers -------------------------------------------------------------------


@pytest.fixture
def redis_db() -> Iterator[Any]:
    try:
        socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1).close()
    except OSError:
        pytest.skip(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT} (CI runs it; start redis-server)")
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@dataclass
class Fixtures:
    url: str
    keys: list[str]
    users: list[str]


@pytest.fixture
def database(tmp_path: Path) -> Fixtures:
    """A migrated SQLite file with two users and two intake API keys, committed."""
    from dispatch.extensions import db
    from dispatch.services.auth import create_api_key, create_user

    url = f"sqlite:///{tmp_path / 'limits.db'}"
    migrate_up(make_app(url))
    app = make_app(url)
    with app.app_context():
        users = []
        for name in ("victim", "bystander"):
            create_user(name, role="dispatcher", password=PASSWORD, actor=SYSTEM)
            users.append(name)
        keys = [create_api_key(f"hotline-{n}", ["intake"], actor=SYSTEM)[0] for n in range(2)]
        db.session.remove()
        db.engine.dispose()
    return Fixtures(url, keys, users)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One gunicorn process (one worker) on its own port, output to a file, stopped by pid."""

    def __init__(self, url: str, log_dir: Path, name: str) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SECRET_KEY": "rate-limit-test",
            "RATELIMIT_STORAGE_URI": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
            "LOGIN_RATE_LIMIT": f"{LOGIN_LIMIT} per minute",
            "INTAKE_RATE_LIMIT": f"{INTAKE_LIMIT} per minute",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "wsgi:app",
                "--workers",
                "1",
                "--bind",
                f"127.0.0.1:{self.port}",
            ],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if request(self.port, "GET", "/healthz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gunicorn not ready after {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def servers(redis_db: Any, database: Fixtures, tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for name in ("web-a", "web-b"):
            started.append(Server(database.url, tmp_path, name))
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


# --- HTTP -----------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    retry_after: str | None
    body: Any
    port: int


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    source: str = "127.0.0.1",
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        raw = response.read()
        parsed = (
            json.loads(raw)
            if raw and response.getheader("Content-Type", "").startswith("application/json")
            else None
        )
        return Answer(response.status, response.getheader("Retry-After"), parsed, port)
    finally:
        conn.close()


def login(port: int, username: str, password: str = "wrong-password", source: str = "127.0.0.1") -> Answer:
    return request(
        port, "POST", "/api/v1/auth/token", {"username": username, "password": password}, source=source
    )


def hammer(calls: list[Callable[[], Answer]]) -> list[Answer]:
    """Run the calls concurrently (8 at a time), in order of submission."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda call: call(), calls))


def assert_limited(answers: list[Answer], limit: int, allowed: set[int]) -> list[Answer]:
    """At most limit + 1 answers that are not 429, every 429 a JSON error with Retry-After."""
    passed = [a for a in answers if a.status != 429]
    refused = [a for a in answers if a.status == 429]
    assert {a.status for a in passed} <= allowed, [a.status for a in passed]
    assert limit <= len(passed) <= limit + 1, (len(passed), [(a.port, a.status) for a in answers])
    for answer in refused:
        assert answer.retry_after is not None and answer.retry_after.isdigit(), answer
        assert 0 <= int(answer.retry_after) <= 60
        assert isinstance(answer.body, dict) and answer.body["code"] == 429 and answer.body["message"]
    # Both processes refused some: neither let its own full budget through on its own count.
    assert {a.port for a in refused} == {a.port for a in answers}
    return passed


# --- the test -------------------------------------------------------------------------------------------


def test_login_and_intake_limits_hold_across_two_gunicorn_processes(
    servers: list[Server], database: Fixtures, redis_db: Any
) -> None:
    ports = [s.port for s in servers]
    victim, bystander = database.users
    started = time.monotonic()

    # One username from four addresses (each below the per-address limit): the per-username limit.
    attempts = 3 * LOGIN_LIMIT
    sources = [f"127.0.0.{10 + n % 4}" for n in range(attempts)]
    answers = hammer([partial(login, ports[n % 2], victim, source=sources[n]) for n in range(attempts)])
    assert_limited(answers, LOGIN_LIMIT, allowed={401})
    # The right password does not help the limited user; another user logs in on both processes.
    assert login(ports[0], victim, PASSWORD, source="127.0.0.30").status == 429
    for port in ports:
        assert login(port, bystander, PASSWORD, source="127.0.0.31").status == 200

    # Many usernames from one address: the per-address limit.
    answers = hammer(
        [partial(login, ports[n % 2], f"sprayed-{n}", source="127.0.0.40") for n in range(attempts)]
    )
    assert_limited(answers, LOGIN_LIMIT, allowed={401})
    assert login(ports[1], bystander, PASSWORD, source="127.0.0.40").status == 429
    assert login(ports[1], bystander, PASSWORD, source="127.0.0.41").status == 200

    # Intake with one key across both processes; the other key is not limited.
    first, second = database.keys
    requests = 3 * INTAKE_LIMIT
    answers = hammer(
        [
            partial(request, ports[n % 2], "POST", "/api/v1/intake/orders", intake_payload(), token=first)
            for n in range(requests)
        ]
    )
    created = assert_limited(answers, INTAKE_LIMIT, allowed={201})
    for port in ports:
        answer = request(port, "POST", "/api/v1/intake/orders", intake_payload(), token=second)
        assert answer.status == 201, answer
    engine = sa.create_engine(database.url)
    with engine.connect() as conn:
        orders = conn.scalar(sa.text("SELECT count(*) FROM orders"))
    engine.dispose()
    assert orders == len(created) + len(ports)  # a 429 created nothing

    elapsed = time.monotonic() - started
    assert elapsed < 50, f"the hammering took {elapsed:.1f} s, close to the one-minute windows"
    assert redis_db.keys("LIMITS:*"), "the counters were not kept in Redis"
    for server in servers:
        assert "Traceback" not in server.output(), server.output()
