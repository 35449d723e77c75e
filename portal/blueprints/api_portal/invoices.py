"""The invoice list, an invoice and its PDF through the API: the pages' services, scoping and
words (portal/blueprints/invoices). The list pages by keyset (`after`), not by page number."""

from __future__ import annotations

import io
from datetime import date, datetime
from typing import Any, Literal, get_args

from flask import Response, request, send_file
from flask_login import current_user
from pydantic import BaseModel, Field
from spectree import Response as Answers

from portal import api, clock
from portal.api import PORTAL_SECURITY, ProblemDetail, spec
from portal.api.schemas import Money, PageInfo
from portal.blueprints.api_portal import paging
from portal.blueprints.api_portal.routes import TAGS, bp, money
from portal.blueprints.invoices.routes import _missing, _pdf_bytes
from portal.extensions import db_session
from portal.models import Invoice, InvoiceStatus
from portal.services import audit, disputes, invoice_pdf, invoices
from portal.services.invoices import DEFAULT_SORT, SORT_KEYS, STATUS_FILTERS, InvoiceQuery
from portal.services.receipts import method_label
from portal.templating import document_url, documents_enabled
from portal.web import request_info

StatusFilter = Literal[STATUS_FILTERS]  # type: ignore[valid-type]
Sort = Literal[
    "-date", "date", "-due", "due", "-amount", "amount", "-status", "status", "-number", "number"
]
assert set(get_args(Sort)) == {s for key in SORT_KEYS for s in (f"-{key}", key)}
assert DEFAULT_SORT == "-date"


class InvoiceListQuery(paging.ListQuery):
    status: StatusFilter = Field(
        "all", description='"overdue" is open or partly paid past its due date.'
    )
    q: str = Field(
        "", max_length=100, description="Part of the number, the PO reference or a line."
    )
    from_: str | None = Field(
        None, alias="from", description=f"Issued on or after. {paging.DATE_HELP}"
    )
    to: str | None = Field(None, description=f"Issued on or before. {paging.DATE_HELP}")
    account: str | None = Field(
        None, max_length=40, description="A billing account's public id in your scope."
    )
    sort: Sort = Field(
        "-date",
        description='A column ("date", "due", "amount", "status", "number"); "-" for descending.',
    )


class AccountRef(BaseModel):
    id: str = Field(description="The billing account's public id.")
    name: str


class InvoiceOut(BaseModel):
    id: str = Field(description="The invoice's public id.")
    number: str
    reference: str = Field(description="The customer's PO reference.")
    status: str = Field(description="As stored: open, partially_paid, processing, … paid, void.")
    display_status: str = Field(description='What the pages show: "overdue" wins over open.')
    issue_date: date
    due_date: date
    currency: str
    total: Money
    amount_paid: Money
    balance_due: Money
    overdue: bool
    days_overdue: int
    disputed: bool
    billing_account: AccountRef


class InvoiceListOut(BaseModel):
    items: list[InvoiceOut]
    page: PageInfo


class LineOut(BaseModel):
    position: int
    description: str
    quantity: str = Field(description="A decimal number, as text.")
    unit_price: Money
    tax_rate_bp: int = Field(description="Basis points: 825 is 8.25 %.")
    amount: Money = Field(description="Quantity times unit price, before tax.")


class AppliedPaymentOut(BaseModel):
    id: str = Field(description="The payment's public id.")
    reference: str
    created_at: datetime
    status: str
    method: str
    amount_applied: Money


class CreditOut(BaseModel):
    id: str
    number: str
    issue_date: date
    amount: Money
    reason: str
    document_url: str | None = Field(description="A signed 24-hour link to the credit note.")


class InvoiceDocumentOut(BaseModel):
    id: str
    title: str
    kind: str
    filename: str
    content_type: str
    size_bytes: int
    download_url: str | None = Field(description="A signed 24-hour link, made for you now.")


class InvoiceDetailOut(InvoiceOut):
    subtotal: Money
    tax_total: Money
    amount_credited: Money
    notes: str
    payable: bool
    disputable: bool
    pdf_url: str
    lines: list[LineOut]
    payments: list[AppliedPaymentOut]
    credits: list[CreditOut]
    documents: list[InvoiceDocumentOut]


def _invoice_out(invoice: Invoice, today: date) -> dict[str, Any]:
    cur = invoice.currency
    account = invoice.billing_account
    return {
        "id": invoice.public_id,
        "number": invoice.number,
        "reference": invoice.reference,
        "status": invoice.status.value,
        "display_status": invoice.display_status(today),
        "issue_date": invoice.issue_date,
        "due_date": invoice.due_date,
        "currency": cur,
        "total": money(invoice.total, cur),
        "amount_paid": money(invoice.amount_paid, cur),
        "balance_due": money(invoice.balance_due, cur),
        "overdue": bool(invoice.is_overdue_on(today)),
        "days_overdue": invoice.days_overdue(today),
        "disputed": invoice.status is InvoiceStatus.DISPUTED,
        "billing_account": AccountRef(id=account.public_id, name=account.name),
    }


def _after(raw: str, sort: str) -> tuple[Any, int]:
    """The key a cursor of this list carries: [sort, value, id], for the same sort."""
    column, _descending = invoices.sort_column(sort)
    kind = int if column.key == "total" else str
    made_for, value, last_id = paging.cursor(raw, (str, kind, int))
    if made_for != sort:
        raise paging.invalid_cursor()
    if column.key in {"issue_date", "due_date"}:
        value = paging.cursor_date(value)
    elif column.key == "status":
        try:
            value = InvoiceStatus(value)
        except ValueError:
            raise paging.invalid_cursor() from None
    return value, last_id


