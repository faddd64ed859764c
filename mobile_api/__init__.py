"""The engineers' PDA API (/mobile/v1): its own blueprints and schemas, on the app's one OpenAPI document."""

from mobile_api.auth.routes import blp as auth_blp

MODULES = (auth_blp,)
