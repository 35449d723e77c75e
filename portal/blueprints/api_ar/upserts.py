"""The receivables system's upserts (`PUT` or `POST /api/ar/companies`, `/billing-accounts`,
`/users`, `/invoices`, `/credit-notes`): a batch of records keyed by the receivables system's
own keys, created or changed by the same service as `flask --app wsgi import`
(portal/services/receivables.py), all or nothing.

A body that does not fit the records' shape is a 400 naming every bad field (`items.3.number`),
as every API request; records that fit but contradict what is stored (an unknown company, an
address of another company's user, a credit beyond what the invoice owes) are a 422 naming
every one of them. In both cases nothing is written. New users are invited and mailed their
invitation through the outbox unless the body says `"invite": false`."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from flask_babel import ngettext
from pydantic import BaseModel, Field

from portal import api, clock, tenancy
from portal.api import OPERATOR_SECURITY, ProblemDetail, spec
from portal.blueprints.api_ar.routes import TAGS, bp
from portal.extensions import db_session
from portal.models import PortalUser
from portal.runtime import SEND_INVITATION, current_runtime
from portal.services import receivables

R = TypeVar("R", bound=BaseModel)
MAX_ITEMS = 1000


class UpsertIn(BaseModel, Generic[R]):
    items: list[R] = Field(min_length=1, max_length=MAX_ITEMS)


class CompaniesIn(UpsertIn[receivables.CompanyRecord]):
    """Companies by `code` (the receivables system's key)."""


class BillingAccountsIn(UpsertIn[receivables.BillingAccountRecord]):
    """Billing accounts by company code and account `number`."""


class UsersIn(UpsertIn[receivables.UserRecord]):
    """Users by e-mail. New ones are invited (no password until they accept)."""

    invite: bool = Field(True, description="Mail new users their invitation.")


class InvoicesIn(UpsertIn[receivables.InvoiceRecord]):
    """Invoices by company code and invoice `number`, with their lines (amounts in minor units;
    totals and tax are computed). Once paid or credited only dates, reference and notes change."""


class CreditNotesIn(UpsertIn[receivables.CreditNoteRecord]):
    """Credit notes by company code and credit note `number`; issued once, never changed."""


class UpsertedOut(BaseModel):
    at: str = Field(description="Where the record was in the request: `items.3`.")
    id: str = Field(description="The portal's public id of the record.")
    outcome: Literal["created", "updated", "unchanged"]


class UpsertOut(BaseModel):
    created: int
    updated: int
    unchanged: int
    items: list[UpsertedOut]


ANSWERS: dict[str, Any] = {
    "HTTP_200": UpsertOut,
    "HTTP_400": ProblemDetail,
    "HTTP_413": ProblemDetail,
    "HTTP_422": ProblemDetail,
}


def _upsert(kind: str, items: list[Any], *, invite: bool = False) -> UpsertOut:
    batch = receivables.Batch()
    for index, record in enumerate(items):
        batch.records[kind].append((f"items.{index}", record))
    db = db_session()
    report = receivables.upsert(db, batch, now=clock.now())
    if not report.ok:
        db.rollback()
        raise api.Problem(
            422,
            ngettext(
                "Nothing was saved: %(num)d record was refused.",
                "Nothing was saved: %(num)d records were refused.",
                len(report.errors),
            ),
            errors=receivables.errors_as_fields(report.errors),
        )
    if invite and report.invited:
        runtime = current_runtime()
        with tenancy.system(db):
            for user_id in report.invited:
                user = db.get(PortalUser, user_id)
                locale = user.company.locale if user is not None else "en"
                runtime.hand_off(db, SEND_INVITATION, user_id, locale)
    return UpsertOut(
        created=report.created[kind],
        updated=report.updated[kind],
        unchanged=report.unchanged[kind],
        items=[
            UpsertedOut(at=where, id=public_id, outcome=outcome)  # type: ignore[arg-type]
            for _kind, where, outcome, public_id in report.results
        ],
    )


@bp.route("/companies", methods=["PUT", "POST"])
@spec.validate(
    json=CompaniesIn,
    resp=api.answers(limited=False, **ANSWERS),
    tags=TAGS,
    security=OPERATOR_SECURITY,
)
def upsert_companies(json: CompaniesIn) -> UpsertOut:
    """Create or update companies, by code."""
    return _upsert("companies", json.items)


@bp.route("/billing-accounts", methods=["PUT", "POST"])
@spec.validate(
    json=BillingAccountsIn,
    resp=api.answers(limited=False, **ANSWERS),
    tags=TAGS,
    security=OPERATOR_SECURITY,
)
def upsert_billing_accounts(json: BillingAccountsIn) -> UpsertOut:
    """Create or update billing accounts, by company code and number."""
    return _upsert("billing_accounts", json.items)


@bp.route("/users", methods=["PUT", "POST"])
@spec.validate(
    json=UsersIn, resp=api.answers(limited=False, **ANSWERS), tags=TAGS, security=OPERATOR_SECURITY
)
def upsert_users(json: UsersIn) -> UpsertOut:
    """Create (invited) or update portal users, by e-mail."""
    return _upsert("users", json.items, invite=json.invite)


@bp.route("/invoices", methods=["PUT", "POST"])
@spec.validate(
    json=InvoicesIn,
    resp=api.answers(limited=False, **ANSWERS),
    tags=TAGS,
    security=OPERATOR_SECURITY,
)
def upsert_invoices(json: InvoicesIn) -> UpsertOut:
    """Create or update invoices with their lines, by company code and number."""
    return _upsert("invoices", json.items)


@bp.route("/credit-notes", methods=["PUT", "POST"])
@spec.validate(
    json=CreditNotesIn,
    resp=api.answers(limited=False, **ANSWERS),
    tags=TAGS,
    security=OPERATOR_SECURITY,
)
def upsert_credit_notes(json: CreditNotesIn) -> UpsertOut:
    """Issue credit notes against invoices, by company code and number (idempotent)."""
    return _upsert("credit_notes", json.items)
