"""HTTP authentication: tokens, expiry, revocation, API keys, audiences, devices, hashes, rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from api.common.auth import current_actor
from dispatch.actors import Actor
from dispatch.errors import AuthenticationError
from dispatch.extensions import db
from tests.conftest import SYSTEM, bearer, make_app

PASSWORD = "password123"
BAD_CREDENTIALS = "Invalid username or password"


def login(client: Any, username: str, password: str = PASSWORD) -> Any:
    return client.post("/api/v1/auth/token", json={"username": username, "password": password})


def mobile_login(client: Any, username: str, password: str = PASSWORD, device_id: str = "pda-1") -> Any:
    return client.post(
        "/mobile/v1/auth/token", json={"username": username, "password": password, "device_id": device_id}
    )


def mobile_actor(app: Flask, token: str, device: str | None = None) -> Actor:
    """Who /mobile/v1 takes the caller for (raises AuthenticationError like the routes' 401)."""
    headers = bearer(token) | ({"X-Device-Id": device} if device is not None else {})
    with app.test_request_context("/mobile/v1/orders", headers=headers):
        return current_actor()


# --- console / integration tokens ---------------------------------------------------------------------


def test_token_endpoint_returns_a_bearer_token_with_role_and_lifetime(app, client, make_user):
    user = make_user("dispatcher")
    response = login(client, user.username)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "role"}
    assert body["token_type"] == "Bearer"
    assert body["role"] == "dispatcher"
    assert body["expires_in"] == app.config["TOKEN_TTL_SECONDS"]
    assert isinstance(body["access_token"], str) and len(body["access_token"]) >= 32


def test_issued_token_identifies_the_user_on_me(client, make_user):
    user = make_user("manager")
    token = login(client, user.username).get_json()["access_token"]
    me = client.get("/api/v1/auth/me", headers=bearer(token))
    assert me.status_code == 200
    body = me.get_json()
    assert body["kind"] == "user"
    assert body["id"] == user.id
    assert body["name"] == user.username
    assert body["role"] == "manager"


def test_each_login_issues_a_distinct_token(client, make_user):
    user = make_user("dispatcher")
    first = login(client, user.username).get_json()["access_token"]
    second = login(client, user.username).get_json()["access_token"]
    assert first != second


@pytest.mark.parametrize("case", ["wrong_password", "unknown_user", "inactive_user"])
def test_bad_credentials_get_401_with_one_indistinguishable_message(app, client, make_user, case):
    user = make_user("dispatcher")
    if case == "wrong_password":
        response = login(client, user.username, "wrong-password")
    elif case == "unknown_user":
        response = login(client, "nobody-by-this-name")
    else:
        user.active = False
        db.session.commit()
        response = login(client, user.username)
    assert response.status_code == 401
    body = response.get_json()
    assert body == {"code": 401, "message": BAD_CREDENTIALS}
    assert "access_token" not in body


def test_deactivating_a_user_invalidates_their_existing_tokens(client, make_user):
    user = make_user("dispatcher")
    token = login(client, user.username).get_json()["access_token"]
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 200
    user.active = False
    db.session.commit()
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 401


def test_token_login_without_required_fields_is_422_per_field(client):
    response = client.post("/api/v1/auth/token", json={"username": "x"})
    assert response.status_code == 422
    assert "password" in response.get_json()["errors"]


def test_token_expires_after_its_lifetime(app, client, clock, make_user):
    user = make_user("dispatcher")
    token = login(client, user.username).get_json()["access_token"]
    ttl = app.config["TOKEN_TTL_SECONDS"]

    clock.advance(seconds=ttl - 1)
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 200

    clock.advance(seconds=2)
    expired = client.get("/api/v1/auth/me", headers=bearer(token))
    assert expired.status_code == 401
    assert expired.get_json()["code"] == 401


def test_revoked_token_no_longer_authenticates(client, make_user):
    user = make_user("dispatcher")
    token = login(client, user.username).get_json()["access_token"]
    other = login(client, user.username).get_json()["access_token"]

    revoked = client.post("/api/v1/auth/revoke", headers=bearer(token))
    assert revoked.status_code == 204
    assert revoked.get_data() == b""

    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 401
    assert client.post("/api/v1/auth/revoke", headers=bearer(token)).status_code == 401
    # only that token: the user's other session still works
    assert client.get("/api/v1/auth/me", headers=bearer(other)).status_code == 200


