"""Autopay, attacked (review of issue 17): a consent lost through the receivables import turns
autopay off like one lost on the users page; the day the page and the invoice page promise is
the day the job charges."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import AutopayOff, AutopayStepKind, InvoiceStatus, PaymentStatus, Role
from portal.services import autopay, payment_methods, receivables
from tests.conftest import Inbox
from tests.factories import (
    make_account,
    make_invoice,
    make_payment,
    make_payment_method,
    make_user,
)
from tests.jobs.test_autopay import (
    REQUEST,
    Shop,
    autopay_payments,
    now,
    run,
    run_outbox,
    steps,
    subjects,
    today,
)


def _import_user(
    db: Session, shop: Shop, email: str, role: Role, accounts: list[str], name: str = ""
) -> None:
    with tenancy.system(db):
        shop.company.code = shop.company.code or f"C{shop.company.id}"
        db.flush()
        item = {"company": shop.company.code, "email": email, "role": role.value, "name": name}
        if accounts:
            item["accounts"] = accounts  # type: ignore[assignment]
        batch = receivables.from_api("users", [item])
        report = receivables.upsert(db, batch, now=now())
    assert report.ok, report.errors


def test_a_member_whose_grant_the_import_takes_away_no_longer_pays_by_autopay(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db, due=0, notice=0)
    with tenancy.system(db):
        second = make_account(db, shop.company, "Second")
    own = make_payment_method(db, shop.company, last4="1111", user=shop.member)
    shop.turn_on(shop.member, own)
    assert shop.setting.consented_by_user_id == shop.member.id
    # The receivables system moves the clerk to the other account.
    _import_user(db, shop, shop.member.email, Role.CUSTOMER, [second.number])
    assert shop.setting.enabled is False
    assert shop.setting.off_reason is AutopayOff.CONSENT_LOST
    db.commit()
    run(app)
    run(app)
    assert autopay_payments(db, shop.invoice) == []  # never charged on a consent gone
    run_outbox(app)
    assert subjects(smtp, "boss@autopaid.test") == ["Automatic payments turned off"]
    assert subjects(smtp, "clerk@autopaid.test") == ["Automatic payments turned off"]


def test_an_admin_the_import_demotes_to_another_account_no_longer_pays_by_autopay(
    app: Flask, db: Session
) -> None:
    shop = Shop(db, due=0, notice=0)
    make_user(db, shop.company, "second@autopaid.test")  # the company keeps an admin
    with tenancy.system(db):
        second = make_account(db, shop.company, "Second")
    _import_user(db, shop, shop.admin.email, Role.CUSTOMER, [second.number])
    assert shop.setting.enabled is False
    assert shop.setting.off_reason is AutopayOff.CONSENT_LOST
    db.commit()
    run(app)
    assert autopay_payments(db, shop.invoice) == []


def test_an_import_that_keeps_the_access_keeps_autopay(app: Flask, db: Session) -> None:
    shop = Shop(db, due=0, notice=0)
    _import_user(db, shop, shop.admin.email, Role.ADMIN, [], name="Renamed")  # a name only
    assert shop.setting.enabled is True
    db.commit()
    run(app)
    run(app)
    assert len(autopay_payments(db, shop.invoice)) == 1


def test_a_setting_whose_consenting_user_may_no_longer_manage_it_is_turned_off_by_the_job(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    """However the consent went (a path that forgot the hook), the job neither tells nor
    charges on it: it turns the setting off and says so."""
    shop = Shop(db, due=0, notice=0)
    with tenancy.system(db):
        shop.admin.role = Role.CUSTOMER  # behind autopay's back, no grant
        shop.admin.grants = []
        db.flush()
    db.commit()
    run(app)
    run(app)
    assert autopay_payments(db, shop.invoice) == []
    assert steps(db, shop.invoice) == []  # not even a notice of a charge that will not come
    with tenancy.system(db):
        db.refresh(shop.setting)
    assert shop.setting.enabled is False and shop.setting.off_reason is AutopayOff.CONSENT_LOST
    run_outbox(app)
    assert subjects(smtp, "clerk@autopaid.test") == []  # a member: not an admin, not consenting


def test_the_day_the_page_promises_is_the_day_the_notice_names(app: Flask, db: Session) -> None:
    shop = Shop(db, due=1, notice=7)  # due tomorrow, a week's notice
    with tenancy.system(db):
        promised = autopay.will_charge(db, shop.invoice, today())
        (upcoming,) = autopay.upcoming(db, [shop.setting], today())[shop.account.id]
    db.commit()
    run(app)
    with tenancy.system(db):
        notice = autopay.step(db, shop.invoice, autopay.AutopayStepKind.NOTICE, 0)
    assert notice.day == today() + timedelta(days=7)
    assert promised == notice.day
    assert upcoming[1] == notice.day
    overdue = make_invoice(db, shop.account, "10.00", due=-5, number="AP-OLD")
    with tenancy.system(db):
        assert autopay.will_charge(db, overdue, today()) == today() + timedelta(days=7)


def test_an_admin_who_updates_a_members_card_carries_its_autopay(app: Flask, db: Session) -> None:
    """The member's autopay follows the card an admin put in its place (the admin's consent
    from then on), and the job's check of the consent does not turn it off."""
    shop = Shop(db, due=0, notice=0)
    own = make_payment_method(db, shop.company, last4="1111", user=shop.member)
    shop.turn_on(shop.member, own, notice=0)
    new = make_payment_method(db, shop.company, last4="5555", user=shop.admin)
    tenancy.bind(db, tenancy.scope_for_user(shop.admin))
    moved = payment_methods.replace(db, shop.admin, own, new, now=now(), request=REQUEST)
    assert moved == 0  # no scheduled payment; the setting moved
    assert shop.setting.payment_method_id == new.id
    assert shop.setting.consented_by_user_id == shop.admin.id
    db.commit()
    run(app)
    run(app)
    (paid,) = autopay_payments(db, shop.invoice)
    assert paid.payment_method_id == new.id
    with tenancy.system(db):
        db.refresh(shop.setting)
    assert shop.setting.enabled is True


