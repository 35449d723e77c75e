"""Disputing an invoice: a structured reason, the amount in question and a message, then a
conversation (messages with attachments from both sides) that ends in an outcome: a credit
note, a rejection, or the customer's withdrawal. Closing a dispute gives the invoice back the
status its amounts make it (overdue stays derived from the due date)."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import IO, Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, SessionTransaction, selectinload

from portal.models import (
    ACTIVE_DISPUTE,
    Company,
    CreditNote,
    Dispute,
    DisputeAttachment,
    DisputeMessage,
    DisputeReason,
    DisputeStatus,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    PortalUser,
)
from portal.services import ar_events, audit, credit_notes
from portal.services.downloads import Downloadable
from portal.services.payments.selection import reserved_amounts
from portal.services.payments.transitions import (
    DISPUTED,
    cancel_scheduled_for_invoice,
    lock_invoices,
    record_canceled,
)
from portal.services.storage import FileStore

log = logging.getLogger(__name__)

MAX_MESSAGE = 5_000  # characters
MAX_ATTACHMENT = 10 * 1024 * 1024  # bytes, each
MAX_ATTACHMENTS = 5  # per message
# What a file's first bytes say it is: the only types a dispute accepts.
SIGNATURES = (
    (b"%PDF-", "application/pdf", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
)
# How much of a file's start and end the structural checks read (never the whole file).
HEAD = 64
TAIL = 1024
CHUNK = 64 * 1024  # what an attachment is hashed and written by
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk: no data, a fixed CRC

# A dispute holds the invoice: it can be opened while the customer still owes money on it.
DISPUTABLE = (InvoiceStatus.OPEN, InvoiceStatus.PARTIALLY_PAID, InvoiceStatus.PAYMENT_FAILED)


class DisputeRefusal(StrEnum):
    NOT_DISPUTABLE = "not_disputable"
    AMOUNT_TOO_HIGH = "amount_too_high"


@dataclass(frozen=True)
class DisputeResult:
    dispute: Dispute | None = None
    refusal: DisputeRefusal | None = None
    # Scheduled payments of the invoice that the dispute canceled (their payers are told).
    canceled: tuple[Payment, ...] = ()


def can_dispute(invoice: Invoice) -> bool:
    return invoice.status in DISPUTABLE and invoice.balance_due > 0


def open_dispute(
    session: Session,
    invoice: Invoice,
    user: PortalUser,
    *,
    reason: DisputeReason,
    amount: int | None,
    message: str,
    now: datetime,
    request: audit.RequestInfo,
) -> DisputeResult:
    """Open a dispute that holds the invoice (Disputed). The invoice is read again under its
    row lock, the lock a scheduled payment takes when it starts, so the two never both go
    ahead; its scheduled payments that have not started are canceled (a dispute holds it)."""
    invoice = lock_invoices(session, [invoice.id])[invoice.id]
    if not can_dispute(invoice):
        return DisputeResult(refusal=DisputeRefusal.NOT_DISPUTABLE)
    disputed = invoice.balance_due if amount is None else amount
    if disputed > invoice.balance_due:
        return DisputeResult(refusal=DisputeRefusal.AMOUNT_TOO_HIGH)
    dispute = Dispute(
        company_id=invoice.company_id,
        billing_account_id=invoice.billing_account_id,
        invoice_id=invoice.id,
        opened_by_user_id=user.id,
        reason=reason,
        status=DisputeStatus.OPEN,
        amount_disputed=disputed,
        created_at=now,
        messages=[
            DisputeMessage(
                company_id=invoice.company_id,
                billing_account_id=invoice.billing_account_id,
                author_user_id=user.id,
                author_kind="customer",
                body=message.strip(),
                created_at=now,
            )
        ],
    )
    session.add(dispute)
    invoice.status = InvoiceStatus.DISPUTED
    session.flush()
    audit.record_for(
        session,
        user,
        "Portal.DisputeOpened",
        request=request,
        invoice_id=invoice.public_id,
        dispute_id=dispute.public_id,
        reason=reason.value,
        amount=disputed,
    )
    _publish(session, dispute, ar_events.DISPUTE_OPENED)
    canceled = cancel_scheduled_for_invoice(session, invoice.id, now=now, failure_code=DISPUTED)
    for payment in canceled:
        record_canceled(session, user, payment, request=request)
    return DisputeResult(dispute=dispute, canceled=tuple(canceled))


def _publish(session: Session, dispute: Dispute, kind: str, **extra: Any) -> None:
    """The receivables feed's event of a dispute (public ids, amounts; no message text)."""
    invoice = session.get(Invoice, dispute.invoice_id)
    company = session.get(Company, dispute.company_id)
    data: dict[str, Any] = {
        "dispute_id": dispute.public_id,
        "company_id": company.public_id if company else None,
        "invoice_id": invoice.public_id if invoice else None,
        "invoice_number": invoice.number if invoice else None,
        "billing_account_id": invoice.billing_account.public_id if invoice else None,
        "status": dispute.status.value,
        "reason": dispute.reason.value,
        "amount_disputed": {
            "amount_minor": dispute.amount_disputed,
            "currency": invoice.currency if invoice else None,
        },
        **extra,
    }
    ar_events.record(session, dispute.company_id, kind, dispute.public_id, data)


