"""Console and integration logins: bearer tokens that expire and can be revoked."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth.schemas import TokenRequestSchema, TokenSchema, WhoAmISchema
from api.common.auth import bearer_token, current_actor
from api.common.limits import limiter, login_username
from dispatch.errors import AuthenticationError, PermissionDenied
from dispatch.services import auth as auth_service

blp = Blueprint("api-auth", __name__, url_prefix="/api/v1/auth", description="Authentication")


def login_limits() -> str:
    from flask import current_app

    return str(current_app.config["LOGIN_RATE_LIMIT"])


@blp.route("/token")
class Token(MethodView):
    decorators = [limiter.limit(login_limits), limiter.limit(login_limits, key_func=login_username)]

    @blp.arguments(TokenRequestSchema)
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, description="Bad credentials")
    @blp.alt_response(429, description="Too many attempts")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Exchange a username and password for a bearer token."""
        token, user, ttl = auth_service.login(data["username"], data["password"], audience="api")
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "role": user.role}


@blp.route("/revoke")
class Revoke(MethodView):
    @blp.response(204)
    @blp.alt_response(401, description="Unknown token")
    @blp.alt_response(403, description="API keys are revoked by an administrator, not here")
    def post(self) -> None:
        """Revoke the bearer token of this request (log out)."""
        if current_actor().kind != "user":
            raise PermissionDenied("Only user tokens can be revoked here")
        token = bearer_token()
        if token is None:
            raise AuthenticationError()
        auth_service.revoke_token(token)


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, WhoAmISchema)
    def get(self) -> dict[str, Any]:
        """Who the bearer credential belongs to."""
        actor = current_actor()
        return {
            "kind": actor.kind,
            "id": actor.id,
            "name": actor.name,
            "role": actor.role,
            "scopes": sorted(actor.scopes),
            "engineer_id": actor.engineer_id,
        }
