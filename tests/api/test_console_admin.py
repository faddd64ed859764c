"""The admins' console pages: engineers, SLA policies, SMS templates, users and API keys.

Signed in through the login form (CSRF token from the session), as the browser does. Each change is checked
in the database: what it should change, and that the rest stays as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import time
from typing import Any

import flask
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.sessions import NullSession
from flask.testing import FlaskClient

from dispatch.extensions import db
from dispatch.models import ApiKey, Engineer, SlaPolicy, SmsTemplate, User
from dispatch.services.engineers import create_engineer
from tests.conftest import SYSTEM, bearer, intake_payload

PAGES = {
    "engineers": "/console/admin/engineers",
    "sla": "/console/admin/sla",
    "templates": "/console/admin/templates",
    "users": "/console/admin/users",
}
KEY_PATTERN = re.compile(r"dk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")


class Console:
    """A test client signed in to the console, with the session's CSRF token."""

    def __init__(self, client: FlaskClient, user: Any) -> None:
        self.client = client
        self.user = user
        client.get("/console/login")
        response = client.post(
            "/console/login",
            data={"username": user.username, "password": "password123", "csrf_token": self._csrf()},
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        self.csrf = self._csrf()

    def _csrf(self) -> str:
        with self.client.session_transaction() as session:
            return str(session["csrf"])

    def get(self, url: str) -> Any:
        return self.client.get(url)

    def post(self, url: str, data: dict[str, Any] | None = None, *, csrf: bool = True) -> Any:
        body = dict(data or {})
        if csrf:
            body["csrf_token"] = self.csrf
        return self.client.post(url, data=body)

    def flashes(self) -> list[tuple[str, str]]:
        with self.client.session_transaction() as session:
            return list(session.get("_flashes", []))


@pytest.fixture
def sign_in(app: Flask, make_user: Callable[..., Any]) -> Callable[..., Console]:
    def factory(role: str = "admin", **kwargs: Any) -> Console:
        return Console(app.test_client(), make_user(role, **kwargs))

    return factory


@pytest.fixture
def admin(sign_in: Callable[..., Console]) -> Console:
    return sign_in("admin")


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def engineer_form(**overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "code": "KM-T-901",
        "name": "赵六",
        "phone": "139 1234 5678",
        "team": "测试一班",
        "skills": ["broadband_install", "repair"],
        "districts": ["五华区", "盘龙区"],
        "daily_capacity": "7",
        "active": "on",
        "home_lat": "25.04",
        "home_lng": "102.70",
        "shift_1_on": "on",
        "shift_1_start": "08:30",
        "shift_1_end": "17:30",
        "shift_2_on": "on",
        "shift_2_start": "08:30",
        "shift_2_end": "17:30",
        "shift_6_on": "on",
        "shift_6_start": "09:00",
        "shift_6_end": "12:00",
    }
    for day in range(1, 8):
        form.setdefault(f"shift_{day}_start", "08:00")
        form.setdefault(f"shift_{day}_end", "20:00")
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def engineer_by_code(code: str) -> Engineer | None:
    db.session.expire_all()
    return db.session.scalar(sa.select(Engineer).where(Engineer.code == code))


def count(model: Any) -> int:
    return int(db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


def policies() -> dict[tuple[str, str], tuple[int, int]]:
    db.session.expire_all()
    return {
        (p.order_type, p.clock): (p.target_seconds, p.warn_percent)
        for p in db.session.scalars(sa.select(SlaPolicy))
    }


# --- access ----------------------------------------------------------------------------------------------


def test_an_admin_sees_every_admin_page_and_its_navigation(admin):
    for name, url in PAGES.items():
        response = admin.get(url)
        assert response.status_code == 200, (name, text(response))
        for link in PAGES.values():
            assert f'href="{link}"' in text(response)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("dispatcher", {"engineers", "sla", "templates"}),
        ("manager", {"engineers", "sla"}),
        ("acceptance", set()),
    ],
)
def test_other_roles_read_what_the_services_let_them_read_and_nothing_more(sign_in, role, allowed):
    console = sign_in(role)
    for name, url in PAGES.items():
        response = console.get(url)
        assert response.status_code == (200 if name in allowed else 403), (role, name)
        assert f'href="{PAGES["users"]}"' not in text(response)  # admin pages are not in their navigation
        if name in allowed:  # read-only: no forms to change anything
            assert 'name="target_value"' not in text(response)
            assert "<textarea" not in text(response)
            assert "新增装维人员" not in text(response)


