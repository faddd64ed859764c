"""POST /api/v1/intake/orders exactly as CONTRACT §5 "Hotline intake" and §3 (errors, media types, sizes)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch.extensions import db
from dispatch.models import Address, ApiKey, Customer, Order, OrderEvent
from dispatch.services import auth as auth_service
from tests.conftest import bearer, intake_payload

URL = "/api/v1/intake/orders"
ORDER_FIELDS = {
    "id",
    "external_id",
    "order_type",
    "pay_mode",
    "priority",
    "status",
    "customer",
    "address",
    "engineer",
    "appointment",
    "created_at",
    "updated_at",
    "version",
    "sla",
}


def counts() -> dict[str, int]:
    """Rows that an intake request may create; a rejected request must leave every one unchanged."""
    return {
        model.__name__: db.session.scalar(sa.select(sa.func.count()).select_from(model))
        for model in (Order, Customer, Address, OrderEvent)
    }


def post_raw(client: Any, key: str, raw: str | bytes, content_type: str = "application/json") -> Any:
    return client.post(URL, data=raw, content_type=content_type, headers=bearer(key))


def assert_error_body(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict), response.get_data(as_text=True)
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.fixture
def intake_key(api_key: Callable[[str], str]) -> str:
    return api_key("intake")


# --- creation -----------------------------------------------------------------------------------------


def test_new_order_is_created_with_every_contract_field_and_local_times(client, intake_key):
    body = intake_payload(priority="high", products=["broadband_300m", "iptv_basic"], notes="请先电话联系")
    before = counts()

    response = client.post(URL, json=body, headers=bearer(intake_key))

    assert response.status_code == 201, response.get_json()
    order = response.get_json()
    assert set(order) >= ORDER_FIELDS
    assert order["external_id"] == body["external_id"]
    assert order["order_type"] == "broadband_install"
    assert order["pay_mode"] == "install_then_pay"
    assert order["priority"] == "high"
    assert order["status"] == "new"
    assert order["engineer"] is None
    assert order["appointment"] is None
    assert isinstance(order["version"], int)
    assert isinstance(order["sla"], list)
    assert order["customer"]["name"] == "张三"
    assert order["customer"]["phone"] == "+86" + body["customer"]["phone"]
    assert order["address"]["text"] == body["address"]["text"]
    assert order["address"]["district"] == "五华区"
    assert order["address"]["lat"] == pytest.approx(25.0423)
    assert order["address"]["lng"] == pytest.approx(102.7065)
    assert order["address"]["location_source"] == "intake"
    assert order["created_at"] == "2026-11-25T09:00:00+08:00"  # T0 = 01:00 UTC, shown in Asia/Shanghai
    assert order["updated_at"].endswith("+08:00")
    assert order["requested_window"] == {
        "start": "2026-11-26T09:00:00+08:00",
        "end": "2026-11-26T12:00:00+08:00",
    }
    assert order["products"] == ["broadband_300m", "iptv_basic"]
    assert order["notes"] == "请先电话联系"
    after = counts()
    assert {name: after[name] - before[name] for name in after} == {
        "Order": 1,
        "Customer": 1,
        "Address": 1,
        "OrderEvent": 1,
    }
    stored = db.session.get(Order, order["id"])
    assert stored.external_id == body["external_id"]
    assert [e.action for e in stored.events] == ["intake"]


def test_optional_fields_may_be_omitted_and_priority_defaults_to_normal(client, intake_key):
    body = intake_payload()
    for optional in ("priority", "requested_window", "products", "notes"):
        del body[optional]
    body["address"] = {"text": "昆明市五华区人民中路1号", "district": "五华区"}

    response = client.post(URL, json=body, headers=bearer(intake_key))

    assert response.status_code == 201, response.get_json()
    order = response.get_json()
    assert order["priority"] == "normal"
    assert order["requested_window"] is None
    assert order["products"] == []


def test_address_without_coordinates_in_a_known_district_gets_the_district_centroid(client, intake_key):
    body = intake_payload(address={"text": "昆明市五华区某小区3栋", "district": "五华区"})

    response = client.post(URL, json=body, headers=bearer(intake_key))

    assert response.status_code == 201, response.get_json()
    address = response.get_json()["address"]
    assert address["location_source"] == "centroid"
    assert address["lat"] == pytest.approx(25.0426)  # the 五华区 centroid seeded by the migrations
    assert address["lng"] == pytest.approx(102.7041)


def test_unknown_district_with_coordinates_is_accepted_at_those_coordinates(client, intake_key):
    body = intake_payload(
        address={"text": "安宁市连然街道1号", "district": "安宁市", "lat": 24.92, "lng": 102.48}
    )

    response = client.post(URL, json=body, headers=bearer(intake_key))

    assert response.status_code == 201, response.get_json()
    address = response.get_json()["address"]
    assert address["district"] == "安宁市"
    assert address["location_source"] == "intake"
    assert (address["lat"], address["lng"]) == (pytest.approx(24.92), pytest.approx(102.48))


def test_a_second_order_for_a_known_phone_reuses_the_customer(client, intake_key):
    first = intake_payload()
    second = intake_payload(customer={"name": "张三", "phone": "+86 " + first["customer"]["phone"]})

    one = client.post(URL, json=first, headers=bearer(intake_key))
    before = counts()
    two = client.post(URL, json=second, headers=bearer(intake_key))

    assert (one.status_code, two.status_code) == (201, 201)
    assert one.get_json()["id"] != two.get_json()["id"]
    assert two.get_json()["customer"]["id"] == one.get_json()["customer"]["id"]
    after = counts()
    assert after["Customer"] == before["Customer"]
    assert after["Order"] == before["Order"] + 1


# --- idempotency on external_id -----------------------------------------------------------------------


def test_replay_with_the_same_content_returns_the_same_order_and_creates_nothing(client, intake_key):
    body = intake_payload()
    first = client.post(URL, json=body, headers=bearer(intake_key))
    assert first.status_code == 201
    before = counts()

    again = client.post(URL, json=body, headers=bearer(intake_key))

    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["external_id"] == body["external_id"]
    assert counts() == before


def test_same_content_written_differently_counts_as_a_replay(client, intake_key):
    body = intake_payload()
    first = client.post(URL, json=body, headers=bearer(intake_key))
    assert first.status_code == 201
    before = counts()

    rewritten = {  # reversed key order, times in UTC with "Z", phone in international form with spaces
        "notes": body["notes"],
        "products": body["products"],
        "requested_window": {"end": "2026-11-26T04:00:00Z", "start": "2026-11-26T01:00:00Z"},
        "address": dict(reversed(list(body["address"].items()))),
        "customer": {
            "phone": "+86 " + body["customer"]["phone"][:3] + " " + body["customer"]["phone"][3:],
            "name": body["customer"]["name"],
        },
        "priority": body["priority"],
        "pay_mode": body["pay_mode"],
        "order_type": body["order_type"],
        "external_id": body["external_id"],
    }
    raw = json.dumps(rewritten, ensure_ascii=False)
    assert raw.index('"notes"') < raw.index('"external_id"')  # really written in another order

    again = post_raw(client, intake_key, raw.encode())

    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] == first.get_json()["id"]
    assert counts() == before


def test_same_external_id_with_different_content_is_409_and_changes_nothing(client, intake_key):
    body = intake_payload(notes="第一次")
    first = client.post(URL, json=body, headers=bearer(intake_key))
    assert first.status_code == 201
    before = counts()
    changed = copy.deepcopy(body)
    changed["notes"] = "第二次"
    changed["customer"] = {"name": "李四", "phone": "13912345678"}

    response = client.post(URL, json=changed, headers=bearer(intake_key))

    assert_error_body(response, 409)
    assert counts() == before
    stored = db.session.get(Order, first.get_json()["id"])
    db.session.refresh(stored)
    assert stored.notes == "第一次"
    assert stored.customer.phone == "+86" + body["customer"]["phone"]
    assert db.session.scalar(sa.select(Customer).where(Customer.phone == "+8613912345678")) is None
    # and the original content still replays
    assert client.post(URL, json=body, headers=bearer(intake_key)).status_code == 200


# --- validation: 422 per field, nothing written -------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = body
        for part in parents:
            target = target[part]
        target[leaf] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = body
        for part in parents:
            target = target[part]
        del target[leaf]

    return mutate


INVALID = [
    # missing required fields
    ("missing external_id", _drop("external_id"), ("external_id",)),
    ("missing order_type", _drop("order_type"), ("order_type",)),
    ("missing pay_mode", _drop("pay_mode"), ("pay_mode",)),
    ("missing customer", _drop("customer"), ("customer",)),
    ("missing customer name", _drop("customer.name"), ("customer", "name")),
    ("missing customer phone", _drop("customer.phone"), ("customer", "phone")),
    ("missing address", _drop("address"), ("address",)),
    ("missing address text", _drop("address.text"), ("address", "text")),
    ("missing address district", _drop("address.district"), ("address", "district")),
    (
        "missing window start",
        _set("requested_window", {"end": "2026-11-26T12:00:00+08:00"}),
        ("requested_window", "start"),
    ),
    # enums
    ("bad order_type", _set("order_type", "fiber_magic"), ("order_type",)),
    ("bad pay_mode", _set("pay_mode", "postpaid"), ("pay_mode",)),
    ("bad priority", _set("priority", "asap"), ("priority",)),
    # phones
    ("US phone", _set("customer.phone", "+1 202 555 0100"), ("customer", "phone")),
    ("CN landline", _set("customer.phone", "0871-65123456"), ("customer", "phone")),
    ("too short mobile", _set("customer.phone", "1380013800"), ("customer", "phone")),
    ("invalid mobile prefix", _set("customer.phone", "12000138000"), ("customer", "phone")),
    ("letters for phone", _set("customer.phone", "call me maybe"), ("customer", "phone")),
    # address and coordinates
    (
        "unknown district without coordinates",
        _set("address", {"text": "某地", "district": "火星区"}),
        ("address", "district"),
    ),
    (
        "lat without lng",
        _set("address", {"text": "某地", "district": "五华区", "lat": 25.04}),
        ("address", "lat"),
    ),
    ("lat out of range", _set("address.lat", 91.0), ("address", "lat")),
    ("lng out of range", _set("address.lng", -181.0), ("address", "lng")),
    # window
    (
        "window ends before it starts",
        _set("requested_window", {"start": "2026-11-26T12:00:00+08:00", "end": "2026-11-26T09:00:00+08:00"}),
        ("requested_window", "end"),
    ),
    (
        "window ends when it starts",
        _set("requested_window", {"start": "2026-11-26T09:00:00+08:00", "end": "2026-11-26T09:00:00+08:00"}),
        ("requested_window", "end"),
    ),
    (
        "naive window times",
        _set("requested_window", {"start": "2026-11-26T09:00:00", "end": "2026-11-26T12:00:00+08:00"}),
        ("requested_window", "start"),
    ),
    (
        "not a time at all",
        _set("requested_window", {"start": "tomorrow", "end": "2026-11-26T12:00:00+08:00"}),
        ("requested_window", "start"),
    ),
    # sizes
    ("name over 100", _set("customer.name", "张" * 101), ("customer", "name")),
    ("empty name", _set("customer.name", ""), ("customer", "name")),
    ("address text over 500", _set("address.text", "路" * 501), ("address", "text")),
    ("notes over 2000", _set("notes", "x" * 2001), ("notes",)),
    ("more than 20 products", _set("products", [f"p{i}" for i in range(21)]), ("products",)),
    ("malformed external_id", _set("external_id", "has spaces/and slashes"), ("external_id",)),
    ("external_id over 64", _set("external_id", "A" * 65), ("external_id",)),
    ("external_id with a trailing newline", _set("external_id", "10000-20261125-1\n"), ("external_id",)),
    ("blank name", _set("customer.name", "   "), ("customer", "name")),
    ("blank address text", _set("address.text", " \t "), ("address", "text")),
    ("blank district with coordinates", _set("address.district", "  "), ("address", "district")),
    # unknown fields
    ("unknown top-level field", _set("vip", True), ("vip",)),
    ("unknown customer field", _set("customer.id_number", "530102199001011234"), ("customer", "id_number")),
    ("unknown address field", _set("address.floor", 3), ("address", "floor")),
    # wrong JSON types
    ("string for customer object", _set("customer", "张三 13800138000"), ("customer",)),
    ("string for address object", _set("address", "昆明市五华区"), ("address",)),
    ("number for order_type", _set("order_type", 3), ("order_type",)),
    ("string for lat", _set("address.lat", "north"), ("address", "lat")),
    ("string for products", _set("products", "broadband_300m"), ("products",)),
    ("number in products", _set("products", [300]), ("products",)),
    ("object for notes", _set("notes", {"text": "hi"}), ("notes",)),
]


@pytest.mark.parametrize(
    ("mutate", "path"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_field_is_422_naming_the_field_and_writes_nothing(client, intake_key, mutate, path):
    body = intake_payload()
    mutate(body)
    before = counts()

    response = client.post(URL, json=body, headers=bearer(intake_key))

    error = assert_error_body(response, 422)
    node: Any = error["errors"]
    for part in path:
        assert isinstance(node, dict) and part in node, error["errors"]
        node = node[part]
    assert node, error["errors"]  # at least one message for that field
    assert counts() == before


def test_window_boundary_end_equal_start_is_rejected_but_one_second_later_is_accepted(client, intake_key):
    body = intake_payload(
        requested_window={"start": "2026-11-26T09:00:00+08:00", "end": "2026-11-26T09:00:01+08:00"}
    )
    response = client.post(URL, json=body, headers=bearer(intake_key))
    assert response.status_code == 201, response.get_json()


def test_every_missing_required_field_is_reported_at_once(client, intake_key):
    before = counts()

    response = client.post(URL, json={}, headers=bearer(intake_key))

    error = assert_error_body(response, 422)
    assert {"external_id", "order_type", "pay_mode", "customer", "address"} <= set(error["errors"])
    assert counts() == before


def test_a_json_list_as_body_is_422(client, intake_key):
    before = counts()

    response = client.post(URL, json=[intake_payload()], headers=bearer(intake_key))

    error = assert_error_body(response, 422)
    assert error["errors"]
    assert counts() == before


# --- malformed requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b'{"external_id": "x",', b"not json", b'{"a": 1}}', b'{"notes": "\xff\xff"}'],
    ids=["truncated", "text", "trailing", "bad-utf8"],
)
def test_malformed_json_is_400_and_writes_nothing(client, intake_key, raw):
    before = counts()

    response = post_raw(client, intake_key, raw)

    assert_error_body(response, 400)
    assert counts() == before


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", json.dumps(intake_payload())),
        ("application/x-www-form-urlencoded", "external_id=1&order_type=repair"),
        (
            "multipart/form-data; boundary=xyz",
            "--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--xyz--\r\n",
        ),
        ("application/xml", "<order/>"),
    ],
    ids=["text", "form", "multipart", "xml"],
)
def test_non_json_content_type_is_415_and_writes_nothing(client, intake_key, content_type, data):
    before = counts()

    response = post_raw(client, intake_key, data.encode(), content_type=content_type)

    assert_error_body(response, 415)
    assert counts() == before


def test_body_larger_than_max_content_length_is_413_json_and_writes_nothing(
    app, client, intake_key, monkeypatch
):
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 4096)
    body = intake_payload(notes="x" * 5000)  # valid notes length, but the body exceeds the limit
    before = counts()

    response = client.post(URL, json=body, headers=bearer(intake_key))

    assert_error_body(response, 413)
    assert response.mimetype == "application/json"
    assert counts() == before


def test_body_larger_than_default_max_content_length_is_413(app, client, intake_key):
    limit = app.config["MAX_CONTENT_LENGTH"]
    raw = json.dumps(intake_payload(notes="x" * (limit + 1)))
    before = counts()

    response = post_raw(client, intake_key, raw.encode())

    assert_error_body(response, 413)
    assert counts() == before


# --- authentication and authorization -----------------------------------------------------------------


def test_without_credentials_is_401_and_writes_nothing(client):
    before = counts()

    response = client.post(URL, json=intake_payload())

    assert_error_body(response, 401)
    assert counts() == before


def test_with_an_unknown_key_is_401(client):
    response = client.post(URL, json=intake_payload(), headers=bearer("not-a-real-key"))
    assert_error_body(response, 401)


def test_a_dispatcher_token_is_403_and_writes_nothing(client, token):
    dispatcher = token("dispatcher")
    before = counts()

    response = client.post(URL, json=intake_payload(), headers=bearer(dispatcher))

    assert_error_body(response, 403)
    assert counts() == before


def test_a_billing_scope_key_is_403_and_writes_nothing(client, api_key):
    billing = api_key("billing")
    before = counts()

    response = client.post(URL, json=intake_payload(), headers=bearer(billing))

    assert_error_body(response, 403)
    assert counts() == before


def prefix_of(key: str) -> str:
    return key.split("_")[1]


def revoke_elsewhere(key: str) -> None:
    """Revoke ``key`` as another process would: in the database only, not in this process's memory."""
    db.session.execute(
        sa.update(ApiKey).where(ApiKey.prefix == prefix_of(key)).values(revoked_at=sa.func.now())
    )
    db.session.commit()


