"""The contract's vocabulary (shared/CONTRACT.md §4), one place for models, schemas and the workflow."""

from __future__ import annotations

ORDER_TYPES = ("broadband_install", "iptv_install", "opportunity", "repair", "move")
ORDER_TYPE_LABELS = {
    "broadband_install": "宽带新装",
    "iptv_install": "IPTV+",
    "opportunity": "商机单",
    "repair": "修障",
    "move": "移机",
}
PAY_MODES = ("install_then_pay", "prepaid")
PRIORITIES = ("low", "normal", "high", "urgent")

STATUSES = (
    "new",
    "dispatched",
    "taken",
    "appointed",
    "on_site",
    "pending_acceptance",
    "in_progress",
    "completed",
    "suspended",
    "returned",
    "cancelled",
)
STATUS_LABELS = {
    "new": "待派单",
    "dispatched": "已派单",
    "taken": "已接单",
    "appointed": "已预约",
    "on_site": "已上门",
    "pending_acceptance": "待受理",
    "in_progress": "施工中",
    "completed": "已竣工",
    "suspended": "挂起",
    "returned": "退单",
    "cancelled": "撤单",
}
CLOSED_STATUSES = frozenset({"completed", "cancelled"})
OPEN_STATUSES = tuple(s for s in STATUSES if s not in CLOSED_STATUSES)

SUSPEND_REASONS = (
    "customer_unavailable",
    "customer_postponed",
    "no_resource",
    "third_party",
    "force_majeure",
)
CUSTOMER_CAUSED_SUSPEND_REASONS = frozenset({"customer_unavailable", "customer_postponed"})
RETURN_REASONS = ("no_resource", "wrong_address", "customer_refused", "duplicate", "other")
CUSTOMER_CAUSED_RETURN_REASONS = frozenset({"customer_refused"})
RESCHEDULE_REASONS = ("customer", "provider")
CONTACT_OUTCOMES = ("reached", "no_answer", "busy", "wrong_number")
# Why auto-dispatch must not give an order to an engineer again (dispatch.models.AssignmentExclusion).
EXCLUSION_REASONS = ("returned", "take_breach")

ATTACHMENT_KINDS = ("id_card", "before", "after", "ont_label", "signature")

ROLES = ("admin", "dispatcher", "acceptance", "manager", "engineer")
API_KEY_SCOPES = ("intake", "billing")

COMPLAINT_CATEGORIES = ("backend_first_contact", "appointment", "escalated")
COMPLAINT_CAUSES = ("installation_service", "network", "other")

INSTALL_TYPES = frozenset({"broadband_install", "iptv_install", "move", "opportunity"})
# Targets are for escalated complaints of these causes only (DOMAIN.md "KPIs": 0 a day).
ESCALATED_TARGET_CAUSES = frozenset({"installation_service", "network"})

CANCEL_REASONS = ("customer_withdrew", "duplicate", "provider", "other")
CUSTOMER_CAUSED_CANCEL_REASONS = frozenset({"customer_withdrew"})

BILLING_EVENT_TYPES = ("order.completed", "order.cancelled", "complaint.recorded", "kpi.daily")


def parse_pairs(text: str | None, allowed: tuple[str, ...]) -> dict[str, str]:
    """``name=value,name=value`` (a setting over one of these vocabularies) → raw values by name."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or name not in allowed:
            raise ValueError(f"expected name=value with a name from {', '.join(allowed)}, got {part!r}")
        out[name] = raw.strip()
    return out