def test_the_console_cookie_is_neither_read_nor_written_on_bearer_paths(app, admin):
    """The signed session belongs to the console: an API or mobile request gets the null session, so the
    console's cookie authenticates nothing there and no cookie is ever set in answer."""
    for path in ("/api/v1/orders", "/mobile/v1/orders"):
        response = admin.get(path)
        assert response.status_code == 401, path
        assert "Set-Cookie" not in response.headers, path
        with app.test_request_context(path):
            assert isinstance(app.session_interface.open_session(app, flask.request), NullSession)
    with app.test_request_context("/console/login"):
        assert not isinstance(app.session_interface.open_session(app, flask.request), NullSession)
    assert admin.get("/console/admin/users").status_code == 200  # the console itself is still signed in


def test_a_visitor_who_is_not_signed_in_is_sent_to_the_login(client):
    for url in PAGES.values():
        response = client.get(url)
        assert response.status_code == 302
        assert "/console/login" in response.headers["Location"]


@pytest.mark.parametrize(
    "url",
    [
        "/console/admin/engineers/new",
        "/console/admin/sla/repair/contact",
        "/console/admin/templates/dispatch_engineer",
        "/console/admin/users/new",
        "/console/admin/api-keys",
    ],
)
def test_a_post_without_the_csrf_token_is_400_and_changes_nothing(admin, url):
    before = (count(Engineer), policies(), count(SmsTemplate), count(User), count(ApiKey))
    form = {
        **engineer_form(),
        "target_value": "1",
        "target_unit": "h",
        "warn_percent": "50",
        "body": "【派单】{external_id}",
        "username": "sneaky",
        "role": "admin",
        "password": "password123",
        "name": "sneaky-key",
        "scopes": "billing",
    }
    response = admin.post(url, form, csrf=False)
    assert response.status_code == 400
    assert (count(Engineer), policies(), count(SmsTemplate), count(User), count(ApiKey)) == before


# --- engineers -------------------------------------------------------------------------------------------


def test_an_admin_creates_an_engineer_with_skills_districts_shifts_and_home(admin):
    response = admin.post("/console/admin/engineers/new", engineer_form())
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/console/admin/engineers")
    assert admin.flashes() == [("ok", "已创建装维人员 KM-T-901 赵六")]
    engineer = engineer_by_code("KM-T-901")
    assert engineer is not None
    assert (engineer.name, engineer.phone, engineer.team and engineer.team.name) == (
        "赵六",
        "+8613912345678",
        "测试一班",
    )
    assert engineer.skills == ["broadband_install", "repair"]
    assert [d.name for d in engineer.districts] == sorted(["五华区", "盘龙区"])
    assert (engineer.daily_capacity, engineer.active, engineer.home_lat, engineer.home_lng) == (
        7,
        True,
        25.04,
        102.70,
    )
    assert [(s.weekday, s.start_time, s.end_time) for s in engineer.shifts] == [
        (1, time(8, 30), time(17, 30)),
        (2, time(8, 30), time(17, 30)),
        (6, time(9, 0), time(12, 0)),
    ]
    listed = text(admin.get("/console/admin/engineers"))
    assert 'data-code="KM-T-901"' in listed
    assert "周一、周二 08:30–17:30；周六 09:00–12:00" in listed