def test_a_key_revoked_by_another_process_is_refused_on_the_next_order_and_writes_nothing(client, intake_key):
    """An order intake takes a key it has seen from the process's memory (no read of its own) and confirms it
    in its lookup: a key revoked meanwhile in another process is refused before anything is written, and is
    forgotten, so the request after reads it again."""
    assert client.post(URL, json=intake_payload(), headers=bearer(intake_key)).status_code == 201
    assert prefix_of(intake_key) in auth_service._KNOWN_KEYS
    revoke_elsewhere(intake_key)
    before = counts()

    response = client.post(URL, json=intake_payload(), headers=bearer(intake_key))

    assert_error_body(response, 401)
    assert counts() == before
    assert prefix_of(intake_key) not in auth_service._KNOWN_KEYS
    assert_error_body(client.post(URL, json=intake_payload(), headers=bearer(intake_key)), 401)
    assert counts() == before


def test_a_key_revoked_elsewhere_cannot_replay_an_order_it_created(client, intake_key):
    body = intake_payload()
    assert client.post(URL, json=body, headers=bearer(intake_key)).status_code == 201
    revoke_elsewhere(intake_key)

    assert_error_body(client.post(URL, json=body, headers=bearer(intake_key)), 401)


def test_a_key_deleted_elsewhere_is_refused_on_the_next_order(client, intake_key):
    assert client.post(URL, json=intake_payload(), headers=bearer(intake_key)).status_code == 201
    db.session.execute(sa.delete(ApiKey).where(ApiKey.prefix == prefix_of(intake_key)))
    db.session.commit()
    before = counts()

    assert_error_body(client.post(URL, json=intake_payload(), headers=bearer(intake_key)), 401)
    assert counts() == before


