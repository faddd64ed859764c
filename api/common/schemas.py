"""Schema pieces shared by both APIs: times shown in DISPATCH_TZ, windows, pagination, error bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate, validates_schema

from dispatch.timeutil import to_local

MAX_PAGE_SIZE = 200
MAX_ID = 2**31 - 1  # ids are INTEGER columns: a larger id in a query would be a database error, not a 404/422
YEAR_RANGE = (1970, 2999)  # near datetime.min/max a time-zone shift raises OverflowError (a 500)


class Text(fields.String):
    """A string that PostgreSQL can store: NUL characters are refused (a database error otherwise)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ma.ValidationError("Must not contain NUL characters.")
        return text


class LocalDateTime(fields.AwareDateTime):
    """Accepts ISO 8601 with an offset (naive times are refused); dumps in DISPATCH_TZ."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        when = super()._deserialize(value, attr, data, **kwargs)
        if not YEAR_RANGE[0] <= when.year <= YEAR_RANGE[1]:
            raise ma.ValidationError(f"Year must be between {YEAR_RANGE[0]} and {YEAR_RANGE[1]}.")
        return when

    def _serialize(self, value: datetime | None, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return to_local(value).isoformat()


class WindowSchema(ma.Schema):
    start = LocalDateTime(required=True)
    end = LocalDateTime(required=True)

    @validates_schema
    def _end_after_start(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["end"] <= data["start"]:
            raise ma.ValidationError("Must end after it starts.", "end")
        if (data["end"] - data["start"]).total_seconds() > 7 * 24 * 3600:
            raise ma.ValidationError("A window may span at most 7 days.", "end")


class PageArgsSchema(ma.Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


class ErrorSchema(ma.Schema):
    """CONTRACT §3's error body (the ``Error`` component of /openapi.json). Errors may carry more context
    (the valid values of a path parameter, a conflicting resource), hence ``unknown = INCLUDE``."""

    class Meta:
        unknown = ma.INCLUDE

    code = fields.Integer(required=True, metadata={"description": "The HTTP status"})
    message = fields.String(required=True)
    errors = fields.Raw(metadata={"description": "Validation messages per field (422)"})
    status = fields.String(
        metadata={"description": "An illegal transition (409): the order's current status"}
    )
    action = fields.String(metadata={"description": "An illegal transition (409): the action refused"})


def page_schema(item: type[ma.Schema], name: str) -> type[ma.Schema]:
    """A paginated list of ``item``: ``{items, total, page, page_size}``."""
    return ma.Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item), required=True),
            "total": fields.Integer(required=True),
            "page": fields.Integer(required=True),
            "page_size": fields.Integer(required=True),
        },
        name=name,
    )


def page_body(items: list[Any], total: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"items": items, "total": total, "page": args["page"], "page_size": args["page_size"]}


class Decorated:
    """An object seen through a schema with extra attributes (a detail's events, an assignment's warnings)."""

    def __init__(self, obj: Any, **extra: Any) -> None:
        self._obj = obj
        self.__dict__.update(extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._obj, name)