def test_the_new_engineer_form_offers_the_order_types_and_districts_with_default_shifts(admin):
    page = text(admin.get("/console/admin/engineers/new"))
    for value in ("broadband_install", "iptv_install", "opportunity", "repair", "move", "五华区", "盘龙区"):
        assert f'value="{value}"' in page
    assert page.count('type="time"') == 14
    assert 'name="shift_7_on" aria-label="周日上班" checked' in page


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"phone": "12345"}, "电话"),
        ({"shift_2_end": "07:00"}, "班次 周二 结束：下班须晚于上班"),
        ({"daily_capacity": "很多"}, "每日容量：须为整数"),
        ({"code": "带 空格"}, "工号"),
        ({"name": ""}, "名称：长度须为 1–64 个字符"),
        ({"home_lng": ""}, "常驻位置 经度"),
        ({"home_lat": "95"}, "常驻位置 纬度"),
        ({"skills": ["teleport"]}, "技能"),
    ],
)
def test_a_refused_engineer_form_is_shown_again_with_a_message_and_nothing_is_created(
    admin, overrides, message
):
    before = count(Engineer)
    response = admin.post("/console/admin/engineers/new", engineer_form(**overrides))
    assert response.status_code == 422
    page = text(response)
    assert "输入有误" in page and message in page
    assert 'name="team" value="测试一班"' in page  # what was typed is kept
    assert count(Engineer) == before


def test_an_unknown_district_or_a_taken_code_is_refused_by_the_service(admin, make_engineer):
    taken = make_engineer()
    before = count(Engineer)
    unknown = admin.post("/console/admin/engineers/new", engineer_form(districts=["火星区"]))
    assert unknown.status_code == 422 and "火星区" in text(unknown)
    duplicate = admin.post("/console/admin/engineers/new", engineer_form(code=taken.code))
    assert duplicate.status_code == 409 and "already exists" in text(duplicate)
    assert count(Engineer) == before


def test_an_admin_edits_an_engineer_and_only_what_changed_changes(admin, make_engineer):
    engineer = make_engineer(
        districts=["五华区", "官渡区"], shifts=[{"weekday": 1, "start": time(8), "end": time(12)}]
    )
    form_page = text(admin.get(f"/console/admin/engineers/{engineer.id}"))
    assert (
        f'value="{engineer.code}"' in form_page
        and 'name="shift_1_start" aria-label="周一开始" value="08:00"' in form_page
    )
    form = engineer_form(
        code=engineer.code,
        name="新名字",
        phone=engineer.phone,
        team="五华装维一班",
        skills=["repair"],
        districts=["五华区", "官渡区"],
        daily_capacity="3",
        active=None,  # unchecked: off dispatch
        home_lat="25.04",
        home_lng="102.7",
        shift_1_on="on",
        shift_1_start="08:00",
        shift_1_end="12:00",
        shift_2_on=None,
        shift_6_on=None,
    )
    response = admin.post(f"/console/admin/engineers/{engineer.id}", form)
    assert response.status_code == 302, text(response)
    changed = engineer_by_code(engineer.code)
    assert changed is not None
    assert (changed.name, changed.skills, changed.daily_capacity, changed.active) == (
        "新名字",
        ["repair"],
        3,
        False,
    )
    assert [d.name for d in changed.districts] == sorted(["五华区", "官渡区"])
    assert [(s.weekday, s.start_time, s.end_time) for s in changed.shifts] == [(1, time(8), time(12))]
    assert changed.team is not None and changed.team.name == "五华装维一班"


