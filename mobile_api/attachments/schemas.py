"""Attachment schemas for the PDA: the multipart upload and what it answers."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask_smorest.fields import Upload
from marshmallow import fields, validate
from werkzeug.datastructures import FileStorage

from api.common.schemas import LocalDateTime
from dispatch.vocabulary import ATTACHMENT_KINDS


class FileField(Upload):  # type: ignore[misc]  # flask-smorest ships no types
    """A multipart file part (documented as ``string``/``binary``)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> FileStorage:
        if not isinstance(value, FileStorage):
            raise ma.ValidationError("Must be a file part of a multipart/form-data body.")
        return value


class AttachmentUploadSchema(ma.Schema):
    """``multipart/form-data``: the image in ``file``, what it shows in ``kind``."""

    file = FileField(required=True, metadata={"description": "JPEG or PNG, at most 10 MiB (by content)"})
    kind = fields.String(required=True, validate=validate.OneOf(ATTACHMENT_KINDS))
    at = LocalDateTime(metadata={"description": "When the device took it (recorded as the device time)"})


class AttachmentCreatedSchema(ma.Schema):
    id = fields.Integer(required=True)
    sha256 = fields.String(required=True)
    kind = fields.String(required=True)
