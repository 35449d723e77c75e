"""The documents library: files shared with the customer (contracts, credit notes, ...).

The list reads one page and counts up to a bound (services.paging), two queries whatever the
number of documents; the tenancy filter keeps a restricted user to the documents of the
accounts granted (a company-wide document, whose account is NULL, only company-wide users see).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from portal.models import BillingAccount, Document, DocumentKind, Invoice
from portal.services import paging
from portal.services.dates import day_bounds
from portal.services.downloads import Downloadable

PAGE_SIZE = paging.PAGE_SIZE
KIND_FILTERS = ("all", *(kind.value for kind in DocumentKind))


@dataclass(frozen=True)
class DocumentQuery:
    kind: str = "all"
    q: str = ""
    date_from: date | None = None  # the document's date (created_at, in `zone`), inclusive
    date_to: date | None = None
    account: str = ""  # a billing account's public id; "" for every account in scope
    page: int = 1
    zone: tzinfo = UTC  # the days of `date_from` and `date_to` are the viewer's

    @property
    def narrowed(self) -> bool:
        return bool(
            self.kind != "all" or self.q.strip() or self.date_from or self.date_to or self.account
        )


@dataclass(frozen=True)
class DocumentRow:
    document: Document
    account_name: str | None  # None: the whole company's
    invoice_public_id: str | None
    invoice_number: str | None


DocumentPage = paging.Page[DocumentRow]


def like_pattern(text: str) -> str:
    """`%text%` with LIKE's wildcards (and the escape character) taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filtered(query: DocumentQuery) -> Select[Any]:
    statement = select(Document)
    if query.kind != "all":
        statement = statement.where(Document.kind == query.kind)
    start, end = day_bounds(query.date_from, query.date_to, query.zone)
    if start is not None:
        statement = statement.where(Document.created_at >= start)
    if end is not None:
        statement = statement.where(Document.created_at < end)
    text = query.q.strip()
    if text:
        pattern = like_pattern(text)
        statement = statement.where(
            or_(
                Document.title.ilike(pattern, escape="\\"),
                Document.filename.ilike(pattern, escape="\\"),
            )
        )
    if query.account:
        statement = statement.where(
            Document.billing_account_id.in_(
                select(BillingAccount.id).where(BillingAccount.public_id == query.account)
            )
        )
    return statement


def _with_names(statement: Select[Any]) -> Select[Any]:
    """Each document with its account's name and its invoice's public id and number, newest
    first (the id breaks ties)."""
    return (
        statement.add_columns(BillingAccount.name, Invoice.public_id, Invoice.number)
        .outerjoin(BillingAccount, BillingAccount.id == Document.billing_account_id)
        .outerjoin(Invoice, Invoice.id == Document.invoice_id)
        .order_by(Document.created_at.desc(), Document.id.desc())
    )


def list_documents(session: Session, query: DocumentQuery) -> DocumentPage:
    """One page of the scope's documents, newest first, with each one's account and invoice."""
    statement = _filtered(query)
    bound = paging.count_bound(query.page, PAGE_SIZE)
    total, exact = paging.bounded_count(session, statement, bound)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, query.page), pages)
    rows = session.execute(
        _with_names(statement).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).all()
    items = [DocumentRow(row[0], row[1], row[2], row[3]) for row in rows]
    return DocumentPage(items, total, page, PAGE_SIZE, exact)


def documents_after(
    session: Session,
    query: DocumentQuery,
    *,
    after: tuple[datetime, int] | None,
    limit: int,
) -> tuple[list[DocumentRow], bool]:
    """Keyset pagination of the library (same filters, same order): up to `limit` documents
    after the one whose (created_at, id) is `after`, and whether more follow. One query."""
    statement = _filtered(query)
    if after is not None:
        statement = statement.where(
            paging.after_key([Document.created_at, Document.id], after, descending=True)
        )
    rows = session.execute(_with_names(statement).limit(limit + 1)).all()
    items = [DocumentRow(row[0], row[1], row[2], row[3]) for row in rows[:limit]]
    return items, len(rows) > limit


def accounts_in_scope(session: Session) -> list[tuple[str, str]]:
    """(public id, name) of the billing accounts the scope sees, by name: the account filter."""
    return [
        (public_id, name)
        for public_id, name in session.execute(
            select(BillingAccount.public_id, BillingAccount.name).order_by(
                BillingAccount.name, BillingAccount.id
            )
        )
    ]


def get_document(session: Session, public_id: str) -> Document | None:
    """A document the session's scope may see (a foreign one looks missing)."""
    return session.scalars(select(Document).where(Document.public_id == public_id)).one_or_none()


def for_download(session: Session, public_id: str) -> Downloadable | None:
    """The file of a document the session's scope may see (None: not theirs, or gone)."""
    document = get_document(session, public_id)
    if document is None:
        return None
    return Downloadable(
        document.storage_path,
        document.filename,
        document.content_type,
        "Portal.DocumentDownloaded",
        {"document_id": document.public_id, "kind": document.kind},
    )
