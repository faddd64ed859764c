"""The dispatchers' console pages through the test client: board, order detail and its actions,
alerts, complaints and photos. Each POST is a form with the session's CSRF token, answered by a redirect
and a flash."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from dispatch.actors import Actor
from dispatch.extensions import db
from dispatch.models import Alert, Complaint, Order, OrderEvent
from dispatch.services import attachments
from dispatch.sla.tick import tick

Factory = Callable[..., Any]
JPEG = b"\xff\xd8\xff\xe0console-photo\xff\xd9"
ID_PHOTO = b"\xff\xd8\xff\xe0console-id-card\xff\xd9"


# --- helpers ------------------------------------------------------------------------------------------


def sign_in(client: FlaskClient, user: Any) -> str:
    """Sign in through the login form; returns the session's CSRF token for later forms."""
    client.get("/console/login")
    with client.session_transaction() as session:
        token = session["csrf"]
    response = client.post(
        "/console/login", data={"csrf_token": token, "username": user.username, "password": "password123"}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    with client.session_transaction() as session:
        return str(session["csrf"])


@pytest.fixture
def console(client: FlaskClient, make_user: Factory) -> Callable[[str], str]:
    """``console("dispatcher")`` signs the test client in as a fresh user of that role → CSRF token."""

    def factory(role: str) -> str:
        return sign_in(client, make_user(role))

    return factory


def flashes(client: FlaskClient) -> list[tuple[str, str]]:
    with client.session_transaction() as session:
        return list(session.get("_flashes", []))


def status_of(order_id: int) -> str:
    db.session.expire_all()
    order = db.session.get(Order, order_id)
    assert order is not None
    return order.status


def event_count(order_id: int) -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(OrderEvent).where(OrderEvent.order_id == order_id)
    )


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-order-id="(\d+)"', html)]


# --- the board ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["dispatcher", "admin", "manager", "acceptance"])
def test_board_lists_open_orders_with_their_running_clocks_for_order_readers(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, role: str
) -> None:
    order = make_order(customer={"name": "王丽萍", "phone": "13987100001"})
    console(role)
    response = client.get("/console/board")
    assert response.status_code == 200
    html = text(response)
    assert "<h1>工单看板</h1>" in html
    assert order.external_id in html and "王丽萍" in html and "待派单" in html
    assert f'href="/console/orders/{order.id}"' in html
    assert re.search(r'class="countdown" data-clock="completion" data-due="2026-11-27T09:00:00\+08:00"', html)
    assert 'data-refresh="/console/board/rows"' in html and 'data-every="10"' in html


def test_board_sends_a_visitor_who_is_not_signed_in_to_the_login(client: FlaskClient) -> None:
    response = client.get("/console/board?status=new")
    assert response.status_code == 302
    assert "/console/login?next=" in response.headers["Location"]


def test_board_filters_by_status_type_district_engineer_and_external_id(
    client: FlaskClient,
    console: Callable[[str], str],
    make_order: Factory,
    make_engineer: Factory,
    make_user: Factory,
) -> None:
    engineer = make_engineer()
    waiting = make_order()
    repair = make_order(order_type="repair")
    elsewhere = make_order(
        address={"text": "昆明市官渡区春城路1号", "district": "官渡区", "lat": 25.02, "lng": 102.74}
    )
    assigned = make_order()
    from dispatch.services.dispatching import assign_order

    desk = make_user("dispatcher")
    assign_order(assigned.id, engineer.id, actor=Actor(kind="user", id=desk.id, name="d", role="dispatcher"))
    cancelled = make_order()
    from dispatch.services.orders import cancel_order

    cancel_order(
        cancelled.id, reason="重复", actor=Actor(kind="user", id=desk.id, name="d", role="dispatcher")
    )
    console("dispatcher")

    def rows(query: str) -> list[int]:
        response = client.get(f"/console/board?{query}")
        assert response.status_code == 200, text(response)
        return row_ids(text(response))

    assert set(rows("")) == {waiting.id, repair.id, elsewhere.id, assigned.id}  # open orders only
    assert rows("") == sorted(rows(""), reverse=True)  # newest first
    assert cancelled.id in rows("status=all")
    assert set(rows("status=new")) == {waiting.id, repair.id, elsewhere.id}
    assert rows("status=dispatched") == [assigned.id]
    assert rows("order_type=repair") == [repair.id]
    assert rows("district=官渡区") == [elsewhere.id]
    assert rows(f"engineer={engineer.code}") == [assigned.id]
    assert rows(f"q={waiting.external_id}") == [waiting.id]
    assert rows("q=NO-SUCH-ORDER") == []
    assert "没有符合条件的工单" in text(client.get("/console/board?q=NO-SUCH-ORDER"))


