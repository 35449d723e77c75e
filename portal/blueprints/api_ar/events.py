"""`GET /api/ar/events?after=`: the receivables system's feed of what happened in the portal,
in commit order, each event once across pages and restarts (portal/services/ar_events.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from portal import api, tenancy
from portal.api import OPERATOR_SECURITY, ProblemDetail, spec
from portal.blueprints.api_ar.blueprint import TAGS, bp
from portal.extensions import db_session
from portal.models import Company
from portal.services import ar_events


class EventsQuery(BaseModel):
    after: str | None = Field(
        default=None,
        max_length=200,
        description="`next_cursor` of the previous page; leave out to start at the beginning.",
    )
    limit: int = Field(default=100, ge=1, le=ar_events.MAX_PAGE)


class EventOut(BaseModel):
    id: str = Field(description="Unique and stable: receivers dedupe on it (Portal-Event-Id).")
    kind: str = Field(description='e.g. "payment.succeeded", "dispute.opened".')
    subject_id: str = Field(description="The public id the event is about.")
    company_id: str | None = Field(description="The customer's public id.")
    occurred_at: str = Field(description="ISO 8601.")
    data: dict[str, Any]


class EventsOut(BaseModel):
    events: list[EventOut]
    next_cursor: str = Field(
        description="Send it back as `after`: the next page, or (on the last one) what "
        "happens from now on. Keep it between runs: nothing is handed out twice."
    )
    limit: int


START = (0, 0)


@bp.get("/events")
@spec.validate(
    query=EventsQuery,
    resp=api.answers(HTTP_200=EventsOut, HTTP_400=ProblemDetail),
    tags=TAGS,
    security=OPERATOR_SECURITY,
)
def events(query: EventsQuery) -> EventsOut:
    """Events after the cursor (payments made and failed, disputes, profile changes), oldest
    first, only those whose transactions every reader can already see."""
    after = START
    if query.after is not None:
        txid, event_id = api.decode_cursor(query.after, (int, int))
        if txid < 0 or event_id < 0:
            api.fail(400, errors=[("after", "invalid")])
        after = (txid, event_id)
    db = db_session()
    with tenancy.system(db):
        found = ar_events.page(db, after, query.limit)
        ids = {e.company_id for e in found.events}
        rows = db.execute(select(Company.id, Company.public_id).where(Company.id.in_(ids)))
        companies: dict[int, str] = {row[0]: row[1] for row in rows}
    return EventsOut(
        events=[
            EventOut(
                id=str(e.id),
                kind=e.kind,
                subject_id=e.subject_id,
                company_id=companies.get(e.company_id),
                occurred_at=e.occurred_at.isoformat(),
                data=ar_events.as_dict(e),
            )
            for e in found.events
        ],
        next_cursor=api.encode_cursor(list(found.cursor)),
        limit=query.limit,
    )
