"""PDA login: engineer tokens bound to the device that asked for them."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from api.auth.routes import login_limits
from api.auth.schemas import TokenSchema
from api.common.limits import limiter, login_username
from dispatch.services import auth as auth_service

blp = Blueprint("mobile-auth", __name__, url_prefix="/mobile/v1/auth", description="PDA authentication")


class MobileTokenRequestSchema(ma.Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=256), load_only=True)
    device_id = fields.String(required=True, validate=validate.Length(min=1, max=128))


@blp.route("/token")
class MobileToken(MethodView):
    decorators = [limiter.limit(login_limits), limiter.limit(login_limits, key_func=login_username)]

    @blp.arguments(MobileTokenRequestSchema)
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, description="Bad credentials")
    @blp.alt_response(403, description="Not an engineer")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Exchange an engineer's username and password for a token bound to ``device_id``."""
        token, user, ttl = auth_service.login(
            data["username"], data["password"], audience="mobile", device_id=data["device_id"]
        )
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "role": user.role}
