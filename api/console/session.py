"""Console sign-in: a session cookie holding a bearer token, CSRF protection, role navigation, errors.

Signing in issues the same kind of token as ``POST /api/v1/auth/token`` (so expiry and revocation work the
same) and keeps it in Flask's signed session cookie: HttpOnly, SameSite=Lax, Secure in production. Every
POST must carry the session's CSRF token (a form field, or the ``X-CSRF-Token`` header for scripts).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.wrappers import Response

from api.common.auth import API_PREFIXES
from dispatch.actors import Actor
from dispatch.errors import AuthenticationError, DispatchError, NotFound, PermissionDenied
from dispatch.extensions import db
from dispatch.services import auth as auth_service
from dispatch.timeutil import to_local
from dispatch.vocabulary import ORDER_TYPE_LABELS, STATUS_LABELS

blp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

ROLE_LABELS = {"admin": "管理员", "dispatcher": "调度", "acceptance": "集中受理", "manager": "经理"}
# (endpoint, label, roles that see it in the navigation)
NAVIGATION = (
    ("console.board", "工单看板", {"dispatcher", "admin", "manager"}),
    ("console.plans", "日计划", {"dispatcher", "admin"}),
    ("console.alerts", "告警", {"dispatcher", "admin"}),
    ("console.complaints", "投诉", {"dispatcher", "admin", "manager"}),
    ("console.desk", "受理台", {"acceptance", "dispatcher", "admin"}),
    ("console.kpi", "KPI 看板", {"manager", "admin"}),
    ("console.admin_engineers", "装维人员", {"admin"}),
    ("console.admin_sla", "SLA 策略", {"admin"}),
    ("console.admin_templates", "短信模板", {"admin"}),
    ("console.admin_users", "用户与密钥", {"admin"}),
)
HOME = {
    "dispatcher": "console.board",
    "admin": "console.board",
    "manager": "console.kpi",
    "acceptance": "console.desk",
}
PUBLIC = frozenset({"console.login", "console.static"})


def actor() -> Actor:
    """The signed-in user of this console request (the before-request hook made sure there is one)."""
    current: Actor = g.console_actor
    return current


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def _signed_in() -> Actor | None:
    raw = session.get("token")
    if not raw:
        return None
    try:
        return auth_service.authenticate(raw, audience="api", source="console")
    except AuthenticationError:
        session.clear()
        return None


@blp.before_request
def _guard() -> Response | None:
    if request.method == "POST":
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
        if not sent or not secrets.compare_digest(sent, str(session.get("csrf", ""))):
            abort(400, "CSRF token missing or wrong; reload the page")
    if request.endpoint in PUBLIC:
        return None
    signed_in = _signed_in()
    if signed_in is None:
        return redirect(url_for("console.login", next=request.full_path if request.method == "GET" else None))
    g.console_actor = signed_in
    return None


@blp.after_request
def _no_store(response: Response) -> Response:
    if request.endpoint != "console.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@blp.app_template_global()
def nav() -> list[tuple[str, str, bool]]:
    """The navigation entries the signed-in user's role may use: ``(endpoint, label, active)``."""
    current: Actor | None = g.get("console_actor")
    if current is None:
        return []
    pages = current_app.view_functions
    return [
        (ep, label, request.endpoint == ep)
        for ep, label, roles in NAVIGATION
        if current.role in roles and ep in pages
    ]


def _local(value: Any, fmt: str = "%m-%d %H:%M") -> str:
    return to_local(value).strftime(fmt) if value is not None else ""


def _safe_next(target: str | None) -> str | None:
    """Only a path on this site (no scheme, no host): an open redirect otherwise."""
    if not target or not target.startswith("/console/"):
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


