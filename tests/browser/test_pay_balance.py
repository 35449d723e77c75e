"""Pay balance by keyboard alone, from the dashboard to the receipts, with axe watching in English
and Arabic; and the footer naming the company's account manager.

Each test makes a company of its own on the live server's database (two billing accounts, a
saved card, a disputed invoice among the open ones), so paying its whole balance leaves the demo
companies' invoices to the other browser tests."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from portal.models import InvoiceStatus
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_payments import GROUP, focused, tab_until
from tests.browser.test_sign_in import assert_axe_clean, sign_in_by_keyboard
from tests.browser.test_statements import database
from tests.factories import make_company, make_invoice, make_payment_method, make_user

pytestmark = pytest.mark.browser
_serial = itertools.count(1)


def company_with_a_balance(live: LiveServer) -> tuple[str, list[str]]:
    """A company owing on two accounts, with a manager and a card; returns the admin's address
    and the numbers of the invoices Pay balance must pick, oldest due first."""
    n = next(_serial)
    with database(live) as session:
        company = make_company(session, f"Balance Co {n}", accounts=("North", "South"))
        company.account_manager_name = "Dana Whitfield"
        company.account_manager_email = "dana@supplier.test"
        company.account_manager_phone = "+14155550177"
        north, south = company.billing_accounts
        user = make_user(session, company, f"payer{n}@balance.test", name="Bo Payer")
        make_payment_method(session, company, default=True, user=user)
        picked = [
            make_invoice(session, north, "300.00", due=-40, number=f"BAL{n}-1"),
            make_invoice(session, south, "125.50", due=-10, number=f"BAL{n}-2"),
            make_invoice(session, north, "80.00", due=20, number=f"BAL{n}-3"),
        ]
        make_invoice(
            session, south, "999.00", due=-60, number=f"BAL{n}-D", status=InvoiceStatus.DISPUTED
        )
        session.commit()
        return user.email, [invoice.number for invoice in picked]


def test_pay_balance_by_keyboard_from_the_dashboard_to_the_receipts(
    live_server: LiveServer, new_page: Any
) -> None:
    email, numbers = company_with_a_balance(live_server)
    page = new_page()
    sign_in_by_keyboard(page, live_server, email)
    footer = page.locator(".site-footer .account-manager")
    expect(footer).to_contain_text("Contact Dana Whitfield.")
    assert footer.locator("a").nth(0).get_attribute("href") == "mailto:dana@supplier.test"
    assert footer.locator("a").nth(1).get_attribute("href") == "tel:+14155550177"
    assert_axe_clean(page)
    tab_until(page, "Pay balance")
    assert focused(page) == "Pay balance"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/portal/payment\?balance=USD$"))
    rows = page.locator(".pay-table tbody tr th")
    expect(rows).to_have_count(3)
    assert rows.all_inner_texts() == numbers  # oldest due first; the disputed one left out
    expect(page.locator("#accounts-hint")).to_contain_text("2 billing accounts")
    assert_axe_clean(page)
    screenshot(page, "pay-balance-form-1280-dark")
    tab_until(page, "Review payment")
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-title")).to_be_focused()
    assert "$505.50" in page.locator(".pay-total").first.inner_text()
    assert_axe_clean(page)
    tab_until(page, "Pay $")
    page.keyboard.press("Enter")
    page.wait_for_url(GROUP)
    expect(page.locator("#payment-state")).to_contain_text("processed successfully")
    expect(page.locator(".group-table tbody tr")).to_have_count(2)  # one payment per account
    assert_axe_clean(page)
    screenshot(page, "pay-balance-receipts-1280-dark")
    # Paid: only the disputed invoice is owed, so the dashboard offers no Pay balance any more.
    page.goto(f"{live_server.url}/portal/dashboard")
    expect(page.locator("[data-figure=account-balance]")).to_contain_text("$999.00")
    expect(page.get_by_role("link", name="Pay balance")).to_have_count(0)
    page.goto(f"{live_server.url}/portal/payment?balance=USD")
    expect(page.locator("#problem-title")).to_contain_text("open to pay now")


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_dashboard_and_pay_balance_form_are_axe_clean_in_arabic(
    live_server: LiveServer, new_page: Any, scheme: str
) -> None:
    email, numbers = company_with_a_balance(live_server)
    page = new_page(scheme=scheme, locale="ar")
    sign_in_by_keyboard(page, live_server, email)
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    footer = page.locator(".site-footer .account-manager")
    expect(footer).to_contain_text("Dana Whitfield")
    expect(footer.locator("bdi[dir=ltr]").nth(1)).to_have_text("+1 415-555-0177")
    assert_axe_clean(page)
    link = page.locator("a[href$='/portal/payment?balance=USD']")
    expect(link).to_have_text("دفع الرصيد")
    link.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/portal/payment\?balance=USD$"))
    expect(page.locator(".pay-table tbody tr th")).to_have_count(len(numbers))
    assert_axe_clean(page)
    screenshot(page, f"ar-pay-balance-form-1280-{scheme}")