def test_turned_off_after_the_notice_and_on_again_later_it_tells_again_before_charging(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    clock = app.extensions["portal.clock"]
    shop = Shop(db, due=3, notice=3)
    db.commit()
    run(app)  # the notice: charged in three days
    with tenancy.system(db):
        assert autopay.turn_off(db, shop.admin, shop.setting, now=now(), request=REQUEST) is None
    db.commit()
    clock.advance(timedelta(days=10))  # long past the day the notice named
    run(app)
    with tenancy.system(db):
        db.refresh(shop.setting)
    shop.turn_on(shop.admin, shop.card, notice=3)
    db.commit()
    run(app)
    run(app)
    assert autopay_payments(db, shop.invoice) == []  # not at once, on the old notice
    with tenancy.system(db):
        notice = autopay.step(db, shop.invoice, autopay.AutopayStepKind.NOTICE, 0)
    assert notice.day == clock.today() + timedelta(days=3)  # told again, three days ahead
    run_outbox(app)
    told = subjects(smtp, "boss@autopaid.test").count("Invoice AP-1 will be paid automatically")
    assert told == 2
    clock.advance(timedelta(days=3))
    run(app)
    run(app)
    (paid,) = autopay_payments(db, shop.invoice)
    assert paid.status is PaymentStatus.SUCCEEDED


def test_on_again_keeps_the_steps_of_an_invoice_in_its_retries(app: Flask, db: Session) -> None:
    clock = app.extensions["portal.clock"]
    shop = Shop(db, declines=True, due=0, notice=0)
    db.commit()
    run(app)
    run(app)  # the notice, the first attempt fails
    with tenancy.system(db):
        assert autopay.turn_off(db, shop.admin, shop.setting, now=now(), request=REQUEST) is None
    shop.turn_on(shop.admin, shop.card, notice=0)
    db.commit()
    assert steps(db, shop.invoice) == [("notice", 0), ("charge", 1)]
    clock.advance(timedelta(days=3))
    run(app)
    assert len(autopay_payments(db, shop.invoice)) == 2  # the retry on its day


def test_a_disputed_invoice_gets_no_notice_that_it_will_be_charged(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db, due=3, notice=3)
    with tenancy.system(db):
        shop.invoice.status = InvoiceStatus.DISPUTED
    db.commit()
    run(app)
    run(app)
    run_outbox(app)
    assert steps(db, shop.invoice) == []
    assert subjects(smtp, "boss@autopaid.test") == []  # no "will be paid automatically"
    with tenancy.system(db):
        assert autopay.will_charge(db, shop.invoice, today()) is None
        # The dispute closed in the customer's favour of paying: told, then charged.
        shop.invoice.status = InvoiceStatus.OPEN
    db.commit()
    run(app)
    run_outbox(app)
    assert subjects(smtp, "boss@autopaid.test") == ["Invoice AP-1 will be paid automatically"]


def test_a_skip_after_the_days_charge_started_is_refused(app: Flask, db: Session) -> None:
    shop = Shop(db, due=0, notice=0)
    with tenancy.system(db):
        step = autopay.claim(db, shop.invoice, AutopayStepKind.CHARGE, 1, today(), shop.admin.id)
        assert step is not None
        step.payment_id = make_payment(
            db, shop.invoice, "100.00", status=PaymentStatus.SCHEDULED, method=shop.card
        ).id
        db.flush()
        refused = autopay.skip(
            db, shop.invoice, user=None, today=today(), now=now(), request=REQUEST
        )
    assert refused is autopay.Refusal.ALREADY_CHARGING
    assert ("skipped", 0) not in steps(db, shop.invoice)


def test_a_skip_made_while_the_charge_waited_for_the_invoice_stops_the_charge(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = Shop(db, due=0, notice=0)
    with tenancy.system(db):
        autopay.claim(db, shop.invoice, AutopayStepKind.NOTICE, 0, today(), None)
        planned = autopay.plan(db, shop.setting, today())  # the run decided to charge ...
    assert [a.act for a in planned] == [autopay.Act.CHARGE]
    with tenancy.system(db):  # ... and the customer's skip landed before it held the invoice
        assert (
            autopay.skip(db, shop.invoice, user=None, today=today(), now=now(), request=REQUEST)
            is None
        )
    db.commit()
    monkeypatch.setattr(autopay, "plan", lambda *_args: planned)
    run(app)
    assert autopay_payments(db, shop.invoice) == []
    assert ("charge", 1) not in steps(db, shop.invoice)