def test_revoke_without_a_token_is_401(client):
    assert client.post("/api/v1/auth/revoke").status_code == 401


def test_api_key_cannot_revoke_itself_through_the_logout_endpoint(client, api_key):
    key = api_key("intake")
    response = client.post("/api/v1/auth/revoke", headers=bearer(key))
    assert response.status_code == 403
    assert client.get("/api/v1/auth/me", headers=bearer(key)).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer  ",
        "Basic x",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "bearer",
        "Bearer not-a-token",
    ],
)
def test_malformed_or_foreign_authorization_headers_get_401(client, header):
    response = client.get("/api/v1/auth/me", headers={"Authorization": header})
    assert response.status_code == 401
    body = response.get_json()
    assert body["code"] == 401
    assert body["message"]


def test_scheme_name_is_case_insensitive(client, make_user):
    user = make_user("dispatcher")
    token = login(client, user.username).get_json()["access_token"]
    assert client.get("/api/v1/auth/me", headers={"Authorization": f"bearer {token}"}).status_code == 200


# --- system API keys ----------------------------------------------------------------------------------


def test_api_key_authenticates_as_the_system_with_its_scope(client, api_key):
    key = api_key("billing")
    me = client.get("/api/v1/auth/me", headers=bearer(key))
    assert me.status_code == 200
    body = me.get_json()
    assert body["kind"] == "api_key"
    assert body["scopes"] == ["billing"]
    assert body["role"] is None


def test_api_key_with_a_wrong_secret_is_refused(client, api_key):
    key = api_key("intake")
    head, _, secret = key.rpartition("_")
    tampered = head + "_" + ("A" if secret[0] != "A" else "B") + secret[1:]
    assert tampered != key
    assert client.get("/api/v1/auth/me", headers=bearer(tampered)).status_code == 401
    # the right prefix alone, a truncated key, or an unknown prefix are refused too
    prefix_only = key.split("_")[0] + "_" + key.split("_")[1]
    for bad in (prefix_only, key[:-1], "dk_00000000_" + secret, "dk_"):
        assert client.get("/api/v1/auth/me", headers=bearer(bad)).status_code == 401, bad


def test_revoked_api_key_is_refused(client, api_key):
    from dispatch.models import ApiKey
    from dispatch.services.auth import revoke_api_key

    key = api_key("intake")
    assert client.get("/api/v1/auth/me", headers=bearer(key)).status_code == 200
    prefix = key.split("_")[1]
    key_id = db.session.scalar(sa.select(ApiKey.id).where(ApiKey.prefix == prefix))
    revoke_api_key(key_id, actor=SYSTEM)
    response = client.get("/api/v1/auth/me", headers=bearer(key))
    assert response.status_code == 401


def test_api_key_is_refused_on_the_mobile_api(client, api_key):
    key = api_key("intake")
    assert client.get("/api/v1/auth/me", headers=bearer(key)).status_code == 200
    with pytest.raises(AuthenticationError):
        mobile_actor(client.application, key)


# --- audiences: console tokens vs PDA tokens ----------------------------------------------------------


def test_console_token_is_refused_on_the_mobile_api(client, make_user):
    user = make_user("dispatcher")
    token = login(client, user.username).get_json()["access_token"]
    with pytest.raises(AuthenticationError):
        mobile_actor(client.application, token)


def test_mobile_token_is_refused_on_the_console_api(client, make_user):
    engineer = make_user("engineer")
    token = mobile_login(client, engineer.username).get_json()["access_token"]
    response = client.get("/api/v1/auth/me", headers=bearer(token))
    assert response.status_code == 401
    assert client.get("/api/v1/orders", headers=bearer(token)).status_code == 401


# --- PDA (mobile) tokens ------------------------------------------------------------------------------


def test_mobile_token_for_an_engineer_is_bound_to_the_device(app, client, make_user):
    user = make_user("engineer")
    response = mobile_login(client, user.username, device_id="pda-7")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "role"}
    assert body["token_type"] == "Bearer"
    assert body["role"] == "engineer"
    assert body["expires_in"] == app.config["MOBILE_TOKEN_TTL_SECONDS"]

    from dispatch.models import AuthToken
    from dispatch.services.auth import _sha256

    stored = db.session.scalar(
        sa.select(AuthToken).where(AuthToken.token_hash == _sha256(body["access_token"]))
    )
    assert stored is not None
    assert stored.audience == "mobile"
    assert stored.device_id == "pda-7"
    assert stored.user_id == user.id


