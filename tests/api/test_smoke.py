from tests.conftest import bearer, intake_payload


def test_intake_then_dispatcher_lists_and_reads_the_order(client, api_key, token):
    key = api_key("intake")
    body = intake_payload()
    created = client.post("/api/v1/intake/orders", json=body, headers=bearer(key))
    assert created.status_code == 201, created.get_json()
    order = created.get_json()
    assert order["status"] == "new"
    assert order["customer"]["phone"] == "+86" + body["customer"]["phone"]
    assert order["requested_window"]["start"] == "2026-11-26T09:00:00+08:00"

    again = client.post("/api/v1/intake/orders", json=body, headers=bearer(key))
    assert again.status_code == 200
    assert again.get_json()["id"] == order["id"]

    dispatcher = token("dispatcher")
    listing = client.get("/api/v1/orders", headers=bearer(dispatcher))
    assert listing.status_code == 200, listing.get_json()
    assert listing.get_json()["total"] == 1
    detail = client.get(f"/api/v1/orders/{order['id']}", headers=bearer(dispatcher)).get_json()
    assert [e["action"] for e in detail["events"]] == ["intake"]
