"""A dispute as a conversation: its page and thread, replies with attachments checked by their
content, withdrawal, the receivables team's outcomes from the CLI, and the mail between."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage
from werkzeug.test import stream_encode_multipart

from portal import tenancy
from portal.disputes import _notify_customers, recipients
from portal.models import (
    ACTIVE_DISPUTE,
    AuditEvent,
    CreditNote,
    Dispute,
    DisputeAttachment,
    DisputeMessage,
    DisputeStatus,
    Invoice,
    InvoiceStatus,
    Notification,
    NotificationTopic,
    PortalUser,
    Role,
    UserAccountGrant,
)
from portal.services import audit, disputes
from tests.conftest import Auth, Inbox, QueryCounter, csrf_token, readable

PNG = (  # a whole 1x1 PNG: signature, IHDR, IDAT, IEND
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU"
    b"\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82"
)
PDF = b"%PDF-1.7\n" + b"1 0 obj << >> endobj\n" * 4 + b"trailer << >>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32 + b"\xff\xd9"
EXE = b"MZ\x90\x00" + b"\x00" * 64


def _dispute(db: Session, number: str) -> Dispute:
    with tenancy.system(db):
        db.expire_all()
        dispute = db.scalars(
            select(Dispute)
            .join(Invoice, Invoice.id == Dispute.invoice_id)
            .where(Invoice.number == number)
        ).one()
        _ = dispute.invoice
        return dispute


def _invoice(db: Session, number: str) -> Invoice:
    with tenancy.system(db):
        db.expire_all()
        return db.scalars(select(Invoice).where(Invoice.number == number)).one()


def _count(db: Session, model: type) -> int:
    with tenancy.system(db):
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def _files(app: Flask, dispute: Dispute) -> list[Path]:
    root = Path(app.config["SETTINGS"].storage_dir) / "disputes" / dispute.public_id
    return sorted(p for p in root.glob("*") if p.is_file()) if root.exists() else []


def _reply(
    client: FlaskClient, dispute: Dispute, message: str = "", files: list[tuple[bytes, str]] = ()
) -> Any:
    path = f"/portal/disputes/{dispute.public_id}"
    data: dict[str, Any] = {"csrf_token": csrf_token(client, path), "message": message}
    data["attachments"] = [
        FileStorage(io.BytesIO(body), filename=name, name="attachments") for body, name in files
    ]
    # Encoded in memory: the test client would spill a large body to a file it never closes.
    stream, length, boundary = stream_encode_multipart(data, use_tempfile=False)
    return client.post(
        path,
        input_stream=stream,
        content_length=length,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def _run(app: Flask) -> int:
    return int(app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now()))


def _events(db: Session, name: str) -> list[AuditEvent]:
    with tenancy.system(db):
        return list(db.scalars(select(AuditEvent).where(AuditEvent.name == name)))


def test_the_page_shows_the_summary_and_the_thread_in_order(
    client: FlaskClient, signed_in: Auth, db: Session, count_queries: QueryCounter
) -> None:
    dispute = _dispute(db, "INV-1011")
    invoice_page = client.get(f"/portal/invoices/{dispute.invoice.public_id}").text
    assert f'href="/portal/disputes/{dispute.public_id}"' in invoice_page
    opened = client.get(f"/portal/invoices/{dispute.invoice.public_id}/dispute")
    assert opened.headers["Location"] == f"/portal/disputes/{dispute.public_id}"
    before = count_queries.count
    page = readable(client.get(f"/portal/disputes/{dispute.public_id}").text)
    # the session, the user, the dispute with its invoice, messages, authors and attachments
    assert count_queries.count - before <= 12
    assert "Dispute of invoice INV-1011" in page
    assert '<span class="badge badge-dispute-under_review">Under review</span>' in page
    assert "The amount is wrong" in page
    first = page.index("The installation was billed for two days")
    second = page.index("checking the engineer")
    assert first < second  # oldest first
    assert page.count("Billing team") == 1 and page.index("Billing team") > first
    assert 'enctype="multipart/form-data"' in page and "Withdraw dispute" in page


def test_a_reply_joins_the_thread_and_mails_receivables_once(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    dispute = _dispute(db, "INV-1011")
    response = _reply(client, dispute, "Here is the timesheet you asked for.")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).text
    assert "Message sent." in page and "Here is the timesheet you asked for." in page
    (event,) = _events(db, "Portal.DisputeMessagePosted")
    assert event.properties == {"dispute": dispute.public_id, "attachments": 0}
    assert _run(app) == 1 and _run(app) == 0
    (mail,) = smtp.messages
    assert mail["To"] == "receivables@billing-portal.invalid"
    assert "INV-1011" in mail["Subject"]
    text = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
    body = text.get_payload(decode=True).decode()
    assert "Here is the timesheet you asked for." in body and dispute.public_id in body


def test_the_content_decides_the_type_of_an_attachment(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    dispute = _dispute(db, "INV-1011")
    before = len(_files(app, dispute))
    response = _reply(client, dispute, "", [(PNG, "photo.pdf"), (PDF, "../../timesheet.pdf")])
    assert response.status_code == 303
    with tenancy.system(db):
        rows = list(
            db.scalars(
                select(DisputeAttachment)
                .where(DisputeAttachment.dispute_id == dispute.id)
                .order_by(DisputeAttachment.id)
            )
        )
    assert [(r.filename, r.content_type) for r in rows] == [
        ("photo.png", "image/png"),  # PNG bytes named .pdf: a PNG, as its bytes say
        ("timesheet.pdf", "application/pdf"),
    ]
    assert all(r.storage_key.startswith(f"disputes/{dispute.public_id}/") for r in rows)
    assert rows[0].size_bytes == len(PNG) and len(_files(app, dispute)) == before + 2
    page = client.get(f"/portal/disputes/{dispute.public_id}").text
    link = re.search(r'href="(/portal/download/[^"]+)">photo.png', page)
    assert link is not None
    download = client.get(link.group(1))
    assert download.status_code == 200 and download.data == PNG
    assert download.headers["Content-Type"] == "image/png"
    download.close()
    assert _events(db, "Portal.DisputeMessagePosted")[0].properties["attachments"] == 2


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([(EXE, "invoice.pdf")], "Attach a PDF, PNG or JPEG file."),
        ([(PDF[:-7], "cut.pdf")], "Attach a PDF, PNG or JPEG file."),  # no %%EOF
        ([(PNG[:-12], "cut.png")], "Attach a PDF, PNG or JPEG file."),  # no IEND
        ([(JPEG[:-2], "cut.jpg")], "Attach a PDF, PNG or JPEG file."),  # no end of image
        ([(PNG[:8] + PDF, "polyglot.png")], "Attach a PDF, PNG or JPEG file."),
        ([(PDF, "a.pdf"), (EXE, "b.pdf")], "Attach a PDF, PNG or JPEG file."),
        (
            [(PDF + b"\x00" * (disputes.MAX_ATTACHMENT - len(PDF) + 1), "big.pdf")],
            "Each file must be 10 MB or smaller.",
        ),
        ([(PNG, f"p{n}.png") for n in range(6)], "Attach at most 5 files to a message."),
        ([], "Write a message or attach a file."),
    ],
)
def test_a_refused_reply_is_explained_and_stores_nothing(
    app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    files: list[tuple[bytes, str]],
    message: str,
) -> None:
    dispute = _dispute(db, "INV-1011")
    before = (_count(db, DisputeMessage), _count(db, DisputeAttachment), _files(app, dispute))
    response = _reply(client, dispute, "", files)
    assert response.status_code == 422
    page = response.text
    assert message in page and 'aria-invalid="true"' in page
    after = (_count(db, DisputeMessage), _count(db, DisputeAttachment), _files(app, dispute))
    assert after == before
    assert _events(db, "Portal.DisputeMessagePosted") == []


def test_text_over_5000_characters_is_refused_and_kept(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    dispute = _dispute(db, "INV-1011")
    response = _reply(client, dispute, "x" * 5001)
    assert response.status_code == 422
    assert "Keep it under 5,000 characters." in response.text and "x" * 5001 in response.text


def test_a_huge_body_gets_the_too_large_page(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    dispute = _dispute(db, "INV-1011")
    huge = [(PDF + b"\x00" * disputes.MAX_ATTACHMENT, f"{n}.pdf") for n in range(6)]
    response = _reply(client, dispute, "x", huge)
    assert response.status_code == 413
    assert "That upload is too large." in response.text
    elsewhere = client.post(
        "/portal/invoices/x/dispute",
        data={"message": "x" * (11 * 1024 * 1024)},
    )
    assert elsewhere.status_code == 413


def test_another_companys_dispute_is_not_found(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    foreign = _dispute(db, "RE-2026-006")
    for path in ("", "/withdraw"):
        assert client.get(f"/portal/disputes/{foreign.public_id}{path}").status_code == 404
    token = csrf_token(client, "/portal/dashboard")
    posted = client.post(
        f"/portal/disputes/{foreign.public_id}/withdraw", data={"csrf_token": token}
    )
    assert posted.status_code == 404
    assert _dispute(db, "RE-2026-006").status is DisputeStatus.UNDER_REVIEW


def test_another_companys_attachment_link_opens_nothing(
    app: Flask, client: FlaskClient, signed_in: Auth, auth: Auth, db: Session
) -> None:
    dispute = _dispute(db, "INV-1011")
    _reply(client, dispute, "", [(PDF, "mine.pdf")])
    link = re.search(
        r'href="(/portal/download/[^"]+)">mine.pdf',
        client.get(f"/portal/disputes/{dispute.public_id}").text,
    )
    assert link is not None
    auth.logout()
    auth.sign_in("admin@globex.test")
    assert client.get(link.group(1)).status_code == 404


def test_withdraw_asks_then_gives_the_invoice_back(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    dispute = _dispute(db, "INV-1011")
    path = f"/portal/disputes/{dispute.public_id}/withdraw"
    confirm = client.get(path)
    assert (
        confirm.status_code == 200 and "Withdraw the dispute of invoice INV-1011?" in confirm.text
    )
    response = client.post(path, data={"csrf_token": csrf_token(client, path)})
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).text
    assert "Dispute withdrawn." in page and "badge-dispute-withdrawn" in page
    assert "Send message" not in page  # closed: no more messages
    dispute = _dispute(db, "INV-1011")
    assert dispute.status is DisputeStatus.WITHDRAWN and dispute.withdrawn_at is not None
    invoice = _invoice(db, "INV-1011")
    assert invoice.status is InvoiceStatus.OPEN  # no payments; past due, so shown overdue
    assert invoice.display_status(app.extensions["portal.clock"].today()) == "overdue"
    assert len(_events(db, "Portal.DisputeWithdrawn")) == 1
    again = client.post(path, data={"csrf_token": csrf_token(client, "/portal/dashboard")})
    assert again.status_code == 303 and len(_events(db, "Portal.DisputeWithdrawn")) == 1
    assert _run(app) == 1
    (mail,) = smtp.messages
    assert mail["Subject"].startswith("Dispute withdrawn: INV-1011")


def test_cli_reply_resolve_with_credit_changes_the_balance(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    public_id = _dispute(db, "INV-1011").public_id
    balance = _invoice(db, "INV-1011").balance_due
    cli = app.test_cli_runner()
    listed = cli.invoke(args=["disputes", "list"])
    assert listed.exit_code == 0 and public_id in listed.output
    replied = cli.invoke(args=["disputes", "reply", public_id, "--message", "Checked."])
    assert replied.exit_code == 0, replied.output
    resolved = cli.invoke(
        args=["disputes", "resolve", public_id, "--credit", "50.00", "--reason", "One day"]
    )
    assert resolved.exit_code == 0, resolved.output
    assert "CN-302" in resolved.output  # after the seed's CN-301
    invoice = _invoice(db, "INV-1011")
    dispute = _dispute(db, "INV-1011")
    assert dispute.status is DisputeStatus.CREDIT_ISSUED and dispute.outcome_reason == "One day"
    assert invoice.balance_due == balance - 5_000 and invoice.amount_credited == 5_000
    assert invoice.status is InvoiceStatus.PARTIALLY_PAID
    with tenancy.system(db):
        note = db.get(CreditNote, dispute.credit_note_id)
    assert note is not None and note.number == "CN-302" and note.amount == 5_000
    (event,) = _events(db, "Portal.DisputeResolved")
    assert event.properties == {"dispute": dispute.public_id, "outcome": "credit_issued"}
    page = readable(client.get(f"/portal/disputes/{dispute.public_id}").text)
    assert "Credit issued" in page and "CN-302" in page and "Checked." in page
    closed = cli.invoke(args=["disputes", "reject", dispute.public_id, "--reason", "x"])
    assert closed.exit_code != 0 and "closed" in closed.output


def test_cli_resolve_refuses_more_than_the_invoice_owes(app: Flask, db: Session) -> None:
    dispute = _dispute(db, "INV-1011")
    refused = app.test_cli_runner().invoke(
        args=["disputes", "resolve", dispute.public_id, "--credit", "99999999"]
    )
    assert refused.exit_code != 0 and "too_much" in refused.output
    assert _dispute(db, "INV-1011").status is DisputeStatus.UNDER_REVIEW


def test_cli_reject_gives_the_invoice_back(app: Flask, db: Session) -> None:
    dispute = _dispute(db, "INV-2009")
    rejected = app.test_cli_runner().invoke(
        args=["disputes", "reject", dispute.public_id, "--reason", "Delivered as billed."]
    )
    assert rejected.exit_code == 0, rejected.output
    dispute = _dispute(db, "INV-2009")
    assert dispute.status is DisputeStatus.REJECTED
    assert dispute.outcome_reason == "Delivered as billed."
    assert _invoice(db, "INV-2009").status is InvoiceStatus.OPEN
    (event,) = _events(db, "Portal.DisputeResolved")
    assert event.properties["outcome"] == "rejected"


def _notices(db: Session, public_id: str) -> list[Notification]:
    with tenancy.system(db):
        return list(
            db.scalars(
                select(Notification)
                .where(
                    Notification.topic == NotificationTopic.DISPUTE_UPDATED,
                    Notification.link == f"/portal/disputes/{public_id}",
                )
                .order_by(Notification.id)
            )
        )


def test_staff_reply_and_outcome_notify_the_customer_side_once(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    dispute = _dispute(db, "INV-1011")
    public_id, company_id = dispute.public_id, dispute.company_id
    expected = sorted(u.id for u in recipients(db, dispute))
    with tenancy.system(db):
        admins = db.scalars(
            select(PortalUser.id).where(
                PortalUser.company_id == company_id, PortalUser.role == Role.ADMIN
            )
        ).all()
    assert set(admins) <= set(expected) and dispute.opened_by_user_id in expected
    cli = app.test_cli_runner()
    assert cli.invoke(args=["disputes", "reply", public_id, "--message", "On it."]).exit_code == 0
    replies = _notices(db, public_id)
    assert sorted(n.user_id for n in replies) == expected
    assert {n.params["event"] for n in replies} == {"reply"}
    assert all(n.params["invoice"] == "INV-1011" for n in replies)
    # the same event told again (a command or job run twice) notifies nobody twice
    with tenancy.system(db):
        last = db.scalar(select(func.max(DisputeMessage.id)))
    with app.app_context():
        again = _notify_customers(
            app.extensions["portal.runtime"], db, _dispute(db, "INV-1011"), "reply", f"reply:{last}"
        )
    assert again == 0 and len(_notices(db, public_id)) == len(expected)
    rejected = cli.invoke(args=["disputes", "reject", public_id, "--reason", "As billed."])
    assert rejected.exit_code == 0
    outcomes = [n for n in _notices(db, public_id) if n.params["event"] == "rejected"]
    assert sorted(n.user_id for n in outcomes) == expected
    assert all(n.params["reason"] == "As billed." for n in outcomes)
    page = client.get(f"/portal/disputes/{public_id}").text
    assert "badge-dispute-rejected" in page and "As billed." in page


def test_customer_messages_notify_nobody_on_the_customer_side(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    dispute = _dispute(db, "INV-1011")
    assert _reply(client, dispute, "A note.").status_code == 303
    assert _notices(db, dispute.public_id) == []


def test_select_all_leaves_disputed_invoices_out(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    disputed = {_invoice(db, n).public_id for n in ("INV-1011", "INV-2009")}
    overdue = _invoice(db, "INV-1002").public_id
    page = client.get("/portal/invoices").text
    boxes = dict(re.findall(r'<input type="checkbox" name="invoice" value="([^"]+)"([^>]*)>', page))
    assert disputed & set(boxes) and overdue in boxes
    for public_id, rest in boxes.items():
        assert ("data-select-all-skip" in rest) == (public_id in disputed), public_id


def test_cli_reply_attaches_files_checked_like_the_customers(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    public_id = _dispute(db, "INV-1011").public_id
    cli = app.test_cli_runner()
    renamed = tmp_path / "setup.pdf"
    renamed.write_bytes(EXE)
    before = (_count(db, DisputeMessage), _count(db, DisputeAttachment))
    refused = cli.invoke(
        args=["disputes", "reply", public_id, "--message", "See file.", "--attach", str(renamed)]
    )
    assert refused.exit_code != 0 and "type" in refused.output
    assert (_count(db, DisputeMessage), _count(db, DisputeAttachment)) == before
    sheet = tmp_path / "timesheet.pdf"
    sheet.write_bytes(PDF)
    done = cli.invoke(
        args=["disputes", "reply", public_id, "--message", "See file.", "--attach", str(sheet)]
    )
    assert done.exit_code == 0, done.output
    with tenancy.system(db):
        message = db.scalars(
            select(DisputeMessage).order_by(DisputeMessage.id.desc()).limit(1)
        ).one()
        (attachment,) = message.attachments
    assert message.author_kind == "staff" and message.author_user_id is None
    assert (attachment.filename, attachment.content_type) == ("timesheet.pdf", "application/pdf")
    assert _dispute(db, "INV-1011").status is DisputeStatus.UNDER_REVIEW


def test_the_receivables_address_is_a_setting() -> None:
    from portal.config import Settings

    assert Settings().disputes_email == "receivables@billing-portal.invalid"
    chosen = Settings.from_env({"PORTAL_ENV": "testing", "DISPUTES_EMAIL": "ar@example.com"})
    assert chosen.disputes_email == "ar@example.com"


def test_an_opener_who_lost_the_account_is_no_longer_told(app: Flask, db: Session) -> None:
    dispute = _dispute(db, "INV-1011")  # Acme West
    with tenancy.system(db):
        opener = db.scalars(select(PortalUser).where(PortalUser.email == "ap@acme.test")).one()
        assert opener.role is Role.CUSTOMER
        dispute.opened_by_user_id = opener.id
        db.flush()
        admins = set(
            db.scalars(
                select(PortalUser.id).where(
                    PortalUser.company_id == dispute.company_id, PortalUser.role == Role.ADMIN
                )
            )
        )
    assert {u.id for u in recipients(db, dispute)} == admins | {opener.id}
    with tenancy.system(db):
        db.execute(
            delete(UserAccountGrant).where(
                UserAccountGrant.user_id == opener.id,
                UserAccountGrant.billing_account_id == dispute.billing_account_id,
            )
        )
        db.expire_all()
    dispute = _dispute(db, "INV-1011")
    assert {u.id for u in recipients(db, dispute)} == admins  # the admins still hear of it
    public_id = dispute.public_id
    cli = app.test_cli_runner()
    assert cli.invoke(args=["disputes", "reply", public_id, "--message", "On it."]).exit_code == 0
    assert {n.user_id for n in _notices(db, public_id)} == admins


def _close_behind_its_back(db: Session, dispute: Dispute, status: DisputeStatus) -> None:
    """What another writer committed while this one held the dispute as it was: the row
    changes, the object in hand does not."""
    with tenancy.system(db):
        db.execute(
            update(Dispute)
            .where(Dispute.id == dispute.id)
            .values(status=status)
            .execution_options(synchronize_session=False)
        )
    assert dispute.is_active  # still what it was when loaded


def test_a_withdrawal_after_another_outcome_is_refused_with_a_conflict(
    client: FlaskClient, signed_in: Auth, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    import portal.disputes as application

    dispute = _dispute(db, "INV-1011")
    path = f"/portal/disputes/{dispute.public_id}/withdraw"
    token = csrf_token(client, path)
    original = application.customer_withdraw

    def credited_meanwhile(runtime: Any, session: Session, dispute: Dispute, *a: Any, **k: Any):  # type: ignore[no-untyped-def]
        _close_behind_its_back(session, dispute, DisputeStatus.CREDIT_ISSUED)
        return original(runtime, session, dispute, *a, **k)

    monkeypatch.setattr(application, "customer_withdraw", credited_meanwhile)
    response = client.post(path, data={"csrf_token": token})
    assert response.status_code == 409
    page = readable(response.text)
    assert "This dispute was closed in the meantime: it can no longer be withdrawn." in page
    assert "badge-dispute-credit_issued" in page
    after = _dispute(db, "INV-1011")
    assert after.status is DisputeStatus.CREDIT_ISSUED and after.withdrawn_at is None
    assert _events(db, "Portal.DisputeWithdrawn") == []
    assert _invoice(db, "INV-1011").status is InvoiceStatus.DISPUTED  # not released twice


@pytest.mark.parametrize("outcome", ["resolve", "reject", "withdraw", "reply", "message"])
def test_every_outcome_looks_again_under_the_lock(app: Flask, db: Session, outcome: str) -> None:
    dispute = _dispute(db, "INV-1011")
    credits, messages = _count(db, CreditNote), _count(db, DisputeMessage)
    _close_behind_its_back(db, dispute, DisputeStatus.WITHDRAWN)
    now = app.extensions["portal.clock"].now()
    with tenancy.system(db):
        if outcome == "resolve":
            done = disputes.resolve_with_credit(db, dispute, amount=100, reason="x", now=now)
        elif outcome == "reject":
            done = disputes.reject(db, dispute, reason="As billed.", now=now)
        elif outcome == "reply":  # would put it back under review
            store = app.extensions["portal.runtime"].store
            done = disputes.staff_reply(db, store, dispute, body="x", uploads=[], now=now)
        elif outcome == "message":
            store = app.extensions["portal.runtime"].store
            user = db.get(PortalUser, dispute.opened_by_user_id)
            assert user is not None
            request = audit.RequestInfo(user_agent="test")
            done = disputes.post_message(
                db, store, dispute, user, body="x", uploads=[], now=now, request=request
            )
        else:
            user = db.get(PortalUser, dispute.opened_by_user_id)
            assert user is not None
            request = audit.RequestInfo(user_agent="test")
            done = disputes.withdraw(db, dispute, user, now=now, request=request)
    assert done.refusal is disputes.ActionRefusal.CLOSED
    assert _dispute(db, "INV-1011").status is DisputeStatus.WITHDRAWN
    assert _count(db, CreditNote) == credits and _events(db, "Portal.DisputeResolved") == []
    assert _events(db, "Portal.DisputeMessagePosted") == []
    assert _count(db, DisputeMessage) == messages


@pytest.mark.parametrize("reason", ["", "   ", "\t\n"])
def test_cli_reject_needs_a_reason(app: Flask, db: Session, reason: str) -> None:
    dispute = _dispute(db, "INV-2009")
    before = dispute.status
    refused = app.test_cli_runner().invoke(
        args=["disputes", "reject", dispute.public_id, "--reason", reason]
    )
    assert refused.exit_code == 1 and refused.exception is not None
    assert isinstance(refused.exception, SystemExit)  # a message, not a traceback
    assert "give a --reason" in refused.output
    assert _dispute(db, "INV-2009").status is before and before in ACTIVE_DISPUTE
    now = app.extensions["portal.clock"].now()
    with tenancy.system(db):
        done = disputes.reject(db, _dispute(db, "INV-2009"), reason=reason, now=now)
    assert done.refusal is disputes.ActionRefusal.NO_REASON


def test_cli_says_a_colliding_write_in_a_sentence(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    import portal.disputes as application

    def collides(*_args: Any, **_kwargs: Any) -> None:
        raise IntegrityError("INSERT INTO credit_notes", {}, Exception("duplicate key"))

    monkeypatch.setattr(application, "resolve_with_credit", collides)
    dispute = _dispute(db, "INV-1011")
    result = app.test_cli_runner().invoke(
        args=["disputes", "resolve", dispute.public_id, "--credit", "1.00"]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "saved at the same moment: nothing was changed" in result.output


def test_cli_show_reads_the_thread_and_attachment_writes_the_file(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    dispute = _dispute(db, "INV-1011")
    cli = app.test_cli_runner()
    sheet = tmp_path / "timesheet.pdf"
    sheet.write_bytes(PDF)
    replied = cli.invoke(
        args=["disputes", "reply", dispute.public_id, "--message", "See file.", "--attach", sheet]
    )
    assert replied.exit_code == 0, replied.output
    with tenancy.system(db):
        attachment = db.scalars(select(DisputeAttachment)).one()
        opener = db.get(PortalUser, dispute.opened_by_user_id)
    assert opener is not None
    shown = cli.invoke(args=["disputes", "show", dispute.public_id])
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert f"dispute  {dispute.public_id}" in out and "invoice  INV-1011 (disputed)" in out
    assert "status   under_review" in out and "reason   incorrect_amount" in out
    first = out.index(f"{opener.name} <{opener.email}>")
    assert out.index("The installation was billed for two days") > first
    assert out.index("See file.") > out.index("checking the engineer") > first  # oldest first
    assert out.count("Billing team") == 2 and " UTC " in out
    assert f"[attachment {attachment.public_id}] timesheet.pdf" in out
    assert f"(application/pdf, {len(PDF)} bytes)" in out
    target = tmp_path / "out" / "copy.pdf"
    missing_dir = cli.invoke(
        args=["disputes", "attachment", attachment.public_id, "--out", str(target)]
    )
    assert missing_dir.exit_code == 1 and isinstance(missing_dir.exception, SystemExit)
    assert "could not write" in missing_dir.output
    target.parent.mkdir()
    wrote = cli.invoke(args=["disputes", "attachment", attachment.public_id, "--out", str(target)])
    assert wrote.exit_code == 0, wrote.output
    assert target.read_bytes() == PDF
    target.write_bytes(b"mine")
    kept = cli.invoke(args=["disputes", "attachment", attachment.public_id, "--out", str(target)])
    assert kept.exit_code == 1 and "exists" in kept.output and "--force" in kept.output
    assert target.read_bytes() == b"mine"
    forced = cli.invoke(
        args=["disputes", "attachment", attachment.public_id, "--out", str(target), "--force"]
    )
    assert forced.exit_code == 0 and target.read_bytes() == PDF
    unknown = cli.invoke(
        args=["disputes", "attachment", "att_nothing", "--out", str(tmp_path / "x")]
    )
    assert unknown.exit_code == 1 and "no attachment att_nothing" in unknown.output
    nobody = cli.invoke(args=["disputes", "show", "dsp_nothing"])
    assert nobody.exit_code == 1 and "no dispute dsp_nothing" in nobody.output


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PDF, ("application/pdf", "pdf")),
        (PDF + b"\n" * 100, ("application/pdf", "pdf")),  # whitespace after %%EOF
        (PNG, ("image/png", "png")),
        (JPEG, ("image/jpeg", "jpg")),
        (PDF.replace(b"%%EOF", b"%%EOX"), None),
        (PNG[:8] + b"\x00\x00\x00\rIDAT" + PNG[16:], None),  # IHDR not first
        (PNG[:23] + b"\x02" + PNG[24:], None),  # IHDR's CRC does not match it
        (PNG[:8] + b"\x00" * 64, None),  # a signature and nothing after it
        (b"\xff\xd8\xff" + PDF, None),  # a JPEG's start, a PDF's end
        (EXE, None),
    ],
)
def test_a_file_is_judged_by_its_structure(data: bytes, expected: tuple[str, str] | None) -> None:
    assert disputes.sniff(data) == expected
    assert disputes.detect(disputes.Upload.of_bytes("f", data)) == expected


class _Watched(io.BytesIO):
    """A stream that remembers the most it was asked for at once."""

    largest = 0

    def read(self, size: int | None = -1, /) -> bytes:
        self.largest = max(self.largest, size if size is not None and size >= 0 else 1 << 62)
        return super().read(size)


def test_an_attachment_is_read_in_chunks_and_its_size_checked_first(
    app: Flask, db: Session
) -> None:
    dispute = _dispute(db, "INV-1011")
    body = PDF[:-6] + b"\x00" * (3 * disputes.CHUNK) + PDF[-6:]
    stream = _Watched(body)
    upload = disputes.Upload.of("big.pdf", stream)
    oversized = _Watched(PDF + b"\x00" * disputes.MAX_ATTACHMENT)
    with tenancy.system(db):
        user = db.get(PortalUser, dispute.opened_by_user_id)
        assert user is not None
        store = app.extensions["portal.runtime"].store
        request = audit.RequestInfo(user_agent="test")
        now = app.extensions["portal.clock"].now()
        refused = disputes.post_message(
            db, store, dispute, user, body="", uploads=[disputes.Upload.of("x.pdf", oversized)],
            now=now, request=request,
        )  # fmt: skip
        assert refused.refusal is disputes.AttachmentRefusal.SIZE
        assert oversized.largest == 0  # refused by its size: not a byte read
        done = disputes.post_message(
            db, store, dispute, user, body="", uploads=[upload], now=now, request=request
        )
        assert done.message is not None
        (attachment,) = done.message.attachments
    assert attachment.size_bytes == len(body)
    assert attachment.sha256 == hashlib.sha256(body).hexdigest()
    assert 0 < stream.largest <= disputes.CHUNK
    assert (Path(app.config["SETTINGS"].storage_dir) / attachment.storage_key).read_bytes() == body


def test_files_of_a_message_that_is_not_committed_are_removed(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import portal.disputes as application

    dispute = _dispute(db, "INV-1011")
    public_id, before = dispute.public_id, _files(app, dispute)
    with tenancy.system(db):
        user = db.get(PortalUser, dispute.opened_by_user_id)
        assert user is not None
        outcome = disputes.post_message(
            db,
            app.extensions["portal.runtime"].store,
            dispute,
            user,
            body="",
            uploads=[disputes.Upload.of_bytes("a.png", PNG), disputes.Upload.of_bytes("b", PDF)],
            now=app.extensions["portal.clock"].now(),
            request=audit.RequestInfo(user_agent="test"),
        )
        assert outcome.message is not None
    assert len(_files(app, dispute)) == len(before) + 2
    db.rollback()  # the transaction does not commit: its files go with it
    dispute = _dispute(db, "INV-1011")
    assert _files(app, dispute) == before

    # The command's transaction fails after the files were written: none is left behind.
    def breaks(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("the notification could not be recorded")

    monkeypatch.setattr(application, "_notify_customers", breaks)
    sheet = tmp_path / "timesheet.pdf"
    sheet.write_bytes(PDF)
    failed = app.test_cli_runner().invoke(
        args=["disputes", "reply", public_id, "--message", "x", "--attach", str(sheet)]
    )
    assert failed.exit_code == 1 and isinstance(failed.exception, RuntimeError)
    assert _files(app, dispute) == before
    assert _count(db, DisputeAttachment) == 0


def test_cli_reply_refuses_a_file_too_large_or_unreadable(
    app: Flask, db: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public_id = _dispute(db, "INV-1011").public_id
    messages = _count(db, DisputeMessage)
    cli = app.test_cli_runner()
    big = tmp_path / "big.pdf"
    with big.open("wb") as out:
        out.truncate(disputes.MAX_ATTACHMENT + 1)  # sparse: nothing to read into memory
    refused = cli.invoke(
        args=["disputes", "reply", public_id, "--message", "x", "--attach", str(big)]
    )
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit)
    assert "big.pdf is larger than 10 MB" in refused.output
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(PDF)
    opens = Path.open

    def denied(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "locked.pdf":
            raise PermissionError(13, "Permission denied", str(self))
        return opens(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    unreadable = cli.invoke(
        args=["disputes", "reply", public_id, "--message", "x", "--attach", str(locked)]
    )
    assert unreadable.exit_code == 1 and isinstance(unreadable.exception, SystemExit)
    assert f"could not read {locked}: Permission denied" in unreadable.output
    assert _count(db, DisputeMessage) == messages