def test_mobile_token_from_another_device_is_refused(client, make_user):
    user = make_user("engineer")
    token = mobile_login(client, user.username, device_id="pda-7").get_json()["access_token"]

    actor = mobile_actor(client.application, token, device="pda-7")
    assert actor.is_engineer
    assert actor.engineer_id == user.engineer_id
    assert actor.device_id == "pda-7"

    with pytest.raises(AuthenticationError):
        mobile_actor(client.application, token, device="pda-stolen")


def test_mobile_route_answers_401_for_a_token_presented_by_another_device(client, make_user):
    """The same device check through a real /mobile/v1 route when one needing a token exists."""
    app = client.application
    protected = [
        rule
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/mobile/v1/")
        and "GET" in rule.methods
        and not rule.arguments
        and rule.endpoint != "mobile-auth.MobileToken"
    ]
    if not protected:
        pytest.skip("no argument-free GET route under /mobile/v1 yet")
    user = make_user("engineer")
    token = mobile_login(client, user.username, device_id="pda-7").get_json()["access_token"]
    path = protected[0].rule
    own = client.get(path, headers={**bearer(token), "X-Device-Id": "pda-7"})
    assert own.status_code not in (401, 403)
    other = client.get(path, headers={**bearer(token), "X-Device-Id": "pda-stolen"})
    assert other.status_code == 401


@pytest.mark.parametrize("role", ["admin", "dispatcher", "acceptance", "manager"])
def test_mobile_login_is_for_engineers_only(client, make_user, role):
    user = make_user(role)
    response = mobile_login(client, user.username)
    assert response.status_code == 403
    assert response.get_json()["code"] == 403
    assert "access_token" not in response.get_json()


def test_engineers_sign_in_on_the_pda_api_not_the_console_api(client, make_user):
    engineer = make_user("engineer")
    response = client.post(
        "/api/v1/auth/token", json={"username": engineer.username, "password": "password123"}
    )
    assert response.status_code == 403
    assert "access_token" not in response.get_json()
    assert mobile_login(client, engineer.username).status_code == 200


def test_mobile_login_with_a_bad_password_is_401_even_for_non_engineers(client, make_user):
    engineer = make_user("engineer")
    dispatcher = make_user("dispatcher")
    for username in (engineer.username, dispatcher.username, "nobody-by-this-name"):
        response = mobile_login(client, username, password="wrong-password")
        assert response.status_code == 401, username
        assert response.get_json()["message"] == BAD_CREDENTIALS


def test_mobile_login_requires_a_device_id(client, make_user):
    engineer = make_user("engineer")
    response = client.post(
        "/mobile/v1/auth/token", json={"username": engineer.username, "password": PASSWORD}
    )
    assert response.status_code == 422
    assert "device_id" in response.get_json()["errors"]


def test_mobile_token_expires_after_its_lifetime(app, client, clock, make_user):
    user = make_user("engineer")
    token = mobile_login(client, user.username).get_json()["access_token"]
    assert mobile_actor(app, token).engineer_id == user.engineer_id

    clock.advance(seconds=app.config["MOBILE_TOKEN_TTL_SECONDS"] + 1)
    with pytest.raises(AuthenticationError):
        mobile_actor(app, token)


# --- only hashes are stored ---------------------------------------------------------------------------


def _all_stored_text(tables: tuple[str, ...]) -> str:
    chunks = []
    for table in tables:
        for row in db.session.execute(sa.text(f"SELECT * FROM {table}")).all():  # noqa: S608 - fixed names
            chunks.extend(str(value) for value in row)
    return "\n".join(chunks)


def test_passwords_keys_and_tokens_are_stored_only_as_hashes(client, make_user, api_key):
    user = make_user("dispatcher")
    engineer = make_user("engineer")
    token = login(client, user.username).get_json()["access_token"]
    mobile_token = mobile_login(client, engineer.username).get_json()["access_token"]
    key = api_key("billing")
    secret = key.split("_", 2)[2]  # dk_<prefix>_<secret>; the secret itself may hold "_"

    stored = _all_stored_text(("users", "api_keys", "auth_tokens"))
    assert user.username in stored  # the query does see the rows
    for raw in (PASSWORD, token, token.removeprefix("dt_"), mobile_token, key, secret):
        assert raw not in stored

    from dispatch.models import ApiKey, User

    row = db.session.get(User, user.id)
    assert row.password_hash != PASSWORD and len(row.password_hash) > 40
    keys = db.session.scalars(sa.select(ApiKey)).all()
    assert keys and all(k.key_hash and k.salt for k in keys)


