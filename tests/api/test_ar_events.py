"""The receivables feed (`GET /api/ar/events`), operator keys and the events the portal writes
in the same transaction as its changes. Both backends (the shared test transaction); the
commit-order property on PostgreSQL is in test_ar_events_postgres.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import api, tenancy
from portal.gateways import ChargeResult, ChargeStatus
from portal.models import ArEvent, Company, Invoice, InvoiceStatus, PaymentStatus
from portal.services import api_tokens, ar_events
from portal.services.payments import transitions
from tests.api.conftest import PROBLEM, SpecCheck
from tests.factories import make_payment

PATH = "/api/ar/events"


@pytest.fixture
def operator(app: Flask, db: Session) -> dict[str, str]:
    now = app.extensions["portal.clock"].now()
    _key, raw = api_tokens.create_key(db, name="ar-test", now=now)
    db.flush()
    return {"Authorization": f"Bearer {raw}"}


def _company(db: Session, public_id: str = "") -> Company:
    with tenancy.system(db):
        query = select(Company).order_by(Company.id)
        return db.scalars(query).first() if not public_id else db.scalars(query).one()


def _events(db: Session, n: int, *, txid: int = 1) -> list[ArEvent]:
    """Events as committed long ago (a small txid: below every reader's horizon)."""
    company = _company(db)
    made = []
    with tenancy.system(db):
        for i in range(n):
            event = ArEvent(
                company_id=company.id,
                kind="test.happened",
                subject_id=f"tst_{i}",
                data=json.dumps({"n": i}),
                txid=txid,
            )
            db.add(event)
            made.append(event)
        db.flush()
    return made


def _all(client: FlaskClient, headers: dict[str, str], limit: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(1000):
        query = {"limit": limit} | ({"after": after} if after else {})
        body = client.get(PATH, query_string=query, headers=headers).get_json()
        if not body["events"]:
            return seen
        seen.extend(body["events"])
        after = body["next_cursor"]
    raise AssertionError("the feed never ended")


def test_the_feed_needs_an_operator_key(
    client: FlaskClient, bearer: Callable[..., dict[str, str]], spec_check: SpecCheck
) -> None:
    for headers in ({}, bearer(), {"Authorization": "Bearer ark_nope"}):
        response = client.get(PATH, headers=headers)
        assert response.status_code == 401
        assert response.mimetype == PROBLEM
        spec_check(response, PATH)


def test_a_revoked_key_is_refused(
    app: Flask, client: FlaskClient, db: Session, operator: dict[str, str]
) -> None:
    assert client.get(PATH, headers=operator).status_code == 200
    from portal.models import ArKey

    key = db.scalars(select(ArKey).where(ArKey.name == "ar-test")).one()
    key.revoked_at = app.extensions["portal.clock"].now()
    db.flush()
    assert client.get(PATH, headers=operator).status_code == 401


def test_pages_hand_out_each_event_once_in_order(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    made = _events(db, 7)
    first = client.get(PATH, query_string={"limit": 3}, headers=operator)
    assert first.status_code == 200, first.get_data(as_text=True)
    body = spec_check(first, PATH)
    assert len(body["events"]) == 3 and body["limit"] == 3
    seen = [e["id"] for e in _all(client, operator, 3)]
    mine = [str(e.id) for e in made]
    assert [i for i in seen if i in mine] == mine  # each once, in the order written
    assert len(seen) == len(set(seen))
    event = next(e for e in _all(client, operator, 100) if e["id"] == mine[0])
    assert event["kind"] == "test.happened" and event["data"] == {"n": 0}
    assert event["company_id"].startswith("cus_") or event["company_id"]


def test_the_last_cursor_waits_for_what_comes_next(
    client: FlaskClient, db: Session, operator: dict[str, str]
) -> None:
    _events(db, 2)
    everything = client.get(PATH, query_string={"limit": 500}, headers=operator).get_json()
    cursor = everything["next_cursor"]
    empty = client.get(PATH, query_string={"after": cursor}, headers=operator).get_json()
    assert empty["events"] == [] and empty["next_cursor"] == cursor
    later = _events(db, 1, txid=2)
    found = client.get(PATH, query_string={"after": cursor}, headers=operator).get_json()
    assert [e["id"] for e in found["events"]] == [str(later[0].id)]


@pytest.mark.parametrize(
    "query",
    [
        {"after": "not a cursor"},
        {"after": "%%%"},
        {"after": api.encode_cursor(["a", 1])},
        {"after": api.encode_cursor([1])},
        {"after": api.encode_cursor([-1, 5])},
        {"after": api.encode_cursor([True, 5])},
        {"after": "x" * 300},
        {"limit": 0},
        {"limit": 501},
        {"limit": "many"},
    ],
)
def test_bad_input_is_a_400(
    client: FlaskClient, operator: dict[str, str], spec_check: SpecCheck, query: dict[str, Any]
) -> None:
    response = client.get(PATH, query_string=query, headers=operator)
    assert response.status_code == 400, response.get_data(as_text=True)
    spec_check(response, PATH)


def test_statements_do_not_grow_with_the_page(
    client: FlaskClient, db: Session, operator: dict[str, str], count_queries: Any
) -> None:
    _events(db, 60)
    client.get(PATH, headers=operator)  # the key's last use is written once a minute
    counts = []
    for limit in (5, 60):
        before = count_queries.count
        response = client.get(PATH, query_string={"limit": limit}, headers=operator)
        assert response.status_code == 200
        counts.append(count_queries.count - before)
    assert counts[0] == counts[1] <= 6, counts


def _processing_payment(db: Session) -> Any:
    with tenancy.system(db):
        invoice = db.scalars(
            select(Invoice).where(Invoice.status == InvoiceStatus.OPEN).order_by(Invoice.id)
        ).first()
        assert invoice is not None
        return make_payment(db, invoice, status=PaymentStatus.PROCESSING)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (ChargeStatus.SUCCEEDED, ar_events.PAYMENT_SUCCEEDED),
        (ChargeStatus.FAILED, ar_events.PAYMENT_FAILED),
    ],
)
def test_a_payments_outcome_is_written_with_it_once(
    app: Flask, db: Session, status: ChargeStatus, kind: str
) -> None:
    payment = _processing_payment(db)
    now = app.extensions["portal.clock"].now()
    result = ChargeResult(status=status, reference=payment.gateway_reference, failure_code="x")
    with tenancy.system(db):
        assert transitions.apply_result(db, payment, result, now=now)
        assert not transitions.apply_result(db, payment, result, now=now)  # a replay
        events = db.scalars(select(ArEvent).where(ArEvent.subject_id == payment.public_id)).all()
    assert [e.kind for e in events] == [kind]
    data = json.loads(events[0].data)
    assert data["amount"] == {"amount_minor": payment.amount, "currency": payment.currency}
    assert data["invoices"][0]["number"]
    assert "gateway_token" not in events[0].data and "card" not in events[0].data


def test_record_refuses_secret_fields(db: Session) -> None:
    with pytest.raises(ValueError, match="secret"):
        ar_events.record(db, _company(db).id, "x", "y", {"password": "no"})


def test_disputes_and_profile_changes_are_written_without_their_text(
    app: Flask, db: Session
) -> None:
    from portal.models import DisputeReason
    from portal.services import audit, disputes, profile
    from tests.conftest import user_by_email

    now = app.extensions["portal.clock"].now()
    with tenancy.system(db):
        user = user_by_email(db, "admin@acme.test")
        invoice = db.scalars(
            select(Invoice)
            .where(Invoice.company_id == user.company_id, Invoice.status == InvoiceStatus.OPEN)
            .order_by(Invoice.id)
        ).first()
        assert invoice is not None
        opened = disputes.open_dispute(
            db,
            invoice,
            user,
            reason=next(iter(DisputeReason)),
            amount=None,
            message="a private complaint",
            now=now,
            request=audit.RequestInfo(),
        )
        assert opened.dispute is not None
        withdrawn = disputes.withdraw(
            db, opened.dispute, user, now=now, request=audit.RequestInfo()
        )
        assert withdrawn.refusal is None
        changed = profile.update_profile(
            db, user, {"job_title": "Secret title"}, request=audit.RequestInfo()
        )
        assert changed == ["job_title"]
        about_dispute = db.scalars(
            select(ArEvent)
            .where(ArEvent.subject_id == opened.dispute.public_id)
            .order_by(ArEvent.id)
        ).all()
        about_user = db.scalars(select(ArEvent).where(ArEvent.subject_id == user.public_id)).all()
    assert [e.kind for e in about_dispute] == [
        ar_events.DISPUTE_OPENED,
        ar_events.DISPUTE_WITHDRAWN,
    ]
    assert "private complaint" not in about_dispute[0].data
    assert json.loads(about_dispute[0].data)["invoice_number"] == invoice.number
    assert [e.kind for e in about_user] == [ar_events.PROFILE_UPDATED]
    assert json.loads(about_user[0].data)["changed_fields"] == ["job_title"]
    assert "Secret title" not in about_user[0].data
