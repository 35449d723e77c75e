"""A card about to expire, updated by keyboard alone: the dashboard flags it, "Update" goes to
the sandbox's hosted page and back, and the flag is gone; axe clean in English and Arabic."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import Company, PaymentMethod, PortalUser
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_layout import assert_reads_right
from tests.browser.test_payments import focused, tab_until
from tests.browser.test_sign_in import assert_axe_clean, sign_in_by_keyboard
from tests.factories import make_payment_method

pytestmark = pytest.mark.browser


@contextmanager
def database(live: LiveServer) -> Iterator[Session]:
    with (
        live.app.app_context(),
        live.app.extensions["portal.db"].sessionmaker() as session,
        tenancy.system(session),
    ):
        yield session


def expiring_card(live: LiveServer) -> str:
    """A card of Acme's, added by its admin, expiring this month (the live clock's)."""
    soon = live.app.extensions["portal.clock"].today() + timedelta(days=1)
    with database(live) as session:
        acme = session.scalars(select(Company).where(Company.name == "Acme Corp")).one()
        admin = session.scalars(
            select(PortalUser).where(PortalUser.email == "admin@acme.test")
        ).one()
        card = make_payment_method(
            session, acme, last4="0077", user=admin, expires=(soon.month, soon.year)
        )
        session.commit()
        return card.public_id


def removed(live: LiveServer, public_id: str) -> bool:
    with database(live) as session:
        card = session.scalars(
            select(PaymentMethod).where(PaymentMethod.public_id == public_id)
        ).one()
        return card.removed_at is not None


@pytest.fixture(autouse=True)
def _leave_the_methods_as_found(live_server: LiveServer) -> Iterator[None]:
    """The live database is shared by every browser test: the cards added here go again."""
    with database(live_server) as session:
        before = session.scalar(select(func.max(PaymentMethod.id))) or 0
    yield
    with database(live_server) as session:
        session.execute(
            update(PaymentMethod)
            .where(PaymentMethod.id > before)
            .values(removed_at=func.current_timestamp(), is_default=False)
        )
        session.commit()


def test_update_an_expiring_card_by_keyboard(live_server: LiveServer, new_page: Any) -> None:
    card = expiring_card(live_server)
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    region = page.locator("#expiring-methods")
    expect(region).to_contain_text("Visa ending 0077")
    expect(region).to_contain_text("expires")
    assert_axe_clean(page)
    screenshot(page, "dashboard-expiring-card-1280-dark")
    tab_until(page, "Update")
    assert "Visa ending 0077" in focused(page)  # the button names its card to a screen reader
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/sandbox/setup/sbs_[\w-]+$"))
    assert_axe_clean(page)
    for _ in range(20):
        if page.evaluate("document.activeElement.id") == "number":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "number"
    page.keyboard.type("4242 4242 4242 4242")
    page.keyboard.press("Tab")
    page.keyboard.type("12/31")
    page.keyboard.press("Tab")
    page.keyboard.type("123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/portal/dashboard")
    expect(page.locator(".flashes")).to_contain_text("Payment method updated.")
    expect(page.locator("#expiring-methods")).to_have_count(0)  # the flag is gone
    assert removed(live_server, card)
    assert_axe_clean(page)
    page.goto(f"{live_server.url}/portal/payment-methods")
    expect(page.get_by_text("Visa ending 0077")).to_have_count(0)
    assert_axe_clean(page)


def test_expiring_cards_in_arabic(live_server: LiveServer, new_page: Any) -> None:
    card = expiring_card(live_server)
    page = new_page(width=390, height=844, scheme="light", locale="ar")
    base = live_server.url
    page.goto(f"{base}/login")
    page.locator("#email").fill("admin@acme.test")
    page.locator("#password").fill("portal-demo-2026")
    page.locator("#password").press("Enter")
    page.wait_for_url(f"{base}/login/mfa")
    page.locator("#code").fill(live_server.totp())
    page.locator("#code").press("Enter")
    page.wait_for_url(f"{base}/portal/dashboard")
    assert page.evaluate("document.documentElement.dir") == "rtl"
    expect(page.locator("#expiring-methods")).to_contain_text("بطاقات تحتاج إلى تحديث")
    assert_reads_right(page, "dashboard-expiring-card")  # isolation, fit, axe; screenshots
    page.goto(f"{base}/portal/payment-methods")
    expect(page.get_by_text("تنتهي قريبًا")).not_to_have_count(0)
    assert_reads_right(page, "payment-methods-expiring", numbers=False)
    # Canceled on the hosted page: back with a toast, nothing changed.
    page.locator(f"form[action$='/{card}/update'] button").click()
    page.wait_for_url(re.compile(r".*/sandbox/setup/sbs_[\w-]+$"))
    assert_axe_clean(page)
    page.get_by_role("link", name="إلغاء").click()
    page.wait_for_url(f"{base}/portal/payment-methods")
    expect(page.locator(".flashes")).to_contain_text("لم يتم تحديث البطاقة.")
    assert not removed(live_server, card)
