"""One human reference per payment, from the moment it exists: the same format from the seed and
at run time, on every page, document and export, and for the rows that existed before."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from portal import migrate, tenancy
from portal.db import make_engine
from portal.models import Payment, PaymentStatus
from portal.models import payment as payment_model
from portal.models.payment import REFERENCE_ALPHABET, new_reference, valid_reference
from tests.conftest import BACKENDS, Auth, Inbox, _postgres_database, migrate_and_seed
from tests.factories import account_named, make_invoice
from tests.web.payment_helpers import invoice, method, pay, payment, run_jobs

FORMAT = re.compile(r"^PMT-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")


def test_a_reference_reads_well_and_its_check_character_catches_typing_mistakes() -> None:
    references = {new_reference() for _ in range(500)}
    assert len(references) == 500 and all(FORMAT.match(r) for r in references)
    assert all(valid_reference(r) for r in references)
    for reference in list(references)[:50]:
        code = reference.replace("PMT-", "").replace("-", "")
        for position in range(len(code)):
            for other in REFERENCE_ALPHABET.replace(code[position], ""):
                typo = code[:position] + other + code[position + 1 :]
                assert not valid_reference(f"PMT-{typo[:4]}-{typo[4:]}")
    assert valid_reference(next(iter(references)).lower())  # read back from a phone call
    assert not valid_reference("RCPT-000002") and not valid_reference("pay_abc")


def test_every_seeded_payment_has_a_reference_in_the_one_format(db: Session) -> None:
    with tenancy.system(db):
        made = db.scalars(select(Payment)).all()
    assert made and all(FORMAT.match(p.reference) and valid_reference(p.reference) for p in made)
    assert len({p.reference for p in made}) == len(made)
    assert {p.status for p in made} >= {
        PaymentStatus.SUCCEEDED,
        PaymentStatus.PROCESSING,
        PaymentStatus.FAILED,
    }
    for p in made:  # a receipt carries the reference; nothing else has a receipt number
        assert p.receipt_number == (p.reference if p.status is PaymentStatus.SUCCEEDED else None)


def test_history_shows_a_reference_for_every_payment_never_an_internal_id(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    day = client.application.extensions["portal.clock"].today()
    _r, scheduled = pay(
        client, [invoice(db, "INV-1003")], method(db, "4242").public_id,
        scheduled_for=date.fromordinal(day.toordinal() + 3).isoformat(),
    )  # fmt: skip
    _r, failed = pay(client, [invoice(db, "INV-1002")], method(db, "0341").public_id)
    page = client.get("/portal/payment-history").get_data(as_text=True)
    with tenancy.system(db):
        mine = db.scalars(select(Payment)).all()
    acme = [p for p in mine if p.company_id == payment(db, failed).company_id]
    for p in acme:
        assert f">{p.reference}</a>" in page, p.status
    assert not re.search(r">\s*pay_", page) and "RCPT-" not in page
    statuses = {payment(db, pid).status for pid in (scheduled, failed)}
    assert statuses == {PaymentStatus.SCHEDULED, PaymentStatus.FAILED}
    processing = next(p for p in acme if p.status is PaymentStatus.PROCESSING)
    shown = client.get(f"/portal/payments/{processing.public_id}").get_data(as_text=True)
    assert f"<h1>Payment {processing.reference}</h1>" in shown
    assert processing.public_id not in re.sub(r"<[^>]*>", "", shown)  # in links only


def test_one_reference_on_the_page_the_pdf_the_mail_and_the_export(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    west = account_named(db, "Acme West")
    _r, pid = pay(client, [make_invoice(db, west)], method(db, "4242").public_id)
    _r, failed_pid = pay(client, [make_invoice(db, west)], method(db, "0341").public_id)
    run_jobs(app)
    done, failed = payment(db, pid), payment(db, failed_pid)
    page = client.get(f"/portal/payments/{pid}").get_data(as_text=True)
    assert f"Receipt {done.reference}" in page
    assert f"<dt>Receipt number</dt><dd>{done.reference}</dd>" in page
    pdf = client.get(f"/portal/payments/{pid}/receipt.pdf")
    assert f'filename="receipt-{done.reference}.pdf"' in pdf.headers["Content-Disposition"]
    pdf_text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    assert done.reference in pdf_text and "Acme West" in pdf_text
    assert done.public_id not in pdf_text
    mails = {m["Subject"]: m.get_payload(decode=True).decode() for m in smtp.messages}
    receipt_mail = mails[f"Receipt {done.reference}: payment of ${done.amount / 100:,.2f}"]
    assert f"Receipt number: {done.reference}" in receipt_mail
    failed_mail = next(body for subject, body in mails.items() if "failed" in subject)
    assert f"Reference: {failed.reference}" in failed_mail
    rows = list(csv.DictReader(io.StringIO(client.get("/portal/payment-history.csv").text)))
    by_id = {r["payment_id"]: r for r in rows}
    assert by_id[pid]["reference"] == by_id[pid]["receipt_number"] == done.reference
    assert by_id[failed_pid]["reference"] == failed.reference
    assert by_id[failed_pid]["receipt_number"] == ""


def test_a_reference_already_taken_is_drawn_again(
    client: FlaskClient, signed_in: Auth, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tenancy.system(db):
        taken = db.scalars(select(Payment.reference)).first()
    assert taken is not None
    draws = iter([taken])

    def clashing_then_fresh() -> str:
        return next(draws, None) or new_reference()

    monkeypatch.setattr(payment_model, "new_reference", clashing_then_fresh)
    monkeypatch.setattr("portal.services.payments.creation.new_reference", clashing_then_fresh)
    inv = make_invoice(db, account_named(db, "Acme West"))
    _r, pid = pay(client, [inv], method(db, "4242").public_id)
    made = payment(db, pid)
    assert made.status is PaymentStatus.SUCCEEDED
    assert made.reference != taken and valid_reference(made.reference)


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own (migrations run outside the shared test transaction)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'references.db'}"
        return
    urls = _postgres_database()
    yield next(urls)
    for _ in urls:
        pass


def test_the_migration_gives_existing_payments_a_reference_and_back(
    fresh_url: str, tmp_path: Path
) -> None:
    migrate_and_seed(fresh_url, tmp_path / "files", date.today())
    engine = make_engine(fresh_url)

    def rows(sql: str) -> list[tuple[object, ...]]:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":  # row-level security: a system read
                connection.execute(text("SELECT set_config('app.system', 'on', true)"))
            return [tuple(r) for r in connection.execute(text(sql))]

    config = migrate.alembic_config(fresh_url)
    before = dict(rows("SELECT id, reference FROM payments WHERE status = 'succeeded'"))
    command.downgrade(config, "0005")
    receipts = dict(rows("SELECT id, receipt_number FROM payments WHERE status = 'succeeded'"))
    assert receipts == before  # a downgrade keeps the receipts' numbers
    command.upgrade(config, "head")
    after = rows("SELECT id, status, reference, billing_account_id FROM payments")
    references = [r[2] for r in after]
    assert after and all(isinstance(r, str) and valid_reference(r) for r in references)
    assert len(set(references)) == len(references)
    assert all(r[3] is not None for r in after)
    # Each receipt number given out before stays traceable to the reference that replaced it.
    traced = rows(
        "SELECT properties FROM audit_events WHERE name = 'Portal.PaymentReferenceAssigned'"
    )
    pairs = {}
    for (properties,) in traced:
        found = json.loads(properties) if isinstance(properties, str) else properties
        pairs[found["previous_receipt_number"]] = found["reference"]
    now = dict(rows("SELECT id, reference FROM payments WHERE status = 'succeeded'"))
    assert pairs == {receipts[i]: now[i] for i in receipts}
    # The rebuilt table still refuses to rewrite or delete a payment.
    for refused, sql in (
        ("never change", "UPDATE payments SET reference = 'PMT-0000-0000'"),
        ("append-only", "DELETE FROM payments"),
    ):
        with (
            engine.connect() as connection,
            pytest.raises(DBAPIError, match=refused),
            connection.begin(),
        ):
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT set_config('app.system', 'on', true)"))
            connection.execute(text(sql))
    engine.dispose()