def test_board_sla_filters_show_orders_at_risk_and_breached(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, clock: Any
) -> None:
    repair = make_order(order_type="repair")  # completion 24 h, warning at 18 h
    calm = make_order(order_type="opportunity")  # 72 h
    clock.advance(hours=19)
    console("dispatcher")
    assert row_ids(text(client.get("/console/board?sla=at_risk"))) == [repair.id]
    assert row_ids(text(client.get("/console/board?sla=breached"))) == []
    clock.advance(hours=6)
    assert row_ids(text(client.get("/console/board?sla=breached"))) == [repair.id]
    assert calm.id in row_ids(text(client.get("/console/board")))


def test_board_rows_partial_renders_the_same_rows_without_the_page(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory
) -> None:
    first, second = make_order(), make_order(order_type="repair")
    console("dispatcher")
    response = client.get("/console/board/rows?order_type=repair")
    assert response.status_code == 200
    html = text(response)
    assert "<html" not in html and "<tr" in html
    assert row_ids(html) == [second.id]
    board = text(client.get("/console/board?order_type=repair"))
    assert 'data-refresh="/console/board/rows?order_type=repair"' in board
    assert first.id not in row_ids(html)


def test_board_pages_through_orders(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory
) -> None:
    made = [make_order().id for _ in range(25)]
    console("dispatcher")
    first = text(client.get("/console/board?page_size=20"))
    second = text(client.get("/console/board?page_size=20&page=2"))
    assert "共 25 张工单" in first and "第 1/2 页" in first and "下一页" in first
    assert set(row_ids(first)) | set(row_ids(second)) == set(made)
    assert len(row_ids(first)) == 20 and len(row_ids(second)) == 5


@pytest.mark.parametrize(
    "query",
    ["status=bogus", "order_type=bogus", "sla=late", "page=0", "page=²", "page=" + "9" * 5000, "page_size=7"]
    + ["q=" + "x" * 65, "q=a%00b"],
)
def test_board_refuses_a_bad_filter_with_a_message(
    client: FlaskClient, console: Callable[[str], str], query: str
) -> None:
    console("dispatcher")
    response = client.get(f"/console/board?{query}")
    assert response.status_code == 422
    assert "输入有误" in text(response)


# --- order detail ---------------------------------------------------------------------------------------


def test_order_detail_shows_the_order_clocks_timeline_and_ranked_candidates(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, make_engineer: Factory
) -> None:
    near = make_engineer(name="近处工程师", home={"lat": 25.0423, "lng": 102.7065})
    outside = make_engineer(name="外区工程师", districts=["呈贡区"])
    order = make_order(customer={"name": "赵建国", "phone": "13987100002"})
    console("dispatcher")
    response = client.get(f"/console/orders/{order.id}")
    assert response.status_code == 200
    html = text(response)
    assert "赵建国" in html and "昆明市五华区人民中路1号" in html and "broadband_300m" in html
    assert "末梢资源" in html and "光猫 SN" in html
    assert 'id="order-status">待派单<' in html
    assert 'data-clock="completion"' in html and "计时中" in html  # the clocks table
    assert 'data-action="intake"' in html and "受理建单" in html  # the timeline
    assert f'data-engineer-id="{near.id}"' in html and "近处工程师" in html
    assert "自动指派" in html and "距离" in html and "当日负荷" in html
    assert "外区工程师" in html and "工程师不负责该区县" in html  # ruled out, offered for a forced choice
    assert "挂起" in html and "撤单" in html and "解挂" not in html
    assert outside.id != near.id


def test_order_detail_for_a_manager_reads_without_actions(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, make_engineer: Factory
) -> None:
    make_engineer()
    order = make_order()
    console("manager")
    html = text(client.get(f"/console/orders/{order.id}"))
    assert order.external_id in html
    assert "自动指派" not in html and 'action="/console/orders/' not in html


