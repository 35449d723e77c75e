"""`POST /api/portal/payment` and `GET /api/portal/payment/{id}`: the web payment flow's
service, as JSON.

The same steps as the confirm button (portal/blueprints/payments/routes.py `_confirm`): read
the invoices under their lock with the key's payments (`payments.lock_selection`), check the
amounts and the method, record one payment per billing account (`payments.record_payments`),
commit, then charge each (`charging.charge_each`). The caller's `Idempotency-Key` (any printable
text) becomes a form key of this user's (`stored_key`), so the same key twice finds the same
payments; the same key with another body is a conflict (`_same_request`).
"""

from __future__ import annotations

import hashlib
from base64 import urlsafe_b64encode
from datetime import datetime

from flask import url_for
from flask_babel import gettext as _
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field

from portal import api, clock, flags
from portal.api import PORTAL_SECURITY, ProblemDetail, spec
from portal.api.schemas import Money
from portal.blueprints.api_portal.routes import TAGS, bp, money
from portal.blueprints.payments.routes import STATUS_FOR_PROBLEM, polling
from portal.db import commit_now, retry_on_conflict
from portal.extensions import db_session
from portal.models import Company, Payment, PaymentGroup, PaymentMethod, PaymentStatus
from portal.payments import charging, copy
from portal.runtime import current_runtime
from portal.services import payment_methods, payments
from portal.services.money import MAX_MINOR
from portal.services.payments import Selection
from portal.web import request_info

# 1..255 printable ASCII characters (space to tilde).
KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"


class PaymentHeaders(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    idempotency_key: str = Field(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="1 to 255 printable characters, chosen by the caller. The same key with "
        "the same body answers the same payment(s) and pays once; with another body, 409.",
    )


class InvoiceToPay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, description="The invoice's public id.")
    amount_minor: int | None = Field(
        default=None,
        ge=1,
        le=MAX_MINOR,
        strict=True,  # a JSON integer: not true (1), "100" or 100.0
        description="Minor units to pay on it; left out: everything still available.",
    )


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoices: list[InvoiceToPay] = Field(min_length=1, max_length=payments.MAX_INVOICES)
    method_id: str = Field(
        min_length=1, max_length=64, description="A saved payment method's public id."
    )


class PaidInvoiceOut(BaseModel):
    id: str
    number: str
    amount: Money


class ReceiptOut(BaseModel):
    number: str
    processed_at: str | None = Field(description="ISO 8601 date and time.")
    pdf_url: str = Field(description="The receipt as PDF (the browser session's page).")


class PaymentOut(BaseModel):
    id: str
    reference: str
    status: str = Field(
        description='"processing" or "pending" while the outcome is to come; then '
        '"succeeded", "failed" or "canceled" ("scheduled" for a scheduled one).'
    )
    processing: bool = Field(description="True while the outcome is still to come: poll.")
    amount: Money
    billing_account: str
    method_id: str | None
    invoices: list[PaidInvoiceOut]
    created_at: str = Field(description="ISO 8601 date and time.")
    action_url: str | None = Field(
        description="Where the customer confirms the charge with their bank (3-D Secure)."
    )
    failure_reason: str | None
    receipt: ReceiptOut | None = Field(description="Once the payment succeeded.")
    poll_url: str


class PaymentsOut(BaseModel):
    """The payment(s) one request made: one per billing account, in a group when several."""

    group_id: str | None
    replayed: bool = Field(description="True when this key had already made these payments.")
    payments: list[PaymentOut]


def stored_key(key: str) -> str:
    """The caller's key as one of the portal's form keys (32 URL-safe characters, like
    `payments.new_idempotency_key()`): any printable text maps to a valid key, the same text
    to the same key. The service stores it per user."""
    digest = hashlib.sha256(b"portal-api-payment:" + key.encode()).digest()
    return urlsafe_b64encode(digest).decode()[:32]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def payment_out(payment: Payment) -> PaymentOut:
    succeeded = payment.status is PaymentStatus.SUCCEEDED
    receipt = None
    if succeeded:
        receipt = ReceiptOut(
            number=payment.reference,
            processed_at=_iso(payment.processed_at),
            pdf_url=url_for("payments.receipt_pdf", public_id=payment.public_id),
        )
    return PaymentOut(
        id=payment.public_id,
        reference=payment.reference,
        status=payment.status.value,
        processing=polling(payment),
        amount=money(payment.amount, payment.currency),
        billing_account=payment.billing_account.name,
        method_id=payment.payment_method.public_id if payment.payment_method else None,
        invoices=[
            PaidInvoiceOut(
                id=a.invoice.public_id,
                number=a.invoice.number,
                amount=money(a.amount, payment.currency),
            )
            for a in payment.allocations
        ],
        created_at=payment.created_at.isoformat(),
        action_url=payment.action_url,
        failure_reason=(
            copy.failure_reason(payment.failure_code)
            if payment.status is PaymentStatus.FAILED
            else None
        ),
        receipt=receipt,
        poll_url=url_for("api_portal.payment_status", public_id=payment.public_id),
    )


