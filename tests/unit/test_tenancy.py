"""Tenancy fails closed, and no company (or restricted user) ever sees another's rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import Base
from portal.models import (
    ApiToken,
    ArEvent,
    AuditEvent,
    AutopaySetting,
    AutopayStep,
    AutopayStepKind,
    AutopayTiming,
    BillingAccount,
    Company,
    Dispute,
    DisputeAttachment,
    DisputeMessage,
    DisputeReason,
    HasAccount,
    Invoice,
    PaymentGroup,
    PaymentMethod,
    PaymentMethodKind,
    RecoveryCode,
    SecurityAlert,
    SignInOrigin,
    Statement,
    StatementFormat,
    TokenKind,
    TokenScope,
    UserAccountGrant,
    UserSession,
)
from tests.conftest import scoped_session, user_by_email

# Tables that belong to no tenant, on purpose. Every other table must be tenant-owned.
GLOBAL_TABLES = {
    "feature_flags",
    "append_only_overrides",
    "gateway_events",
    "sandbox_setups",
    "sandbox_methods",
    "sandbox_charges",
    "login_throttles",  # sign-in failures by address, before any company is known
    "outbox",  # background work, written by every company's requests, read by the dispatcher
    "job_schedules",  # when each recurring job is next due
    "notification_runs",  # how far a recurring notification job got, across companies
    "ar_keys",  # operator keys of the receivables system, acting for every company
}


def tenant_models() -> list[type]:
    return sorted(
        (m.class_ for m in Base.registry.mappers if tenancy.is_tenant_owned(m.class_)),
        key=lambda c: c.__name__,
    )


def _fill_unseeded_tables(db: Session) -> None:
    """The seed leaves a few tables empty; give every company and account a row in each."""
    with tenancy.system(db):
        now = db.scalar(select(func.max(Invoice.created_at)))
        assert now is not None
        for account in db.scalars(select(BillingAccount)).all():
            user = next(iter(u for u in account.company.users))
            granted = {
                g.user_id
                for g in db.scalars(
                    select(UserAccountGrant).where(
                        UserAccountGrant.billing_account_id == account.id
                    )
                )
            }
            if not granted:
                db.add(
                    UserAccountGrant(
                        company_id=account.company_id,
                        user_id=user.id,
                        billing_account_id=account.id,
                    )
                )
            db.add(
                Statement(
                    company_id=account.company_id,
                    requested_by_user_id=user.id,
                    account_ids=[account.id],
                    start_date=now.date() - timedelta(30),
                    end_date=now.date(),
                    format=StatementFormat.CSV,
                    locale="en",
                )
            )
            invoice = db.scalars(
                select(Invoice).where(Invoice.billing_account_id == account.id)
            ).first()
            method = db.scalars(
                select(PaymentMethod).where(PaymentMethod.company_id == account.company_id)
            ).first()
            if method is None:
                method = PaymentMethod(
                    company_id=account.company_id,
                    gateway="sandbox",
                    gateway_token=f"tenancy-{account.id}",
                    kind=PaymentMethodKind.CARD,
                    brand="visa",
                    last4="4242",
                )
                db.add(method)
                db.flush()
            db.add(
                AutopaySetting(
                    company_id=account.company_id,
                    billing_account_id=account.id,
                    payment_method_id=method.id,
                    timing=AutopayTiming.DUE_DATE,
                )
            )
            if invoice is not None:
                owner = {"company_id": account.company_id, "billing_account_id": account.id}
                db.add(
                    AutopayStep(
                        **owner,
                        invoice_id=invoice.id,
                        kind=AutopayStepKind.NOTICE,
                        day=now.date(),
                    )
                )
                dispute = Dispute(
                    **owner, invoice_id=invoice.id, reason=DisputeReason.OTHER, amount_disputed=0
                )
                message = DisputeMessage(**owner, dispute=dispute, body="x")
                db.add_all([dispute, message])
                db.flush()
                db.add(
                    DisputeAttachment(
                        **owner,
                        dispute_id=dispute.id,
                        message_id=message.id,
                        storage_key="disputes/x",
                        filename="x.pdf",
                        content_type="application/pdf",
                        size_bytes=1,
                        sha256="0" * 64,
                    )
                )
        for company in db.scalars(select(Company)).all():
            for user in company.users:
                db.add(
                    UserSession(
                        company_id=company.id,
                        user_id=user.id,
                        token_hash=f"{user.id:064d}",
                        expires_at=now,
                    )
                )
                db.add(RecoveryCode(company_id=company.id, user_id=user.id, code_hash="x"))
                owned = {"company_id": company.id, "user_id": user.id}
                db.add(SecurityAlert(**owned, kind="mfa_reset", key="k", created_at=now))
                db.add(SignInOrigin(**owned, kind="device", key_hash="h", last_seen_at=now))
                db.add(AuditEvent(company_id=company.id, user_id=user.id, name="Test.Event"))
                db.add(
                    ApiToken(
                        company_id=company.id,
                        user_id=user.id,
                        kind=TokenKind.PERSONAL,
                        name="t",
                        scope=TokenScope.READ,
                        token_hash=f"t{user.id:063d}",
                        prefix="pt_",
                        expires_at=now,
                        last_used_ip="",
                    )
                )
            db.add(ArEvent(company_id=company.id, kind="test", subject_id="x", data="{}"))
            db.add(PaymentGroup(company_id=company.id, idempotency_key=f"test-{company.id}"))
        db.flush()


def test_every_table_is_tenant_owned_or_declared_global() -> None:
    tenant_tables = {cls.__table__.name for cls in tenant_models()}
    assert set(Base.metadata.tables) - tenant_tables == GLOBAL_TABLES


@pytest.mark.parametrize("model", tenant_models(), ids=lambda m: m.__name__)
def test_company_never_sees_another_company(app: Flask, db: Session, model: type) -> None:
    _fill_unseeded_tables(db)
    acme = user_by_email(db, "admin@acme.test").company_id
    globex = user_by_email(db, "admin@globex.test").company_id
    column = "id" if model is Company else "company_id"
    for email, own, other in (
        ("admin@acme.test", acme, globex),
        ("admin@globex.test", globex, acme),
    ):
        session = scoped_session(app, email)
        owners = [getattr(row, column) for row in session.scalars(select(model))]
        assert owners, f"{email} should see some {model.__name__} rows"
        assert set(owners) == {own}, f"{email} saw another company's {model.__name__}"
        key = sa_inspect(model).primary_key  # one column, or several (InvoiceTally)
        with tenancy.system(session):
            foreign = session.execute(select(*key).where(getattr(model, column) == other)).first()
        assert foreign is not None
        session.expunge_all()
        assert session.get(model, tuple(foreign)) is None, "a foreign id must look missing"
        session.close()


@pytest.mark.parametrize("model", tenant_models(), ids=lambda m: m.__name__)
def test_restricted_user_never_sees_other_accounts(app: Flask, db: Session, model: type) -> None:
    _fill_unseeded_tables(db)
    with tenancy.system(db):
        accounts = {a.name: a.id for a in db.scalars(select(BillingAccount))}
    west, east = accounts["Acme West"], accounts["Acme East"]
    session = scoped_session(app, "ap@acme.test")
    rows = session.scalars(select(model)).all()
    if model is BillingAccount:
        assert [r.id for r in rows] == [west]
    elif issubclass(model, HasAccount):
        seen = {r.billing_account_id for r in rows}
        assert east not in seen and None not in seen
        if model is not Statement or rows:
            assert seen <= {west}
    session.close()


def test_restricted_user_sees_west_invoices_only(app: Flask, db: Session) -> None:
    session = scoped_session(app, "ap@acme.test")
    numbers = session.scalars(select(Invoice.number)).all()
    assert numbers and all(n.startswith("INV-1") for n in numbers)
    assert session.scalar(select(func.count(Invoice.id))) == len(numbers)


def test_unscoped_query_raises(db: Session) -> None:
    for statement in (select(Invoice), select(func.count(Invoice.id)), select(Company.name)):
        with pytest.raises(tenancy.TenancyError):
            db.execute(statement)
    with pytest.raises(tenancy.TenancyError):
        db.execute(update(Invoice).values(notes="x"))


def test_bulk_update_stays_inside_the_scope(app: Flask) -> None:
    session = scoped_session(app, "admin@globex.test")
    changed = session.execute(update(Invoice).values(notes="touched")).rowcount
    with tenancy.system(session):
        touched = session.scalars(select(Invoice.number).where(Invoice.notes == "touched")).all()
    assert changed == len(touched) and all(n.startswith("RE-") for n in touched)
    session.close()


@pytest.mark.parametrize(
    ("email", "column", "elsewhere"),
    [
        # a company-wide user moving an invoice to another company
        ("admin@acme.test", "company_id", select(Company.id).where(Company.name == "Globex GmbH")),
        # a restricted user moving one to an account they were not granted
        (
            "ap@acme.test",
            "billing_account_id",
            select(BillingAccount.id).where(BillingAccount.name == "Acme East"),
        ),
    ],
)
def test_writing_outside_the_scope_raises(
    app: Flask, db: Session, email: str, column: str, elsewhere: Any
) -> None:
    with tenancy.system(db):
        target = db.scalars(elsewhere).one()
    session = scoped_session(app, email)
    invoice = session.scalars(select(Invoice)).first()
    assert invoice is not None
    setattr(invoice, column, target)
    with pytest.raises(tenancy.TenancyError):
        session.flush()
    session.rollback()
    session.close()


def test_a_bound_session_cannot_be_rebound(app: Flask) -> None:
    session = scoped_session(app, "admin@acme.test")
    other = user_by_email(session, "admin@globex.test")
    with pytest.raises(tenancy.TenancyError):
        tenancy.bind(session, tenancy.scope_for_user(other))
    session.close()