def test_saving_an_engineer_without_touching_the_shifts_keeps_two_shifts_on_a_day(admin):
    engineer = create_engineer(
        {
            "code": "SPLIT-1",
            "name": "两班",
            "phone": "+8613900000001",
            "skills": ["repair"],
            "districts": ["五华区"],
            "shifts": [
                {"weekday": 1, "start": time(8), "end": time(12)},
                {"weekday": 1, "start": time(14), "end": time(18)},
            ],
        },
        actor=SYSTEM,
    )
    page = text(admin.get(f"/console/admin/engineers/{engineer.id}"))
    assert "多个班次" in page
    form = engineer_form(
        code="SPLIT-1",
        name="两班改",
        phone="+8613900000001",
        team="",
        skills=["repair"],
        districts=["五华区"],
        home_lat="",
        home_lng="",
        shift_1_start="08:00",
        shift_1_end="12:00",
        shift_2_on=None,
        shift_6_on=None,
    )
    assert admin.post(f"/console/admin/engineers/{engineer.id}", form).status_code == 302
    saved = engineer_by_code("SPLIT-1")
    assert saved is not None and saved.name == "两班改" and saved.team is None and saved.home_lat is None
    assert [(s.start_time, s.end_time) for s in saved.shifts] == [(time(8), time(12)), (time(14), time(18))]


def test_dispatchers_read_engineers_but_cannot_create_or_edit_them(sign_in, make_engineer):
    engineer = make_engineer()
    dispatcher = sign_in("dispatcher")
    page = text(dispatcher.get(f"/console/admin/engineers/{engineer.id}"))
    assert "只读" in page and "<fieldset disabled" in page
    before = count(Engineer)
    assert dispatcher.post("/console/admin/engineers/new", engineer_form()).status_code == 403
    edited = dispatcher.post(f"/console/admin/engineers/{engineer.id}", engineer_form(code=engineer.code))
    assert edited.status_code == 403
    assert count(Engineer) == before
    assert engineer_by_code(engineer.code).name == engineer.name  # type: ignore[union-attr]


def test_an_unknown_engineer_is_404(admin):
    assert admin.get("/console/admin/engineers/999999").status_code == 404
    assert admin.get(f"/console/admin/engineers/{2**40}").status_code == 404


def test_the_engineer_list_filters_by_team_and_status(admin, make_engineer):
    make_engineer(code="FLT-A", team="过滤一班")
    make_engineer(code="FLT-B", team="过滤二班", active=False)
    first = text(admin.get("/console/admin/engineers?team=过滤一班"))
    assert 'data-code="FLT-A"' in first and 'data-code="FLT-B"' not in first
    inactive = text(admin.get("/console/admin/engineers?active=0"))
    assert 'data-code="FLT-B"' in inactive and 'data-code="FLT-A"' not in inactive


# --- SLA policies ----------------------------------------------------------------------------------------


def test_the_sla_page_lists_every_policy(admin):
    page = text(admin.get(PAGES["sla"]))
    assert page.count('<tr id="sla-') == len(policies()) == 25
    assert 'id="sla-repair-contact"' in page and "1小时" in page


def test_an_admin_changes_one_policy_and_no_other(admin):
    before = policies()
    response = admin.post(
        "/console/admin/sla/repair/contact", {"target_value": "2", "target_unit": "h", "warn_percent": "80"}
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/console/admin/sla#sla-repair-contact")
    assert admin.flashes()[0][0] == "ok"
    after = policies()
    assert after[("repair", "contact")] == (7200, 80)
    assert {k: v for k, v in after.items() if k != ("repair", "contact")} == {
        k: v for k, v in before.items() if k != ("repair", "contact")
    }
    page = text(admin.get(PAGES["sla"]))
    row = page.split('id="sla-repair-contact"')[1].split("</tr>")[0]
    assert "2小时" in row and "80%" in row


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"target_value": "abc", "target_unit": "min", "warn_percent": "75"}, "目标时长：须为整数"),
        ({"target_value": "1.5", "target_unit": "h", "warn_percent": "75"}, "目标时长：须为整数"),
        ({"target_value": "60", "target_unit": "min", "warn_percent": "0"}, "预警比例"),
        ({"target_value": "60", "target_unit": "min", "warn_percent": "101"}, "预警比例"),
        ({"target_value": "99999", "target_unit": "h", "warn_percent": "75"}, "目标时长"),
        ({"target_value": "-1", "target_unit": "s", "warn_percent": "75"}, "目标时长"),
        ({"target_value": "60", "target_unit": "weeks", "warn_percent": "75"}, "单位无效"),
        ({"target_unit": "min", "warn_percent": "75"}, "目标时长"),
    ],
)
def test_a_bad_policy_change_is_shown_again_with_a_message_and_changes_nothing(admin, form, message):
    before = policies()
    response = admin.post("/console/admin/sla/repair/contact", form)
    assert response.status_code == 422
    assert "输入有误" in text(response) and message in text(response)
    assert policies() == before


