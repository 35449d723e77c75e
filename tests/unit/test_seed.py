"""The demo data is what the contract promises, and seeding is idempotent."""

from __future__ import annotations

from datetime import date

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import utcnow
from portal.gateways.sandbox import SandboxGateway
from portal.models import (
    BillingAccount,
    Company,
    CreditNote,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentMethod,
    PaymentStatus,
    PortalUser,
    Role,
    SandboxCharge,
)
from portal.services import crypto, seed
from portal.services.passwords import hasher, verify_password
from tests.conftest import FAST_ARGON2, TEST_SECRET, Backend

CONTRACT_USERS = {
    "admin@acme.test": ("Acme Corp", Role.ADMIN, True),
    "ap@acme.test": ("Acme Corp", Role.CUSTOMER, True),
    "new@acme.test": ("Acme Corp", Role.CUSTOMER, False),
    "admin@globex.test": ("Globex GmbH", Role.ADMIN, True),
    "admin@initech.test": ("Initech", Role.ADMIN, True),
}


def test_users_are_the_contracts(db: Session) -> None:
    ph = hasher(FAST_ARGON2["argon2_time_cost"], FAST_ARGON2["argon2_memory_cost"])
    with tenancy.system(db):
        users = {u.email: u for u in db.scalars(select(PortalUser))}
        assert set(users) == set(CONTRACT_USERS)
        for email, (company, role, enrolled) in CONTRACT_USERS.items():
            user = users[email]
            assert (user.company.name, user.role, user.mfa_enrolled) == (company, role, enrolled)
            assert verify_password(user.password_hash, seed.DEMO_PASSWORD, ph)
            if enrolled:
                assert user.mfa_secret_encrypted is not None
                secret = crypto.decrypt(TEST_SECRET, user.mfa_secret_encrypted)
                assert secret == seed.DEMO_TOTP_SECRET
        for email in ("ap@acme.test", "new@acme.test"):
            assert [g.billing_account.name for g in users[email].grants] == ["Acme West"]


def test_companies_and_invoices(db: Session, backend: Backend) -> None:
    today = backend.today
    with tenancy.system(db):
        companies = {c.name: c for c in db.scalars(select(Company))}
        assert (companies["Acme Corp"].currency, companies["Acme Corp"].locale) == ("USD", "en_US")
        assert (companies["Globex GmbH"].currency, companies["Globex GmbH"].locale) == (
            "EUR",
            "de_DE",
        )
        assert companies["Acme Corp"].allow_partial_payments
        assert not companies["Globex GmbH"].allow_partial_payments
        acme = companies["Acme Corp"].id
        invoices = db.scalars(select(Invoice).where(Invoice.company_id == acme)).all()
        assert len(invoices) >= 20
        shown = {i.display_status(today) for i in invoices}
        wanted = {
            "open",
            "overdue",
            "partially_paid",
            "paid",
            "processing",
            "payment_failed",
            "disputed",
        }
        assert wanted <= shown
        west = db.scalars(select(BillingAccount).where(BillingAccount.name == "Acme West")).one()
        west_shown = {i.display_status(today) for i in invoices if i.billing_account_id == west.id}
        assert {"open", "overdue"} <= west_shown
        initech = companies["Initech"].id
        assert db.scalar(select(func.count(Invoice.id)).where(Invoice.company_id == initech)) == 0
        for invoice in invoices:
            assert (
                invoice.total
                == invoice.subtotal + invoice.tax_total
                == sum(line.amount for line in invoice.lines) + invoice.tax_total
            )
        methods = db.scalars(select(PaymentMethod).where(PaymentMethod.company_id == acme)).all()
        assert {(m.last4, m.is_default) for m in methods} == {("4242", True), ("0341", False)}
        assert db.scalar(select(func.count(Payment.id)).where(Payment.company_id == acme)) > 0


def test_paid_amounts_match_succeeded_payments_and_credits(db: Session) -> None:
    with tenancy.system(db):
        for invoice in db.scalars(select(Invoice)):
            applied = sum(
                a.amount
                for p in db.scalars(select(Payment).where(Payment.status == "succeeded"))
                for a in p.allocations
                if a.invoice_id == invoice.id
            )
            credited = sum(
                c.amount
                for c in db.scalars(select(CreditNote).where(CreditNote.invoice_id == invoice.id))
            )
            assert invoice.paid_by_payments == applied, invoice.number
            assert invoice.amount_credited == credited, invoice.number
            assert invoice.amount_paid == applied + credited, invoice.number
            if invoice.status is InvoiceStatus.PAID:
                assert invoice.balance_due == 0


def _seed_again(db: Session, backend: Backend) -> list[str]:
    return seed.DemoSeeder(
        db,
        today=date.today(),
        ph=hasher(1, 64),
        secret_key=TEST_SECRET,
        storage_dir=backend.storage,
    ).run()


def test_seeding_twice_changes_nothing(app: Flask, db: Session, backend: Backend) -> None:
    def counts() -> tuple[int, int, int]:
        with tenancy.system(db):
            return (
                db.scalar(select(func.count(Company.id))) or 0,
                db.scalar(select(func.count(Invoice.id))) or 0,
                db.scalar(select(func.count(Payment.id))) or 0,
            )

    before = counts()
    created = _seed_again(db, backend)
    assert created == []
    assert counts() == before


def test_clean_removes_demo_companies_and_their_history(db: Session, backend: Backend) -> None:
    assert seed.purge_companies(db) == 3
    with tenancy.system(db):
        assert db.scalar(select(func.count(Company.id))) == 0
        assert db.scalar(select(func.count(Payment.id))) == 0
    created = _seed_again(db, backend)
    assert created == list(seed.DEMO_COMPANIES)


def test_the_sandbox_answers_for_every_demo_payment(db: Session) -> None:
    """Reconciliation asks the sandbox about the demo's processing payments: it knows each
    reference, with the payment's own status and amount (before, it answered "no such charge"
    and every sweep logged the gateway as unreachable)."""
    sandbox = SandboxGateway(db, secret_key=TEST_SECRET, now=utcnow)
    with tenancy.system(db):
        demo = db.scalars(select(Payment).where(Payment.gateway_reference.is_not(None))).all()
        statuses = {p.status for p in demo}
        assert PaymentStatus.PROCESSING in statuses and PaymentStatus.SUCCEEDED in statuses
        for payment in demo:
            assert payment.gateway_reference is not None
            charge = db.get(SandboxCharge, payment.gateway_reference)
            assert charge is not None, payment.public_id
            assert (charge.amount, charge.currency) == (payment.amount, payment.currency)
            answer = sandbox.retrieve(payment.gateway_reference)
            assert answer.status.value == payment.status.value
            assert answer.failure_code == payment.failure_code
