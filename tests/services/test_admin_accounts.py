"""Admins' account services: users and keys listed, logins deactivated and reactivated, districts, teams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch.actors import Actor
from dispatch.errors import AuthenticationError, Conflict, NotFound, PermissionDenied, ValidationError
from dispatch.extensions import db
from dispatch.models import AuthToken, Engineer, User
from dispatch.services import auth, engineers
from tests.conftest import SYSTEM


def as_actor(user: User) -> Actor:
    return Actor(kind="user", id=user.id, name=user.username, role=user.role, engineer_id=user.engineer_id)


@pytest.fixture
def admin(make_user: Callable[..., Any]) -> Actor:
    return as_actor(make_user("admin"))


@pytest.mark.parametrize("role", ["dispatcher", "manager", "acceptance", "engineer"])
def test_only_admins_list_and_change_accounts(app, make_user, role):
    someone = as_actor(make_user(role))
    target = make_user("dispatcher")
    for call in (
        lambda: auth.list_users(actor=someone),
        lambda: auth.list_api_keys(actor=someone),
        lambda: auth.set_user_active(target.id, False, actor=someone),
    ):
        with pytest.raises(PermissionDenied):
            call()
    db.session.expire_all()
    assert db.session.get(User, target.id).active is True  # type: ignore[union-attr]


def test_users_are_listed_by_username_with_their_engineer(app, admin, make_user):
    make_user("dispatcher", username="zz-desk")
    pda = make_user("engineer", username="aa-pda")
    users = auth.list_users(actor=admin)
    names = [u.username for u in users]
    assert names == sorted(names) and {"zz-desk", "aa-pda"} <= set(names)
    listed = next(u for u in users if u.username == "aa-pda")
    assert listed.engineer is not None and listed.engineer.id == pda.engineer_id


def test_deactivating_revokes_the_tokens_so_reactivating_revives_none(app, admin, make_user):
    user = make_user("dispatcher")
    raw, _, _ = auth.login(user.username, "password123")
    assert auth.authenticate(raw, audience="api", source="api").id == user.id
    assert auth.set_user_active(user.id, False, actor=admin).active is False
    with pytest.raises(AuthenticationError):
        auth.authenticate(raw, audience="api", source="api")
    with pytest.raises(AuthenticationError):
        auth.login(user.username, "password123")
    assert auth.set_user_active(user.id, True, actor=admin).active is True
    with pytest.raises(AuthenticationError):
        auth.authenticate(raw, audience="api", source="api")  # the old token stays dead
    fresh, _, _ = auth.login(user.username, "password123")
    assert auth.authenticate(fresh, audience="api", source="api").id == user.id


def test_deactivating_twice_or_reactivating_an_active_user_changes_nothing_more(app, admin, make_user):
    user = make_user("manager")
    auth.set_user_active(user.id, False, actor=admin)
    revoked = db.session.scalars(sa.select(AuthToken.revoked_at).where(AuthToken.user_id == user.id)).all()
    assert auth.set_user_active(user.id, False, actor=admin).active is False
    again = db.session.scalars(sa.select(AuthToken.revoked_at).where(AuthToken.user_id == user.id)).all()
    assert again == revoked
    other = make_user("manager")
    assert auth.set_user_active(other.id, True, actor=admin).active is True


def test_an_admin_cannot_deactivate_their_own_login(app, admin):
    with pytest.raises(Conflict):
        auth.set_user_active(admin.id or 0, False, actor=admin)
    assert db.session.get(User, admin.id).active is True  # type: ignore[union-attr]


def test_the_last_active_admin_cannot_be_deactivated(app, make_user):
    for existing in db.session.scalars(sa.select(User).where(User.role == "admin")):
        existing.active = False
    only = make_user("admin")
    with pytest.raises(Conflict):
        auth.set_user_active(only.id, False, actor=SYSTEM)
    second = make_user("admin")
    auth.set_user_active(only.id, False, actor=as_actor(second))
    db.session.expire_all()
    assert db.session.get(User, only.id).active is False  # type: ignore[union-attr]


@pytest.mark.parametrize("user_id", [0, 999_999, 2**40])
def test_an_unknown_user_is_not_found(app, admin, user_id):
    with pytest.raises(NotFound):
        auth.set_user_active(user_id, False, actor=admin)


def test_api_keys_are_listed_newest_first_with_revoked_ones(app, admin, clock):
    _, old = auth.create_api_key("old", ["intake"], actor=admin)
    clock.advance(seconds=60)
    _, new = auth.create_api_key("new", ["billing"], actor=admin)
    auth.revoke_api_key(old.id, actor=admin)
    listed = [k for k in auth.list_api_keys(actor=admin) if k.id in (old.id, new.id)]
    assert [(k.name, k.revoked_at is not None) for k in listed] == [("new", False), ("old", True)]


@pytest.mark.parametrize("key_id", [0, 999_999, 2**40])
def test_revoking_an_unknown_key_is_not_found(app, admin, key_id):
    with pytest.raises(NotFound):
        auth.revoke_api_key(key_id, actor=admin)


def test_districts_and_teams_are_listed_by_name_for_those_who_read_engineers(app, make_user, make_engineer):
    make_engineer(team="名单二班")
    make_engineer(team="名单一班")
    dispatcher = as_actor(make_user("dispatcher"))
    districts = [d.name for d in engineers.list_districts(actor=dispatcher)]
    assert "五华区" in districts and districts == sorted(districts)
    teams = [t.name for t in engineers.list_teams(actor=dispatcher)]
    assert {"名单一班", "名单二班"} <= set(teams) and teams == sorted(teams)
    desk = as_actor(make_user("acceptance"))
    with pytest.raises(PermissionDenied):
        engineers.list_districts(actor=desk)
    with pytest.raises(PermissionDenied):
        engineers.list_teams(actor=desk)


def test_an_engineer_refused_for_an_unknown_district_leaves_nothing_behind(app, make_engineer):
    before = db.session.scalar(sa.select(sa.func.count()).select_from(Engineer))
    with pytest.raises(ValidationError):
        make_engineer(code="GHOST-1", districts=["火星区"])
    assert not db.session.new  # nothing pending that a later query would flush
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Engineer)) == before
    existing = make_engineer(districts=["五华区"])
    with pytest.raises(ValidationError):
        engineers.update_engineer(existing.id, {"name": "改名", "districts": ["火星区"]}, actor=SYSTEM)
    assert existing.name != "改名" and not db.session.dirty
