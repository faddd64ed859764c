"""SQLAlchemy models, one module per aggregate; importing this package registers them all."""

from dispatch.models.base import Base
from dispatch.models.complaints import Complaint
from dispatch.models.engineers import (
    Engineer,
    EngineerLeave,
    EngineerShift,
    EngineerSkill,
    Team,
    engineer_districts,
)
from dispatch.models.feed import BillingEvent, BillingPushState
from dispatch.models.geo import District, GeocodeCacheEntry
from dispatch.models.idempotency import IdempotencyRecord
from dispatch.models.messages import InboundMessage, SatisfactionResponse, SmsOptOut, SmsTemplate
from dispatch.models.orders import Address, AssignmentExclusion, Attachment, Customer, Order, OrderEvent
from dispatch.models.outbox import OutboxMessage
from dispatch.models.planning import DayPlan, PlanVisit
from dispatch.models.reporting import KpiDaily, KpiDayClose, KpiDelta, KpiOrderFacts
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
    "BillingEvent",
    "BillingPushState",
    "Complaint",
    "Customer",
    "DayPlan",
    "District",
    "GeocodeCacheEntry",
    "Engineer",
    "EngineerLeave",
    "EngineerShift",
    "EngineerSkill",
    "IdempotencyRecord",
    "InboundMessage",
    "KpiDaily",
    "KpiDayClose",
    "KpiDelta",
    "KpiOrderFacts",
    "Order",
    "OrderEvent",
    "OutboxMessage",
    "PlanVisit",
    "SatisfactionResponse",
    "SlaClock",
    "SlaPolicy",
    "SmsOptOut",
    "SmsTemplate",
    "Team",
    "User",
    "engineer_districts",
]