def test_only_the_order_intake_takes_a_key_from_memory(client, intake_key):
    """Every other request reads its key: a key revoked elsewhere is refused there at once."""
    assert client.post(URL, json=intake_payload(), headers=bearer(intake_key)).status_code == 201
    revoke_elsewhere(intake_key)

    assert_error_body(client.get("/api/v1/auth/me", headers=bearer(intake_key)), 401)
    complaint = {
        "external_id": "C-revoked-1",
        "category": "appointment",
        "cause": "installation_service",
        "received_at": "2026-03-02T10:00:00+08:00",
        "text": "师傅迟到",
    }
    assert_error_body(
        client.post("/api/v1/intake/complaints", json=complaint, headers=bearer(intake_key)), 401
    )


def test_a_revoked_key_gets_no_stored_response_replayed(client, intake_key):
    """With an Idempotency-Key the stored response is replayed before the view, so the key is read first."""
    headers = {**bearer(intake_key), "Idempotency-Key": "hotline-retry-1"}
    body = intake_payload()
    assert client.post(URL, json=body, headers=headers).status_code == 201
    assert client.post(URL, json=body, headers=headers).headers.get("Idempotent-Replayed") == "true"
    revoke_elsewhere(intake_key)

    assert_error_body(client.post(URL, json=body, headers=headers), 401)


def test_a_remembered_key_still_needs_its_secret(client, intake_key):
    """Memory holds the key's salted hash, not a pass for its prefix: a wrong secret is refused."""
    assert client.post(URL, json=intake_payload(), headers=bearer(intake_key)).status_code == 201
    before = counts()

    wrong = intake_key[:-1] + ("y" if intake_key.endswith("x") else "x")
    assert_error_body(client.post(URL, json=intake_payload(), headers=bearer(wrong)), 401)
    assert counts() == before
    assert client.post(URL, json=intake_payload(), headers=bearer(intake_key)).status_code == 201