def _answer(made: list[Payment], group: PaymentGroup | None, *, replayed: bool) -> PaymentsOut:
    return PaymentsOut(
        group_id=group.public_id if group is not None else None,
        replayed=replayed,
        payments=[payment_out(p) for p in made],
    )


def _made(found: Payment | PaymentGroup) -> tuple[list[Payment], PaymentGroup | None]:
    if isinstance(found, PaymentGroup):
        return payments.group_payments(db_session(), found), found
    return [found], None


def _same_request(made: list[Payment], body: PaymentIn) -> bool:
    """Did these payments come from this body? The same invoices, the amounts given and the
    method (what the key made is the record of what was asked)."""
    paid = {a.invoice.public_id: a.amount for p in made for a in p.allocations}
    asked = {item.id: item.amount_minor for item in body.invoices}
    if set(paid) != set(asked):
        return False
    if any(amount is not None and paid[pid] != amount for pid, amount in asked.items()):
        return False
    return all(
        p.payment_method is not None and p.payment_method.public_id == body.method_id for p in made
    )


def _selection_problem(selection: Selection) -> api.Problem:
    assert selection.problem is not None
    number = selection.invoice.number if selection.invoice else ""
    status = STATUS_FOR_PROBLEM[selection.problem]
    detail = copy.problem_detail(selection.problem, number) or copy.problem(
        selection.problem, number
    )
    return api.Problem(
        status, detail, errors=[("invoices", copy.problem(selection.problem, number))]
    )


def _amount_errors(
    selection: Selection,
    company: Company,
    refusals: dict[str, payments.FieldError],
    body: PaymentIn,
) -> list[tuple[str, str]]:
    where = {item.id: n for n, item in enumerate(body.invoices)}
    found = []
    for pid, refusal in refusals.items():
        item = next((i for i in selection.items if i.invoice.public_id == pid), selection.items[0])
        place = where.get(item.invoice.public_id, 0)
        message = copy.field_error(
            refusal,
            available=money(item.available, item.invoice.currency).formatted,
            company=company.name,
        )
        found.append((f"invoices.{place}.amount_minor", message))
    return found