def disputes_for(session: Session, invoice: Invoice) -> list[Dispute]:
    return list(
        session.scalars(
            select(Dispute)
            .where(Dispute.invoice_id == invoice.id)
            .options(selectinload(Dispute.messages))
            .order_by(Dispute.created_at.desc())
        )
    )


class AttachmentRefusal(StrEnum):
    TYPE = "type"  # not a PDF, PNG or JPEG by its content
    SIZE = "size"  # over MAX_ATTACHMENT
    COUNT = "count"  # more than MAX_ATTACHMENTS


class ActionRefusal(StrEnum):
    CLOSED = "closed"  # the dispute already has its outcome
    EMPTY = "empty"  # no message and no file
    CREDIT = "credit"  # the credit note was refused (see credit_refusal)
    NO_REASON = "no_reason"  # a rejection without a reason


@dataclass(frozen=True)
class Upload:
    """A file as it arrived: the name the sender gave it, a seekable stream of its bytes (an
    upload spooled by the form parser, a file the CLI opened) and its size. It is read in
    chunks of CHUNK bytes, never whole: its start and end for the checks, then once to hash and
    store it."""

    filename: str
    stream: IO[bytes]
    size: int

    @classmethod
    def of(cls, filename: str, stream: IO[bytes]) -> Upload:
        stream.seek(0, io.SEEK_END)
        size = stream.tell()
        stream.seek(0)
        return cls(filename, stream, size)

    @classmethod
    def of_bytes(cls, filename: str, data: bytes) -> Upload:
        return cls(filename, io.BytesIO(data), len(data))

    def _read_at(self, offset: int, length: int) -> bytes:
        self.stream.seek(offset)
        return self.stream.read(length)

    def head(self) -> bytes:
        return self._read_at(0, HEAD)

    def tail(self) -> bytes:
        return self._read_at(max(0, self.size - TAIL), TAIL)

    def chunks(self) -> Iterator[bytes]:
        self.stream.seek(0)
        while chunk := self.stream.read(CHUNK):
            yield chunk


@dataclass(frozen=True)
class Outcome:
    dispute: Dispute | None = None
    message: DisputeMessage | None = None
    refusal: ActionRefusal | AttachmentRefusal | None = None
    credit_refusal: credit_notes.CreditRefusal | None = None


def sniff(head: bytes, tail: bytes | None = None) -> tuple[str, str] | None:
    """(content type, extension) from a file's first bytes (and its last, `tail`, when given:
    the whole file when it is short); None when it is none we take, or when its structure says
    it is cut short or something else: a PDF ends in %%EOF, a PNG's first chunk is its IHDR
    and its last an IEND, a JPEG ends where it started, with an end-of-image marker."""
    tail = head if tail is None else tail
    for magic, content_type, extension in SIGNATURES:
        if head.startswith(magic) and _whole(extension, head, tail):
            return content_type, extension
    return None


def _whole(extension: str, head: bytes, tail: bytes) -> bool:
    if extension == "pdf":
        return b"%%EOF" in tail  # within its last kilobyte (trailing whitespace allowed)
    if extension == "png":
        ihdr = head[8:33]  # length 13, "IHDR", 13 bytes of header, its CRC
        return (
            len(ihdr) == 25
            and ihdr[:8] == b"\x00\x00\x00\rIHDR"
            and zlib.crc32(ihdr[4:21]) == int.from_bytes(ihdr[21:25], "big")
            and tail.endswith(PNG_IEND)
        )
    return len(tail) >= 4 and tail.rstrip(b"\x00\r\n").endswith(b"\xff\xd9")  # JPEG


