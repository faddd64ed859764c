"""Photos and signatures from the site (CONTRACT §5 "Mobile / PDA"; DOMAIN.md "Field data").

Files are content-addressed under ``UPLOAD_DIR`` as ``<first 2 hex>/<sha256>.<jpg|png>``: the client's
filename and declared content type are never used, the type is decided by the file's first bytes. A file is
written to a temporary file in its final directory and moved into place with ``os.replace``, so a crash leaves
no partial file under the final name; its row is committed only once the file exists. The same file (same
SHA-256 and kind) on the same order is stored once: the unique constraint decides races, the loser gets the
winner's row.

Who may download (the ID photo is personal data): the order's engineer, the acceptance desk and admins see
every kind; dispatchers and managers every kind but ``id_card``, which is a 403 for them (the order itself is
visible to them, so a 404 would misstate why) and left out of their lists.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.clock import utcnow
from dispatch.errors import Conflict, DispatchError, NotFound, PermissionDenied, ValidationError
from dispatch.extensions import db
from dispatch.models import Attachment, Order
from dispatch.services import orders
from dispatch.vocabulary import ATTACHMENT_KINDS, CLOSED_STATUSES

DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # ATTACHMENT_MAX_BYTES
PERSONAL_KINDS = frozenset({"id_card"})
# Roles that see every kind, personal data included (besides the order's own engineer).
PERSONAL_DATA_READERS = frozenset({"acceptance", "admin"})


class PayloadTooLarge(DispatchError):
    http_status = 413
    default_message = "File too large"


class UnsupportedMediaType(DispatchError):
    http_status = 415
    default_message = "Unsupported media type"


@dataclass(frozen=True)
class FileType:
    content_type: str
    extension: str
    magic: bytes


FILE_TYPES = (
    FileType("image/jpeg", "jpg", b"\xff\xd8\xff"),
    FileType("image/png", "png", b"\x89PNG\r\n\x1a\n"),
)


def sniff(data: bytes) -> FileType | None:
    """The accepted type whose signature ``data`` starts with, or None."""
    return next((t for t in FILE_TYPES if data.startswith(t.magic)), None)


def max_bytes() -> int:
    return int(current_app.config.get("ATTACHMENT_MAX_BYTES", DEFAULT_MAX_BYTES))


def upload_root() -> Path:
    return Path(current_app.config["UPLOAD_DIR"]).resolve()


def storage_path_for(sha256: str, file_type: FileType) -> str:
    """Where a file lives, relative to UPLOAD_DIR: derived from its digest only."""
    return f"{sha256[:2]}/{sha256}.{file_type.extension}"


def _write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` via a temporary file in the same directory and ``os.replace``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _existing(order_id: int, sha256: str, kind: str) -> Attachment | None:
    return db.session.scalar(
        sa.select(Attachment).where(
            Attachment.order_id == order_id, Attachment.sha256 == sha256, Attachment.kind == kind
        )
    )


def _validate(kind: str, data: bytes) -> FileType:
    if kind not in ATTACHMENT_KINDS:
        raise ValidationError(errors={"kind": [f"Must be one of: {', '.join(ATTACHMENT_KINDS)}."]})
    if not data:
        raise ValidationError(errors={"file": ["The file is empty."]})
    limit = max_bytes()
    if len(data) > limit:
        raise PayloadTooLarge(f"File is {len(data)} bytes; at most {limit} bytes are accepted")
    file_type = sniff(data)
    if file_type is None:
        raise UnsupportedMediaType("Only JPEG and PNG images are accepted (judged by the file's content)")
    return file_type


def _load_for_engineer(order_id: int, actor: Actor) -> Order:
    if not actor.is_engineer:
        raise PermissionDenied(f"{actor.role or actor.kind} may not upload attachments")
    order = orders.get_order(order_id, actor=actor, for_update=True)  # another engineer's order: 404
    if order.status in CLOSED_STATUSES:
        raise Conflict(f"Cannot add attachments to an order that is {order.status}", status=order.status)
    return order


def add_attachment(
    order_id: int,
    kind: str,
    data: bytes,
    filename: str | None,
    *,
    actor: Actor,
    device_time: datetime | None = None,
) -> tuple[Attachment, bool]:
    """Store a photo or signature on the engineer's open order; the same file and kind again is a no-op."""
    del filename  # never used for the name, the path or the type (it is the client's, and may be hostile)
    file_type = _validate(kind, data)
    order = _load_for_engineer(order_id, actor)
    sha256 = hashlib.sha256(data).hexdigest()
    found = _existing(order.id, sha256, kind)
    if found is not None:
        return found, False

    relative = storage_path_for(sha256, file_type)
    target = upload_root() / relative
    if not target.is_file():  # content-addressed: an existing file already holds exactly these bytes
        _write_atomically(target, data)

    now = utcnow()
    attachment = Attachment(
        order_id=order.id,
        kind=kind,
        sha256=sha256,
        content_type=file_type.content_type,
        size_bytes=len(data),
        storage_path=relative,
        uploaded_by=actor.id,
        created_at=now,
    )
    try:
        with orders.committing():
            db.session.add(attachment)
            db.session.flush()
            workflow.record_event(
                order,
                "attachment_added",
                actor,
                now=now,
                from_status=order.status,
                to_status=order.status,
                device_time=device_time,
                payload={"attachment_id": attachment.id, "kind": kind, "sha256": sha256, "size": len(data)},
            )
    except IntegrityError:
        # A concurrent upload of the same file and kind won the unique constraint: theirs is the row.
        db.session.rollback()
        winner = _existing(order_id, sha256, kind)
        if winner is None:
            raise
        return winner, False
    return attachment, True


def may_see(actor: Actor, kind: str) -> bool:
    """Whether an actor who can see the order may also see an attachment of this kind."""
    if kind not in PERSONAL_KINDS:
        return True
    return actor.is_engineer or bool(actor.principals & PERSONAL_DATA_READERS)


def list_attachments(order_id: int, *, actor: Actor) -> list[Attachment]:
    """The order's attachments the actor may see, oldest first (ID photos only for those allowed)."""
    order = orders.get_order(order_id, actor=actor)
    rows = db.session.scalars(
        sa.select(Attachment).where(Attachment.order_id == order.id).order_by(Attachment.id)
    )
    return [row for row in rows if may_see(actor, row.kind)]


def get_attachment(order_id: int, attachment_id: int, *, actor: Actor) -> tuple[Attachment, Path]:
    """One attachment and the path of its file; an ID photo is a 403 for dispatchers and managers."""
    order = orders.get_order(order_id, actor=actor)
    if not 0 < attachment_id <= orders.MAX_ID:
        raise NotFound(f"Attachment {attachment_id} not found")
    attachment = db.session.scalar(
        sa.select(Attachment).where(Attachment.id == attachment_id, Attachment.order_id == order.id)
    )
    if attachment is None:
        raise NotFound(f"Attachment {attachment_id} not found")
    if not may_see(actor, attachment.kind):
        raise PermissionDenied(f"{actor.role or actor.kind} may not see ID photos (personal data)")
    root = upload_root()
    path = (root / attachment.storage_path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"The file of attachment {attachment_id} is missing")
    return attachment, path


def extension_for(attachment: Attachment) -> str:
    return next((t.extension for t in FILE_TYPES if t.content_type == attachment.content_type), "bin")
