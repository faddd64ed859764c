"""Reference for the intake benchmark: bare Flask + Flask-SQLAlchemy, one POST doing one ORM INSERT.

Mirrors the reference app of shared/reference/ceilings.md (``APP_MODE=db``): the same driver (psycopg 3),
Flask-SQLAlchemy's default engine options and ``QueuePool``; the body is parsed into one ``WorkOrder``,
``session.add`` + ``flush()`` (INSERT ... RETURNING id) + ``commit()``, and 201 ``{id, external_id, status}``.
It takes the same JSON body as our intake endpoint, so both servers parse the same bytes.

Served by ``gunicorn -w 2 bench.support.reference_app:app`` with ``BENCH_REF_DATABASE_URL`` set; the table is
created by :data:`DDL` (the benchmark runs it on a fresh database before starting the server).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, jsonify, request  # noqa: TID251 (an HTTP reference app, not dispatch/)
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DDL = """
CREATE TABLE work_orders (
    id bigserial PRIMARY KEY,
    external_id varchar(64) NOT NULL UNIQUE,
    order_type varchar(32) NOT NULL,
    pay_mode varchar(32) NOT NULL,
    status varchar(32) NOT NULL,
    priority varchar(16) NOT NULL,
    customer_name varchar(100) NOT NULL,
    customer_phone varchar(32) NOT NULL,
    address text NOT NULL,
    district varchar(50) NOT NULL,
    lat double precision,
    lng double precision,
    requested_start timestamptz,
    requested_end timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    notes text,
    products jsonb NOT NULL
)
"""


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class WorkOrder(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "work_orders"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    external_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    order_type: Mapped[str] = mapped_column(sa.String(32))
    pay_mode: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(32))
    priority: Mapped[str] = mapped_column(sa.String(16))
    customer_name: Mapped[str] = mapped_column(sa.String(100))
    customer_phone: Mapped[str] = mapped_column(sa.String(32))
    address: Mapped[str] = mapped_column(sa.Text)
    district: Mapped[str] = mapped_column(sa.String(50))
    lat: Mapped[float | None] = mapped_column(sa.Float)
    lng: Mapped[float | None] = mapped_column(sa.Float)
    requested_start: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    requested_end: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    notes: Mapped[str | None] = mapped_column(sa.Text)
    products: Mapped[Any] = mapped_column(JSONB)


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
    "BENCH_REF_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dispatch_bench_reference"
)
db.init_app(app)


@app.get("/ping")
def ping() -> Any:
    return jsonify(status="ok")


@app.post("/orders")
def create_order() -> Any:
    body = request.get_json()
    customer, address = body["customer"], body["address"]
    window = body.get("requested_window") or {}
    order = WorkOrder(
        external_id=body["external_id"],
        order_type=body["order_type"],
        pay_mode=body["pay_mode"],
        status="new",
        priority=body.get("priority", "normal"),
        customer_name=customer["name"],
        customer_phone=customer["phone"],
        address=address["text"],
        district=address["district"],
        lat=address.get("lat"),
        lng=address.get("lng"),
        requested_start=_ts(window.get("start")),
        requested_end=_ts(window.get("end")),
        notes=body.get("notes"),
        products=body.get("products") or [],
    )
    db.session.add(order)
    db.session.flush()  # INSERT ... RETURNING id; read the id before commit (no reload SELECT)
    result = {"id": order.id, "external_id": order.external_id, "status": order.status}
    db.session.commit()
    return jsonify(result), 201