def test_order_detail_of_an_unknown_order_is_404(client: FlaskClient, console: Callable[[str], str]) -> None:
    console("dispatcher")
    assert client.get("/console/orders/999999").status_code == 404
    assert client.get(f"/console/orders/{2**40}").status_code == 404


def test_assigning_from_the_candidates_dispatches_the_order_with_a_flash(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, make_engineer: Factory
) -> None:
    engineer = make_engineer(name="李志刚")
    order = make_order()
    csrf = console("dispatcher")
    response = client.post(
        f"/console/orders/{order.id}/assign", data={"csrf_token": csrf, "engineer_id": engineer.id}
    )
    assert response.status_code == 302 and response.headers["Location"] == f"/console/orders/{order.id}"
    assert status_of(order.id) == "dispatched"
    messages = [m for _, m in flashes(client)]
    assert "派单成功" in messages and f"已派给 李志刚（{engineer.code}）" in messages
    html = text(client.get(f"/console/orders/{order.id}"))
    assert 'id="order-status">已派单<' in html and "改派" in html and "派单成功" in html


def test_a_manual_choice_that_breaks_rules_is_honoured_and_the_warnings_flashed(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, make_engineer: Factory
) -> None:
    outside = make_engineer(districts=["呈贡区"])
    order = make_order()
    csrf = console("dispatcher")
    client.post(f"/console/orders/{order.id}/assign", data={"csrf_token": csrf, "engineer_id": outside.id})
    assert status_of(order.id) == "dispatched"
    assert ("warn", "派单提醒：工程师不负责该区县") in flashes(client)


def test_auto_assignment_takes_the_best_qualified_engineer(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, make_engineer: Factory
) -> None:
    best = make_engineer(home={"lat": 25.0423, "lng": 102.7065})
    make_engineer(home={"lat": 25.2, "lng": 102.9})
    order = make_order()
    csrf = console("dispatcher")
    client.post(f"/console/orders/{order.id}/assign", data={"csrf_token": csrf, "auto": "1"})
    db.session.expire_all()
    assert db.session.get(Order, order.id).engineer_id == best.id  # type: ignore[union-attr]


def test_auto_assignment_with_nobody_qualified_flashes_the_conflict(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory
) -> None:
    order = make_order()
    csrf = console("dispatcher")
    client.post(f"/console/orders/{order.id}/assign", data={"csrf_token": csrf, "auto": "1"})
    assert status_of(order.id) == "new"
    assert [c for c, _ in flashes(client)] == ["error"]


def test_reassigning_moves_the_order_to_another_engineer(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, make_engineer: Factory
) -> None:
    first, second = make_engineer(), make_engineer()
    order = make_order()
    csrf = console("dispatcher")
    client.post(f"/console/orders/{order.id}/assign", data={"csrf_token": csrf, "engineer_id": first.id})
    client.post(f"/console/orders/{order.id}/assign", data={"csrf_token": csrf, "engineer_id": second.id})
    db.session.expire_all()
    assert db.session.get(Order, order.id).engineer_id == second.id  # type: ignore[union-attr]
    assert [
        e.action for e in db.session.scalars(sa.select(OrderEvent).where(OrderEvent.order_id == order.id))
    ][-1] == "reassign"


@pytest.mark.parametrize("engineer_id", ["", "abc", "0", "²", "999999", str(2**40), "9" * 5000])
def test_assigning_a_bad_engineer_flashes_an_error_and_changes_nothing(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, engineer_id: str
) -> None:
    order = make_order()
    csrf = console("dispatcher")
    before = event_count(order.id)
    response = client.post(
        f"/console/orders/{order.id}/assign", data={"csrf_token": csrf, "engineer_id": engineer_id}
    )
    assert response.status_code == 302
    assert status_of(order.id) == "new" and event_count(order.id) == before
    assert [c for c, _ in flashes(client)] == ["error"]


@pytest.mark.parametrize(
    ("action", "data"),
    [
        ("assign", {"auto": "1"}),
        ("suspend", {"reason_code": "customer_postponed"}),
        ("cancel", {"reason": "客户撤销"}),
    ],
)
def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    client: FlaskClient,
    console: Callable[[str], str],
    make_order: Factory,
    make_engineer: Factory,
    action: str,
    data: dict[str, str],
) -> None:
    make_engineer()
    order = make_order()
    console("dispatcher")
    before = event_count(order.id)
    response = client.post(f"/console/orders/{order.id}/{action}", data=data)
    assert response.status_code == 400
    wrong = client.post(f"/console/orders/{order.id}/{action}", data={**data, "csrf_token": "forged"})
    assert wrong.status_code == 400
    assert status_of(order.id) == "new" and event_count(order.id) == before


