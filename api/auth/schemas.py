from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate


class TokenRequestSchema(ma.Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=256), load_only=True)


class TokenSchema(ma.Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)
    role = fields.String(required=True)


class WhoAmISchema(ma.Schema):
    kind = fields.String()
    id = fields.Integer(allow_none=True)
    name = fields.String()
    role = fields.String(allow_none=True)
    scopes = fields.List(fields.String())
    engineer_id = fields.Integer(allow_none=True)
