"""SMS templates: admins edit the Chinese texts; the dispatch desk may read them."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.auth import current_actor
from api.sms_templates.schemas import SmsTemplateSchema, SmsTemplateUpdateSchema
from dispatch.services import sms_templates

blp = Blueprint(
    "api-sms-templates", __name__, url_prefix="/api/v1/sms-templates", description="SMS templates"
)


@blp.route("")
class SmsTemplates(MethodView):
    @blp.response(200, SmsTemplateSchema(many=True))
    def get(self) -> Any:
        """List every SMS template with its default and the parts its sample rendering takes."""
        return sms_templates.list_templates(actor=current_actor())


@blp.route("/<key>")
class SmsTemplateByKey(MethodView):
    @blp.arguments(SmsTemplateUpdateSchema)
    @blp.response(200, SmsTemplateSchema)
    @blp.alt_response(404, description="Unknown template")
    def put(self, data: dict[str, Any], key: str) -> Any:
        """Replace a template's text (at most two SMS parts with sample data), or restore it with null."""
        return sms_templates.set_template(key, data["body"], actor=current_actor())
