"""Who is acting. Every service takes an explicit :class:`Actor`; authorization happens in the services."""

from __future__ import annotations

from dataclasses import dataclass, field

from dispatch.errors import PermissionDenied


@dataclass(frozen=True)
class Actor:
    """A user (with a role), a system API key (with scopes) or the system itself (the scheduler, the CLI)."""

    kind: str  # "user", "api_key" or "system"
    id: int | None
    name: str
    role: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    engineer_id: int | None = None
    source: str = "api"
    device_id: str | None = None
    # An API key taken from the process's memory rather than read: the request confirms it before it changes
    # anything (dispatch.services.auth.confirm_key).
    key_from_memory: bool = False

    @classmethod
    def system(cls, name: str = "scheduler", source: str = "scheduler") -> Actor:
        return cls(kind="system", id=None, name=name, source=source)

    @property
    def principals(self) -> frozenset[str]:
        """The names permissions are granted to: a user's role, a key's scopes, or ``system``."""
        if self.kind == "user":
            return frozenset({self.role}) if self.role else frozenset()
        if self.kind == "api_key":
            return self.scopes
        return frozenset({"system"})

    @property
    def is_engineer(self) -> bool:
        return self.kind == "user" and self.role == "engineer"


def require(actor: Actor, allowed: frozenset[str] | set[str] | tuple[str, ...], what: str = "this") -> None:
    """Raise 403 unless one of the actor's principals is allowed."""
    if not actor.principals & frozenset(allowed):
        raise PermissionDenied(f"{actor.role or actor.kind} may not {what}")


# Who may do what outside the order lifecycle (the lifecycle's own table is in dispatch.workflow).
READ_ORDERS = frozenset({"dispatcher", "acceptance", "manager", "admin"})
MANAGE_ENGINEERS = frozenset({"admin"})
READ_ENGINEERS = frozenset({"admin", "dispatcher", "manager"})
INTAKE = frozenset({"intake"})
# The hotline records complaints over the intake API; dispatchers and admins enter phoned-in ones (console).
RECORD_COMPLAINTS = INTAKE | {"dispatcher", "admin"}
READ_COMPLAINTS = frozenset({"dispatcher", "manager", "admin"})
READ_REPORTS = frozenset({"manager", "admin"})
