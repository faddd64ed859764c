"""The scheduler process: APScheduler 3 as a heartbeat that runs idempotent jobs declared as data.

Deadlines are rows in our own tables, not APScheduler jobs (DESIGN.md decision 4): every job claims its due
rows itself, so two scheduler processes (hot standby) cause no double effects, and a scheduler that was down
catches up on its first tick. This module never runs inside web workers.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask

from dispatch.billing import push
from dispatch.clock import utcnow
from dispatch.extensions import db
from dispatch.geo import geocoding
from dispatch.logs import log_exception
from dispatch.messaging import relay
from dispatch.reporting import daily, rollup
from dispatch.services import dispatching, idempotency, orders
from dispatch.sla import tick

log = logging.getLogger("dispatch.scheduler")


@dataclass(frozen=True)
class Job:
    id: str
    func: Callable[[Flask, datetime], Any]
    seconds: Callable[[Flask], int]


def resume_suspensions(app: Flask, now: datetime) -> int:
    return orders.resume_due_suspensions(now=now)


def sla_tick(app: Flask, now: datetime) -> tick.TickResult:
    return tick.tick(now)


def purge_idempotency_keys(app: Flask, now: datetime) -> int:
    return idempotency.purge_expired(now=now, ttl_seconds=app.config["IDEMPOTENCY_TTL_SECONDS"])


def geocode_addresses(app: Flask, now: datetime) -> geocoding.GeocodeResult:
    return geocoding.geocode_pending(now)  # nothing at all while GEOCODER=none


def auto_dispatch(app: Flask, now: datetime) -> dispatching.SweepResult:
    return dispatching.sweep(now)  # nothing while AUTO_DISPATCH=off and AUTO_REDISPATCH is empty


def sms_relay(app: Flask, now: datetime) -> relay.RelayResult:
    return relay.deliver_pending(now)  # SMS_BACKEND=outbox: recorded as sent, nothing leaves the machine


def billing_feed(app: Flask, now: datetime) -> push.PushResult:
    return push.relay(now)  # numbers the feed always; pushes only with BILLING_WEBHOOK_URL set


def kpi_fold(app: Flask, now: datetime) -> rollup.FoldResult:
    return rollup.fold()


def kpi_close_days(app: Flask, now: datetime) -> int:
    return daily.close_days(now)  # the kpi.daily billing events of days gone by, once each


def _tick(app: Flask) -> int:
    return int(app.config["SCHEDULER_TICK_SECONDS"])


JOBS: tuple[Job, ...] = (
    Job("sla-tick", sla_tick, _tick),
    Job("resume-suspensions", resume_suspensions, _tick),
    Job("purge-idempotency-keys", purge_idempotency_keys, lambda app: 3600),
    Job("geocode-addresses", geocode_addresses, _tick),
    Job("auto-dispatch", auto_dispatch, _tick),
    Job("sms-relay", sms_relay, _tick),
    Job("billing-feed", billing_feed, _tick),
    Job("kpi-fold", kpi_fold, _tick),
    Job("kpi-close-days", kpi_close_days, lambda app: 300),
)


def run_job(app: Flask, job: Job) -> Any:
    """Run one job body in a fresh app context; a failure is logged and the next tick tries again."""
    with app.app_context():
        try:
            result = job.func(app, utcnow())
            if result:
                log.info("job %s: %s", job.id, result)
            return result
        except Exception:
            db.session.rollback()
            log_exception(log, "job %s failed", job.id)
            return None
        finally:
            db.session.remove()


def run_scheduler(app: Flask) -> None:
    """Run every job on its interval until SIGINT/SIGTERM."""
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
    )
    for job in JOBS:
        scheduler.add_job(
            run_job,
            "interval",
            seconds=job.seconds(app),
            args=[app, job],
            id=job.id,
            replace_existing=True,
            next_run_time=datetime.now(UTC),  # catch up at once after downtime
        )

    # The signal only sets a flag; the main thread then shuts the scheduler down. Calling shutdown in the
    # handler ran it on the thread that was inside the scheduler's own loop (a BlockingScheduler): the
    # loop's lock is re-entrant, so shutdown emptied the job store under it and the loop died with
    # JobLookupError (exit 1). From another thread, shutdown waits for that lock.
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        log.info("scheduler stopping (signal %s)", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler.start()
    log.info("scheduler started: %s", ", ".join(job.id for job in JOBS))
    while not stopping.wait(1.0):
        pass
    scheduler.shutdown(wait=False)
