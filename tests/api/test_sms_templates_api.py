"""SMS templates over HTTP: admins edit them, bad texts are 422 and change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import bearer

URL = "/api/v1/sms-templates"


@pytest.fixture
def admin(token: Any) -> dict[str, str]:
    return bearer(token("admin"))


def test_templates_are_listed_with_their_sample_and_parts(client, admin):
    response = client.get(URL, headers=admin)
    assert response.status_code == 200
    by_key = {t["key"]: t for t in response.get_json()}
    assert {"dispatch_engineer", "appointment_customer", "completion_customer"} <= set(by_key)
    dispatch = by_key["dispatch_engineer"]
    assert dispatch["customized"] is False and "{external_id}" in dispatch["body"]
    assert dispatch["segments"]["encoding"] == "UCS-2" and dispatch["segments"]["parts"] <= 2


def test_an_admin_changes_and_restores_a_template(client, admin):
    changed = client.put(
        f"{URL}/dispatch_engineer", json={"body": "【派单】{external_id}请接单"}, headers=admin
    )
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["sample"] == "【派单】10000-20261125-000123请接单"
    restored = client.put(f"{URL}/dispatch_engineer", json={"body": None}, headers=admin)
    assert restored.get_json()["customized"] is False


@pytest.mark.parametrize(
    "body", [{"body": "{nope}"}, {"body": "长" * 200}, {"body": ""}, {"text": "x"}, {"body": 5}]
)
def test_a_bad_template_is_422_and_changes_nothing(client, admin, body):
    response = client.put(f"{URL}/dispatch_engineer", json=body, headers=admin)
    assert response.status_code == 422
    assert response.get_json()["errors"]
    listed = {t["key"]: t for t in client.get(URL, headers=admin).get_json()}
    assert listed["dispatch_engineer"]["customized"] is False


def test_an_unknown_template_is_404(client, admin):
    assert client.put(f"{URL}/nonexistent", json={"body": "x"}, headers=admin).status_code == 404
