"""The append-only event log: the runbook's Portal.* events and security events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from portal.models import AuditEvent, PortalUser

# Properties that must never reach the log, whatever a caller passes.
_FORBIDDEN = frozenset({"password", "card_number", "cvv", "cvc", "code", "secret", "token"})


@dataclass(frozen=True)
class RequestInfo:
    ip_address: str = ""
    user_agent: str = ""


def record(
    session: Session,
    name: str,
    *,
    company_id: int | None,
    user_id: int | None = None,
    request: RequestInfo | None = None,
    **properties: Any,
) -> AuditEvent:
    leaked = _FORBIDDEN.intersection(properties)
    if leaked:
        raise ValueError(f"refusing to log secret properties: {sorted(leaked)}")
    info = request or RequestInfo()
    event = AuditEvent(
        company_id=company_id,
        user_id=user_id,
        name=name,
        properties=properties,
        ip_address=info.ip_address[:64],
        user_agent=info.user_agent[:400],
    )
    session.add(event)
    return event


def record_for(
    session: Session,
    user: PortalUser,
    name: str,
    *,
    request: RequestInfo | None = None,
    **properties: Any,
) -> AuditEvent:
    """An event about something this user did (their company and id filled in)."""
    return record(
        session, name, company_id=user.company_id, user_id=user.id, request=request, **properties
    )
