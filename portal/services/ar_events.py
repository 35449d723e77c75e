"""The receivables system's event feed (`ar_events`): what it should learn of, written in the
same transaction as the change (`record`), read in commit order (`page`), and optionally
pushed to a signed webhook (`deliver`).

Commit order on PostgreSQL: ids come from a sequence when a row is inserted, so a row with a
lower id may commit after one with a higher id; a reader paging by id alone would step past the
lower one for good. Each row carries the id of the transaction that wrote it (`txid`, a server
default); the feed hands out only rows whose transaction is older than every transaction still
running (`pg_snapshot_xmin` of the reader's snapshot), ordered by (txid, id). Any row written
later belongs to a transaction at or above that horizon, so it sorts after every cursor handed
out: each event is handed out once, across pages and restarts. On SQLite writers are serialized
(one write lock), so the id order is the commit order and txid reads as 0.

The cursor is the last row's (txid, id), the same shape on both databases.

Webhook delivery (AR_WEBHOOK_URL, AR_WEBHOOK_SECRET) is at least once: an attempt is counted
(committed) before the POST, the row is marked delivered (a conditional UPDATE) after a 2xx;
a process that dies between the two sends again. Receivers dedupe on `Portal-Event-Id`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, select, text, tuple_, update
from sqlalchemy.orm import Session

from portal.models import ArEvent

# What the feed says happened (`kind`).
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
DISPUTE_OPENED = "dispute.opened"
DISPUTE_REPLIED = "dispute.replied"
DISPUTE_MESSAGE = "dispute.message"
DISPUTE_WITHDRAWN = "dispute.withdrawn"
DISPUTE_RESOLVED = "dispute.resolved"
PROFILE_UPDATED = "profile.updated"
EMAIL_CHANGED = "profile.email_changed"
INVOICE_VOIDED = "invoice.voided"
INVOICE_CREDITED = "invoice.credited"

# Written by `record` in this transaction, for the runtime to hand their webhooks off before
# the commit (portal/runtime.py); cleared on rollback.
WRITTEN_IDS = "portal.ar_events.new"
_FORBIDDEN = frozenset({"card_number", "cvc", "password", "token", "secret", "gateway_token"})
MAX_PAGE = 500
WEBHOOK_TIMEOUT = 10.0


def record(
    session: Session, company_id: int, kind: str, subject_id: str, data: Mapping[str, Any]
) -> ArEvent:
    """Add an event in the caller's transaction (flushed, never committed here)."""
    leaked = _FORBIDDEN.intersection(data)
    if leaked:
        raise ValueError(f"refusing to publish secret fields: {sorted(leaked)}")
    event = ArEvent(
        company_id=company_id,
        kind=kind,
        subject_id=subject_id,
        data=json.dumps(dict(data), separators=(",", ":"), sort_keys=True, default=str),
    )
    session.add(event)
    session.flush()
    session.info.setdefault(WRITTEN_IDS, []).append(event.id)
    return event


def written(session: Session) -> list[int]:
    """Ids of the events this transaction wrote and not yet handed off (and forget them)."""
    found: list[int] = session.info.pop(WRITTEN_IDS, [])
    return found


def forget(session: Session) -> None:
    session.info.pop(WRITTEN_IDS, None)


# the feed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    events: list[ArEvent]
    cursor: tuple[int, int]  # the last row's (txid, id); the one passed in when none


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def page(session: Session, after: tuple[int, int], limit: int) -> Page:
    """Up to `limit` events after the cursor `after` (txid, id), in commit-safe order. The
    caller holds the tenancy system scope (the feed crosses companies)."""
    limit = max(1, min(limit, MAX_PAGE))
    after_txid, after_id = after
    query = select(ArEvent)
    if _is_postgres(session):
        horizon = session.scalar(
            text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        )
        query = query.where(
            ArEvent.txid < literal(int(horizon or 0)),
            tuple_(ArEvent.txid, ArEvent.id) > tuple_(literal(after_txid), literal(after_id)),
        ).order_by(ArEvent.txid, ArEvent.id)
    else:
        query = query.where(ArEvent.id > after_id).order_by(ArEvent.id)
    events = list(session.scalars(query.limit(limit)))
    if not events:
        return Page(events=[], cursor=after)
    last = events[-1]
    return Page(events=events, cursor=(int(last.txid or 0), last.id))


def as_dict(event: ArEvent) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event.data or "{}")
    return data


# webhooks ---------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` (the Stripe scheme)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


SIGNATURE_TOLERANCE = 300  # seconds a receiver accepts a signature's time off its clock


def verify(secret: str, header: str, body: bytes, *, now: datetime | None = None) -> bool:
    """What a receiver does (the tests do it too): the HMAC over the raw body, compared in
    constant time, and (given `now`) a time within SIGNATURE_TOLERANCE (no old replays)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if now is not None and abs(now.timestamp() - timestamp) > SIGNATURE_TOLERANCE:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookFailed(RuntimeError):
    """The receiver did not take the event (no answer, or not a 2xx): try again later."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The event goes to AR_WEBHOOK_URL only: a redirect is the receiver's answer (a failed
    delivery), never followed (urllib would turn the POST into a GET of another URL, body
    dropped, and its 200 would count as delivered)."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def begin_attempt(session: Session, event_id: int) -> ArEvent | None:
    """Count an attempt under the row's lock (the caller commits before sending); None when
    the event is already delivered (or gone): a job run twice sends nothing the second time."""
    event = session.get(ArEvent, event_id, with_for_update=True, populate_existing=True)
    if event is None or event.webhook_delivered_at is not None:
        return None
    event.webhook_attempts += 1
    return event


def body_of(event: ArEvent, company_public_id: str | None) -> bytes:
    return json.dumps(
        {
            "id": str(event.id),
            "kind": event.kind,
            "subject_id": event.subject_id,
            "company_id": company_public_id,
            "occurred_at": event.occurred_at.isoformat(),
            "data": as_dict(event),
        },
        separators=(",", ":"),
    ).encode()


def send(url: str, secret: str, event_id: int, body: bytes, *, now: datetime) -> int:
    """POST the event, signed; the receiver's status, or WebhookFailed."""
    timestamp = int(now.timestamp())
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's setting
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Portal-Event-Id": str(event_id),
            "Portal-Signature": signature(secret, timestamp, body),
            "User-Agent": "billing-portal-webhooks/1",
        },
    )
    try:
        with _OPENER.open(request, timeout=WEBHOOK_TIMEOUT) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as error:
        raise WebhookFailed(f"the receiver answered {error.code}") from error
    except (urllib.error.URLError, OSError) as error:
        raise WebhookFailed(f"no answer: {error}") from error
    if not 200 <= status < 300:
        raise WebhookFailed(f"the receiver answered {status}")
    return status


def mark_delivered(session: Session, event_id: int, now: datetime) -> bool:
    """True for the one run that marks it (conditional UPDATE)."""
    result = session.execute(
        update(ArEvent)
        .where(ArEvent.id == event_id, ArEvent.webhook_delivered_at.is_(None))
        .values(webhook_delivered_at=now, webhook_last_error="")
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def mark_failed(session: Session, event_id: int, error: str) -> None:
    session.execute(
        update(ArEvent)
        .where(ArEvent.id == event_id)
        .values(webhook_last_error=error[:300])
        .execution_options(synchronize_session=False)
    )


def count(session: Session, kinds: Sequence[str] = ()) -> int:
    query = select(func.count()).select_from(ArEvent)
    if kinds:
        query = query.where(ArEvent.kind.in_(list(kinds)))
    return int(session.scalar(query) or 0)
