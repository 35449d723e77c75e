"""The documents library: files shared with the customer (contracts, credit notes, ...)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import Document, PortalUser
from portal.services import audit
from portal.services.downloads import Downloadable


def get_document(session: Session, public_id: str) -> Document | None:
    """A document the session's scope may see (a foreign one looks missing)."""
    return session.scalars(select(Document).where(Document.public_id == public_id)).one_or_none()


def for_download(
    session: Session, public_id: str, user: PortalUser, request: audit.RequestInfo
) -> Downloadable | None:
    document = get_document(session, public_id)
    if document is None:
        return None
    audit.record_for(
        session,
        user,
        "Portal.DocumentDownloaded",
        request=request,
        document_id=document.public_id,
        kind=document.kind,
    )
    return Downloadable(document.storage_path, document.filename, document.content_type)