@blp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign in with the console user's name and password."""
    error = None
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        try:
            raw, user, _ = auth_service.login(username, password, audience="api")
        except (AuthenticationError, PermissionDenied) as exc:
            error = "用户名或密码错误" if isinstance(exc, AuthenticationError) else "装维人员请使用 PDA 登录"
        else:
            session.clear()
            session.permanent = True
            session["token"] = raw
            session["username"] = user.username
            csrf_token()
            return redirect(
                _safe_next(request.form.get("next")) or url_for(HOME.get(user.role, "console.board"))
            )
    status = 401 if error else 200
    return render_template("console/login.html", error=error, next=request.args.get("next", "")), status


@blp.route("/logout", methods=["POST"])
def logout() -> Response:
    """Sign out: the session's token is revoked, the cookie cleared."""
    raw = session.get("token")
    if raw:
        with contextlib.suppress(AuthenticationError):
            auth_service.revoke_token(raw)
    session.clear()
    return redirect(url_for("console.login"))


@blp.route("/")
def home() -> Response:
    """Each role's first page."""
    return redirect(url_for(HOME.get(actor().role or "", "console.board")))


def back(default: str) -> str:
    """Where to return after a form: the page it came from, if it is ours."""
    return _safe_next(request.form.get("back")) or default


def handle(action: Callable[[], Any], done: str, success: str) -> Response:
    """Run a console action: flash ``success`` or the error's message, then redirect to ``done``."""
    try:
        action()
    except DispatchError as exc:
        db.session.rollback()  # whatever the service changed before it refused stays out
        flash(_describe(exc), "error")
    else:
        flash(success, "ok")
    return redirect(done)


def _describe(exc: DispatchError) -> str:
    detail = ""
    if exc.errors:
        detail = "：" + "; ".join(
            f"{field} {'、'.join(map(str, messages)) if isinstance(messages, list) else messages}"
            for field, messages in exc.errors.items()
        )
    extra = getattr(exc, "extra", None) or {}
    if extra.get("missing"):
        detail += "（缺少：" + ", ".join(extra["missing"]) + "）"
    return f"{exc.message}{detail}"


@blp.errorhandler(DispatchError)
def _dispatch_error(exc: DispatchError) -> tuple[str, int]:
    db.session.rollback()
    return render_template(
        "console/error.html", message=_describe(exc), status=exc.http_status
    ), exc.http_status


@blp.errorhandler(400)
def _bad_request(exc: Any) -> tuple[str, int]:
    return render_template(
        "console/error.html", message=getattr(exc, "description", "请求无效"), status=400
    ), 400


@blp.errorhandler(404)
def _not_found(exc: Any) -> tuple[str, int]:
    return render_template("console/error.html", message="页面不存在", status=404), 404


class ConsoleSessions(SecureCookieSessionInterface):
    """The signed cookie session is the console's: a bearer-token request (``/api/``, ``/mobile/``) gets
    Flask's null session (read as empty, never written, no cookie) instead of having a cookie looked for
    and its signer built on every call: about 2 % of an intake request's CPU (py-spy, gunicorn worker)."""

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        if request.path.startswith(API_PREFIXES):
            return self.make_null_session(app)
        return super().open_session(app, request)


def configure(app: Flask) -> None:
    """Cookie settings, template helpers and the CSRF token for every template."""
    app.session_interface = ConsoleSessions()
    production = app.config.get("DISPATCH_ENV") == "production"
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("SESSION_COOKIE_SECURE", production)
    app.config.setdefault("SESSION_COOKIE_NAME", "dispatch_console")
    app.config.setdefault(
        "PERMANENT_SESSION_LIFETIME", timedelta(seconds=int(app.config["TOKEN_TTL_SECONDS"]))
    )
    app.jinja_env.globals.update(csrf_token=csrf_token, ROLE_LABELS=ROLE_LABELS)
    app.jinja_env.filters["local"] = _local
    app.jinja_env.filters["status_label"] = lambda s: STATUS_LABELS.get(s, s)
    app.jinja_env.filters["type_label"] = lambda t: ORDER_TYPE_LABELS.get(t, t)


__all__ = ["NotFound", "actor", "back", "blp", "handle"]
