"""Users, bearer tokens and API keys: issue, authenticate, revoke. Only hashes are ever stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import selectinload
from werkzeug.security import check_password_hash, generate_password_hash

from dispatch import direct
from dispatch.actors import Actor, require
from dispatch.clock import utcnow
from dispatch.errors import AuthenticationError, Conflict, NotFound, PermissionDenied, ValidationError
from dispatch.extensions import db
from dispatch.models import ApiKey, AuthToken, Engineer, User
from dispatch.vocabulary import API_KEY_SCOPES, ROLES

TOKEN_PREFIX = "dt_"  # noqa: S105 (a prefix, not a secret)
KEY_PREFIX = "dk_"
MIN_PASSWORD_LENGTH = 8
MAX_ID = 2**31 - 1  # ids are INTEGER columns: a larger one is unknown, not a database error
ADMIN = frozenset({"admin", "system"})
# Compared against when the username is unknown, so both cases cost one hash check.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="pbkdf2:sha256:1000")


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _password_hash(password: str) -> str:
    return generate_password_hash(password, method=current_app.config.get("PASSWORD_HASH_METHOD", "scrypt"))


def create_user(
    username: str, *, role: str, password: str, engineer_code: str | None = None, actor: Actor
) -> User:
    """Create a console or PDA login; ``engineer`` logins are linked to an existing engineer."""
    require(actor, ADMIN, "create users")
    errors: dict[str, list[str]] = {}
    if role not in ROLES:
        errors["role"] = [f"Must be one of: {', '.join(ROLES)}."]
    if len(password) < MIN_PASSWORD_LENGTH:
        errors["password"] = [f"At least {MIN_PASSWORD_LENGTH} characters."]
    if not username or len(username) > 64:
        errors["username"] = ["1 to 64 characters."]
    engineer = None
    if role == "engineer":
        if not engineer_code:
            errors["engineer_code"] = ["Required for the engineer role."]
        else:
            engineer = db.session.scalar(sa.select(Engineer).where(Engineer.code == engineer_code))
            if engineer is None:
                errors["engineer_code"] = [f"No engineer with code {engineer_code}."]
    elif engineer_code:
        errors["engineer_code"] = ["Only engineer logins are linked to an engineer."]
    if errors:
        raise ValidationError(errors=errors)
    if db.session.scalar(sa.select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"User {username} already exists")
    user = User(
        username=username,
        role=role,
        password_hash=_password_hash(password),
        engineer_id=engineer.id if engineer else None,
        active=True,
        created_at=utcnow(),
    )
    db.session.add(user)
    db.session.commit()
    return user


def login(
    username: str, password: str, *, audience: str = "api", device_id: str | None = None
) -> tuple[str, User, int]:
    """Check a password and issue a bearer token: ``(token, user, expires_in_seconds)``.

    The mobile audience is for engineers only, and binds the token to the device.
    """
    user = db.session.scalar(sa.select(User).where(User.username == username))
    valid = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not valid or not user.active:
        raise AuthenticationError("Invalid username or password")
    if (audience == "mobile") != (user.role == "engineer"):
        # Engineers work through the PDA API (device-bound tokens); everyone else through /api/v1.
        raise PermissionDenied("Engineers sign in on /mobile/v1; other roles on /api/v1")
    ttl = current_app.config["MOBILE_TOKEN_TTL_SECONDS" if audience == "mobile" else "TOKEN_TTL_SECONDS"]
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(
        AuthToken(
            token_hash=_sha256(raw),
            user_id=user.id,
            audience=audience,
            device_id=device_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
    )
    db.session.commit()
    return raw, user, ttl


def revoke_token(raw: str) -> None:
    """Revoke a user token so it no longer authenticates (logout)."""
    token = db.session.scalar(sa.select(AuthToken).where(AuthToken.token_hash == _sha256(raw)))
    if token is None:
        raise AuthenticationError()
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.session.commit()


def authenticate(raw: str, *, audience: str, source: str, key_confirmed_later: bool = False) -> Actor:
    """The actor behind a bearer credential, or 401. API keys are accepted on the ``api`` audience only.

    ``key_confirmed_later``: the request confirms its API key itself, in a statement it runs anyway and
    before it changes anything (:func:`confirm_key`), so a key this process has read before is taken
    from its memory instead of being read again."""
    now = utcnow()
    if raw.startswith(KEY_PREFIX) and audience == "api":
        return _authenticate_key(raw, source, key_confirmed_later)
    token = db.session.scalar(sa.select(AuthToken).where(AuthToken.token_hash == _sha256(raw)))
    if (
        token is None
        or token.revoked_at is not None
        or token.expires_at <= now
        or token.audience != audience
        or not token.user.active
    ):
        raise AuthenticationError()
    user = token.user
    return Actor(
        kind="user",
        id=user.id,
        name=user.username,
        role=user.role,
        engineer_id=user.engineer_id,
        source=source,
        device_id=token.device_id,
    )


_API_KEYS: sa.Table = ApiKey.__table__  # type: ignore[assignment]
_KEY_BY_PREFIX = sa.select(
    _API_KEYS.c.id,
    _API_KEYS.c.name,
    _API_KEYS.c.salt,
    _API_KEYS.c.key_hash,
    _API_KEYS.c.scopes,
    _API_KEYS.c.revoked_at,
).where(_API_KEYS.c.prefix == sa.bindparam("prefix"))


# The keys this process has read and found valid, by prefix (their columns as _KEY_BY_PREFIX reads them).
# Every hotline order authenticates with a key: an order intake (api/intake) takes its key from here and
# confirms in its own lookup that the key is still there and not revoked (confirm_key), one round trip fewer
# per order; every other request reads its key. A key's columns never change but for its revocation. So a key
# revoked elsewhere, still remembered here, is refused by that lookup: after the checks that come before it
# (a bad body's 422, a scope's 403, the rate limit's 429), never after anything is written.
_KNOWN_KEYS: dict[str, Any] = {}
MAX_KNOWN_KEYS = 256  # keys are few; the bound only keeps a flood of distinct valid keys from growing it


def _authenticate_key(raw: str, source: str, confirmed_later: bool) -> Actor:
    try:
        _, prefix, secret = raw.split("_", 2)
    except ValueError:
        raise AuthenticationError() from None
    key: Any = _KNOWN_KEYS.get(prefix) if confirmed_later else None
    from_memory = key is not None and _key_matches(key, secret)
    if not from_memory:
        # Read: a request that does not confirm its key later sees a revocation at once, whichever process
        # made it. The columns needed, on the driver's cursor (dispatch.direct).
        key = direct.first(db.session.connection(), _KEY_BY_PREFIX, {"prefix": prefix})
        if key is None or key.revoked_at is not None or not _key_matches(key, secret):
            _KNOWN_KEYS.pop(prefix, None)
            raise AuthenticationError()
        if len(_KNOWN_KEYS) >= MAX_KNOWN_KEYS:
            _KNOWN_KEYS.clear()
        _KNOWN_KEYS[prefix] = key
    return Actor(
        kind="api_key",
        id=key.id,
        name=key.name,
        scopes=frozenset(key.scopes),
        source=source,
        key_from_memory=from_memory,
    )


def _key_matches(key: Any, secret: str) -> bool:
    return hmac.compare_digest(key.key_hash, _sha256(key.salt, secret))


def confirm_key(actor: Actor, key_id: int | None, revoked_at: Any) -> None:
    """401 if ``actor``'s key came from memory (``key_confirmed_later``) and, as the request's own statement
    has read it now (``key_id`` None: no such row), is no longer there or revoked."""
    if not actor.key_from_memory:
        return
    if key_id != actor.id or revoked_at is not None:
        _forget_key(actor.id)
        raise AuthenticationError()


def _forget_key(key_id: int | None) -> None:
    for prefix, key in list(_KNOWN_KEYS.items()):
        if key.id == key_id:
            _KNOWN_KEYS.pop(prefix, None)


def create_api_key(
    name: str, scopes: list[str], *, actor: Actor, raw_secret: str | None = None
) -> tuple[str, ApiKey]:
    """Create a system key; the raw key is returned once and only its salted hash is kept."""
    require(actor, ADMIN, "create API keys")
    bad = [s for s in scopes if s not in API_KEY_SCOPES]
    if not scopes or bad:
        raise ValidationError(errors={"scope": [f"Must be among: {', '.join(API_KEY_SCOPES)}."]})
    if not name or len(name) > 64:
        raise ValidationError(errors={"name": ["1 to 64 characters."]})
    prefix = secrets.token_hex(4)
    secret = raw_secret or secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    key = ApiKey(
        name=name,
        prefix=prefix,
        salt=salt,
        key_hash=_sha256(salt, secret),
        scopes=sorted(set(scopes)),
        created_at=utcnow(),
    )
    db.session.add(key)
    db.session.commit()
    return f"{KEY_PREFIX}{prefix}_{secret}", key


def revoke_api_key(key_id: int, *, actor: Actor) -> None:
    """Revoke a system key."""
    require(actor, ADMIN, "revoke API keys")
    key = db.session.get(ApiKey, key_id) if 0 < key_id <= MAX_ID else None
    if key is None:
        raise NotFound("API key not found")
    key.revoked_at = key.revoked_at or utcnow()
    db.session.commit()
    _forget_key(key.id)  # from this process's memory (other processes': confirm_key)


def list_users(*, actor: Actor) -> list[User]:
    """Every console and PDA login by username, with its engineer loaded (admins only)."""
    require(actor, ADMIN, "list users")
    query = sa.select(User).options(selectinload(User.engineer)).order_by(User.username)
    return list(db.session.scalars(query))


def set_user_active(user_id: int, active: bool, *, actor: Actor) -> User:
    """Deactivate a login (its tokens are revoked: reactivating it later revives none) or reactivate it.

    Admins only. An admin cannot deactivate their own login, nor the last active admin (409): someone must
    be left who can undo it.
    """
    require(actor, ADMIN, "activate or deactivate users")
    user = db.session.get(User, user_id, with_for_update=True) if 0 < user_id <= MAX_ID else None
    if user is None:
        raise NotFound(f"User {user_id} not found")
    if not active and user.active:
        if actor.kind == "user" and actor.id == user.id:
            raise Conflict("You cannot deactivate your own login")
        if user.role == "admin":
            admins = db.session.scalar(
                sa.select(sa.func.count())
                .select_from(User)
                .where(User.role == "admin", User.active.is_(True))
            )
            if (admins or 0) <= 1:
                raise Conflict("The last active admin cannot be deactivated")
        now = utcnow()
        db.session.execute(
            sa.update(AuthToken)
            .where(AuthToken.user_id == user.id, AuthToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
    user.active = active
    db.session.commit()
    return user


def list_api_keys(*, actor: Actor) -> list[ApiKey]:
    """Every system key, newest first, revoked ones included (admins only; only prefixes, never secrets)."""
    require(actor, ADMIN, "list API keys")
    return list(db.session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())))
