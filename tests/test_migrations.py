"""Migrations are the schema (DESIGN.md decision 9): one head, a clean round trip, no drift from the models.

Each test migrates its own fresh database: a temporary SQLite file, and on PostgreSQL (with TEST_DATABASE_URL)
a scratch database named after the test database plus ``_mig``, created and dropped here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import downgrade, upgrade

from dispatch.extensions import db
from dispatch.models.base import NAMING_CONVENTION
from tests.conftest import PG_URL, make_app, pg_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
KUNMING_DISTRICTS = {"五华区", "盘龙区", "官渡区", "西山区", "呈贡区"}


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    return not (type_ == "table" and name is not None and name.startswith("apscheduler_"))


# --- a fresh, empty database per test ---------------------------------------------------------------------


def _admin_conninfo() -> tuple[str, str]:
    url = sa.engine.make_url(pg_url())
    scratch = f"{url.database}_mig"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    return admin, scratch


def _recreate_pg(admin: str, name: str, *, create: bool) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """An app on an empty database that nothing has migrated yet."""
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("TEST_DATABASE_URL not set")
        admin, scratch = _admin_conninfo()
        _recreate_pg(admin, scratch, create=True)
        url = sa.engine.make_url(pg_url()).set(database=scratch).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / 'migrations.db'}"
    app = make_app(url)
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()
        if request.param == "postgresql":
            _recreate_pg(admin, scratch, create=False)


def _upgrade(app: Flask, revision: str = "head") -> None:
    with app.app_context():
        upgrade(revision=revision)
        db.engine.dispose()


def _downgrade(app: Flask, revision: str = "base") -> None:
    with app.app_context():
        downgrade(revision=revision)
        db.engine.dispose()


# --- what a schema looks like, comparably ---------------------------------------------------------------


def _triggers(conn: sa.Connection) -> list[str]:
    if conn.dialect.name == "postgresql":
        sql = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    return list(conn.execute(sa.text(sql)).scalars())


def _pg_functions(conn: sa.Connection) -> list[str]:
    sql = (
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public' ORDER BY p.proname"
    )
    return list(conn.execute(sa.text(sql)).scalars())


def _snapshot(app: Flask) -> dict[str, Any]:
    """Tables with their columns, keys, indexes and checks, plus triggers (and functions on PostgreSQL)."""
    with app.app_context(), db.engine.connect() as conn:
        inspector = sa.inspect(conn)
        tables: dict[str, Any] = {}
        for table in sorted(inspector.get_table_names()):
            tables[table] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
                "pk": inspector.get_pk_constraint(table),
                "fks": sorted(
                    (fk["name"] or "", tuple(fk["constrained_columns"]), fk["referred_table"])
                    for fk in inspector.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (ix["name"] or "", tuple(c or "" for c in ix["column_names"]), bool(ix["unique"]))
                    for ix in inspector.get_indexes(table)
                ),
                "uniques": sorted(
                    (uq["name"] or "", tuple(uq["column_names"]))
                    for uq in inspector.get_unique_constraints(table)
                ),
                "checks": sorted(
                    (ck["name"] or "", ck["sqltext"]) for ck in inspector.get_check_constraints(table)
                ),
            }
        snapshot = {"tables": tables, "triggers": _triggers(conn)}
        if conn.dialect.name == "postgresql":
            snapshot["functions"] = _pg_functions(conn)
    return snapshot


# --- the tests ------------------------------------------------------------------------------------------


def test_migrations_have_a_single_head() -> None:
    script = ScriptDirectory(str(MIGRATIONS))
    heads = script.get_heads()
    assert len(heads) == 1, f"several Alembic heads: {heads}; merge them"
    # every revision is reachable from that head down to base (no orphan branch)
    assert {r.revision for r in script.walk_revisions()} == {
        r.revision for r in script.iterate_revisions(heads[0], "base")
    }


def test_upgrade_downgrade_upgrade_leaves_the_same_schema(fresh_app: Flask) -> None:
    _upgrade(fresh_app)
    first = _snapshot(fresh_app)
    assert {"orders", "order_events", "districts", "alembic_version"} <= set(first["tables"])
    assert first["triggers"]

    _downgrade(fresh_app)
    emptied = _snapshot(fresh_app)
    assert set(emptied["tables"]) <= {"alembic_version"}, "downgrade to base left tables behind"
    assert emptied["triggers"] == []
    assert emptied.get("functions", []) == []

    _upgrade(fresh_app)
    assert _snapshot(fresh_app) == first


def test_migrated_schema_matches_the_models(fresh_app: Flask) -> None:
    _upgrade(fresh_app)
    with fresh_app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": _ours, "target_metadata": db.metadata}
        )
        diffs = compare_metadata(context, db.metadata)
        # and the comparison does see drift: one extra model column must show up as a difference
        drifted = sa.MetaData()
        for table in db.metadata.tables.values():
            table.to_metadata(drifted)
        drifted.tables["orders"].append_column(sa.Column("drift_probe", sa.Integer()))
        assert [d[0] for d in compare_metadata(context, drifted)] == ["add_column"]
    with fresh_app.app_context():
        db.engine.dispose()
    assert diffs == [], "models and migrations disagree; write a migration"


def _expected_prefix(kind: str, table: str) -> str:
    return NAMING_CONVENTION[kind].split("%", 1)[0] + table + ("" if kind == "pk" else "_")


def test_every_constraint_and_index_follows_the_naming_convention(fresh_app: Flask) -> None:
    _upgrade(fresh_app)
    named: list[tuple[str, str, str | None]] = []  # (kind, table, name)
    with fresh_app.app_context(), db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            kinds = {"p": "pk", "f": "fk", "u": "uq", "c": "ck", "x": "ex"}
            rows = conn.execute(
                sa.text(
                    "SELECT con.contype, rel.relname, con.conname FROM pg_constraint con "
                    "JOIN pg_class rel ON rel.oid = con.conrelid "
                    "JOIN pg_namespace n ON n.oid = rel.relnamespace "
                    "WHERE n.nspname = 'public' AND con.contype IN ('p', 'f', 'u', 'c', 'x')"
                )
            )
            named += [(kinds[contype], table, name) for contype, table, name in rows]
            rows = conn.execute(
                sa.text(
                    "SELECT tab.relname, idx.relname FROM pg_index i "
                    "JOIN pg_class idx ON idx.oid = i.indexrelid JOIN pg_class tab ON tab.oid = i.indrelid "
                    "JOIN pg_namespace n ON n.oid = tab.relnamespace "
                    "WHERE n.nspname = 'public' "
                    "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
                )
            )
            named += [("ix", table, name) for table, name in rows]
        else:
            inspector = sa.inspect(conn)
            for table in inspector.get_table_names():
                named.append(("pk", table, inspector.get_pk_constraint(table)["name"]))
                named += [("fk", table, fk["name"]) for fk in inspector.get_foreign_keys(table)]
                named += [("uq", table, uq["name"]) for uq in inspector.get_unique_constraints(table)]
                named += [("ck", table, ck["name"]) for ck in inspector.get_check_constraints(table)]
                named += [("ix", table, ix["name"]) for ix in inspector.get_indexes(table)]

    named = [(kind, table, name) for kind, table, name in named if table != "alembic_version"]
    assert {kind for kind, _, _ in named} >= {"pk", "fk", "uq", "ck", "ix"}
    wrong = [
        f"{kind} on {table}: {name!r}"
        for kind, table, name in named
        if kind not in NAMING_CONVENTION
        or name is None
        or not name.startswith(_expected_prefix(kind, table))
        or (kind == "pk" and name != f"pk_{table}")
    ]
    assert wrong == []


def test_upgrade_loads_the_five_kunming_districts_with_centroids(fresh_app: Flask) -> None:
    _upgrade(fresh_app)
    with fresh_app.app_context():
        rows = db.session.execute(sa.text("SELECT name, city, lat, lng FROM districts")).all()
        db.session.remove()
        db.engine.dispose()
    assert {name for name, _, _, _ in rows} == KUNMING_DISTRICTS
    assert len(rows) == 5
    for name, city, lat, lng in rows:
        assert city == "昆明市"
        assert 24.6 < lat < 25.4 and 102.5 < lng < 103.1, f"{name} centroid ({lat}, {lng}) is not in Kunming"
    assert len({(lat, lng) for _, _, lat, lng in rows}) == 5


@pytest.mark.parametrize(
    "statement", ["UPDATE order_events SET action = 'edited'", "DELETE FROM order_events"]
)
def test_order_events_are_append_only(app: Flask, make_order: Any, statement: str) -> None:
    order = make_order()
    count = sa.text("SELECT count(*) FROM order_events WHERE order_id = :id")
    before = db.session.execute(count, {"id": order.id}).scalar_one()
    assert before >= 1
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.session.begin_nested():
        db.session.execute(sa.text(statement + " WHERE order_id = :id"), {"id": order.id})
    assert db.session.execute(count, {"id": order.id}).scalar_one() == before
    actions = db.session.execute(
        sa.text("SELECT action FROM order_events WHERE order_id = :id"), {"id": order.id}
    )
    assert "edited" not in set(actions.scalars())