def test_two_users_with_the_same_password_get_different_hashes(app, make_user):
    from dispatch.models import User

    first, second = make_user("dispatcher"), make_user("dispatcher")
    hashes = {db.session.get(User, first.id).password_hash, db.session.get(User, second.id).password_hash}
    assert len(hashes) == 2  # salted


# --- login rate limits --------------------------------------------------------------------------------


@pytest.fixture
def limited_app(backend: str) -> Iterator[Flask]:
    """A second app on the same migrated database, with login rate limiting switched on."""
    from api.common.limits import limiter

    app = make_app(backend, RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="3 per minute")
    with app.app_context():
        limiter.reset()
    yield app
    with app.app_context():
        limiter.reset()
        db.engine.dispose()


def _failed_login(client: Any, username: str, ip: str, path: str = "/api/v1/auth/token") -> Any:
    body: dict[str, str] = {"username": username, "password": "wrong-password"}
    if path.startswith("/mobile/"):
        body["device_id"] = "pda-1"
    return client.post(path, json=body, environ_base={"REMOTE_ADDR": ip})


def _assert_rate_limited(response: Any) -> None:
    assert response.status_code == 429
    assert response.is_json
    body = response.get_json()
    assert body["code"] == 429
    assert isinstance(body["message"], str) and body["message"]
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None
    assert retry_after.isdigit() and 0 <= int(retry_after) <= 60


@pytest.mark.parametrize("path", ["/api/v1/auth/token", "/mobile/v1/auth/token"])
def test_fourth_failed_login_for_one_user_from_one_address_is_rate_limited(limited_app, path):
    client = limited_app.test_client()
    for _ in range(3):
        assert _failed_login(client, "victim-a", "10.0.0.1", path).status_code == 401
    _assert_rate_limited(_failed_login(client, "victim-a", "10.0.0.1", path))


def test_one_username_is_rate_limited_across_addresses(limited_app):
    client = limited_app.test_client()
    for n in range(3):
        assert _failed_login(client, "victim-b", f"10.0.1.{n}").status_code == 401
    _assert_rate_limited(_failed_login(client, "victim-b", "10.0.1.99"))
    # another user from a fresh address is not affected
    assert _failed_login(client, "someone-else-b", "10.0.1.100").status_code == 401


def test_one_address_is_rate_limited_across_usernames(limited_app):
    client = limited_app.test_client()
    for n in range(3):
        assert _failed_login(client, f"sprayed-{n}", "10.0.2.1").status_code == 401
    _assert_rate_limited(_failed_login(client, "sprayed-99", "10.0.2.1"))
    # another address with another username still gets an answer
    assert _failed_login(client, "sprayed-100", "10.0.2.2").status_code == 401


def test_rate_limit_window_passes(limited_app):
    client = limited_app.test_client()
    for _ in range(4):
        _failed_login(client, "victim-c", "10.0.3.1")
    _assert_rate_limited(_failed_login(client, "victim-c", "10.0.3.1"))
    with limited_app.app_context():
        from api.common.limits import limiter

        limiter.reset()
    assert _failed_login(client, "victim-c", "10.0.3.1").status_code == 401


def test_rate_limiting_one_app_does_not_limit_apps_configured_without_it(limited_app, client, make_user):
    """The limiter is a process-wide singleton: enabling it for one app must not switch it on for another."""
    limited = limited_app.test_client()
    for _ in range(4):
        _failed_login(limited, "victim-d", "127.0.0.1")
    _assert_rate_limited(_failed_login(limited, "victim-d", "127.0.0.1"))

    user = make_user("dispatcher")
    attempts = 2 * int(client.application.config["LOGIN_RATE_LIMIT"].split()[0])
    for _ in range(attempts):
        assert login(client, "victim-d", "wrong-password").status_code == 401
    assert login(client, user.username).status_code == 200
