"""Factories: a test names what it needs ("an overdue invoice of 120.00 on Acme West") instead of
relying on a seeded number. Plain functions over a SQLAlchemy session (the `db` fixture: the test's
transaction, rolled back afterwards); each writes across companies (tenancy.system), flushes and
returns the object.

Amounts are written as a person reads them ("120.00", in the invoice's currency) and stored in
minor units. Dates are relative to the portal's today: `due=-30` is thirty days overdue.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.db import utcnow
from portal.gateways.sandbox import SandboxGateway
from portal.models import (
    BillingAccount,
    Company,
    Document,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    PaymentMethod,
    PaymentMethodKind,
    PaymentStatus,
    PortalUser,
    Role,
    UserAccountGrant,
)
from portal.services import crypto, seed
from portal.services.passwords import hasher

# The same secrets as the test app's (tests.conftest), so a made user signs in like a seeded one.
SECRET_KEY = "test-secret-key-" + "x" * 32
PASSWORD = seed.DEMO_PASSWORD
TOTP_SECRET = seed.DEMO_TOTP_SECRET

_serial = itertools.count(1)


def minor(amount: str | int | Decimal) -> int:
    """ "120.00" -> 12000; an int is taken as minor units already."""
    if isinstance(amount, int):
        return amount
    return int((Decimal(amount) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _today() -> date:
    return clock.today()


@cache
def _password_hash() -> str:
    ph: PasswordHasher = hasher(1, 64)
    return ph.hash(PASSWORD)


# companies and accounts -------------------------------------------------------------------


def make_company(
    db: Session,
    name: str | None = None,
    *,
    currency: str = "USD",
    locale: str = "en_US",
    credit_limit: str | int = "100000.00",
    partial_payments: bool = True,
    accounts: Sequence[str] = ("Main",),
) -> Company:
    """A company with its billing accounts (named in `accounts`, in that order)."""
    n = next(_serial)
    company = Company(
        name=name or f"Company {n}",
        currency=currency,
        locale=locale,
        credit_limit=minor(credit_limit),
        allow_partial_payments=partial_payments,
    )
    with tenancy.system(db):
        db.add(company)
        db.flush()
        for account_name in accounts:
            make_account(db, company, account_name)
        db.refresh(company)
        _ = company.billing_accounts  # loaded here: reading them needs no scope afterwards
    return company


def make_account(db: Session, company: Company, name: str = "Main") -> BillingAccount:
    n = next(_serial)
    account = BillingAccount(
        company_id=company.id, name=name, number=f"AC-{n:05d}", bill_to=f"{company.name}\n{name}"
    )
    with tenancy.system(db):
        db.add(account)
    return account


def company_named(db: Session, name: str) -> Company:
    """A seeded company ("Acme Corp"), for tests that act as one of its users."""
    with tenancy.system(db):
        return db.scalars(select(Company).where(Company.name == name)).one()


def account_named(db: Session, name: str) -> BillingAccount:
    """A seeded billing account ("Acme West"), for tests that act as a seeded user."""
    with tenancy.system(db):
        return db.scalars(select(BillingAccount).where(BillingAccount.name == name)).one()


# users ------------------------------------------------------------------------------------


def make_user(
    db: Session,
    company: Company,
    email: str | None = None,
    *,
    role: Role = Role.ADMIN,
    mfa: bool = True,
    accounts: Sequence[BillingAccount] = (),
    name: str = "Sam Tester",
    locale: str | None = None,
) -> PortalUser:
    """A user of `company` with the demo password; `mfa` enrols the demo TOTP secret, `accounts`
    are the grants of a `customer` user."""
    user = PortalUser(
        company_id=company.id,
        email=email or f"user{next(_serial)}@example.test",
        name=name,
        role=role,
        password_hash=_password_hash(),
        locale=locale,
        mfa_secret_encrypted=crypto.encrypt(SECRET_KEY, TOTP_SECRET) if mfa else None,
        mfa_enrolled_at=utcnow() - timedelta(days=30) if mfa else None,
    )
    with tenancy.system(db):
        db.add(user)
        db.flush()
        for account in accounts:
            db.add(
                UserAccountGrant(
                    company_id=company.id, user_id=user.id, billing_account_id=account.id
                )
            )
    return user


# invoices ---------------------------------------------------------------------------------


def make_invoice(
    db: Session,
    account: BillingAccount,
    total: str | int = "120.00",
    *,
    balance: str | int | None = None,
    status: InvoiceStatus | None = None,
    due: int | date = 30,
    issued: int | date | None = None,
    currency: str | None = None,
    lines: Sequence[tuple[str, str | int]] | None = None,
    number: str | None = None,
) -> Invoice:
    """An invoice of `total` (no tax) billed to `account`.

    `due`: a date, or days from today (negative: overdue). `balance`: what is still owed (less
    than the total makes it partially paid, zero makes it paid). `lines`: (description, amount)
    pairs that add up to the total; one line by default.
    """
    today = _today()
    due_date = due if isinstance(due, date) else today + timedelta(days=due)
    if issued is None:
        issue_date = min(today, due_date) - timedelta(days=30)
    else:
        issue_date = issued if isinstance(issued, date) else today + timedelta(days=issued)
    amount = minor(total)
    pairs = [(d, minor(a)) for d, a in lines] if lines else [("Services", amount)]
    assert sum(a for _d, a in pairs) == amount, "the lines must add up to the total"
    owed = amount if balance is None else minor(balance)
    paid = amount - owed
    if status is None:
        status = (
            InvoiceStatus.PAID
            if owed == 0
            else InvoiceStatus.PARTIALLY_PAID
            if paid
            else InvoiceStatus.OPEN
        )
    with tenancy.system(db):
        company = db.get(Company, account.company_id)
        assert company is not None
        invoice = Invoice(
            company_id=account.company_id,
            billing_account_id=account.id,
            number=number or f"T-{next(_serial):05d}",
            issue_date=issue_date,
            due_date=due_date,
            currency=currency or company.currency,
            subtotal=amount,
            tax_total=0,
            total=amount,
            amount_paid=paid,
            status=status,
            paid_at=datetime.combine(due_date, time(12), tzinfo=UTC) if owed == 0 else None,
            lines=[
                InvoiceLine(
                    company_id=account.company_id,
                    billing_account_id=account.id,
                    position=position,
                    description=description,
                    quantity=Decimal(1),
                    unit_price=line_amount,
                    amount=line_amount,
                )
                for position, (description, line_amount) in enumerate(pairs, start=1)
            ],
        )
        db.add(invoice)
        db.flush()
        db.refresh(invoice)  # balance_due is computed by the database
    return invoice


# payment methods and payments -------------------------------------------------------------


def make_payment_method(
    db: Session,
    company: Company,
    *,
    brand: str = "visa",
    last4: str = "4242",
    declines: bool = False,
    default: bool = False,
    expires: tuple[int, int] | None = None,
    user: PortalUser | None = None,
) -> PaymentMethod:
    """A saved card on the sandbox gateway (registered there too, so it can be charged);
    `declines` makes every charge on it fail."""
    month, year = expires or (12, _today().year + 3)
    sandbox = SandboxGateway(db, secret_key=SECRET_KEY, now=utcnow)
    method = PaymentMethod(
        company_id=company.id,
        created_by_user_id=user.id if user else None,
        gateway="sandbox",
        gateway_token=f"sandbox_pm_{company.public_id}_{last4}_{next(_serial)}",
        kind=PaymentMethodKind.CARD,
        brand=brand,
        last4=last4,
        exp_month=month,
        exp_year=year,
        is_default=default,
    )
    with tenancy.system(db):
        db.add(method)
        seed.register_on_sandbox(sandbox, company, method, declines=declines)
    return method


def make_payment(
    db: Session,
    invoice: Invoice,
    amount: str | int | None = None,
    *,
    status: PaymentStatus = PaymentStatus.SUCCEEDED,
    method: PaymentMethod | None = None,
    user: PortalUser | None = None,
    when: datetime | None = None,
    scheduled_for: date | None = None,
) -> Payment:
    """A payment on `invoice` (its whole balance unless `amount`); a succeeded one is applied
    to the invoice as the portal would; a scheduled one waits for `scheduled_for`."""
    paid = invoice.balance_due if amount is None else minor(amount)
    at = when or utcnow() - timedelta(days=1)
    n = next(_serial)
    payment = Payment(
        company_id=invoice.company_id,
        billing_account_id=invoice.billing_account_id,
        idempotency_key=f"factory-{invoice.public_id}-{n}",
        user_id=user.id if user else None,
        payment_method_id=method.id if method else None,
        currency=invoice.currency,
        amount=paid,
        status=status,
        gateway="sandbox",
        gateway_reference=None if status is PaymentStatus.SCHEDULED else f"sandbox_ch_factory_{n}",
        scheduled_for=scheduled_for,
        created_at=at,
        processed_at=at + timedelta(seconds=2)
        if status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED)
        else None,
    )
    if status is PaymentStatus.FAILED:
        payment.failure_code = "card_declined"
        payment.failure_message = "Your card was declined."
    payment.allocations = [
        PaymentAllocation(
            company_id=invoice.company_id,
            billing_account_id=invoice.billing_account_id,
            invoice_id=invoice.id,
            amount=paid,
        )
    ]
    with tenancy.system(db):
        db.add(payment)
        if status is PaymentStatus.SUCCEEDED:
            invoice.amount_paid += paid
            settled = invoice.amount_paid == invoice.total
            invoice.status = InvoiceStatus.PAID if settled else InvoiceStatus.PARTIALLY_PAID
            invoice.paid_at = payment.processed_at if settled else None
        elif status in (PaymentStatus.PROCESSING, PaymentStatus.SCHEDULED):
            invoice.status = InvoiceStatus.PROCESSING
        elif status is PaymentStatus.FAILED:
            invoice.status = InvoiceStatus.PAYMENT_FAILED
        db.flush()
        db.refresh(invoice)
    return payment


# documents --------------------------------------------------------------------------------


def make_document(
    db: Session,
    company: Company,
    storage: Path,
    title: str = "Tax form W-9",
    *,
    account: BillingAccount | None = None,
    invoice: Invoice | None = None,
    kind: str = "tax_form",
    content: bytes | None = None,
    filename: str | None = None,
    days_ago: int = 0,
) -> Document:
    """A document of `company` (the whole company's unless `account`), its bytes written to the
    file store under `storage`; dated `days_ago` days before now."""
    body = content if content is not None else f"%PDF-1.4 {title} {next(_serial)}".encode()
    document = Document(
        company_id=company.id,
        billing_account_id=account.id if account else None,
        invoice_id=invoice.id if invoice else None,
        title=title,
        kind=kind,
        filename=filename or title.lower().replace(" ", "-") + ".pdf",
        content_type="application/pdf",
        size_bytes=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        storage_path="",
        created_at=clock.now() - timedelta(days=days_ago),
    )
    document.storage_path = f"documents/{document.public_id}.pdf"
    target = storage / document.storage_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)
    with tenancy.system(db):
        db.add(document)
        db.flush()
    return document
