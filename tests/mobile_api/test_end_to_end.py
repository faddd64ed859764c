"""Whole visits over HTTP only: the hotline's intake, the dispatcher, the engineer's PDA, the acceptance desk.

An install-then-pay order goes intake → dispatch → take → contact → check-in → ID photo → resources → submit →
acceptance → after photo and signature → completion; a repair skips the acceptance desk. Every status, the
event log and each SLA clock are checked on the way.
"""

from __future__ import annotations

import io
import struct
import zlib
from datetime import timedelta
from typing import Any

from dispatch.clock import FakeClock
from tests.conftest import bearer, intake_payload

KM_ADDRESS = {"text": "昆明市五华区人民中路1号", "district": "五华区", "lat": 25.0423, "lng": 102.7065}


def png(seed: int) -> bytes:
    """A tiny valid PNG, different for each seed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x00" + bytes([seed % 256, 0, 0])
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class Visit:
    """The people of one visit, each with their own credentials, and the checks between steps."""

    def __init__(self, client: Any, clock: FakeClock, desk: dict, acceptance: dict, pda: dict) -> None:
        self.client, self.clock = client, clock
        self.desk, self.acceptance, self.pda = desk, acceptance, pda
        self.order_id = 0

    def mobile(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        self.clock.advance(minutes=5)
        response = getattr(self.client, method)(f"/mobile/v1{path}", headers=self.pda, **kw)
        assert response.status_code in (200, 201), (path, response.get_json())
        return response.get_json()

    def detail(self) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/orders/{self.order_id}", headers=self.desk)
        assert response.status_code == 200
        return response.get_json()

    def clocks(self) -> dict[str, str]:
        """Each clock's latest status (a reassignment would leave older rows)."""
        return {c["clock"]: c["status"] for c in self.detail()["sla"]}

    def now(self) -> str:
        return self.clock.now().isoformat()


def start_visit(
    client: Any, clock: FakeClock, token: Any, api_key: Any, make_engineer: Any, **order: Any
) -> Visit:
    engineer = make_engineer(home={"lat": 25.05, "lng": 102.70})
    visit = Visit(
        client,
        clock,
        bearer(token("dispatcher")),
        bearer(token("acceptance")),
        bearer(token("engineer", engineer=engineer)),
    )
    created = client.post(
        "/api/v1/intake/orders",
        json=intake_payload(address=KM_ADDRESS, **order),
        headers=bearer(api_key("intake")),
    )
    assert created.status_code == 201, created.get_json()
    visit.order_id = created.get_json()["id"]
    assert visit.clocks() == {"completion": "running"}
    assigned = client.post(
        f"/api/v1/orders/{visit.order_id}/assign", json={"engineer_id": engineer.id}, headers=visit.desk
    )
    assert assigned.get_json()["status"] == "dispatched"
    assert visit.clocks() == {"completion": "running", "take": "running"}
    listed = visit.mobile("get", "/orders")
    assert [o["id"] for o in listed["items"]] == [visit.order_id]
    return visit


def arrive(visit: Visit) -> None:
    """Take, a missed call, the reached call with a window, and the check-in at the address."""
    oid = visit.order_id
    assert visit.mobile("post", f"/orders/{oid}/take", json={})["status"] == "taken"
    assert visit.clocks()["take"] == "met" and visit.clocks()["contact"] == "running"
    missed = visit.mobile(
        "post", f"/orders/{oid}/contacts", json={"outcome": "no_answer", "called_at": visit.now()}
    )
    assert missed["status"] == "taken"
    window = {
        "start": (visit.clock.now() + timedelta(hours=2)).isoformat(),
        "end": (visit.clock.now() + timedelta(hours=4)).isoformat(),
    }
    reached = visit.mobile(
        "post",
        f"/orders/{oid}/contacts",
        json={"outcome": "reached", "called_at": visit.now(), "appointment": window},
    )
    assert reached["status"] == "appointed"
    assert visit.clocks()["contact"] == "met" and visit.clocks()["arrival"] == "running"
    visit.clock.advance(hours=1)
    checked = visit.mobile(
        "post",
        f"/orders/{oid}/check-in",
        json={"lat": 25.0424, "lng": 102.7066, "accuracy_m": 8, "at": visit.now()},
    )
    assert checked["status"] == "on_site"
    assert checked["check_in"]["inside_radius"] is True and checked["check_in"]["distance_m"] < 50
    assert visit.clocks()["arrival"] == "met"


