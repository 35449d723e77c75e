"""Disputes under concurrency, on PostgreSQL with committed rows (the shared test transaction
would serialize everything): two writers that loaded the same rows before either wrote.

- A withdrawal and a credit at once: the dispute's row lock lets one through, the other sees
  the dispute closed.
- Two credits for the same company at once: the company's row lock gives consecutive numbers.
- A dispute opened while the invoice's scheduled payment starts: the invoice's row lock lets
  one through; never a disputed invoice that is being charged.

(SQLite serializes writers with BEGIN IMMEDIATE; tests/web/test_disputes_thread.py and
test_disputes_payments.py cover each path re-reading what it acts on.)"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import disputes as application
from portal import tenancy
from portal.db import unit_of_work
from portal.models import (
    AuditEvent,
    CreditNote,
    Dispute,
    DisputeReason,
    DisputeStatus,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    PortalUser,
)
from portal.runtime import current_runtime
from portal.services import audit, payments
from portal.services import disputes as service
from tests.conftest import (
    committed_postgres_app,
)
from tests.factories import make_payment


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    yield from committed_postgres_app(tmp_path_factory, "disputes-concurrency-files")


def _session(app: Flask) -> Session:
    session: Session = app.extensions["portal.db"].sessionmaker()
    return session


def _dispute_id(app: Flask, number: str) -> int:
    with _session(app) as session, tenancy.system(session):
        return session.scalars(
            select(Dispute.id)
            .join(Invoice, Invoice.id == Dispute.invoice_id)
            .where(Invoice.number == number)
        ).one()


def _race(app: Flask, *actions: Callable[[Session, threading.Barrier], Any]) -> list[Any]:
    """Run each action in a thread of its own, with its own session and unit of work; each
    calls `loaded.wait()` once it has read what it acts on, so both write at once."""
    loaded = threading.Barrier(len(actions), timeout=10)
    outcomes: list[Any] = [None] * len(actions)

    def run(index: int, action: Callable[[Session, threading.Barrier], Any]) -> None:
        try:
            with app.app_context(), unit_of_work(writes=True), _session(app) as session:
                outcomes[index] = action(session, loaded)
                session.commit()
        except Exception as error:  # the test says what it was
            outcomes[index] = error

    threads = [
        threading.Thread(target=run, args=(index, action)) for index, action in enumerate(actions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def _load(session: Session, dispute_id: int) -> Dispute:
    dispute = session.get(Dispute, dispute_id)
    assert dispute is not None
    _ = dispute.invoice
    return dispute


def test_a_withdrawal_and_a_credit_at_once_leave_one_outcome(pg_app: Flask) -> None:
    dispute_id = _dispute_id(pg_app, "INV-1011")
    now = pg_app.extensions["portal.clock"].now()

    def withdraw(session: Session, loaded: threading.Barrier) -> Any:
        with tenancy.system(session):
            dispute = _load(session, dispute_id)
            user = session.get(PortalUser, dispute.opened_by_user_id)
            assert user is not None
            loaded.wait()
            return application.customer_withdraw(
                current_runtime(),
                session,
                dispute,
                user,
                now=now,
                request=audit.RequestInfo(user_agent="race"),
            ).refusal

    def resolve(session: Session, loaded: threading.Barrier) -> Any:
        with tenancy.system(session):
            dispute = _load(session, dispute_id)
            loaded.wait()
            return application.resolve_with_credit(
                current_runtime(), session, dispute, amount=1_000, reason="x", now=now
            ).refusal

    outcomes = _race(pg_app, withdraw, resolve)
    assert sorted(map(str, outcomes)) == ["None", str(service.ActionRefusal.CLOSED)], outcomes
    with _session(pg_app) as session, tenancy.system(session):
        dispute = _load(session, dispute_id)
        withdrawn = outcomes[0] is None
        assert dispute.status is (
            DisputeStatus.WITHDRAWN if withdrawn else DisputeStatus.CREDIT_ISSUED
        )
        credits = session.scalars(
            select(CreditNote).where(CreditNote.invoice_id == dispute.invoice_id)
        ).all()
        assert len(credits) == (0 if withdrawn else 1)
        assert dispute.invoice.amount_credited == (0 if withdrawn else 1_000)
        names = session.scalars(
            select(AuditEvent.name).where(
                AuditEvent.name.in_(["Portal.DisputeWithdrawn", "Portal.DisputeResolved"])
            )
        ).all()
        assert len(names) == 1


def _open(app: Flask, number: str) -> int:
    """A new dispute of `number`, committed."""
    with _session(app) as session, tenancy.system(session):
        invoice = session.scalars(select(Invoice).where(Invoice.number == number)).one()
        user = session.scalars(
            select(PortalUser).where(PortalUser.email == "admin@acme.test")
        ).one()
        result = service.open_dispute(
            session,
            invoice,
            user,
            reason=DisputeReason.OTHER,
            amount=None,
            message="x",
            now=app.extensions["portal.clock"].now(),
            request=audit.RequestInfo(user_agent="test"),
        )
        assert result.dispute is not None
        session.commit()
        return result.dispute.id


def _credit_numbers(app: Flask, company_id: int) -> set[str]:
    with _session(app) as session, tenancy.system(session):
        return set(
            session.scalars(
                select(CreditNote.number).where(
                    CreditNote.company_id == company_id, CreditNote.number.like("CN-%")
                )
            )
        )


def test_two_credits_at_once_get_consecutive_numbers(pg_app: Flask) -> None:
    with _session(pg_app) as session, tenancy.system(session):
        company_id = _load(session, _dispute_id(pg_app, "INV-2009")).company_id
    before = _credit_numbers(pg_app, company_id)
    highest = max(int(n[3:]) for n in before)
    first, second = _dispute_id(pg_app, "INV-2009"), _open(pg_app, "INV-1002")
    now = pg_app.extensions["portal.clock"].now()

    def credit(dispute_id: int) -> Callable[[Session, threading.Barrier], Any]:
        def action(session: Session, loaded: threading.Barrier) -> Any:
            with tenancy.system(session):
                dispute = _load(session, dispute_id)
                loaded.wait()
                outcome = service.resolve_with_credit(
                    session, dispute, amount=100, reason="x", now=now
                )
                return outcome.credit_refusal or outcome.refusal

        return action

    assert _race(pg_app, credit(first), credit(second)) == [None, None]
    made = _credit_numbers(pg_app, company_id) - before
    assert made == {f"CN-{highest + 1}", f"CN-{highest + 2}"}


def test_a_dispute_opened_while_its_scheduled_payment_starts(pg_app: Flask) -> None:
    today = pg_app.extensions["portal.clock"].today()
    now = pg_app.extensions["portal.clock"].now()
    with _session(pg_app) as session, tenancy.system(session):
        invoice = session.scalars(select(Invoice).where(Invoice.number == "INV-1013")).one()
        payer = session.scalars(
            select(PortalUser).where(PortalUser.email == "admin@acme.test")
        ).one()
        scheduled = make_payment(
            session,
            invoice,
            "10.00",
            status=PaymentStatus.SCHEDULED,
            user=payer,
            scheduled_for=today - timedelta(days=1),
        )
        invoice.status = InvoiceStatus.OPEN  # a scheduled payment takes nothing before its day
        session.commit()
        payment_id, invoice_id, payer_id = scheduled.id, invoice.id, payer.id

    def start(session: Session, loaded: threading.Barrier) -> Any:
        with tenancy.system(session):
            payment = session.get(Payment, payment_id)
            assert payment is not None
            _ = [a.invoice.status for a in payment.allocations]
            loaded.wait()
            return payments.start_scheduled(session, payment, today=today, now=now)

    def dispute(session: Session, loaded: threading.Barrier) -> Any:
        with tenancy.system(session):
            user = session.get(PortalUser, payer_id)
            assert user is not None
            _ = user.grants
        tenancy.bind(session, tenancy.scope_for_user(user))
        invoice = session.get(Invoice, invoice_id)
        assert invoice is not None and service.can_dispute(invoice)
        loaded.wait()
        result = application.open_dispute(
            current_runtime(),
            session,
            invoice,
            user,
            reason=DisputeReason.QUALITY,
            amount=None,
            message="Not as ordered.",
            now=now,
            request=audit.RequestInfo(user_agent="race"),
        )
        return result.refusal

    started, refusal = _race(pg_app, start, dispute)
    assert not isinstance(started, Exception) and not isinstance(refusal, Exception)
    with _session(pg_app) as session, tenancy.system(session):
        payment = session.get(Payment, payment_id)
        invoice = session.get(Invoice, invoice_id)
        assert payment is not None and invoice is not None
        opened = session.scalars(select(Dispute).where(Dispute.invoice_id == invoice_id)).all()
        if started:  # the payment went first: the invoice was no longer disputable
            assert refusal is service.DisputeRefusal.NOT_DISPUTABLE and opened == []
            assert payment.status is PaymentStatus.PROCESSING
            assert invoice.status is InvoiceStatus.PROCESSING
        else:  # the dispute went first: the payment is canceled, the invoice held
            assert refusal is None and len(opened) == 1
            assert payment.status is PaymentStatus.CANCELED
            assert payment.failure_code == "invoice_disputed"
            assert invoice.status is InvoiceStatus.DISPUTED
