"""The engineers' PDA API (/mobile/v1): its own blueprints and schemas, on the app's one OpenAPI document."""

from mobile_api.attachments.routes import blp as attachments_blp
from mobile_api.auth.routes import blp as auth_blp
from mobile_api.orders.routes import blp as orders_blp

MODULES = (auth_blp, attachments_blp, orders_blp)
