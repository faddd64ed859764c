"""Attachments: PDA uploads (type by content, size, dedupe, safe names, idempotency) and who may download."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch.actors import Actor
from dispatch.errors import PreconditionFailed
from dispatch.extensions import db
from dispatch.models import Attachment, Order, OrderEvent
from dispatch.services import orders
from dispatch.services.dispatching import assign_order
from tests.conftest import bearer
from tests.services.test_workflow import DISPATCHER

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + b"jpeg-body" * 10 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"png-body" * 10
GIF = b"GIF89a\x01\x00\x01\x00" + b"gif-body" * 10
PDF = b"%PDF-1.7\n" + b"pdf-body" * 10
TEXT = b"just some text, not an image\n"


@pytest.fixture
def uploads(app, monkeypatch, tmp_path) -> Path:
    """A fresh UPLOAD_DIR for each test."""
    root = tmp_path / "uploads"
    monkeypatch.setitem(app.config, "UPLOAD_DIR", str(root))
    return root


@pytest.fixture
def field(app, uploads, make_engineer, make_order, make_user, token) -> Any:
    """Engineer A with an order assigned to them and a PDA token; engineer B with a token of their own."""

    class Field:
        engineer = make_engineer()
        user = make_user("engineer", engineer=engineer)
        tok = token(user=user)
        other = make_engineer()
        other_tok = token("engineer", engineer=other)
        order = make_order()

    assign_order(Field.order.id, Field.engineer.id, actor=DISPATCHER)
    Field.actor = Actor(
        kind="user",
        id=Field.user.id,
        name=Field.user.username,
        role="engineer",
        engineer_id=Field.engineer.id,
    )
    return Field


def url(order_id: int, attachment_id: int | None = None) -> str:
    base = f"/mobile/v1/orders/{order_id}/attachments"
    return base if attachment_id is None else f"{base}/{attachment_id}"


def upload(
    client: Any,
    order_id: int,
    tok: str,
    data: bytes | None,
    *,
    kind: str | None = "before",
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    headers: dict[str, str] | None = None,
) -> Any:
    form: dict[str, Any] = {}
    if kind is not None:
        form["kind"] = kind
    if data is not None:
        form["file"] = (io.BytesIO(data), filename, content_type)
    return client.post(
        url(order_id),
        headers={**bearer(tok), **(headers or {})},
        data=form,
        content_type="multipart/form-data",
    )


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def rows(order_id: int) -> list[Attachment]:
    return list(db.session.scalars(sa.select(Attachment).where(Attachment.order_id == order_id)))


def events(order_id: int, action: str = "attachment_added") -> list[OrderEvent]:
    return list(
        db.session.scalars(
            sa.select(OrderEvent).where(OrderEvent.order_id == order_id, OrderEvent.action == action)
        )
    )


# --- uploads ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "ext", "content_type"), [(JPEG, "jpg", "image/jpeg"), (PNG, "png", "image/png")]
)
def test_jpeg_and_png_are_stored_under_their_sha256(client, field, uploads, data, ext, content_type):
    response = upload(client, field.order.id, field.tok, data, kind="before", content_type="text/plain")

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    sha = hashlib.sha256(data).hexdigest()
    assert body == {"id": body["id"], "sha256": sha, "kind": "before"}
    assert stored_files(uploads) == [uploads / sha[:2] / f"{sha}.{ext}"]
    assert (uploads / sha[:2] / f"{sha}.{ext}").read_bytes() == data
    (row,) = rows(field.order.id)
    assert (row.content_type, row.size_bytes, row.storage_path) == (
        content_type,
        len(data),
        f"{sha[:2]}/{sha}.{ext}",
    )
    assert row.uploaded_by == field.user.id
    (event,) = events(field.order.id)
    assert event.payload == {"attachment_id": row.id, "kind": "before", "sha256": sha, "size": len(data)}
    assert event.from_status == event.to_status == "dispatched"
    assert db.session.get(Order, field.order.id).status == "dispatched"


def test_same_file_and_kind_twice_is_stored_once(client, field, uploads):
    first = upload(client, field.order.id, field.tok, JPEG, filename="a.jpg")
    second = upload(client, field.order.id, field.tok, JPEG, filename="b.jpg")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.get_json() == first.get_json()
    assert len(rows(field.order.id)) == 1
    assert len(stored_files(uploads)) == 1
    assert len(events(field.order.id)) == 1


def test_same_file_as_another_kind_is_a_second_attachment_sharing_the_file(client, field, uploads):
    assert upload(client, field.order.id, field.tok, JPEG, kind="before").status_code == 201
    assert upload(client, field.order.id, field.tok, JPEG, kind="after").status_code == 201

    assert sorted(r.kind for r in rows(field.order.id)) == ["after", "before"]
    assert len(stored_files(uploads)) == 1


@pytest.mark.parametrize(
    "data",
    [GIF, PDF, TEXT, b"\xff\xd8", b"\x89PNG\r\n"],
    ids=["gif", "pdf", "text", "short-jpeg", "short-png"],
)
def test_other_content_named_jpg_is_415_and_nothing_stored(client, field, uploads, data):
    response = upload(
        client, field.order.id, field.tok, data, filename="photo.jpg", content_type="image/jpeg"
    )

    assert response.status_code == 415, response.get_json()
    assert response.get_json()["code"] == 415
    assert "JPEG and PNG" in response.get_json()["message"]
    assert rows(field.order.id) == []
    assert stored_files(uploads) == []
    assert events(field.order.id) == []


def test_file_over_attachment_limit_is_413_and_nothing_stored(app, client, field, uploads, monkeypatch):
    monkeypatch.setitem(app.config, "ATTACHMENT_MAX_BYTES", 64)
    response = upload(client, field.order.id, field.tok, JPEG + b"x" * 64)

    assert response.status_code == 413, response.get_json()
    assert response.get_json()["code"] == 413
    assert rows(field.order.id) == []
    assert stored_files(uploads) == []


def test_file_at_attachment_limit_is_accepted(app, client, field, uploads, monkeypatch):
    monkeypatch.setitem(app.config, "ATTACHMENT_MAX_BYTES", len(JPEG))
    assert upload(client, field.order.id, field.tok, JPEG).status_code == 201


@pytest.mark.parametrize("idempotency_key", [None, "upload-too-big"])
def test_body_over_max_content_length_is_413_json_and_nothing_stored(
    app, client, field, uploads, monkeypatch, idempotency_key
):
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 512)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    response = upload(client, field.order.id, field.tok, JPEG + b"x" * 1024, headers=headers)

    assert response.status_code == 413
    assert response.get_json()["code"] == 413
    assert rows(field.order.id) == []
    assert stored_files(uploads) == []


def test_empty_file_is_422(client, field, uploads):
    response = upload(client, field.order.id, field.tok, b"")

    assert response.status_code == 422, response.get_json()
    assert "file" in response.get_json()["errors"]
    assert rows(field.order.id) == [] and stored_files(uploads) == []


@pytest.mark.parametrize(
    ("data", "kind", "field_name"),
    [(None, "before", "file"), (JPEG, None, "kind"), (JPEG, "selfie", "kind"), (JPEG, "", "kind")],
    ids=["no-file", "no-kind", "unknown-kind", "empty-kind"],
)
def test_missing_file_or_bad_kind_is_422_per_field(client, field, uploads, data, kind, field_name):
    response = upload(client, field.order.id, field.tok, data, kind=kind)

    assert response.status_code == 422, response.get_json()
    assert field_name in response.get_json()["errors"]
    assert rows(field.order.id) == [] and stored_files(uploads) == []


def test_kind_sent_as_a_file_part_is_422(client, field, uploads):
    response = client.post(
        url(field.order.id),
        headers=bearer(field.tok),
        data={"file": (io.BytesIO(JPEG), "a.jpg"), "kind": (io.BytesIO(b"before"), "kind.txt")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert "kind" in response.get_json()["errors"]


def test_json_body_is_415(client, field, uploads):
    response = client.post(
        url(field.order.id), headers=bearer(field.tok), data=b"kind=before", content_type="text/plain"
    )
    assert response.status_code == 415


@pytest.mark.parametrize(
    "filename",
    ["../../etc/passwd.jpg", "/etc/passwd.jpg", "C:\\Windows\\evil.jpg", "evil\x00.php.jpg", "..", ""],
    ids=["dotdot", "absolute", "windows", "nul", "dots", "empty"],
)
def test_path_tricks_in_filename_are_ignored(client, field, uploads, filename):
    response = upload(client, field.order.id, field.tok, JPEG, filename=filename)

    assert response.status_code == 201, response.get_json()
    sha = hashlib.sha256(JPEG).hexdigest()
    assert stored_files(uploads.parent) == [uploads / sha[:2] / f"{sha}.jpg"]
    (row,) = rows(field.order.id)
    assert row.storage_path == f"{sha[:2]}/{sha}.jpg"


def test_other_engineer_cannot_upload_to_or_download_from_the_order(client, field, uploads):
    refused = upload(client, field.order.id, field.other_tok, JPEG)
    assert refused.status_code == 404
    assert rows(field.order.id) == [] and stored_files(uploads) == []

    created = upload(client, field.order.id, field.tok, JPEG).get_json()
    download = client.get(url(field.order.id, created["id"]), headers=bearer(field.other_tok))
    assert download.status_code == 404


def test_unknown_order_is_404(client, field, uploads):
    assert upload(client, 987654, field.tok, JPEG).status_code == 404
    assert stored_files(uploads) == []


def test_closed_order_refuses_uploads_with_409(client, field, uploads):
    order = db.session.get(Order, field.order.id)
    order.status = "completed"
    db.session.commit()

    response = upload(client, field.order.id, field.tok, JPEG)
    assert response.status_code == 409
    assert rows(field.order.id) == [] and stored_files(uploads) == []


def test_device_time_is_recorded_on_the_event(client, field, uploads):
    response = client.post(
        url(field.order.id),
        headers=bearer(field.tok),
        data={"file": (io.BytesIO(PNG), "p.png"), "kind": "signature", "at": "2026-11-25T09:30:00+08:00"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()
    (event,) = events(field.order.id)
    assert event.device_time is not None


# --- idempotency --------------------------------------------------------------------------------------


def multipart_body(data: bytes, kind: str, boundary: str = "pda-boundary-1") -> tuple[bytes, str]:
    """One multipart body, byte for byte, as a PDA that stored its request would send it again."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\n{kind}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_idempotent_replay_of_an_upload_returns_the_first_response(client, field, uploads):
    body, content_type = multipart_body(JPEG, "id_card")
    headers = {**bearer(field.tok), "Idempotency-Key": "upload-1"}

    first = client.post(url(field.order.id), headers=headers, data=body, content_type=content_type)
    second = client.post(url(field.order.id), headers=headers, data=body, content_type=content_type)

    assert first.status_code == 201, first.get_json()
    assert second.status_code == 201
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.get_json() == first.get_json()
    assert len(rows(field.order.id)) == 1
    assert len(events(field.order.id)) == 1
    assert len(stored_files(uploads)) == 1