def test_an_unknown_policy_or_a_dispatcher_changes_nothing(admin, sign_in):
    before = policies()
    unknown = admin.post(
        "/console/admin/sla/teleport/contact", {"target_value": "1", "target_unit": "h", "warn_percent": "75"}
    )
    assert unknown.status_code == 302 and admin.flashes()[0][0] == "error"
    dispatcher = sign_in("dispatcher")
    refused = dispatcher.post(
        "/console/admin/sla/repair/contact", {"target_value": "1", "target_unit": "h", "warn_percent": "75"}
    )
    assert refused.status_code == 302
    assert dispatcher.flashes() == [("error", "dispatcher may not change SLA policies")]
    assert policies() == before


# --- SMS templates ---------------------------------------------------------------------------------------


def stored_templates() -> dict[str, str]:
    db.session.expire_all()
    return {t.key: t.body for t in db.session.scalars(sa.select(SmsTemplate))}


def test_the_templates_page_shows_text_default_sample_and_parts(admin):
    page = text(admin.get(PAGES["templates"]))
    assert 'id="tpl-dispatch_engineer"' in page and "派单通知（工程师）" in page
    assert "UCS-2" in page and "1 条" in page
    assert "10000-20261125-000123" in page  # the sample rendering
    assert "{external_id}" in page  # the fields admins may use


def test_an_admin_changes_a_template_and_resets_it(admin):
    response = admin.post(
        "/console/admin/templates/dispatch_engineer", {"body": "【派单】工单{external_id}请接单\r\n谢谢"}
    )
    assert response.status_code == 302 and admin.flashes()[0][0] == "ok"
    assert stored_templates() == {"dispatch_engineer": "【派单】工单{external_id}请接单\n谢谢"}
    section = (
        text(admin.get(PAGES["templates"])).split('id="tpl-dispatch_engineer"')[1].split("</section>")[0]
    )
    assert "已修改" in section and "默认内容" in section and "恢复默认" in section
    assert admin.post("/console/admin/templates/dispatch_engineer/reset").status_code == 302
    assert stored_templates() == {}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ("", 422, "短信内容：长度须为 1–1000 个字符"),
        ("{nope}", 302, "Unknown field"),
        ("长" * 200, 302, "SMS parts"),
        ("{external_id", 302, "Validation failed"),
    ],
)
def test_a_bad_template_changes_nothing(admin, body, status, message):
    response = admin.post("/console/admin/templates/dispatch_engineer", {"body": body})
    assert response.status_code == status
    shown = text(response) if status == 422 else " ".join(m for _, m in admin.flashes())
    assert message in shown
    assert stored_templates() == {}


def test_dispatchers_read_templates_but_cannot_change_them(sign_in):
    dispatcher = sign_in("dispatcher")
    assert "当前内容" in text(dispatcher.get(PAGES["templates"]))
    dispatcher.post("/console/admin/templates/dispatch_engineer", {"body": "改了"})
    assert dispatcher.flashes()[0][0] == "error"
    assert stored_templates() == {}


# --- users -----------------------------------------------------------------------------------------------


def user(username: str) -> User | None:
    db.session.expire_all()
    return db.session.scalar(sa.select(User).where(User.username == username))


