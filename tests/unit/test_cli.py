"""The operator's commands (`flask --app wsgi ...`), run through Flask's CLI runner inside the
test's transaction: what they print and what they change."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import DEFAULT_FLAGS, Company, InvoiceStatus, InvoiceTally, PaymentStatus
from portal.services import seed
from tests.factories import (
    account_named,
    company_named,
    make_invoice,
    make_payment,
    make_payment_method,
)
from tests.web.payment_helpers import invoice, payment


@pytest.fixture
def cli(app: Flask, connection: Connection) -> object:
    return app.test_cli_runner()


def _flags(cli: object) -> dict[str, str]:
    listed = cli.invoke(args=["flags", "list"])  # type: ignore[attr-defined]
    assert listed.exit_code == 0, listed.output
    states = {}
    for line in listed.output.splitlines():
        assignment, _, effect = line.partition("  ")
        assert effect, line  # each flag says what it switches
        name, _, state = assignment.partition("=")
        states[name] = state
    return states


def test_flags_are_listed_with_their_defaults_and_switched_by_name(cli: object) -> None:
    before = _flags(cli)
    assert set(before) == set(DEFAULT_FLAGS)
    name = "m25_portal_payment"
    switched = cli.invoke(args=["flags", "set", f"{name}=off"])  # type: ignore[attr-defined]
    assert switched.exit_code == 0 and f"{name} is off" in switched.output
    assert "every process sees it within 0 s" in switched.output
    assert _flags(cli) == {**before, name: "off"}
    back = cli.invoke(args=["flags", "set", f"{name}=on"])  # type: ignore[attr-defined]
    assert back.exit_code == 0 and _flags(cli)[name] == "on"


@pytest.mark.parametrize("assignment", ["m25_portal_payment=maybe", "no_such_flag=on", "on"])
def test_a_flag_assignment_that_is_not_name_on_or_off_is_refused(
    cli: object, assignment: str
) -> None:
    before = _flags(cli)
    refused = cli.invoke(args=["flags", "set", assignment])  # type: ignore[attr-defined]
    assert refused.exit_code == 1
    assert "use NAME=on|off with NAME one of:" in refused.output
    name = assignment.partition("=")[0]
    if name in DEFAULT_FLAGS:
        assert f"{name} takes on or off, not 'maybe'" in refused.output
    else:
        assert f"unknown flag {name!r}" in refused.output
    assert all(name in refused.output for name in DEFAULT_FLAGS)
    assert _flags(cli) == before


def test_seed_clean_removes_the_demo_companies_and_keeps_others(cli: object, db: Session) -> None:
    from tests.factories import make_company

    kept = make_company(db, "Not A Demo Ltd")
    removed = cli.invoke(args=["seed", "clean"])  # type: ignore[attr-defined]
    assert removed.exit_code == 0 and "removed 3 demo companies" in removed.output
    with tenancy.system(db):
        names = db.scalars(select(Company.name)).all()
    assert kept.name in names and not set(seed.DEMO_COMPANIES) & set(names)
    again = cli.invoke(args=["seed", "clean"])  # type: ignore[attr-defined]
    assert "removed 0 demo companies" in again.output


def test_drain_runs_the_due_work_here_and_list_shows_what_is_left(
    app: Flask, cli: object, db: Session
) -> None:
    runtime = app.extensions["portal.runtime"]
    now = app.extensions["portal.clock"].now()
    runtime.hand_off(db, "workers.jobs.healthcheck", "now")
    runtime.enqueue_at(db, now + timedelta(hours=1), "workers.jobs.healthcheck", "later")
    db.commit()
    listed = cli.invoke(args=["jobs", "list"])  # type: ignore[attr-defined]
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert [line.split("\t")[2:4] for line in lines] == [
        ["healthcheck", "queued"],
        ["healthcheck", "pending"],
    ]
    drained = cli.invoke(args=["jobs", "drain"])  # type: ignore[attr-defined]
    assert drained.exit_code == 0 and "1 piece(s) of work run" in drained.output
    left = cli.invoke(args=["jobs", "list"])  # type: ignore[attr-defined]
    assert [line.split("\t")[3] for line in left.output.splitlines()] == ["pending"]


def test_a_sweep_run_by_hand_charges_what_is_due_and_says_what_it_did(
    app: Flask, cli: object, db: Session
) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "120.00")
    card = make_payment_method(db, company_named(db, "Acme Corp"))
    yesterday = app.extensions["portal.clock"].today() - timedelta(days=1)
    waiting = make_payment(
        db, inv, status=PaymentStatus.SCHEDULED, method=card, scheduled_for=yesterday
    )
    db.commit()
    swept = cli.invoke(args=["jobs", "sweep"])  # type: ignore[attr-defined]
    assert swept.exit_code == 0, swept.output
    assert "'scheduled': 1," in swept.output and "'lockouts_forgotten':" in swept.output
    assert payment(db, waiting.public_id).status is PaymentStatus.SUCCEEDED
    assert invoice(db, inv.number).status is InvoiceStatus.PAID


def test_tallies_check_says_they_match_and_names_a_row_that_does_not(
    cli: object, db: Session
) -> None:
    checked = cli.invoke(args=["tallies", "check"])  # type: ignore[attr-defined]
    assert checked.exit_code == 0 and "tallies match the invoices" in checked.output
    with tenancy.system(db):
        row = db.scalars(select(InvoiceTally).where(InvoiceTally.invoice_count > 0)).first()
        assert row is not None
        db.execute(
            update(InvoiceTally)
            .where(
                InvoiceTally.billing_account_id == row.billing_account_id,
                InvoiceTally.currency == row.currency,
                InvoiceTally.status == row.status,
                InvoiceTally.due_date == row.due_date,
            )
            .values(balance=InvoiceTally.balance + 7)
        )
        db.commit()
    checked = cli.invoke(args=["tallies", "check"])  # type: ignore[attr-defined]
    assert checked.exit_code == 1
    assert f"account {row.billing_account_id} {row.currency} {row.status}" in checked.output
    assert "1 tallies differ from the invoices" in checked.output