def test_same_idempotency_key_with_another_file_is_409(client, field, uploads):
    headers = {**bearer(field.tok), "Idempotency-Key": "upload-2"}
    body, content_type = multipart_body(JPEG, "before")
    other, _ = multipart_body(PNG, "before")

    assert (
        client.post(url(field.order.id), headers=headers, data=body, content_type=content_type).status_code
        == 201
    )
    conflict = client.post(url(field.order.id), headers=headers, data=other, content_type=content_type)
    assert conflict.status_code == 409
    assert len(rows(field.order.id)) == 1


# --- downloads ----------------------------------------------------------------------------------------


def console_url(order_id: int, attachment_id: int | None = None) -> str:
    base = f"/api/v1/orders/{order_id}/attachments"
    return base if attachment_id is None else f"{base}/{attachment_id}"


@pytest.fixture
def stored(client, field) -> dict[str, int]:
    """An ID photo and a before photo on engineer A's order."""
    id_card = upload(client, field.order.id, field.tok, JPEG, kind="id_card").get_json()
    before = upload(client, field.order.id, field.tok, PNG, kind="before").get_json()
    return {"id_card": id_card["id"], "before": before["id"]}


def test_engineer_downloads_own_attachment_with_safe_headers(client, field, stored):
    response = client.get(url(field.order.id, stored["id_card"]), headers=bearer(field.tok))

    assert response.status_code == 200
    assert response.data == JPEG
    assert response.mimetype == "image/jpeg"
    assert (
        response.headers["Content-Disposition"] == f'attachment; filename="id_card-{stored["id_card"]}.jpg"'
    )
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response.headers["Cache-Control"]


