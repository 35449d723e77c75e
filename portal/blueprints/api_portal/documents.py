"""The documents library through the API: the page's filters, scope and signed download links
(portal/blueprints/documents), a page at a time by keyset (`after`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from flask_babel import gettext as _
from pydantic import BaseModel, Field

from portal import api, flags, i18n
from portal.api import PORTAL_SECURITY, ProblemDetail, spec
from portal.api.schemas import PageInfo
from portal.blueprints.api_portal import paging
from portal.blueprints.api_portal.routes import TAGS, bp
from portal.extensions import db_session
from portal.services import documents
from portal.services.documents import KIND_FILTERS, DocumentQuery, DocumentRow
from portal.templating import document_url

KindFilter = Literal[KIND_FILTERS]  # type: ignore[valid-type]


class DocumentListQuery(paging.ListQuery):
    type: KindFilter = Field("all", description="A document type, or all of them.")
    q: str = Field("", max_length=100, description="Part of the title or the file name.")
    from_: str | None = Field(
        None, alias="from", description=f"Added on or after (your time zone). {paging.DATE_HELP}"
    )
    to: str | None = Field(None, description=f"Added on or before. {paging.DATE_HELP}")
    account: str | None = Field(
        None, max_length=40, description="A billing account's public id in your scope."
    )


class InvoiceRef(BaseModel):
    id: str
    number: str


class DocumentOut(BaseModel):
    id: str = Field(description="The document's public id.")
    title: str
    kind: str
    filename: str
    content_type: str
    size_bytes: int
    created_at: datetime
    billing_account: str | None = Field(description="The account's name; null: the company's.")
    invoice: InvoiceRef | None
    download_url: str | None = Field(description="A signed 24-hour link, made for you now.")


class DocumentListOut(BaseModel):
    items: list[DocumentOut]
    page: PageInfo


def _document_out(row: DocumentRow) -> DocumentOut:
    document = row.document
    invoice = (
        InvoiceRef(id=row.invoice_public_id, number=row.invoice_number or "")
        if row.invoice_public_id
        else None
    )
    return DocumentOut(
        id=document.public_id,
        title=document.title,
        kind=document.kind,
        filename=document.filename,
        content_type=document.content_type,
        size_bytes=document.size_bytes,
        created_at=document.created_at,
        billing_account=row.account_name,
        invoice=invoice,
        download_url=document_url(document.public_id),
    )


@bp.get("/documents")
@spec.validate(
    query=DocumentListQuery,
    resp=api.answers(
        HTTP_200=DocumentListOut,
        HTTP_400=ProblemDetail,
        HTTP_404=ProblemDetail,
    ),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def list_documents(query: DocumentListQuery) -> DocumentListOut:
    """The documents shared with you (contracts, credit notes, …), newest first, with the
    library's filters; 503 while the library is switched off."""
    if not flags.enabled(flags.DOCUMENTS):
        flags.note_refusal()
        raise api.Problem(503, _("Documents aren't available right now."))
    start, end = paging.date_range(query.from_, query.to)
    db = db_session()
    paging.check_account(db, query.account)
    after = None
    if query.after is not None:
        moment, last_id = paging.cursor(query.after, (str, int))
        after = (paging.cursor_moment(moment), last_id)
    search = DocumentQuery(
        kind=query.type,
        q=query.q.strip(),
        date_from=start,
        date_to=end,
        account=query.account or "",
        zone=i18n.user_zone(),
    )
    rows, more = documents.documents_after(db, search, after=after, limit=query.limit)
    last = rows[-1].document if rows else None
    key = [last.created_at.isoformat(), last.id] if more and last else None
    return DocumentListOut(
        items=[_document_out(row) for row in rows], page=paging.page_info(key, query.limit)
    )
