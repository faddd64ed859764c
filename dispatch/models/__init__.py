"""SQLAlchemy models, one module per aggregate; importing this package registers them all."""

from dispatch.models.base import Base
from dispatch.models.engineers import (
    Engineer,
    EngineerLeave,
    EngineerShift,
    EngineerSkill,
    Team,
    engineer_districts,
)
from dispatch.models.geo import District, GeocodeCacheEntry
from dispatch.models.idempotency import IdempotencyRecord
from dispatch.models.orders import Address, AssignmentExclusion, Attachment, Customer, Order, OrderEvent
from dispatch.models.outbox import OutboxMessage
from dispatch.models.sla import Alert, SlaClock, SlaPolicy
from dispatch.models.users import ApiKey, AuthToken, User

__all__ = [
    "Address",
    "Alert",
    "AssignmentExclusion",
    "ApiKey",
    "Attachment",
    "AuthToken",
    "Base",
    "Customer",
    "District",
    "GeocodeCacheEntry",
    "Engineer",
    "EngineerLeave",
    "EngineerShift",
    "EngineerSkill",
    "IdempotencyRecord",
    "Order",
    "OrderEvent",
    "OutboxMessage",
    "SlaClock",
    "SlaPolicy",
    "Team",
    "User",
    "engineer_districts",
]