@bp.post("/payment")
@spec.validate(
    json=PaymentIn,
    headers=PaymentHeaders,
    resp=api.answers(
        HTTP_200=PaymentsOut,
        HTTP_201=PaymentsOut,
        HTTP_400=ProblemDetail,
        HTTP_403=ProblemDetail,
        HTTP_404=ProblemDetail,
        HTTP_409=ProblemDetail,
        HTTP_415=ProblemDetail,
        HTTP_422=ProblemDetail,
    ),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def pay(json: PaymentIn, headers: PaymentHeaders) -> tuple[PaymentsOut, int]:
    """Pay invoices with a saved method, once per Idempotency-Key: one payment per billing
    account (in a group when several), charged now; poll each payment's poll_url."""
    api.require_pay_scope()
    json = api.require_json(json)
    if not flags.enabled(flags.PAYMENT):
        flags.note_refusal()
        raise api.Problem(503, _("Online payment isn't available right now."))
    duplicated = [
        n for n, item in enumerate(json.invoices) if item.id in {i.id for i in json.invoices[:n]}
    ]
    if duplicated:
        raise api.Problem(
            400, errors=[(f"invoices.{n}.id", _("Listed twice.")) for n in duplicated]
        )
    session = db_session()
    runtime = current_runtime()
    key = stored_key(headers.idempotency_key)
    ids = [item.id for item in json.invoices]
    asked = {item.id: item.amount_minor for item in json.invoices}

    def record() -> Selection | Payment | PaymentGroup | payments.Submission:
        locked = payments.lock_selection(session, current_user, key, ids)
        if not isinstance(locked, Selection) or locked.problem is not None:
            return locked
        company = session.get_one(Company, current_user.company_id)
        for item in locked.items:
            wanted = asked.get(item.invoice.public_id)
            item.amount = item.available if wanted is None else wanted
        methods = payment_methods.usable(session, runtime.gateway_name)
        method: PaymentMethod | None = next(
            (m for m in methods if m.public_id == json.method_id), None
        )
        error = payments.check_method(method, clock.today())
        if error is not None:
            raise api.Problem(422, errors=[("method_id", copy.field_error(error))])
        assert method is not None
        refusals = payments.check_amounts(locked, company)
        if refusals:
            raise api.Problem(422, errors=_amount_errors(locked, company, refusals, json))
        return payments.record_payments(
            session,
            locked,
            user=current_user,
            company=company,
            key=key,
            method=method,
            scheduled_for=None,
            gateway_name=runtime.gateway_name,
            now=clock.now(),
            request=request_info(),
        )

    try:
        outcome = retry_on_conflict(session, record)
    except api.Problem:
        session.rollback()  # nothing was made: the invoices' lock is let go
        raise
    if isinstance(outcome, Selection):
        raise _selection_problem(outcome)
    if isinstance(outcome, Payment | PaymentGroup):
        made, group = _made(outcome)
        return _replayed(made, group, json)
    if outcome.made is None:  # refused under the lock (another payment took part of a balance)
        assert outcome.selection is not None
        if outcome.selection.problem is not None:
            raise _selection_problem(outcome.selection)
        company = session.get_one(Company, current_user.company_id)
        raise api.Problem(
            422, errors=_amount_errors(outcome.selection, company, outcome.errors, json)
        )
    if outcome.replayed:
        return _replayed(outcome.payments, outcome.group, json)
    # As the web flow: the payment rows exist before the gateway hears of them.
    commit_now(session, "the payment rows exist before the gateway hears of them")
    charging.charge_each(runtime, session, outcome.payments)
    made = [session.get_one(Payment, p.id) for p in outcome.payments]
    return _answer(made, outcome.group, replayed=False), 201


def _replayed(
    made: list[Payment], group: PaymentGroup | None, body: PaymentIn
) -> tuple[PaymentsOut, int]:
    db_session().rollback()  # nothing new: the lock is let go
    made = [payments.get_payment(db_session(), p.public_id) or p for p in made]
    if not _same_request(made, body):
        raise api.Problem(
            409,
            _("Payment already processed."),
            errors=[("Idempotency-Key", _("This key was used for another payment."))],
        )
    return _answer(made, group, replayed=True), 200


@bp.get("/payment/<public_id>")
@spec.validate(
    resp=api.answers(
        HTTP_200=PaymentOut,
        HTTP_400=ProblemDetail,
        HTTP_404=ProblemDetail,
    ),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def payment_status(public_id: str) -> PaymentOut:
    """One payment: its status while it is processing, its receipt once it succeeded."""
    found = payments.get_payment(db_session(), public_id)
    return payment_out(api.or_404(found, _("Payment not found.")))


class BalanceInvoiceOut(BaseModel):
    id: str = Field(description="The invoice's public id (pass it to POST /api/portal/payment).")
    number: str
    billing_account: str = Field(description="The billing account's name.")
    due_date: str = Field(description="ISO 8601 date.")
    available: Money = Field(description="Its balance less what unfinished payments hold.")


class BalanceOut(BaseModel):
    currency: str
    invoices: list[BalanceInvoiceOut] = Field(
        description="Every invoice the caller may pay in the currency, oldest due first (not "
        "disputed, not wholly held by scheduled or processing payments), at most 50."
    )
    found: int = Field(description="How many there are: more than listed when cut to 50.")


@bp.get("/balance/<currency>")
@spec.validate(
    resp=api.answers(HTTP_200=BalanceOut, HTTP_400=ProblemDetail),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def balance(currency: str) -> BalanceOut:
    """The page's "Pay balance": what the caller's whole balance in `currency` is paid with."""
    session = db_session()
    found = payments.balance_ids(session, currency[:3])
    selection = payments.select_invoices(session, found.public_ids) if found.public_ids else None
    items = selection.items if selection is not None and selection.problem is None else []
    return BalanceOut(
        currency=found.currency,
        invoices=[
            BalanceInvoiceOut(
                id=item.invoice.public_id,
                number=item.invoice.number,
                billing_account=item.invoice.billing_account.name,
                due_date=item.invoice.due_date.isoformat(),
                available=money(item.available, item.invoice.currency),
            )
            for item in items
        ],
        found=found.found,
    )