def test_a_manager_may_not_assign_and_nothing_changes(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, make_engineer: Factory
) -> None:
    engineer = make_engineer()
    order = make_order()
    csrf = console("manager")
    client.post(f"/console/orders/{order.id}/assign", data={"csrf_token": csrf, "engineer_id": engineer.id})
    assert status_of(order.id) == "new"
    assert [c for c, _ in flashes(client)] == ["error"]


def test_suspending_and_resuming_an_order(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory
) -> None:
    order = make_order()
    csrf = console("dispatcher")
    client.post(
        f"/console/orders/{order.id}/suspend",
        data={
            "csrf_token": csrf,
            "reason_code": "customer_postponed",
            "note": "客户出差",
            "until": "2026-11-28T09:00",
        },
    )
    assert status_of(order.id) == "suspended"
    assert ("ok", "工单已挂起") in flashes(client)
    suspended = db.session.get(Order, order.id)
    assert suspended is not None and suspended.suspended_until is not None
    assert suspended.suspended_until.isoformat().startswith("2026-11-28T01:00")  # 09:00 in Asia/Shanghai
    html = text(client.get(f"/console/orders/{order.id}"))
    assert "客户要求延期" in html and "解挂" in html and "已暂停" in html  # the completion clock paused
    client.post(f"/console/orders/{order.id}/resume", data={"csrf_token": csrf, "note": "客户回来了"})
    assert status_of(order.id) == "new"
    assert ("ok", "工单已解挂") in flashes(client)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"reason_code": "bogus"},
        {"reason_code": "customer_postponed", "until": "2026-11-24T09:00"},  # in the past
        {"reason_code": "customer_postponed", "until": "tomorrow"},
        {"reason_code": "customer_postponed", "note": "x" * 1001},
    ],
)
def test_suspending_with_bad_input_flashes_an_error_and_changes_nothing(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, data: dict[str, str]
) -> None:
    order = make_order()
    csrf = console("dispatcher")
    before = event_count(order.id)
    client.post(f"/console/orders/{order.id}/suspend", data={"csrf_token": csrf, **data})
    assert status_of(order.id) == "new" and event_count(order.id) == before
    assert [c for c, _ in flashes(client)] == ["error"]


def test_cancelling_needs_a_reason_and_then_withdraws_the_order(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory
) -> None:
    order = make_order()
    csrf = console("dispatcher")
    client.post(f"/console/orders/{order.id}/cancel", data={"csrf_token": csrf, "reason": "  "})
    assert status_of(order.id) == "new"
    assert flashes(client) == [("error", "输入有误：撤单原因 必填")]
    client.post(
        f"/console/orders/{order.id}/cancel",
        data={"csrf_token": csrf, "reason": "重复受理", "reason_code": "bogus"},
    )
    assert status_of(order.id) == "new"
    client.post(
        f"/console/orders/{order.id}/cancel",
        data={"csrf_token": csrf, "reason": "重复受理", "reason_code": "duplicate"},
    )
    assert status_of(order.id) == "cancelled"
    cancelled = db.session.get(Order, order.id)
    assert cancelled is not None and cancelled.cancel_reason_code == "duplicate"
    html = text(client.get(f"/console/orders/{order.id}"))
    assert 'id="order-status">撤单<' in html and "重复受理" in html and "挂起原因" not in html


def test_an_illegal_transition_flashes_the_conflict(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory
) -> None:
    order = make_order()
    csrf = console("dispatcher")
    client.post(f"/console/orders/{order.id}/resume", data={"csrf_token": csrf})
    assert status_of(order.id) == "new"
    assert [c for c, _ in flashes(client)] == ["error"]


def test_a_form_may_return_to_its_page_but_never_off_site(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory
) -> None:
    order = make_order()
    csrf = console("dispatcher")
    response = client.post(
        f"/console/orders/{order.id}/resume", data={"csrf_token": csrf, "back": "https://evil.example/"}
    )
    assert response.headers["Location"] == f"/console/orders/{order.id}"
    response = client.post(
        f"/console/orders/{order.id}/resume", data={"csrf_token": csrf, "back": "/console/board"}
    )
    assert response.headers["Location"] == "/console/board"


