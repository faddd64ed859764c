"""create_app: the one composition root (config, database, both APIs, CLI, error mapping)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from dispatch import cli
from dispatch.clock import SystemClock
from dispatch.config import load_config
from dispatch.extensions import db, migrate

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
    migrate.init_app(app, db, directory=str(Path(__file__).resolve().parent.parent / "migrations"))

    from api import register as register_api

    register_api(app)
    cli.register(app)
    return app