def test_the_users_page_lists_users_with_role_engineer_and_status(admin, make_user):
    engineer_login = make_user("engineer")
    page = text(admin.get(PAGES["users"]))
    row = page.split(f'data-username="{engineer_login.username}"')[1].split("</tr>")[0]
    assert engineer_login.engineer.code in row and "启用" in row
    own = page.split(f'data-username="{admin.user.username}"')[1].split("</tr>")[0]
    assert "当前登录" in own and "停用" not in own  # no button to lock yourself out


def test_an_admin_creates_a_user_who_can_sign_in(admin, app):
    response = admin.post(
        "/console/admin/users/new", {"username": "desk2", "role": "acceptance", "password": "s3cret-pass"}
    )
    assert response.status_code == 302 and admin.flashes() == [("ok", "已创建用户 desk2")]
    created = user("desk2")
    assert created is not None and created.role == "acceptance" and created.active
    assert (
        app.test_client()
        .post("/api/v1/auth/token", json={"username": "desk2", "password": "s3cret-pass"})
        .status_code
        == 200
    )


def test_an_engineer_login_is_linked_to_its_engineer(admin, make_engineer):
    engineer = make_engineer()
    admin.post(
        "/console/admin/users/new",
        {"username": "pda9", "role": "engineer", "password": "password123", "engineer_code": engineer.code},
    )
    created = user("pda9")
    assert created is not None and created.engineer_id == engineer.id


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"username": "x1", "role": "engineer", "password": "password123"}, "engineer_code"),
        ({"username": "x2", "role": "engineer", "password": "password123", "engineer_code": "NOPE"}, "NOPE"),
        ({"username": "x3", "role": "dispatcher", "password": "short"}, "password"),
        ({"username": "x4", "role": "superuser", "password": "password123"}, "role"),
        ({"username": "", "role": "dispatcher", "password": "password123"}, "username"),
    ],
)
def test_a_bad_user_is_refused_with_a_message_and_not_created(admin, form, field):
    before = count(User)
    response = admin.post("/console/admin/users/new", form)
    assert response.status_code == 302
    [(category, message)] = admin.flashes()
    assert category == "error" and field in message
    assert count(User) == before


def test_a_taken_username_is_refused(admin, make_user):
    taken = make_user("dispatcher")
    before = count(User)
    admin.post(
        "/console/admin/users/new", {"username": taken.username, "role": "manager", "password": "password123"}
    )
    assert admin.flashes()[0] == ("error", f"User {taken.username} already exists")
    assert count(User) == before and user(taken.username).role == "dispatcher"  # type: ignore[union-attr]


def test_deactivating_a_user_ends_their_session_and_reactivating_lets_them_sign_in_again(admin, sign_in):
    other = sign_in("dispatcher")
    assert other.get(PAGES["sla"]).status_code == 200
    response = admin.post(f"/console/admin/users/{other.user.id}/active", {"active": "0"})
    assert response.status_code == 302 and admin.flashes()[0][0] == "ok"
    assert user(other.user.username).active is False  # type: ignore[union-attr]
    assert user(admin.user.username).active is True  # type: ignore[union-attr]
    assert other.get(PAGES["sla"]).status_code == 302  # signed out: sent to the login page
    admin.post(f"/console/admin/users/{other.user.id}/active", {"active": "1"})
    assert user(other.user.username).active is True  # type: ignore[union-attr]
    assert other.get(PAGES["sla"]).status_code == 302  # the old session does not come back
    assert Console(other.client, other.user).get(PAGES["sla"]).status_code == 200


def test_an_admin_cannot_deactivate_themselves(admin):
    admin.post(f"/console/admin/users/{admin.user.id}/active", {"active": "0"})
    assert admin.flashes()[0][0] == "error"
    assert user(admin.user.username).active is True  # type: ignore[union-attr]


