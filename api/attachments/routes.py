"""Attachments of an order for the console: the list and the downloads (ID photos for the desk and admins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import marshmallow as ma
from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields

from api.common.auth import current_actor
from api.common.schemas import LocalDateTime
from dispatch.models import Attachment
from dispatch.services import attachments

blp = Blueprint(
    "api-attachments", __name__, url_prefix="/api/v1/orders", description="Photos and signatures of orders"
)

DOWNLOAD_DOC: dict[str, Any] = {
    "responses": {
        "200": {
            "description": "The file, as stored (JPEG or PNG)",
            "content": {
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
}


class AttachmentSchema(ma.Schema):
    id = fields.Integer()
    order_id = fields.Integer()
    kind = fields.String()
    sha256 = fields.String()
    content_type = fields.String()
    size_bytes = fields.Integer()
    uploaded_by = fields.Integer(allow_none=True)
    created_at = LocalDateTime()


def attachment_response(attachment: Attachment, path: Path) -> Response:
    """The stored file as a download: never rendered inline, never sniffed into another type.

    Read whole (at most ATTACHMENT_MAX_BYTES) rather than streamed: no open file outlives the request."""
    response = Response(path.read_bytes(), mimetype=attachment.content_type)
    response.set_etag(attachment.sha256)
    response.make_conditional(request)
    name = f"{attachment.kind}-{attachment.id}.{attachments.extension_for(attachment)}"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"  # ID photos are personal data
    return response


@blp.route("/<int:order_id>/attachments")
class OrderAttachmentList(MethodView):
    @blp.response(200, AttachmentSchema(many=True))
    @blp.alt_response(404, description="Unknown or not visible")
    def get(self, order_id: int) -> Any:
        """The order's attachments the caller may see (ID photos only for the acceptance desk and admins)."""
        return attachments.list_attachments(order_id, actor=current_actor())


@blp.route("/<int:order_id>/attachments/<int:attachment_id>")
class OrderAttachmentFile(MethodView):
    @blp.doc(**DOWNLOAD_DOC)
    @blp.alt_response(403, description="An ID photo, for a role that may not see personal data")
    @blp.alt_response(404, description="Unknown or not visible")
    def get(self, order_id: int, attachment_id: int) -> Response:
        """Download one attachment's file."""
        attachment, path = attachments.get_attachment(order_id, attachment_id, actor=current_actor())
        return attachment_response(attachment, path)
