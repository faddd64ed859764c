"""``Idempotency-Key`` on every POST/PUT/PATCH/DELETE of both APIs (CONTRACT §3).

The key is claimed in its own transaction before the view runs; the response is stored after it. A replay
with the same body returns the stored response (``Idempotent-Replayed: true``); another body gets 409; a
concurrent duplicate gets 409 "in progress"; a 5xx, 401 or 429 is not stored, so a retry runs again.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from flask import Flask, Response, g, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from api.common.auth import API_PREFIXES, optional_actor
from api.common.errors import error_response, handle_database_unavailable
from dispatch.extensions import db
from dispatch.services import idempotency

log = logging.getLogger("dispatch.http")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEY_LENGTH = 200
_NOT_STORED = frozenset({401, 429})


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for part in (request.method, request.full_path, request.mimetype or ""):
        digest.update(part.encode())
        digest.update(b"\x00")
    if request.mimetype == "multipart/form-data":
        # The same upload re-encoded by a retrying client has a new random boundary: compare what it says
        # (its fields, and each file by content) rather than its bytes.
        for name, value in sorted(request.form.items(multi=True)):
            digest.update(f"{name}={value}".encode() + b"\x00")
        for name, upload in sorted(request.files.items(multi=True), key=lambda item: item[0]):
            digest.update(name.encode() + b"\x00" + hashlib.sha256(upload.stream.read()).digest())
            upload.stream.seek(0)
    else:
        digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def before_request() -> Any:
    if request.method not in MUTATING or not request.path.startswith(API_PREFIXES):
        return None
    key = request.headers.get("Idempotency-Key")
    if not key:
        return None
    if len(key) > MAX_KEY_LENGTH:
        return error_response(400, f"Idempotency-Key longer than {MAX_KEY_LENGTH} characters")
    actor = optional_actor()
    if actor is None:  # the view answers 401; logins are not replayed
        return None
    record_id, replay = idempotency.claim(
        f"{actor.kind}:{actor.id}", key, method=request.method, path=request.path, fingerprint=_fingerprint()
    )
    if replay is not None:
        status, body = replay
        response = jsonify(body) if body is not None else Response(status=status)
        response.status_code = status
        response.headers["Idempotent-Replayed"] = "true"
        return response
    g.idempotency_record = record_id
    return None


def after_request(response: Response) -> Response:
    record_id = g.pop("idempotency_record", None)
    if record_id is None:
        return response
    try:
        if response.status_code >= 500 or response.status_code in _NOT_STORED:
            idempotency.release(record_id)
        else:
            idempotency.complete(record_id, response.status_code, response.get_json(silent=True))
    except SQLAlchemyError as exc:
        # The database went away after the view answered (an error here would escape every handler as a
        # bare 500). A view's success stands (its transaction committed); an error answer stays a 503.
        # The claim stays pending: a retry with this key is told to retry shortly until the claim goes stale
        # (idempotency.STALE_AFTER), then runs the request again.
        if response.status_code < 500:
            db.session.rollback()
            log.warning("Idempotency-Key response not stored: %s", exc.__class__.__name__)
            return response
        unavailable, _ = handle_database_unavailable(exc)
        return unavailable
    return response


def teardown_request(exc: BaseException | None) -> None:
    record_id = g.pop("idempotency_record", None)
    if record_id is not None:  # the response never got built
        try:
            idempotency.release(record_id)
        except SQLAlchemyError:
            db.session.rollback()
            log.warning("Idempotency-Key claim not released (database unavailable)")


def register(app: Flask) -> None:
    app.before_request(before_request)
    app.after_request(after_request)
    app.teardown_request(teardown_request)
