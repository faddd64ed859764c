from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate, validates

from api.common.schemas import LocalDateTime, PageArgsSchema, Text, page_schema
from dispatch.phones import InvalidPhone, normalise_cn_mobile
from dispatch.vocabulary import ORDER_TYPES


class PositionSchema(ma.Schema):
    lat = fields.Float(required=True, validate=validate.Range(min=-90, max=90))
    lng = fields.Float(required=True, validate=validate.Range(min=-180, max=180))


class ShiftSchema(ma.Schema):
    weekday = fields.Integer(required=True, validate=validate.Range(min=1, max=7))
    start = fields.Time(required=True, format="%H:%M")
    end = fields.Time(required=True, format="%H:%M")

    @ma.validates_schema
    def _order(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["end"] <= data["start"]:
            raise ma.ValidationError("A shift must end after it starts.", "end")


class LeaveSchema(ma.Schema):
    start = fields.Date(required=True)
    end = fields.Date(required=True)
    reason = Text(load_default=None, allow_none=True, validate=validate.Length(max=100))

    @ma.validates_schema
    def _order(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["end"] < data["start"]:
            raise ma.ValidationError("Leave must not end before it starts.", "end")


class LivePositionSchema(ma.Schema):
    lat = fields.Float()
    lng = fields.Float()
    accuracy_m = fields.Float(allow_none=True)
    at = LocalDateTime()


class EngineerSchema(ma.Schema):
    id = fields.Integer(dump_only=True)
    code = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,32}$(?!\n)"))
    name = Text(required=True, validate=validate.Length(min=1, max=64))
    phone = fields.String(required=True, validate=validate.Length(min=1, max=32))
    team = Text(allow_none=True, validate=validate.Length(min=1, max=64))
    skills = fields.List(
        fields.String(validate=validate.OneOf(ORDER_TYPES)), validate=validate.Length(max=10)
    )
    districts = fields.List(Text(validate=validate.Length(min=1, max=50)), validate=validate.Length(max=30))
    home = fields.Nested(PositionSchema, allow_none=True)
    daily_capacity = fields.Integer(validate=validate.Range(min=0, max=100))
    shifts = fields.List(fields.Nested(ShiftSchema), validate=validate.Length(max=21))
    leave = fields.List(
        fields.Nested(LeaveSchema),
        validate=validate.Length(max=100),
        metadata={"description": "days off, inclusive local dates; replaces the whole list"},
    )
    position = fields.Nested(
        LivePositionSchema,
        dump_only=True,
        allow_none=True,
        metadata={"description": "the last position the PDA reported (null: none yet)"},
    )
    active = fields.Boolean()
    created_at = LocalDateTime(dump_only=True)
    updated_at = LocalDateTime(dump_only=True)

    @validates("phone")
    def _phone(self, value: str, **kwargs: Any) -> None:
        try:
            normalise_cn_mobile(value)
        except InvalidPhone as exc:
            raise ma.ValidationError(str(exc)) from None

    @ma.post_load
    def _normalise(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "phone" in data:
            data["phone"] = normalise_cn_mobile(data["phone"])
        return data

    @ma.pre_dump
    def _flatten(self, engineer: Any, **kwargs: Any) -> dict[str, Any]:
        return {
            "id": engineer.id,
            "code": engineer.code,
            "name": engineer.name,
            "phone": engineer.phone,
            "team": engineer.team.name if engineer.team else None,
            "skills": engineer.skills,
            "districts": [d.name for d in engineer.districts],
            "home": {"lat": engineer.home_lat, "lng": engineer.home_lng}
            if engineer.home_lat is not None
            else None,
            "daily_capacity": engineer.daily_capacity,
            "shifts": [
                {"weekday": s.weekday, "start": s.start_time, "end": s.end_time} for s in engineer.shifts
            ],
            "leave": [
                {"start": v.start_date, "end": v.end_date, "reason": v.reason} for v in engineer.leaves
            ],
            "position": {
                "lat": engineer.position_lat,
                "lng": engineer.position_lng,
                "accuracy_m": engineer.position_accuracy_m,
                "at": engineer.position_at,
            }
            if engineer.position_at is not None
            else None,
            "active": engineer.active,
            "created_at": engineer.created_at,
            "updated_at": engineer.updated_at,
        }


class EngineerPatchSchema(EngineerSchema):
    """Any subset of the engineer's fields.

    ``partial`` names the top-level fields only: ``partial=True`` would also reach into the nested shifts and
    home, letting ``{"weekday": 1}`` without times through (a KeyError, then a 500).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("partial", tuple(EngineerSchema._declared_fields))
        super().__init__(**kwargs)


EngineerPageSchema = page_schema(EngineerSchema, "EngineerPage")


class EngineerQueryArgsSchema(PageArgsSchema):
    team = Text(validate=validate.Length(min=1, max=64))
    active = fields.Boolean()