def detect(upload: Upload) -> tuple[str, str] | None:
    return sniff(upload.head(), upload.tail())


def check_uploads(uploads: Sequence[Upload]) -> AttachmentRefusal | None:
    """Refuses more than MAX_ATTACHMENTS files, a file over MAX_ATTACHMENT (by its size, before
    reading it), and one that is not a whole PDF, PNG or JPEG."""
    if len(uploads) > MAX_ATTACHMENTS:
        return AttachmentRefusal.COUNT
    for upload in uploads:
        if upload.size > MAX_ATTACHMENT:
            return AttachmentRefusal.SIZE
        if detect(upload) is None:
            return AttachmentRefusal.TYPE
    return None


_UNSAFE = re.compile(r"[^\w.\- ]+")


def _safe_name(filename: str, extension: str) -> str:
    """The sender's name for the file, tamed (no path, no odd characters), ending in the
    extension of what its bytes are."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = _UNSAFE.sub("_", base.rsplit(".", 1)[0] if "." in base else base).strip(" ._")
    return f"{(stem or 'attachment')[:150]}.{extension}"


# Files written in a session's transaction, removed unless it commits -------------------------

_WRITTEN = "portal.dispute_files"


def _remove_unless_committed(session: Session, store: FileStore, key: str) -> None:
    """The file at `key` is about to be written for a row of this transaction: should the
    transaction not commit (a failed flush or commit, an error before it, a rollback), the
    file is removed with it, so no file is left that no row names."""
    session.info.setdefault(_WRITTEN, []).append((store, key))


@event.listens_for(Session, "after_commit")
def _keep_written(session: Session) -> None:
    if not session.in_nested_transaction():  # a savepoint's release is not the commit
        session.info.pop(_WRITTEN, None)


@event.listens_for(Session, "after_transaction_end")
def _remove_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:  # a savepoint ended; the outer transaction goes on
        return
    for store, key in session.info.pop(_WRITTEN, []):
        try:
            store.delete(key)
        except OSError:
            log.exception("could not remove the uncommitted dispute file %s", key)


def get_dispute(session: Session, public_id: str) -> Dispute | None:
    """A dispute of the session's scope, its invoice, thread and attachments loaded."""
    return session.scalars(
        select(Dispute)
        .where(Dispute.public_id == public_id)
        .options(
            selectinload(Dispute.invoice),
            selectinload(Dispute.messages).selectinload(DisputeMessage.author),
            selectinload(Dispute.messages).selectinload(DisputeMessage.attachments),
        )
    ).one_or_none()


def current_for(session: Session, invoice: Invoice) -> Dispute | None:
    """The invoice's newest dispute (the one its page shows)."""
    return session.scalars(
        select(Dispute)
        .where(Dispute.invoice_id == invoice.id)
        .order_by(Dispute.created_at.desc(), Dispute.id.desc())
        .limit(1)
    ).first()


def _store_message(
    session: Session,
    store: FileStore,
    dispute: Dispute,
    *,
    author: PortalUser | None,
    body: str,
    uploads: Sequence[Upload],
    now: datetime,
) -> DisputeMessage:
    owner = {"company_id": dispute.company_id, "billing_account_id": dispute.billing_account_id}
    message = DisputeMessage(
        **owner,
        dispute_id=dispute.id,
        author_user_id=author.id if author else None,
        author_kind="customer" if author else "staff",
        body=body.strip(),
        created_at=now,
    )
    session.add(message)
    session.flush()
    for upload in uploads:
        detected = detect(upload)
        assert detected is not None  # check_uploads ran first
        content_type, extension = detected
        key = f"disputes/{dispute.public_id}/{uuid.uuid4().hex}"
        _remove_unless_committed(session, store, key)  # before the first byte is written
        digest, size = hashlib.sha256(), 0
        with store.writer(key) as out:
            for chunk in upload.chunks():
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        session.add(
            DisputeAttachment(
                **owner,
                dispute_id=dispute.id,
                message_id=message.id,
                storage_key=key,
                filename=_safe_name(upload.filename, extension),
                content_type=content_type,
                size_bytes=size,
                sha256=digest.hexdigest(),
                created_at=now,
            )
        )
    session.flush()
    return message


