"""The daily settlement file for BOSS: every billing event of one business day, reconciled to the feed.

``flask billing-settlement --day 2026-11-30`` numbers pending events, then writes
``<SETTLEMENT_DIR>/settlement-20261130.csv``: UTF-8 (no BOM), RFC 4180 CSV (comma, ``"`` quoting only where
needed, CRLF after every record), no column-name row. Three record kinds, told apart by the first field:

* ``H``: ``H, DISPATCH_BILLING_SETTLEMENT, <day YYYYMMDD>, <generated_at>, <format version>``.
* ``D``, one per event whose ``occurred_at`` falls in the day (DISPATCH_TZ), in ``seq`` order: see
  :data:`DETAIL_COLUMNS`. Fields come from the payload with ``.get``, so a payload without them leaves them
  empty; list fields are joined with ``|``; CR and LF in values become spaces, so a record is one line.
* ``T``: ``T, <detail count>, <count of each type in BILLING_EVENT_TYPES order>, <sha256>``, the hex SHA-256
  of the detail lines exactly as written (UTF-8 bytes, CRLFs included, first ``D`` to last).

The file is a function of the day's events only: ``generated_at`` is the latest ``numbered_at`` among them
(the end of the day when there are none), so writing the same day twice gives the same bytes. It is written
to a temporary file in the same directory, fsynced and renamed over the old one: a reader sees the old file
or the new one, never half of one. An event that belongs to the day but is written after the file was
made (a late completion) is in the file of a later run for that day; rerunning after the day is quiet again
is how a late event reaches settlement.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dispatch.billing import feed
from dispatch.extensions import db
from dispatch.models import BillingEvent
from dispatch.timeutil import local_day_bounds, to_local
from dispatch.vocabulary import BILLING_EVENT_TYPES

FILE_TYPE = "DISPATCH_BILLING_SETTLEMENT"
FORMAT_VERSION = "1"
LINE_END = "\r\n"
HEADER_COLUMNS = ("record", "file_type", "settlement_date", "generated_at", "format_version")
DETAIL_COLUMNS = (
    "record",  # D
    "seq",
    "event_id",
    "event_type",
    "occurred_at",  # ISO 8601 in DISPATCH_TZ
    "order_external_id",
    "order_type",
    "pay_mode",
    "products",  # | between products
    "engineer_code",
    "team",  # team name
    "district",
    "cancel_reason_code",  # order.cancelled
    "complaint_external_id",  # complaint.recorded
    "complaint_category",
    "complaint_cause",
    "kpi_day",  # kpi.daily
    "kpi_scope",  # engineer or team
    "kpi_figures",  # metric:numerator:denominator:value:target:met, ; between metrics, sorted by metric
)
TRAILER_COLUMNS = ("record", "detail_count", *(f"count_{t}" for t in BILLING_EVENT_TYPES), "sha256")


class SettlementFileError(ValueError):
    """A settlement file that does not reconcile with itself (bad header, count, sum or order)."""


@dataclass(frozen=True)
class Settlement:
    """A settlement file as written or parsed: its path, header, detail rows and trailer."""

    path: Path
    day: date
    generated_at: str
    details: list[dict[str, str]]
    counts: dict[str, int]
    sha256: str

    @property
    def trailer(self) -> str:
        """The trailer record as it is in the file (without the line end)."""
        return _line(["T", str(len(self.details)), *map(str, self.counts.values()), self.sha256]).rstrip()


def file_name(day: date) -> str:
    """``settlement-YYYYMMDD.csv``."""
    return f"settlement-{day:%Y%m%d}.csv"


def write_settlement(day: date, out_dir: str | os.PathLike[str], *, now: datetime) -> Settlement:
    """Number pending events, then write the settlement file of business day ``day`` into ``out_dir``."""
    feed.number_pending(now)
    start, end = local_day_bounds(day)
    rows = db.session.execute(
        sa.select(BillingEvent)
        .where(
            BillingEvent.occurred_at >= start,
            BillingEvent.occurred_at < end,
            BillingEvent.seq.is_not(None),
        )
        .order_by(BillingEvent.seq)
    ).scalars()
    details: list[list[str]] = []
    counts: Counter[str] = Counter()
    latest: datetime | None = None
    for event in rows:
        details.append(detail_fields(event))
        counts[event.type] += 1
        if event.numbered_at is not None and (latest is None or event.numbered_at > latest):
            latest = event.numbered_at
    db.session.commit()  # read only: end the transaction so nothing is held while the file is written
    generated_at = to_local(latest or end).isoformat()
    detail_text = "".join(_line(fields) for fields in details)
    sha = hashlib.sha256(detail_text.encode("utf-8")).hexdigest()
    per_type = {t: counts.get(t, 0) for t in BILLING_EVENT_TYPES}
    text = (
        _line(["H", FILE_TYPE, f"{day:%Y%m%d}", generated_at, FORMAT_VERSION])
        + detail_text
        + _line(["T", str(len(details)), *map(str, per_type.values()), sha])
    )
    path = Path(out_dir) / file_name(day)
    _write_atomically(path, text.encode("utf-8"))
    return Settlement(
        path=path,
        day=day,
        generated_at=generated_at,
        details=[dict(zip(DETAIL_COLUMNS, fields, strict=True)) for fields in details],
        counts=per_type,
        sha256=sha,
    )


def detail_fields(event: Any) -> list[str]:
    """The ``D`` record of one event (:data:`DETAIL_COLUMNS`); unknown payload shapes give empty fields."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    order = _dict(payload.get("order"))
    engineer = _dict(payload.get("engineer"))
    team = _dict(payload.get("team"))
    complaint = _dict(payload.get("complaint"))
    products = payload.get("products")
    return [
        "D",
        str(event.seq),
        str(event.id),
        event.type,
        to_local(event.occurred_at).isoformat(),
        _text(order.get("external_id")),
        _text(order.get("order_type")),
        _text(payload.get("pay_mode")),
        "|".join(_text(p) for p in products) if isinstance(products, list) else _text(products),
        _text(engineer.get("code")),
        _text(team.get("name")),
        _text(payload.get("district")),
        _text(payload.get("reason_code")),
        _text(complaint.get("external_id")),
        _text(complaint.get("category")),
        _text(complaint.get("cause")),
        _text(payload.get("day")) if event.type == "kpi.daily" else "",
        _text(payload.get("scope")) if event.type == "kpi.daily" else "",
        _figures(payload.get("figures")) if event.type == "kpi.daily" else "",
    ]


