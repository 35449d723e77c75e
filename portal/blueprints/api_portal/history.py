"""Payment History through the API: the page's filters and scope (portal/blueprints/payments/
history.py), a page at a time by keyset (`after`)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from portal import api, i18n
from portal.api import PORTAL_SECURITY, ProblemDetail, spec
from portal.api.schemas import Money, PageInfo
from portal.blueprints.api_portal import paging
from portal.blueprints.api_portal.routes import TAGS, bp, money
from portal.extensions import db_session
from portal.models import Payment
from portal.services import payment_history
from portal.services.payment_history import STATUSES, HistoryQuery
from portal.services.receipts import method_label

StatusFilter = Literal[STATUSES]  # type: ignore[valid-type]


class HistoryListQuery(paging.ListQuery):
    status: StatusFilter | None = Field(None, description="One status; leave out for all.")
    from_: str | None = Field(
        None, alias="from", description=f"Made on or after (your time zone). {paging.DATE_HELP}"
    )
    to: str | None = Field(None, description=f"Made on or before. {paging.DATE_HELP}")


class PaidInvoiceOut(BaseModel):
    id: str = Field(description="The invoice's public id.")
    number: str
    amount: Money = Field(description="The part of the payment applied to this invoice.")


class PaymentOut(BaseModel):
    id: str = Field(description="The payment's public id.")
    reference: str
    created_at: datetime
    status: str
    amount: Money
    method: str = Field(description='The method\'s label, e.g. "Visa ending 4242".')
    billing_account: str
    receipt_number: str | None
    scheduled_for: date | None
    processed_at: datetime | None
    invoices: list[PaidInvoiceOut]


class PaymentListOut(BaseModel):
    items: list[PaymentOut]
    page: PageInfo


def _payment_out(payment: Payment) -> PaymentOut:
    cur = payment.currency
    return PaymentOut(
        id=payment.public_id,
        reference=payment.reference,
        created_at=payment.created_at,
        status=payment.status.value,
        amount=money(payment.amount, cur),
        method=method_label(payment),
        billing_account=payment.billing_account.name,
        receipt_number=payment.receipt_number,
        scheduled_for=payment.scheduled_for,
        processed_at=payment.processed_at,
        invoices=[
            PaidInvoiceOut(
                id=a.invoice.public_id, number=a.invoice.number, amount=money(a.amount, cur)
            )
            for a in payment.allocations
        ],
    )


@bp.get("/payment-history")
@spec.validate(
    query=HistoryListQuery,
    resp=api.answers(
        HTTP_200=PaymentListOut,
        HTTP_400=ProblemDetail,
    ),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def payment_history_list(query: HistoryListQuery) -> PaymentListOut:
    """Every payment in your scope, newest first, with Payment History's filters."""
    start, end = paging.date_range(query.from_, query.to)
    after = None
    if query.after is not None:
        moment, last_id = paging.cursor(query.after, (str, int))
        after = (paging.cursor_moment(moment), last_id)
    search = HistoryQuery(
        status=query.status or "", date_from=start, date_to=end, zone=i18n.user_zone()
    )
    rows, more = payment_history.payments_after(
        db_session(), search, after=after, limit=query.limit
    )
    key = [rows[-1].created_at.isoformat(), rows[-1].id] if more and rows else None
    return PaymentListOut(
        items=[_payment_out(p) for p in rows], page=paging.page_info(key, query.limit)
    )
