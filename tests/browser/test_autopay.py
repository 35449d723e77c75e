"""Automatic payments as people use them: turned on by keyboard (a saved card, "N days after
issue", the notice), turned off again, and the mailed skip link opened with nobody signed in;
in English at 1280 px and Arabic at 360 px, axe watching."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import AutopaySetting, BillingAccount, Invoice, InvoiceStatus, PortalUser
from portal.services import autopay
from portal.services.crypto import Keyring
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_sign_in import assert_axe_clean, sign_in_by_keyboard
from tests.browser.test_statements import database, no_sideways_scroll, tab_to_id
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.browser


def first_account(live: LiveServer, email: str) -> str:
    with database(live) as session:
        user = session.scalars(select(PortalUser).where(PortalUser.email == email)).one()
        return session.scalars(
            select(BillingAccount.public_id)
            .where(BillingAccount.company_id == user.company_id)
            .order_by(BillingAccount.name)
        ).first()  # type: ignore[return-value]


def setting_of(live: LiveServer, account_id: str) -> AutopaySetting | None:
    with database(live) as session:
        account = session.scalars(
            select(BillingAccount).where(BillingAccount.public_id == account_id)
        ).one()
        return session.scalar(
            select(AutopaySetting).where(AutopaySetting.billing_account_id == account.id)
        )


@pytest.mark.parametrize(
    ("email", "width", "locale"),
    [("admin@acme.test", 1280, "en-US"), ("admin@globex.test", 360, "ar")],
)
def test_autopay_on_and_off_by_keyboard(
    live_server: LiveServer, new_page: Any, email: str, width: int, locale: str
) -> None:
    page = new_page(width=width, height=800, locale=locale)
    tag = f"{width}-{locale[:2]}"
    base = live_server.url
    sign_in_by_keyboard(page, live_server, email)
    account = first_account(live_server, email)
    prefix = f"autopay-{account}"

    page.goto(f"{base}/portal/autopay")
    if locale == "ar":
        assert page.evaluate("document.documentElement.dir") == "rtl"
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"autopay-{tag}")

    # The card is preselected; the timing by arrow keys; the days typed; Enter turns it on.
    tab_to_id(page, f"{prefix}-method")
    tab_to_id(page, f"{prefix}-due")
    page.keyboard.press("ArrowDown")  # the radio group moves to "after issue"
    assert page.evaluate("document.activeElement.id") == f"{prefix}-after"
    expect(page.locator(f"#{prefix}-after")).to_be_checked()
    tab_to_id(page, f"{prefix}-days")
    page.keyboard.press("Control+A")
    page.keyboard.type("14")
    tab_to_id(page, f"{prefix}-notice")
    page.keyboard.press("Tab")
    with page.expect_navigation(url=f"{base}/portal/autopay"):
        page.keyboard.press("Enter")
    expect(page.locator(".flashes")).to_be_visible()
    on = setting_of(live_server, account)
    assert on is not None and on.enabled and on.days_after_issue == 14
    expect(page.locator(f"#{prefix}-state")).to_contain_text("14")
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"autopay-on-{tag}")

    # Off again by keyboard (the other tests find it as the seed left it).
    page.locator(f"#{prefix}-title").scroll_into_view_if_needed()
    off = page.locator(f"form[action$='/{account}/off'] button")
    off.focus()
    with page.expect_navigation(url=f"{base}/portal/autopay"):
        page.keyboard.press("Enter")
    off_now = setting_of(live_server, account)
    assert off_now is not None and not off_now.enabled
    assert_axe_clean(page)


@pytest.mark.parametrize(("width", "locale"), [(1280, "en-US"), (360, "ar")])
def test_the_skip_link_with_nobody_signed_in(
    live_server: LiveServer, new_page: Any, width: int, locale: str
) -> None:
    now = live_server.app.extensions["portal.clock"].now()
    with database(live_server) as session:
        invoice = session.scalars(
            select(Invoice)
            .where(Invoice.status == InvoiceStatus.OPEN, Invoice.balance_due > 0)
            .order_by(Invoice.id)
        ).first()
        assert invoice is not None
        token = autopay.skip_token(
            invoice, now.date() + timedelta(days=3), keys=Keyring(TEST_SECRET), now=now
        )
    page = new_page(width=width, height=800, locale=locale)
    page.goto(f"{live_server.url}/autopay/skip/{token}x")
    assert_axe_clean(page)  # an altered link says so
    page.goto(f"{live_server.url}/autopay/skip/{token}")
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"autopay-skip-{width}-{locale[:2]}")
    button = page.locator("main form button[type=submit]")
    button.focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.locator("[role=status], [role=alert]").first).to_be_visible()
    assert_axe_clean(page)