def upload(visit: Visit, kind: str, seed: int) -> None:
    body = visit.mobile(
        "post",
        f"/orders/{visit.order_id}/attachments",
        data={"kind": kind, "file": (io.BytesIO(png(seed)), f"{kind}.png")},
        content_type="multipart/form-data",
    )
    assert body["kind"] == kind and len(body["sha256"]) == 64


def test_an_install_then_pay_order_from_the_hotline_to_completion(
    client, clock, token, api_key, make_engineer
):
    visit = start_visit(client, clock, token, api_key, make_engineer, pay_mode="install_then_pay")
    oid = visit.order_id
    arrive(visit)
    upload(visit, "id_card", 1)
    resources = {
        "box_id": "GJ-0101-A",
        "port": "7",
        "ont_sn": "ZTEG12345678",
        "loid": "L0001",
        "optical_power_dbm": -19.5,
    }
    assert visit.mobile("put", f"/orders/{oid}/resources", json=resources)["warnings"] == []
    assert visit.mobile("post", f"/orders/{oid}/submit", json={})["status"] == "pending_acceptance"
    assert visit.clocks()["acceptance"] == "running"

    clock.advance(minutes=4)  # the desk accepts within its 10 minutes
    approved = client.post(
        f"/api/v1/orders/{oid}/acceptance",
        json={"decision": "approve", "note": "资料齐全"},
        headers=visit.acceptance,
    )
    assert approved.status_code == 200 and approved.get_json()["status"] == "in_progress"
    assert visit.clocks()["acceptance"] == "met"

    upload(visit, "after", 2)
    upload(visit, "signature", 3)
    done = visit.mobile("post", f"/orders/{oid}/complete", json={"at": visit.now(), "notes": "开通正常"})
    assert (done["status"], done["missing"]) == ("completed", [])
    assert visit.clocks() == {c: "met" for c in ("completion", "take", "contact", "arrival", "acceptance")}
    events = [(e["action"], e["from_status"], e["to_status"]) for e in visit.detail()["events"]]
    assert events == [
        ("intake", None, "new"),
        ("assign", "new", "dispatched"),
        ("take", "dispatched", "taken"),
        ("contact_attempt", "taken", "taken"),
        ("appoint", "taken", "appointed"),
        ("check_in", "appointed", "on_site"),
        ("attachment_added", "on_site", "on_site"),
        ("resources_reported", "on_site", "on_site"),
        ("submit", "on_site", "pending_acceptance"),
        ("approve", "pending_acceptance", "in_progress"),
        ("attachment_added", "in_progress", "in_progress"),
        ("attachment_added", "in_progress", "in_progress"),
        ("complete", "in_progress", "completed"),
    ]
    assert visit.mobile("get", "/orders")["items"] == []  # a completed order leaves the PDA's list


def test_a_repair_goes_from_the_hotline_to_completion_without_the_acceptance_desk(
    client, clock, token, api_key, make_engineer
):
    visit = start_visit(
        client, clock, token, api_key, make_engineer, order_type="repair", pay_mode="prepaid", products=[]
    )
    oid = visit.order_id
    arrive(visit)
    refused = client.post(f"/mobile/v1/orders/{oid}/submit", json={}, headers=visit.pda)
    assert refused.status_code == 409  # repairs never go to the desk
    missing = client.post(f"/mobile/v1/orders/{oid}/complete", json={"at": visit.now()}, headers=visit.pda)
    assert missing.status_code in (409, 422) and "after_photo" in str(missing.get_json())
    upload(visit, "after", 4)
    done = visit.mobile(
        "post", f"/orders/{oid}/complete", json={"at": visit.now(), "cause_code": "fiber_cut"}
    )
    assert done["status"] == "completed"
    assert "acceptance" not in visit.clocks()
    assert visit.clocks() == {c: "met" for c in ("completion", "take", "contact", "arrival")}
