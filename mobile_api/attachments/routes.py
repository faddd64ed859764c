"""PDA uploads of photos and signatures (multipart), and downloads of the engineer's own."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint

from api import ops
from api.attachments.routes import DOWNLOAD_DOC, attachment_response
from api.common.auth import current_actor
from dispatch.errors import ValidationError
from dispatch.services import attachments
from mobile_api.attachments.schemas import AttachmentCreatedSchema, AttachmentUploadSchema

blp = Blueprint(
    "mobile-attachments", __name__, url_prefix="/mobile/v1/orders", description="PDA photos and signatures"
)

UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": AttachmentUploadSchema}},
    }
}


@blp.route("/<int:order_id>/attachments")
class OrderAttachments(MethodView):
    @blp.doc(**UPLOAD_DOC)
    @blp.response(201, AttachmentCreatedSchema, description="Stored")
    @blp.alt_response(
        200, schema=AttachmentCreatedSchema, description="The same file and kind were already stored"
    )
    @blp.alt_response(404, description="Unknown or not the engineer's order")
    @blp.alt_response(409, description="The order is closed")
    @blp.alt_response(413, description="File too large")
    @blp.alt_response(415, description="Not a JPEG or PNG (judged by the content)")
    @blp.alt_response(422, description="Missing or empty file, or unknown kind")
    def post(self, order_id: int) -> Any:
        """Upload a photo or signature (multipart: ``file``, ``kind``)."""
        actor = current_actor()
        try:
            args = AttachmentUploadSchema().load({**request.form.to_dict(), **request.files.to_dict()})
        except ma.ValidationError as exc:
            raise ValidationError(errors=exc.messages) from None
        upload = args["file"]
        attachment, created = attachments.add_attachment(
            order_id, args["kind"], upload.read(), upload.filename, actor=actor, device_time=args.get("at")
        )
        return attachment, 201 if created else 200


ops.MULTIPART_ENDPOINTS.add(f"{blp.name}.{OrderAttachments.__name__}")


@blp.route("/<int:order_id>/attachments/<int:attachment_id>")
class OrderAttachmentDownload(MethodView):
    @blp.doc(**DOWNLOAD_DOC)
    @blp.alt_response(404, description="Unknown or not the engineer's order")
    def get(self, order_id: int, attachment_id: int) -> Response:
        """Download one of the engineer's own attachments."""
        attachment, path = attachments.get_attachment(order_id, attachment_id, actor=current_actor())
        return attachment_response(attachment, path)
