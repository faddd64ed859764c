"""The scheduler process: jobs as data, idempotent bodies, a real `flask run-scheduler` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from dispatch import scheduling
from dispatch.extensions import db
from dispatch.models import Order, OrderEvent
from dispatch.services import orders
from tests.conftest import SYSTEM, T0

REPO = Path(__file__).resolve().parents[2]


def _suspend_until(order_id: int, hours: float) -> None:
    actor = SYSTEM.__class__(kind="user", id=1, name="disp", role="dispatcher", source="api")
    orders.suspend_order(
        order_id, reason_code="customer_postponed", note=None, until=T0 + timedelta(hours=hours), actor=actor
    )


def test_every_job_is_declared_once_with_a_positive_interval(app):
    ids = [job.id for job in scheduling.JOBS]
    assert len(ids) == len(set(ids))
    assert all(job.seconds(app) > 0 for job in scheduling.JOBS)


def test_resume_job_resumes_only_due_suspensions_and_is_idempotent(committed_app, make_order):
    due, later = make_order().id, make_order().id
    _suspend_until(due, 1)
    _suspend_until(later, 5)
    clock = committed_app.extensions["clock"]
    clock.advance(hours=2)
    job = next(j for j in scheduling.JOBS if j.id == "resume-suspensions")

    assert scheduling.run_job(committed_app, job) == 1
    assert scheduling.run_job(committed_app, job) == 0

    db.session.remove()  # the jobs ran in their own app context and session
    assert db.session.get(Order, due).status == "new"
    assert db.session.get(Order, later).status == "suspended"
    resumes = db.session.scalar(
        sa.select(sa.func.count()).where(OrderEvent.order_id == due, OrderEvent.action == "resume")
    )
    assert resumes == 1


def test_a_failing_job_returns_none_and_leaves_the_session_usable(committed_app):
    def broken(app, now):
        db.session.execute(sa.text("SELECT 1"))
        raise RuntimeError("boom")

    assert scheduling.run_job(committed_app, scheduling.Job("broken", broken, lambda app: 1)) is None
    assert db.session.execute(sa.text("SELECT 1")).scalar() == 1


def test_scheduler_process_runs_jobs_and_stops_cleanly_on_sigterm(committed_app, make_order):
    order_id = make_order().id
    _suspend_until(order_id, 1)  # T0 + 1 h is long past in wall-clock time
    db.session.remove()
    env = {
        **os.environ,
        "DATABASE_URL": committed_app.config["SQLALCHEMY_DATABASE_URI"],
        "SCHEDULER_TICK_SECONDS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "run-scheduler"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            status = db.session.scalar(sa.select(Order.status).where(Order.id == order_id))
            db.session.remove()  # end the read: on SQLite an open transaction holds the write lock
            if status == "new":
                break
            time.sleep(0.2)
        assert status == "new", proc.stdout and proc.kill() or proc.communicate()[0].decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output
    assert "scheduler started" in output