def test_dispatchers_cannot_create_or_deactivate_users(sign_in, make_user):
    victim = make_user("manager")
    dispatcher = sign_in("dispatcher")
    before = count(User)
    dispatcher.post(
        "/console/admin/users/new", {"username": "mine", "role": "admin", "password": "password123"}
    )
    dispatcher.post(f"/console/admin/users/{victim.id}/active", {"active": "0"})
    assert [category for category, _ in dispatcher.flashes()] == ["error", "error"]
    assert count(User) == before and user(victim.username).active is True  # type: ignore[union-attr]


# --- API keys --------------------------------------------------------------------------------------------


def test_a_new_api_key_is_shown_once_and_works_against_the_api(admin, app):
    response = admin.post("/console/admin/api-keys", {"name": "hotline-2", "scopes": ["intake"]})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    [raw] = set(KEY_PATTERN.findall(text(response)))
    api = app.test_client()
    me = api.get("/api/v1/auth/me", headers=bearer(raw))
    assert me.status_code == 200
    assert me.get_json() | {"id": None} == {
        "kind": "api_key",
        "id": None,
        "name": "hotline-2",
        "role": None,
        "scopes": ["intake"],
        "engineer_id": None,
    }
    assert api.post("/api/v1/intake/orders", json=intake_payload(), headers=bearer(raw)).status_code == 201
    listing = text(admin.get(PAGES["users"]))
    secret = raw.split("_", 2)[2]
    assert 'data-key-name="hotline-2"' in listing and f"dk_{raw.split('_')[1]}_" in listing
    assert secret not in listing and raw not in listing
    db.session.expire_all()
    stored = db.session.scalar(sa.select(ApiKey).where(ApiKey.name == "hotline-2"))
    assert stored is not None and secret not in (stored.key_hash, stored.salt, stored.prefix)


@pytest.mark.parametrize(
    "form",
    [{"name": "no-scope"}, {"name": "bad-scope", "scopes": ["root"]}, {"name": "", "scopes": ["billing"]}],
)
def test_a_bad_api_key_request_is_refused_and_creates_nothing(admin, form):
    before = count(ApiKey)
    response = admin.post("/console/admin/api-keys", form)
    assert response.status_code == 302 and response.headers["Location"].endswith(PAGES["users"])
    assert admin.flashes()[0][0] == "error"
    assert count(ApiKey) == before


def test_a_revoked_api_key_is_refused_by_the_api(admin, app, api_key):
    raw = api_key("billing")
    api = app.test_client()
    assert api.get("/api/v1/auth/me", headers=bearer(raw)).status_code == 200
    db.session.expire_all()
    key = db.session.scalar(sa.select(ApiKey).where(ApiKey.prefix == raw.split("_")[1]))
    assert key is not None
    assert admin.post(f"/console/admin/api-keys/{key.id}/revoke").status_code == 302
    assert admin.flashes()[0][0] == "ok"
    assert api.get("/api/v1/auth/me", headers=bearer(raw)).status_code == 401
    row = text(admin.get(PAGES["users"])).split(f'data-prefix="{key.prefix}"')[1].split("</tr>")[0]
    assert "吊销</button>" not in row  # no button on a revoked key


def test_dispatchers_cannot_create_or_revoke_api_keys(sign_in, app, api_key):
    raw = api_key("intake")
    dispatcher = sign_in("dispatcher")
    before = count(ApiKey)
    created = dispatcher.post("/console/admin/api-keys", {"name": "mine", "scopes": ["billing"]})
    assert created.status_code == 302 and not KEY_PATTERN.search(text(created))
    db.session.expire_all()
    key = db.session.scalar(sa.select(ApiKey).where(ApiKey.prefix == raw.split("_")[1]))
    dispatcher.post(f"/console/admin/api-keys/{key.id}/revoke")  # type: ignore[union-attr]
    assert [category for category, _ in dispatcher.flashes()] == ["error", "error"]
    assert count(ApiKey) == before
    assert app.test_client().get("/api/v1/auth/me", headers=bearer(raw)).status_code == 200
