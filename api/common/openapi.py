"""The responses every operation can give, documented in ``/openapi.json`` where they apply (CONTRACT §3).

Each view documents its own outcomes (``@blp.response``, ``@blp.alt_response``). What the request pipeline
answers before or around any view is added here, from facts about the route, by an apispec plugin that
flask-smorest runs for every operation it documents:

* 401 (missing or bad credentials) on every authenticated operation of /api/v1 and /mobile/v1; 403 (the
  caller's role or key scope may not) on the authenticated /api/v1 ones; the public token endpoints are
  marked ``security: []``;
* 404 on every operation with a path parameter (unknown, or not visible to the caller);
* 400 on every POST/PUT/PATCH/DELETE (a body that does not parse, an over-long ``Idempotency-Key``);
* 503 with ``Retry-After`` on every operation of /api, /mobile and the webhooks (the database is unreachable);
* every error response without a body description gets CONTRACT §3's ``Error`` body.
"""

from __future__ import annotations

from typing import Any

from apispec import BasePlugin

from api.common.auth import API_PREFIXES, PUBLIC_ENDPOINTS

ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
MUTATING = frozenset({"post", "put", "patch", "delete"})
METHODS = MUTATING | {"get"}
COMMON = {
    401: "Missing or bad credentials",
    403: "Authenticated, but the caller's role or key scope may not do this",
    404: "Unknown, or not visible to the caller",
    400: "Malformed request: a body that does not parse, or an Idempotency-Key that is too long",
    503: "The database is unreachable; retry after Retry-After seconds",
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}


def _common_codes(rule: Any, method: str) -> list[int]:
    """The statuses the pipeline can answer for this route and method, whatever its view does."""
    if str(rule.rule).startswith("/webhooks/"):  # they document their own 4xx
        return [503]
    if not str(rule.rule).startswith(API_PREFIXES):
        return []
    codes: list[int] = [503]
    if rule.endpoint not in PUBLIC_ENDPOINTS:
        codes.append(401)
        if str(rule.rule).startswith("/api/"):
            codes.append(403)
    if rule.arguments:
        codes.append(404)
    if method in MUTATING:
        codes.append(400)
    return codes


class CommonResponsesPlugin(BasePlugin):
    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        rule = kwargs.get("rule")
        if rule is None or not operations:
            return
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            if rule.endpoint in PUBLIC_ENDPOINTS:
                operation["security"] = []
            responses = operation.setdefault("responses", {})
            listed = {str(code) for code in responses}
            for code in _common_codes(rule, method):
                if str(code) not in listed:
                    responses[str(code)] = {"description": COMMON[code]}
                    if code == 503:
                        responses[str(code)]["headers"] = RETRY_AFTER
            for code, response in responses.items():
                if str(code)[0] in "45" and isinstance(response, dict) and "$ref" not in response:
                    response.setdefault("content", ERROR_CONTENT)
