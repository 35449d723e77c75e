"""The receivables system acts on a company's invoices and disputes (`/api/ar/…`): void an
invoice, credit it, answer a dispute (the same services as `flask --app wsgi disputes`). Each
request names the company (`company_id`, its public id): its scope is bound before anything is
read, so another company's invoice or dispute answers 404, exactly as a missing one."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from portal import api, clock, tenancy
from portal import disputes as dispute_app
from portal.api import OPERATOR_SECURITY, ProblemDetail, spec
from portal.api.schemas import Money
from portal.blueprints.api_ar.blueprint import TAGS, bp
from portal.extensions import db_session
from portal.models import Company, CreditNote, Dispute, Invoice
from portal.runtime import current_runtime
from portal.services import ar_actions
from portal.services import disputes as dispute_service
from portal.services.ar_actions import VoidRefusal
from portal.services.credit_notes import CreditRefusal
from portal.services.disputes import ActionRefusal
from portal.services.money import format_money

PublicId = Field(min_length=1, max_length=60, description="The company's public id (cmp_…).")


def money(minor: int, currency: str) -> Money:
    return Money(
        amount_minor=minor, currency=currency, formatted=format_money(minor, currency, "en")
    )


class CompanyIn(BaseModel):
    company_id: str = PublicId


class CreditIn(CompanyIn):
    amount_minor: int = Field(gt=0, le=10**13, description="Minor units of the invoice's currency.")
    reason: str = Field(default="", max_length=300)


class AnswerIn(CompanyIn):
    outcome: Literal["credit_issued", "rejected"]
    amount_minor: int | None = Field(
        default=None, gt=0, le=10**13, description="The credit (credit_issued only)."
    )
    reason: str = Field(default="", max_length=500, description="Shown to the customer.")


class InvoiceOut(BaseModel):
    id: str
    number: str
    status: str
    total: Money
    balance_due: Money


class CreditNoteOut(BaseModel):
    id: str
    number: str
    amount: Money
    invoice: InvoiceOut


class DisputeOut(BaseModel):
    id: str
    status: str
    invoice: InvoiceOut
    credit_note_number: str | None


def _invoice_out(invoice: Invoice) -> InvoiceOut:
    return InvoiceOut(
        id=invoice.public_id,
        number=invoice.number,
        status=invoice.status.value,
        total=money(invoice.total, invoice.currency),
        balance_due=money(invoice.balance_due, invoice.currency),
    )


def _bind(company_id: str) -> Company:
    """The named company's scope, for the rest of the request (an unknown one: 404)."""
    db = db_session()
    company = api.or_404(ar_actions.find_company(db, company_id), "No such company.")
    tenancy.bind(db, tenancy.Scope(company.id))
    return company


def _invoice(company_id: str, reference: str) -> Invoice:
    _bind(company_id)
    if len(reference) > 60:
        api.fail(404, "No such invoice.")
    return api.or_404(ar_actions.find_invoice(db_session(), reference), "No such invoice.")


_CREDIT_PROBLEMS = {
    CreditRefusal.VOID: (409, "The invoice is void."),
    CreditRefusal.DUPLICATE: (409, "That credit note number was taken: try again."),
    CreditRefusal.TOO_MUCH: (
        422,
        "More than the invoice owes, less what payments on their way hold.",
    ),
}


def _credit_problem(refusal: CreditRefusal | None) -> api.Problem:
    status, detail = _CREDIT_PROBLEMS.get(refusal or CreditRefusal.TOO_MUCH, (422, "Refused."))
    return api.Problem(status, detail, errors=[("amount_minor", str(refusal or "refused"))])


ACTION_ANSWERS: dict[str, Any] = {
    "HTTP_400": ProblemDetail,
    "HTTP_404": ProblemDetail,
    "HTTP_409": ProblemDetail,
    "HTTP_413": ProblemDetail,  # a body over the app's limit (10 MB)
}


@bp.post("/invoices/<string:reference>/void")
@spec.validate(
    json=CompanyIn,
    resp=api.answers(HTTP_200=InvoiceOut, **ACTION_ANSWERS),
    tags=TAGS,
    security=OPERATOR_SECURITY,
)
def void_invoice(reference: str, json: CompanyIn) -> InvoiceOut:
    """Void an invoice (by id or number) nobody has paid or credited any of, with no payment
    on its way; voiding a void one again changes nothing. Otherwise 409: credit it instead."""
    invoice = _invoice(json.company_id, reference)
    refusal = ar_actions.void(db_session(), invoice, now=clock.now())
    if refusal is VoidRefusal.SETTLED:
        api.fail(409, "Part of the invoice is paid or credited: credit it instead.")
    if refusal is VoidRefusal.IN_FLIGHT:
        api.fail(409, "A payment of the invoice is on its way or scheduled.")
    if refusal is not None:
        api.fail(409, f"An invoice that is {invoice.status.value} cannot be voided.")
    return _invoice_out(invoice)


@bp.post("/invoices/<string:reference>/credit")
@spec.validate(
    json=CreditIn,
    resp=api.answers(HTTP_200=CreditNoteOut, HTTP_422=ProblemDetail, **ACTION_ANSWERS),
    tags=TAGS,
    security=OPERATOR_SECURITY,
)
def credit_invoice(reference: str, json: CreditIn) -> CreditNoteOut:
    """A credit note against the invoice (its balance falls; fully credited, it is paid)."""
    invoice = _invoice(json.company_id, reference)
    done = ar_actions.credit(
        db_session(), invoice, amount=json.amount_minor, reason=json.reason, now=clock.now()
    )
    if done.credit_note is None:
        raise _credit_problem(done.refusal)
    note: CreditNote = done.credit_note
    return CreditNoteOut(
        id=note.public_id,
        number=note.number,
        amount=money(note.amount, note.currency),
        invoice=_invoice_out(invoice),
    )


@bp.post("/disputes/<string:public_id>/answer")
@spec.validate(
    json=AnswerIn,
    resp=api.answers(HTTP_200=DisputeOut, HTTP_422=ProblemDetail, **ACTION_ANSWERS),
    tags=TAGS,
    security=OPERATOR_SECURITY,
)
def answer_dispute(public_id: str, json: AnswerIn) -> DisputeOut:
    """Give a dispute its outcome: a credit note of `amount_minor` (credit_issued), or
    rejected with a `reason` the customer reads. A dispute already closed: 409."""
    _bind(json.company_id)
    db = db_session()
    found = dispute_service.get_dispute(db, public_id) if len(public_id) <= 60 else None
    dispute: Dispute = api.or_404(found, "No such dispute.")
    runtime = current_runtime()
    if json.outcome == "credit_issued":
        if json.amount_minor is None:
            api.fail(400, errors=[("amount_minor", "required for credit_issued")])
        outcome = dispute_app.resolve_with_credit(
            runtime, db, dispute, amount=json.amount_minor, reason=json.reason, now=clock.now()
        )
    else:
        if not json.reason.strip():
            api.fail(400, errors=[("reason", "required: the customer reads why")])
        outcome = dispute_app.reject(runtime, db, dispute, reason=json.reason, now=clock.now())
    if outcome.refusal is ActionRefusal.CLOSED:
        api.fail(409, "The dispute already has its outcome.")
    if outcome.refusal is not None:
        raise _credit_problem(outcome.credit_refusal)
    invoice = db.get(Invoice, dispute.invoice_id)
    assert invoice is not None
    note = dispute.credit_note
    return DisputeOut(
        id=dispute.public_id,
        status=dispute.status.value,
        invoice=_invoice_out(invoice),
        credit_note_number=note.number if note else None,
    )
