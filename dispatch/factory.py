"""create_app: the one composition root (config, database, both APIs, CLI, error mapping)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from dispatch import cli
from dispatch.clock import SystemClock
from dispatch.config import load_config
from dispatch.extensions import db, migrate

log = logging.getLogger("dispatch.db")

_STATIC = Path(__file__).resolve().parent.parent / "api" / "static"


@event.listens_for(Engine, "connect")
def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite as a serious embedded database: foreign keys, WAL, a busy timeout, and our own BEGIN."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    dbapi_connection.isolation_level = None  # pysqlite's implicit BEGIN breaks SAVEPOINT; see _sqlite_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@event.listens_for(Engine, "begin")
def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout instead of one failing
    # with "database is locked" when a read transaction tries to upgrade (library-notes §5).
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _close_session(exc: BaseException | None) -> None:
    """Close the request's session before Flask-SQLAlchemy's own teardown does (teardowns run in reverse).

    A connection lost after the view ran (a database restart, ``pg_terminate_backend``) makes the rollback of
    the session's open transaction raise; raised from a teardown, it escapes Flask and the client gets the
    server's bare HTML 500 for a request whose answer was already built. Invalidate instead: the pool drops
    that connection and the next checkout opens a fresh one.
    """
    session = db.session()
    try:  # the transaction's connection, held here: a failed close forgets it without returning it
        connection = session.connection() if session.in_transaction() else None
    except SQLAlchemyError:  # none checked out yet, and none to be had: nothing to roll back either
        connection = None
    try:
        session.close()
    except SQLAlchemyError as error:
        orig = getattr(error, "orig", None)
        log.warning("database connection lost at teardown: %s", (orig or error).__class__.__name__)
        if connection is not None:
            connection.invalidate()
            connection.close()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the WSGI app. ``config`` overrides the environment (tests pass their database URL here)."""
    app = Flask("dispatch", static_folder=str(_STATIC), static_url_path="/static")
    app.config.update(load_config(config))
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["clock"] = app.config.pop("CLOCK", None) or SystemClock()

    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        # an unusable path must not stop the app from starting: /healthz reports it (503) instead
        with contextlib.suppress(OSError):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    db.init_app(app)
    app.teardown_appcontext(_close_session)  # registered after db's, so it runs first
    migrate.init_app(app, db, directory=str(Path(__file__).resolve().parent.parent / "migrations"))

    from api import register as register_api

    register_api(app)
    cli.register(app)
    return app
