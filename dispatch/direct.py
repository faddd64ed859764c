"""A one-row statement run on the driver's cursor: the hot path's few statements, without Core's execution.

Every hotline intake runs two statements (the intake lookup, the one-statement write; the API key's read too,
on a key's first request in a process).
Through ``Connection.execute`` each costs about 0.24 ms of web-worker CPU besides the driver's own work (an
execution context, a ``CursorResult`` and its metadata, parameter and result processing set up anew): about
15 % of an intake's CPU (bench/load.py, before and after on one machine: gunicorn CPU 4.87 → 4.15 ms per
request, 38 % → 44 % of the reference). :func:`first` runs such a statement on the DBAPI cursor of the same
connection instead, with what Core's execution would do that matters here kept:

* the statement is compiled once (per statement object and dialect) with the dialect's own compiler, and its
  parameters go through the same bind processors (``UTCDateTime``, ``JSON`` ...), its result values through
  the same result processors;
* the engine's ``before_cursor_execute`` and ``after_cursor_execute`` listeners see the statement (statement
  tracing, tests counting round trips). Their ``context`` is not Core's execution context but a plain object,
  the same for both calls, with ``connection``, ``cursor``, ``compiled``, ``statement``, ``parameters`` and
  ``executemany``: tracers keep their span on it between the two;
* a driver error is raised as SQLAlchemy's exception for it (``IntegrityError``, ``OperationalError`` ...),
  and a lost connection is invalidated first, as ``Connection.execute`` does, so the pool drops it and the
  HTTP edge answers 503.

PostgreSQL with psycopg only (the production database); elsewhere :func:`first` is ``Connection.execute``.
Only statements with plain named parameters are taken (no ``IN`` lists, none computed at execution); the
first row is fetched, the rest discarded by the next statement on that cursor.
"""

from __future__ import annotations

import collections
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

_DRIVERS = frozenset({"psycopg"})


class _Prepared:
    """A statement compiled for one dialect: its SQL, its parameters' processors and its row's shape."""

    def __init__(self, statement: sa.Select[Any], dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if (
            compiled.positional
            or compiled.post_compile_params
            or compiled.literal_execute_params
            or compiled.escaped_bind_names
        ):
            raise ValueError("direct.first takes statements with plain named, non-expanding parameters only")
        self.statement, self.dialect, self.compiled, self.sql = statement, dialect, compiled, compiled.string
        self.binds = {}  # bind name → processor (only the names that have one)
        self.defaults = {}  # the values bound in the statement itself (literals)
        for name, bind in compiled.binds.items():
            if bind.callable is not None:
                raise ValueError("direct.first takes no parameters computed at execution")
            if not bind.required:
                self.defaults[name] = bind.value
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self.binds[name] = process
        self.columns = list(statement.selected_columns)
        self.row: Any = collections.namedtuple("Row", [c.key for c in self.columns])  # type: ignore[misc]
        # One processor (or None) per column, None if no column has one: known once a result has told the
        # columns' types (the driver's type codes pick the processor, as for Core's own results).
        self.results: tuple[Any, ...] | None = None
        self.described = False

    def make_row(self, raw: tuple[Any, ...], description: Any) -> Any:
        if not self.described:
            results = tuple(
                c.type.dialect_impl(self.dialect).result_processor(self.dialect, d.type_code)
                for c, d in zip(self.columns, description, strict=True)
            )
            self.results = results if any(p is not None for p in results) else None
            self.described = True
        if self.results is not None:
            raw = tuple(value if p is None else p(value) for p, value in zip(self.results, raw, strict=True))
        return self.row._make(raw)


# By statement (its id: the entry holds the statement, so the id stays its own) and dialect. The hot path's
# statements are module constants or built once per shape (dispatch.services.intake), so this stays small.
_PREPARED: dict[tuple[int, str], _Prepared] = {}


def first(conn: sa.Connection, statement: sa.Select[Any], params: dict[str, Any]) -> Any:
    """The first row of ``statement`` with ``params`` (attributes named as its columns), or None."""
    if conn.dialect.driver not in _DRIVERS:
        return conn.execute(statement, params).first()
    prepared = _prepare(statement, conn.dialect)
    values = {**prepared.defaults, **params}
    for name, process in prepared.binds.items():
        if name in values:
            values[name] = process(values[name])
    sql = prepared.sql
    cursor = _cursor(conn.connection, prepared)
    dbapi_connection = cursor.connection
    before, after = conn.dispatch.before_cursor_execute, conn.dispatch.after_cursor_execute
    context = None
    try:
        if before or after:
            context = SimpleNamespace(
                connection=conn, cursor=cursor, compiled=prepared.compiled, executemany=False
            )
            for listener in before:
                context.statement, context.parameters = sql, values
                sql, values = listener(conn, cursor, sql, values, context, False)
            context.statement, context.parameters = sql, values
        cursor.execute(sql, values)
        for listener in after:
            listener(conn, cursor, sql, values, context, False)
        raw = cursor.fetchone()
        # The column types, needed once per statement: psycopg builds the description anew on each access.
        description = None if prepared.described else cursor.description
    except conn.dialect.loaded_dbapi.Error as exc:
        invalidated = conn.dialect.is_disconnect(exc, dbapi_connection, cursor)
        if invalidated:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            sql, values, exc, conn.dialect.loaded_dbapi.Error, connection_invalidated=invalidated
        ) from exc
    return None if raw is None else prepared.make_row(raw, description)


def _cursor(pooled: Any, prepared: _Prepared) -> Any:
    """A cursor of the DBAPI connection for this statement only, kept in the pool's ``info`` of the connection
    (which the pool empties whenever it opens a new DBAPI connection, so a reconnected one gets new cursors).

    A psycopg cursor keeps the adapters it has set up (every parameter's dumper, every result column's loader;
    a timestamptz loader reads the connection's time zone) while it runs the same query again; a new cursor
    per statement, or one cursor taking turns between statements, set them all up again on every execution:
    about 5 % of an intake's web-worker CPU (py-spy). A connection is used by one thread at a time (its pool
    checkout), and so are its cursors.
    """
    cursors: dict[_Prepared, Any] = pooled.info.setdefault(_CURSORS_KEY, {})
    cursor = cursors.get(prepared)
    if cursor is None:
        cursor = cursors[prepared] = pooled.dbapi_connection.cursor()
    return cursor


_CURSORS_KEY = "dispatch.direct.cursors"


def _prepare(statement: sa.Select[Any], dialect: sa.Dialect) -> _Prepared:
    key = (id(statement), dialect.name)
    held = _PREPARED.get(key)
    if held is None:
        held = _PREPARED[key] = _Prepared(statement, dialect)
    return held
