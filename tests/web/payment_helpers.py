"""Driving the payment pages as a person would: open, review, confirm, follow."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import AuditEvent, Company, Invoice, Payment, PaymentMethod

KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def audit_events(db: Session, name: str) -> list[AuditEvent]:
    with tenancy.system(db):
        return list(db.scalars(select(AuditEvent).where(AuditEvent.name == name)))


def invoice(db: Session, number: str) -> Invoice:
    with tenancy.system(db):
        query = select(Invoice).where(Invoice.number == number)
        return db.scalars(query.execution_options(populate_existing=True)).one()


def method(db: Session, last4: str, company: str = "Acme Corp") -> PaymentMethod:
    with tenancy.system(db):
        return db.scalars(
            select(PaymentMethod).where(
                PaymentMethod.last4 == last4, PaymentMethod.removed_at.is_(None)
            )
        ).first()  # type: ignore[return-value]


def payment(db: Session, public_id: str) -> Payment:
    with tenancy.system(db):
        query = select(Payment).where(Payment.public_id == public_id)
        found = db.scalars(query.execution_options(populate_existing=True)).one()
        _ = [(a.invoice.number, a.amount) for a in found.allocations], found.payment_method
        return found


def open_form(client: FlaskClient, *numbers_or_ids: str) -> tuple[str, str, str]:
    """GET the form; returns (page, idempotency key, csrf token)."""
    query = "&".join(f"invoice={pid}" for pid in numbers_or_ids)
    response = client.get(f"/portal/payment?{query}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    key = KEY.search(page)
    token = TOKEN.search(page)
    assert key and token
    return page, key.group(1), token.group(1)


def submit(
    client: FlaskClient,
    invoices: list[Invoice],
    *,
    key: str,
    token: str,
    action: str,
    method_id: str | None,
    amounts: dict[str, str] | None = None,
    **extra: str,
) -> Any:
    data: dict[str, Any] = {
        "csrf_token": token,
        "idempotency_key": key,
        "invoice": [inv.public_id for inv in invoices],
        "action": action,
        **extra,
    }
    if method_id:
        data["method"] = method_id
    for inv in invoices:
        if amounts and inv.public_id in amounts:
            data[f"amount-{inv.public_id}"] = amounts[inv.public_id]
        elif amounts is None:
            data[f"amount-{inv.public_id}"] = str(inv.balance_due / 100)
    return client.post("/portal/payment", data=data)


def review(client: FlaskClient, inv: Invoice, method_id: str | None, **typed: Any) -> Any:
    """Open the form for one invoice and ask to review it with `typed` (its amount is
    `amounts={inv.public_id: ...}`, anything else a field of the form)."""
    _page, key, token = open_form(client, inv.public_id)
    return submit(
        client, [inv], key=key, token=token, action="review", method_id=method_id, **typed
    )


def pay(
    client: FlaskClient,
    invoices: list[Invoice],
    method_id: str,
    amounts: dict[str, str] | None = None,
    **extra: str,
) -> tuple[Any, str]:
    """Open the form, review, confirm. Returns (confirm response, payment public id or "")."""
    _page, key, token = open_form(client, *(inv.public_id for inv in invoices))
    review = submit(
        client,
        invoices,
        key=key,
        token=token,
        action="review",
        method_id=method_id,
        amounts=amounts,
        **extra,
    )
    assert review.status_code == 200, review.get_data(as_text=True)
    assert 'id="confirm-title"' in review.get_data(as_text=True)
    confirmed = submit(
        client,
        invoices,
        key=key,
        token=token,
        action="confirm",
        method_id=method_id,
        amounts=amounts,
        **extra,
    )
    location = confirmed.headers.get("Location", "")
    match = re.search(r"/portal/payments/(pay_[A-Za-z0-9_-]+)", location)
    return confirmed, match.group(1) if match else ""


def run_jobs(app: Flask) -> int:
    return app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now())


def saved_with(db: Session, gateway: str, company: str = "Acme Corp") -> list[PaymentMethod]:
    """The company's methods saved with `gateway` (not removed), oldest first."""
    with tenancy.system(db):
        return list(
            db.scalars(
                select(PaymentMethod)
                .join(Company, Company.id == PaymentMethod.company_id)
                .where(
                    Company.name == company,
                    PaymentMethod.gateway == gateway,
                    PaymentMethod.removed_at.is_(None),
                )
                .order_by(PaymentMethod.id)
            )
        )


def as_gateway(db: Session, gateway: str, *rows: PaymentMethod | Payment) -> None:
    """Record `rows` as made with `gateway` (a method's token and a charge's reference as that
    gateway's would look), as if saved or charged before the portal was switched to another."""
    prefix = {"stripe": ("pm_", "pi_"), "sandbox": ("sandbox_pm_", "sandbox_ch_")}[gateway]
    with tenancy.system(db):
        for row in rows:
            row.gateway = gateway
            if isinstance(row, PaymentMethod):
                row.gateway_token = f"{prefix[0]}{row.public_id}"
            elif row.gateway_reference is not None:
                row.gateway_reference = f"{prefix[1]}{row.public_id}"
        db.flush()