def _refuse_message(
    session: Session, dispute: Dispute, body: str, uploads: Sequence[Upload]
) -> ActionRefusal | AttachmentRefusal | None:
    """Why a message is refused, if it is; last, the dispute is read again under its row lock,
    so a message never lands on (nor a staff reply reopens) a dispute closed meanwhile."""
    if not dispute.is_active:
        return ActionRefusal.CLOSED
    if not body.strip() and not uploads:
        return ActionRefusal.EMPTY
    refusal = check_uploads(uploads)
    if refusal is None and not lock_active(session, dispute):
        return ActionRefusal.CLOSED
    return refusal


def post_message(
    session: Session,
    store: FileStore,
    dispute: Dispute,
    user: PortalUser,
    *,
    body: str,
    uploads: Sequence[Upload],
    now: datetime,
    request: audit.RequestInfo,
) -> Outcome:
    """The customer writes: refused, with nothing stored, for a closed dispute, an empty
    message or a file that is not a PDF, PNG or JPEG of at most 10 MB."""
    refusal = _refuse_message(session, dispute, body, uploads)
    if refusal is not None:
        return Outcome(refusal=refusal)
    message = _store_message(
        session, store, dispute, author=user, body=body, uploads=uploads, now=now
    )
    audit.record_for(
        session,
        user,
        "Portal.DisputeMessagePosted",
        request=request,
        dispute=dispute.public_id,
        attachments=len(uploads),
    )
    _publish(session, dispute, ar_events.DISPUTE_MESSAGE, by="customer", attachments=len(uploads))
    return Outcome(dispute=dispute, message=message)


def staff_reply(
    session: Session,
    store: FileStore,
    dispute: Dispute,
    *,
    body: str,
    uploads: Sequence[Upload],
    now: datetime,
) -> Outcome:
    """The billing team answers: the dispute is under review from then on."""
    refusal = _refuse_message(session, dispute, body, uploads)
    if refusal is not None:
        return Outcome(refusal=refusal)
    message = _store_message(
        session, store, dispute, author=None, body=body, uploads=uploads, now=now
    )
    dispute.status = DisputeStatus.UNDER_REVIEW
    audit.record(
        session,
        "Portal.DisputeMessagePosted",
        company_id=dispute.company_id,
        dispute=dispute.public_id,
        attachments=len(uploads),
        by="staff",
    )
    session.flush()
    _publish(session, dispute, ar_events.DISPUTE_REPLIED, by="staff", attachments=len(uploads))
    return Outcome(dispute=dispute, message=message)


def release_invoice(session: Session, invoice: Invoice) -> None:
    """A disputed invoice whose dispute closed: the status its amounts make it (overdue is
    derived from the due date, never stored), or Processing while a payment is on its way."""
    if invoice.status is not InvoiceStatus.DISPUTED:
        return
    processing = reserved_amounts(session, [invoice.id], statuses=(PaymentStatus.PROCESSING,))
    if invoice.balance_due <= 0:
        invoice.status = InvoiceStatus.PAID
    elif processing.get(invoice.id, 0) > 0:
        invoice.status = InvoiceStatus.PROCESSING
    elif invoice.amount_paid > 0:
        invoice.status = InvoiceStatus.PARTIALLY_PAID
    else:
        invoice.status = InvoiceStatus.OPEN


def _close(
    session: Session, dispute: Dispute, status: DisputeStatus, now: datetime, reason: str
) -> None:
    dispute.status = status
    dispute.resolved_at = now
    dispute.outcome_reason = reason.strip()[:500] or None
    invoice = session.get(Invoice, dispute.invoice_id)
    assert invoice is not None
    others = session.scalar(
        select(Dispute.id).where(
            Dispute.invoice_id == invoice.id,
            Dispute.id != dispute.id,
            Dispute.status.in_(ACTIVE_DISPUTE),
        )
    )
    if others is None:
        release_invoice(session, invoice)
    session.flush()


_CREDIT_NUMBER = re.compile(r"CN-(\d+)")


def next_credit_number(session: Session, company_id: int) -> str:
    """The company's next credit note number: CN-301, CN-302 … (after the highest so far).
    Read under the company's row lock (SELECT … FOR UPDATE; SQLite: the write lock the unit
    holds), held to the commit, so two credits at once get consecutive numbers, never one."""
    session.execute(select(Company.id).where(Company.id == company_id).with_for_update())
    numbers = session.scalars(
        select(CreditNote.number).where(
            CreditNote.company_id == company_id, CreditNote.number.like("CN-%")
        )
    )
    highest = max(
        (int(m.group(1)) for n in numbers if (m := _CREDIT_NUMBER.fullmatch(n))), default=300
    )
    return f"CN-{highest + 1}"


