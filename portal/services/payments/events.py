"""The gateways' webhook events the portal has seen (a replay is recognised by its id)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.gateways import (
    ChargeEvent,
)
from portal.models import (
    GatewayEvent,
)

# gateway callbacks ------------------------------------------------------------------------


class WebhookOutcome(enum.StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"  # already in that state, or a late event for a settled payment
    DUPLICATE = "duplicate"  # this event id was seen before
    IGNORED = "ignored"  # not an event the portal acts on, or not one of its payments


def record_event(session: Session, gateway_name: str, event: ChargeEvent, now: datetime) -> bool:
    """Remember the event id; False when it was already there (a replay)."""
    try:
        with session.begin_nested():
            session.add(
                GatewayEvent(
                    gateway=gateway_name,
                    event_id=event.event_id,
                    kind=event.kind[:60],
                    reference=event.reference,
                    received_at=now,
                )
            )
    except IntegrityError:
        return False
    return True