# --- photos -----------------------------------------------------------------------------------------------


@pytest.fixture
def photographed(make_order: Factory, make_engineer: Factory, make_user: Factory) -> tuple[Order, int, int]:
    """An order on site with a ``before`` photo and an ID card photo uploaded by its engineer."""
    from dispatch.services.dispatching import assign_order

    engineer = make_engineer()
    user = make_user("engineer", engineer=engineer)
    desk = make_user("dispatcher")
    order = make_order()
    assign_order(order.id, engineer.id, actor=Actor(kind="user", id=desk.id, name="d", role="dispatcher"))
    field = Actor(kind="user", id=user.id, name=user.username, role="engineer", engineer_id=engineer.id)
    before, _ = attachments.add_attachment(order.id, "before", JPEG, "a.jpg", actor=field)
    id_card, _ = attachments.add_attachment(order.id, "id_card", ID_PHOTO, "id.jpg", actor=field)
    return order, before.id, id_card.id


def test_photos_are_shown_and_id_cards_only_to_the_roles_allowed(
    client: FlaskClient, console: Callable[[str], str], photographed: tuple[Order, int, int]
) -> None:
    order, before, id_card = photographed
    console("dispatcher")
    html = text(client.get(f"/console/orders/{order.id}"))
    assert f'src="/console/orders/{order.id}/attachments/{before}"' in html and "施工前" in html
    assert f"/attachments/{id_card}" not in html
    photo = client.get(f"/console/orders/{order.id}/attachments/{before}")
    assert photo.status_code == 200 and photo.data == JPEG and photo.mimetype == "image/jpeg"
    assert photo.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get(f"/console/orders/{order.id}/attachments/{id_card}").status_code == 403
    assert client.get(f"/console/orders/{order.id}/attachments/999999").status_code == 404

    console("acceptance")
    html = text(client.get(f"/console/orders/{order.id}"))
    assert f'src="/console/orders/{order.id}/attachments/{id_card}"' in html and "身份证" in html
    assert client.get(f"/console/orders/{order.id}/attachments/{id_card}").data == ID_PHOTO


# --- alerts ---------------------------------------------------------------------------------------------