def lock_active(session: Session, dispute: Dispute) -> bool:
    """Read the dispute again under its row lock (SELECT … FOR UPDATE on PostgreSQL; SQLite:
    the write lock the unit holds), held to the commit: whether it is still active. Every
    outcome (withdrawal, credit, rejection) asks this first, so only one of two at once wins;
    the other sees the dispute closed."""
    session.execute(
        select(Dispute)
        .where(Dispute.id == dispute.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    return dispute.is_active


def resolve_with_credit(
    session: Session, dispute: Dispute, *, amount: int, reason: str, now: datetime
) -> Outcome:
    """Resolve with a credit note of `amount` (minor units) against the invoice: its balance
    falls by that much, and the invoice leaves Disputed."""
    if not lock_active(session, dispute):
        return Outcome(refusal=ActionRefusal.CLOSED)
    invoice = session.get(Invoice, dispute.invoice_id)
    assert invoice is not None
    credit = credit_notes.apply(
        session,
        invoice,
        number=next_credit_number(session, dispute.company_id),
        amount=amount,
        currency=invoice.currency,
        issue_date=now.date(),
        now=now,
        reason=reason.strip()[:300],
    )
    if credit.credit_note is None:
        return Outcome(refusal=ActionRefusal.CREDIT, credit_refusal=credit.refusal)
    dispute.credit_note_id = credit.credit_note.id
    _close(session, dispute, DisputeStatus.CREDIT_ISSUED, now, reason)
    audit.record(
        session,
        "Portal.DisputeResolved",
        company_id=dispute.company_id,
        dispute=dispute.public_id,
        outcome=DisputeStatus.CREDIT_ISSUED.value,
    )
    note = credit.credit_note
    _publish(
        session,
        dispute,
        ar_events.DISPUTE_RESOLVED,
        outcome=DisputeStatus.CREDIT_ISSUED.value,
        credit_note={"id": note.public_id, "number": note.number, "amount_minor": note.amount},
    )
    return Outcome(dispute=dispute)


def reject(session: Session, dispute: Dispute, *, reason: str, now: datetime) -> Outcome:
    """Reject the dispute, saying why (a reason is needed: the customer reads it)."""
    if not reason.strip():
        return Outcome(refusal=ActionRefusal.NO_REASON)
    if not lock_active(session, dispute):
        return Outcome(refusal=ActionRefusal.CLOSED)
    _close(session, dispute, DisputeStatus.REJECTED, now, reason)
    audit.record(
        session,
        "Portal.DisputeResolved",
        company_id=dispute.company_id,
        dispute=dispute.public_id,
        outcome=DisputeStatus.REJECTED.value,
    )
    _publish(session, dispute, ar_events.DISPUTE_RESOLVED, outcome=DisputeStatus.REJECTED.value)
    return Outcome(dispute=dispute)


def withdraw(
    session: Session,
    dispute: Dispute,
    user: PortalUser,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> Outcome:
    """The customer takes the dispute back: the invoice is owed again as its amounts say."""
    if not lock_active(session, dispute):
        return Outcome(refusal=ActionRefusal.CLOSED)
    dispute.withdrawn_at = now
    _close(session, dispute, DisputeStatus.WITHDRAWN, now, "")
    audit.record_for(
        session, user, "Portal.DisputeWithdrawn", request=request, dispute=dispute.public_id
    )
    _publish(session, dispute, ar_events.DISPUTE_WITHDRAWN)
    return Outcome(dispute=dispute)


def list_all(session: Session, *, limit: int = 200) -> list[Dispute]:
    """Every dispute the session may see, newest first (the CLI's list; bounded)."""
    return list(
        session.scalars(
            select(Dispute)
            .options(selectinload(Dispute.invoice))
            .order_by(Dispute.created_at.desc(), Dispute.id.desc())
            .limit(limit)
        )
    )


def attachment_for_download(session: Session, public_id: str) -> Downloadable | None:
    """An attachment the session's scope may see (None: not theirs, or no such file)."""
    attachment = session.scalars(
        select(DisputeAttachment).where(DisputeAttachment.public_id == public_id)
    ).one_or_none()
    if attachment is None:
        return None
    dispute = session.get(Dispute, attachment.dispute_id)
    return Downloadable(
        attachment.storage_key,
        attachment.filename,
        attachment.content_type,
        "Portal.DisputeAttachmentDownloaded",
        {"dispute": dispute.public_id if dispute else None, "attachment": attachment.public_id},
    )