def _key(invoice: Invoice, sort: str) -> list[Any]:
    value = invoices.sort_value(invoice, sort)
    if isinstance(value, date):
        value = value.isoformat()
    elif isinstance(value, InvoiceStatus):
        value = value.value
    return [sort, value, invoice.id]


@bp.get("/invoices")
@spec.validate(
    query=InvoiceListQuery,
    resp=api.answers(
        HTTP_200=InvoiceListOut,
        HTTP_400=ProblemDetail,
    ),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def list_invoices(query: InvoiceListQuery) -> InvoiceListOut:
    """The invoices in your scope, with the invoice list's filters and order, a page at a time
    (send `page.next_cursor` back as `after`)."""
    start, end = paging.date_range(query.from_, query.to)
    after = _after(query.after, query.sort) if query.after is not None else None
    db = db_session()
    paging.check_account(db, query.account)
    today = clock.today()
    search = InvoiceQuery(
        status=query.status,
        q=query.q.strip(),
        date_from=start,
        date_to=end,
        sort=query.sort,
        account=query.account or "",
    )
    rows, more = invoices.invoices_after(db, search, today, after=after, limit=query.limit)
    return InvoiceListOut(
        items=[InvoiceOut(**_invoice_out(invoice, today)) for invoice in rows],
        page=paging.page_info(_key(rows[-1], query.sort) if more else None, query.limit),
    )


@bp.get("/invoices/<public_id>")
@spec.validate(
    resp=api.answers(
        HTTP_200=InvoiceDetailOut,
        HTTP_404=ProblemDetail,
    ),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def show_invoice(public_id: str) -> InvoiceDetailOut:
    """An invoice with its lines, the payments and credits applied to it and its documents
    (each with a signed download link). Another company's invoice, or one of an account you
    are not granted, is 404 like a missing one."""
    db = db_session()
    invoice = api.or_404(invoices.get_invoice(db, public_id), _missing())
    today = clock.today()
    cur = invoice.currency
    applied = invoices.payments_applied(db, invoice)
    documents = invoices.documents_for(db, invoice) if documents_enabled() else []
    credits = invoices.credits_applied(db, invoice) if invoice.amount_credited else []
    audit.record_for(
        db,
        current_user,
        "Portal.InvoiceViewed",
        request=request_info(),
        customer_id=current_user.company.public_id,
        invoice_id=invoice.public_id,
    )
    return InvoiceDetailOut(
        **_invoice_out(invoice, today),
        subtotal=money(invoice.subtotal, cur),
        tax_total=money(invoice.tax_total, cur),
        amount_credited=money(invoice.amount_credited, cur),
        notes=invoice.notes,
        payable=invoices.is_payable(invoice),
        disputable=disputes.can_dispute(invoice),
        pdf_url=f"{request.script_root}/api/portal/invoices/{invoice.public_id}/pdf",
        lines=[
            LineOut(
                position=line.position,
                description=line.description,
                quantity=str(line.quantity),
                unit_price=money(line.unit_price, cur),
                tax_rate_bp=line.tax_rate_bp,
                amount=money(line.amount, cur),
            )
            for line in invoice.lines
        ],
        payments=[
            AppliedPaymentOut(
                id=a.payment.public_id,
                reference=a.payment.reference,
                created_at=a.payment.created_at,
                status=a.payment.status.value,
                method=method_label(a.payment),
                amount_applied=money(a.amount, a.payment.currency),
            )
            for a in applied
        ],
        credits=[
            CreditOut(
                id=c.public_id,
                number=c.number,
                issue_date=c.issue_date,
                amount=money(c.amount, c.currency),
                reason=c.reason,
                document_url=document_url(c.document.public_id) if c.document else None,
            )
            for c in credits
        ],
        documents=[
            InvoiceDocumentOut(
                id=d.public_id,
                title=d.title,
                kind=d.kind,
                filename=d.filename,
                content_type=d.content_type,
                size_bytes=d.size_bytes,
                download_url=document_url(d.public_id),
            )
            for d in documents
        ],
    )


class PdfAnswers(Answers):
    """Answers whose 200 is a PDF file (the spec says so; there is no JSON to validate)."""

    def generate_spec(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        responses = super().generate_spec(*args, **kwargs)
        responses["200"]["content"] = {
            "application/pdf": {"schema": {"type": "string", "format": "binary"}}
        }
        return responses


@bp.get("/invoices/<public_id>/pdf")
@spec.validate(
    resp=api.answers(
        kind=PdfAnswers,
        HTTP_200=(None, "The invoice as a PDF file (an attachment)."),
        HTTP_404=ProblemDetail,
    ),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def invoice_pdf_file(public_id: str) -> Response:
    """The same PDF as the invoice page's download, in your language."""
    db = db_session()
    invoice = api.or_404(invoices.get_invoice(db, public_id), _missing())
    credited = invoices.credit_numbers(db, [invoice])
    response = send_file(
        io.BytesIO(_pdf_bytes(invoice, credited[invoice.id])),
        mimetype="application/pdf",
        as_attachment=True,
        download_name=invoice_pdf.pdf_filename(invoice),
    )
    response.direct_passthrough = False  # SpecTree reads the answer (in memory already)
    return response