def test_alerts_list_open_alerts_and_acknowledging_moves_them(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory, clock: Any
) -> None:
    order = make_order(order_type="repair")
    clock.advance(hours=18, seconds=1)
    assert tick(clock.now()).warnings == 1
    alert = db.session.scalar(sa.select(Alert).where(Alert.order_id == order.id))
    assert alert is not None
    csrf = console("dispatcher")
    html = text(client.get("/console/alerts"))
    assert f'data-alert-id="{alert.id}"' in html and order.external_id in html and "预警" in html
    assert "竣工" in html  # the clock
    assert client.post(f"/console/alerts/{alert.id}/acknowledge").status_code == 400  # no CSRF token
    db.session.expire_all()
    assert db.session.get(Alert, alert.id).acknowledged_at is None  # type: ignore[union-attr]
    response = client.post(
        f"/console/alerts/{alert.id}/acknowledge",
        data={"csrf_token": csrf, "back": "/console/alerts?status=open"},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/console/alerts?status=open"
    assert ("ok", "告警已确认") in flashes(client)
    db.session.expire_all()
    assert db.session.get(Alert, alert.id).acknowledged_at is not None  # type: ignore[union-attr]
    assert f'data-alert-id="{alert.id}"' not in text(client.get("/console/alerts"))
    acknowledged = text(client.get("/console/alerts?status=acknowledged"))
    assert f'data-alert-id="{alert.id}"' in acknowledged and "已确认" in acknowledged


def test_acknowledging_an_unknown_alert_flashes_an_error(
    client: FlaskClient, console: Callable[[str], str]
) -> None:
    csrf = console("dispatcher")
    client.post("/console/alerts/999999/acknowledge", data={"csrf_token": csrf})
    assert [c for c, _ in flashes(client)] == ["error"]


@pytest.mark.parametrize("role", ["manager", "acceptance"])
def test_alerts_are_for_dispatchers_and_admins_only(
    client: FlaskClient, console: Callable[[str], str], role: str
) -> None:
    console(role)
    assert client.get("/console/alerts").status_code == 403


def test_alerts_refuse_a_bad_status_filter(client: FlaskClient, console: Callable[[str], str]) -> None:
    console("admin")
    assert client.get("/console/alerts").status_code == 200
    assert client.get("/console/alerts?status=closed").status_code == 422


# --- complaints -------------------------------------------------------------------------------------------


def complaint_form(csrf: str, **overrides: str) -> dict[str, str]:
    return {
        "csrf_token": csrf,
        "category": "appointment",
        "cause": "installation_service",
        "received_at": "2026-11-25T08:30",
        "order_external_id": "",
        "text": "工程师未按约定时间上门",
        **overrides,
    }


def test_a_dispatcher_records_a_complaint_about_an_order(
    client: FlaskClient, console: Callable[[str], str], make_order: Factory
) -> None:
    order = make_order()
    csrf = console("dispatcher")
    assert "登记投诉" in text(client.get("/console/complaints"))
    response = client.post(
        "/console/complaints", data=complaint_form(csrf, order_external_id=order.external_id)
    )
    assert response.status_code == 302 and response.headers["Location"] == "/console/complaints"
    assert ("ok", "投诉已登记") in flashes(client)
    complaint = db.session.scalar(sa.select(Complaint))
    assert complaint is not None
    assert re.fullmatch(r"CONSOLE-[0-9a-f]{32}", complaint.external_id)
    assert complaint.order_id == order.id and complaint.category == "appointment"
    assert complaint.received_at.isoformat().startswith("2026-11-25T00:30")  # 08:30 in Asia/Shanghai
    html = text(client.get("/console/complaints"))
    assert (
        f'data-complaint-id="{complaint.id}"' in html and "工程师未按约定时间上门" in html and "约服" in html
    )


def test_complaints_filter_by_category_cause_and_days(
    client: FlaskClient, console: Callable[[str], str]
) -> None:
    csrf = console("admin")
    client.post("/console/complaints", data=complaint_form(csrf, text="约服投诉"))
    client.post(
        "/console/complaints",
        data=complaint_form(
            csrf, category="escalated", cause="network", text="越级网络", received_at="2026-11-10T10:00"
        ),
    )
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Complaint)) == 2
    recent = text(client.get("/console/complaints"))  # the last 7 days by default
    assert "约服投诉" in recent and "越级网络" not in recent
    month = text(client.get("/console/complaints?days=30"))
    assert "约服投诉" in month and "越级网络" in month
    assert "约服投诉" not in text(client.get("/console/complaints?days=30&category=escalated"))
    assert "越级网络" not in text(client.get("/console/complaints?days=30&cause=installation_service"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"category": ""},
        {"cause": "weather"},
        {"text": "   "},
        {"text": "x" * 4001},
        {"received_at": "yesterday"},
        {"received_at": "2026-11-26T12:00"},  # in the future
        {"order_external_id": "NO-SUCH-ORDER"},
    ],
)
def test_a_complaint_with_bad_input_flashes_an_error_and_records_nothing(
    client: FlaskClient, console: Callable[[str], str], overrides: dict[str, str]
) -> None:
    csrf = console("dispatcher")
    client.post("/console/complaints", data=complaint_form(csrf, **overrides))
    assert [c for c, _ in flashes(client)] == ["error"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Complaint)) == 0


def test_a_complaint_without_the_csrf_token_is_refused(
    client: FlaskClient, console: Callable[[str], str]
) -> None:
    console("dispatcher")
    form = complaint_form("")
    del form["csrf_token"]
    assert client.post("/console/complaints", data=form).status_code == 400
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Complaint)) == 0


def test_a_manager_reads_complaints_but_may_not_record_them(
    client: FlaskClient, console: Callable[[str], str]
) -> None:
    csrf = console("manager")
    html = text(client.get("/console/complaints"))
    assert "<h1>投诉</h1>" in html and "登记投诉" not in html
    client.post("/console/complaints", data=complaint_form(csrf))
    assert [c for c, _ in flashes(client)] == ["error"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Complaint)) == 0


def test_the_acceptance_desk_may_not_read_complaints(
    client: FlaskClient, console: Callable[[str], str]
) -> None:
    console("acceptance")
    assert client.get("/console/complaints").status_code == 403