@pytest.mark.parametrize(
    ("role", "id_card_status", "before_status"),
    [
        ("acceptance", 200, 200),
        ("admin", 200, 200),
        ("dispatcher", 403, 200),
        ("manager", 403, 200),
    ],
)
def test_console_downloads_by_role(client, field, stored, token, role, id_card_status, before_status):
    headers = bearer(token(role))

    id_card = client.get(console_url(field.order.id, stored["id_card"]), headers=headers)
    before = client.get(console_url(field.order.id, stored["before"]), headers=headers)

    assert id_card.status_code == id_card_status
    assert before.status_code == before_status
    assert before.data == PNG
    assert before.headers["Content-Disposition"] == f'attachment; filename="before-{stored["before"]}.png"'
    if id_card_status == 200:
        assert id_card.data == JPEG
    else:
        assert id_card.get_json()["code"] == 403


@pytest.mark.parametrize(
    ("role", "kinds"), [("acceptance", ["id_card", "before"]), ("dispatcher", ["before"])]
)
def test_console_list_hides_id_photos_from_roles_that_may_not_see_them(
    client, field, stored, token, role, kinds
):
    response = client.get(console_url(field.order.id), headers=bearer(token(role)))

    assert response.status_code == 200
    assert [a["kind"] for a in response.get_json()] == kinds
    assert all(a["order_id"] == field.order.id for a in response.get_json())