def _figures(figures: Any) -> str:
    if not isinstance(figures, dict):
        return ""
    parts = []
    for metric in sorted(figures, key=str):
        figure = _dict(figures[metric])
        values = [figure.get(k) for k in ("numerator", "denominator", "value", "target", "met")]
        parts.append(":".join([_text(metric), *(_text(v) for v in values)]))
    return ";".join(parts)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value).replace("\r", " ").replace("\n", " ")


def _line(fields: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=LINE_END).writerow(fields)
    return buffer.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it 0600; the file is for the billing transfer job to read
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    # The rename is durable only once the directory entry is on disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_settlement(path: str | os.PathLike[str]) -> Settlement:
    """Parse a settlement file and check it against itself: header, detail count, per-type counts, the
    SHA-256 of the detail lines and their ``seq`` order. Raises :class:`SettlementFileError`."""
    path = Path(path)
    data = path.read_bytes()
    if not data.endswith(LINE_END.encode()):
        raise SettlementFileError("the file does not end with CRLF (truncated?)")
    lines = data[: -len(LINE_END)].split(LINE_END.encode())
    if len(lines) < 2:
        raise SettlementFileError("a header and a trailer are required")
    header, trailer = _parse(lines[0]), _parse(lines[-1])
    if len(header) != len(HEADER_COLUMNS) or header[0] != "H" or header[1] != FILE_TYPE:
        raise SettlementFileError(f"not a settlement header: {header}")
    if header[4] != FORMAT_VERSION:
        raise SettlementFileError(f"unknown format version {header[4]!r}")
    try:
        day = datetime.strptime(header[2], "%Y%m%d").date()
    except ValueError:
        raise SettlementFileError(f"bad settlement date {header[2]!r}") from None
    if len(trailer) != len(TRAILER_COLUMNS) or trailer[0] != "T":
        raise SettlementFileError(f"not a settlement trailer: {trailer}")
    detail_lines = lines[1:-1]
    details = []
    for raw in detail_lines:
        fields = _parse(raw)
        if len(fields) != len(DETAIL_COLUMNS) or fields[0] != "D":
            raise SettlementFileError(f"not a detail record: {raw[:80]!r}")
        details.append(dict(zip(DETAIL_COLUMNS, fields, strict=True)))
    sha = hashlib.sha256(b"".join(line + LINE_END.encode() for line in detail_lines)).hexdigest()
    if sha != trailer[-1]:
        raise SettlementFileError(f"detail SHA-256 {sha} does not match the trailer's {trailer[-1]}")
    if trailer[1] != str(len(details)):
        raise SettlementFileError(f"trailer counts {trailer[1]} records, the file has {len(details)}")
    counts = Counter(d["event_type"] for d in details)
    per_type = {t: counts.get(t, 0) for t in BILLING_EVENT_TYPES}
    if trailer[2:-1] != [str(n) for n in per_type.values()] or sum(per_type.values()) != len(details):
        raise SettlementFileError(f"per-type counts {trailer[2:-1]} do not match the records")
    seqs = [int(d["seq"]) for d in details]
    if any(b <= a for a, b in zip(seqs, seqs[1:], strict=False)):
        raise SettlementFileError("detail records are not in strictly increasing seq order")
    return Settlement(path, day, header[3], details, per_type, trailer[-1])


def _parse(raw: bytes) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettlementFileError("the file is not UTF-8") from None
    rows = list(csv.reader([text]))
    return rows[0] if rows else []