def test_attachment_of_another_order_is_404(client, field, stored, make_order, token):
    other = make_order()
    headers = bearer(token("admin"))
    assert client.get(console_url(other.id, stored["before"]), headers=headers).status_code == 404
    assert client.get(console_url(field.order.id, 987654), headers=headers).status_code == 404


def test_missing_file_on_disk_is_404_not_500(client, field, stored, uploads, token):
    for path in stored_files(uploads):
        path.unlink()
    response = client.get(console_url(field.order.id, stored["before"]), headers=bearer(token("admin")))
    assert response.status_code == 404


# --- the workflow reads the kinds ---------------------------------------------------------------------


def test_submit_guard_passes_after_an_id_card_upload(client, field, uploads):
    order = db.session.get(Order, field.order.id)
    order.status = "on_site"
    order.box_id, order.port = "BOX-01", "3"
    db.session.commit()

    with pytest.raises(PreconditionFailed) as refused:
        orders.transition(field.order.id, "submit", actor=field.actor)
    assert refused.value.extra["missing"] == ["id_card_photo"]

    assert upload(client, field.order.id, field.tok, JPEG, kind="id_card").status_code == 201
    submitted = orders.transition(field.order.id, "submit", actor=field.actor)
    assert submitted.status == "pending_acceptance"


def test_idempotent_replay_with_a_new_multipart_boundary_returns_the_first_response(client, field, uploads):
    headers = {**bearer(field.tok), "Idempotency-Key": "upload-3"}
    body1, type1 = multipart_body(JPEG, "before", boundary="first-boundary")
    body2, type2 = multipart_body(JPEG, "before", boundary="second-boundary")

    first = client.post(url(field.order.id), headers=headers, data=body1, content_type=type1)
    second = client.post(url(field.order.id), headers=headers, data=body2, content_type=type2)

    assert first.status_code == 201
    assert second.status_code == 201


def test_unique_constraint_race_returns_the_winners_row(client, field, uploads, monkeypatch):
    """The look-up before the insert misses a concurrent winner: the constraint decides, theirs returns."""
    from dispatch.services import attachments

    winner = upload(client, field.order.id, field.tok, JPEG).get_json()
    real_existing = attachments._existing
    missed: list[bool] = []

    def existing_missing_the_winner_once(*args: Any) -> Any:
        if not missed:
            missed.append(True)
            return None
        return real_existing(*args)

    monkeypatch.setattr(attachments, "_existing", existing_missing_the_winner_once)

    row, created = attachments.add_attachment(field.order.id, "before", JPEG, "x.jpg", actor=field.actor)

    assert missed == [True]
    assert (row.id, created) == (winner["id"], False)
    assert len(rows(field.order.id)) == 1
    assert len(events(field.order.id)) == 1
