"""Paying as people pay: by keyboard alone, on a phone, without JavaScript, with axe watching."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from portal.services.outbox import LATE_AFTER
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_sign_in import (
    assert_axe_clean,
    sign_in_by_keyboard,
    sign_in_without_javascript,
)

pytestmark = pytest.mark.browser
PAYMENT = re.compile(r".*/portal/payments/pay_[\w-]+$")
GROUP = re.compile(r".*/portal/payments/group/pgr_[\w-]+$")
REFERENCE = re.compile(r"^PMT-[0-9A-Z]{4}-[0-9A-Z]{4}$")


def focused(page: Any) -> str:
    """What a screen reader names the focused element: its aria-label, else its text."""
    script = "(e => e.getAttribute('aria-label') || e.textContent || '')(document.activeElement)"
    return str(page.evaluate(script)).strip()


def tab_until(page: Any, text: str, limit: int = 60) -> None:
    """Press Tab until the focused element's text starts with `text` (as a person would)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if focused(page).startswith(text):
            return
    raise AssertionError(f"never reached {text!r} by Tab; ended on {focused(page)!r}")


def open_invoice(page: Any, live: LiveServer, number: str) -> None:
    page.goto(f"{live.url}/portal/invoices?q={number}")
    page.get_by_role("link", name=number, exact=True).first.click()
    page.wait_for_url(re.compile(r".*/portal/invoices/inv_[\w-]+$"))


def test_keyboard_alone_invoice_pay_now_confirm_receipt(
    live_server: LiveServer, new_page: Any
) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    open_invoice(page, live_server, "INV-1013")
    page.keyboard.press("p")  # the runbook's shortcut for "Make payment"
    page.wait_for_url(re.compile(r".*/portal/payment\?invoice=inv_[\w-]+$"))
    expect(page.locator("h1")).to_have_text("Make Payment")
    assert page.locator("input[name=method]:checked").count() == 1  # the default card
    assert_axe_clean(page)
    screenshot(page, "payment-form-1280-dark")
    tab_until(page, "Review payment")
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-title")).to_be_visible()
    # The step change moves focus to its heading, so the next Tab continues from there.
    expect(page.locator("#confirm-title")).to_be_focused()
    assert "You will pay" in page.locator(".pay-total").inner_text()
    assert_axe_clean(page)
    screenshot(page, "payment-confirm-1280-dark")
    tab_until(page, "Pay $")
    page.keyboard.press("Enter")
    page.wait_for_url(PAYMENT)
    expect(page.locator("#payment-state")).to_contain_text("processed successfully")
    reference = page.locator("h1").inner_text().removeprefix("Receipt ")
    assert REFERENCE.match(reference), reference
    assert_axe_clean(page)
    screenshot(page, "payment-receipt-1280-dark")
    tab_until(page, "Download receipt (PDF)")
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    assert download.value.suggested_filename == f"receipt-{reference}.pdf"


def test_a_bank_debit_updates_itself_and_is_announced(
    live_server: LiveServer, new_page: Any
) -> None:
    page = new_page(width=390, height=844, scheme="light")
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/payment-methods")
    assert_axe_clean(page)
    page.get_by_role("button", name="Add a bank account").click()
    page.wait_for_url(re.compile(r".*/sandbox/setup/sbs_[\w-]+$"))
    assert_axe_clean(page)
    screenshot(page, "sandbox-bank-390-light")
    page.get_by_label("Routing number").fill("110000000")
    page.get_by_label("Account number").fill("000123456789")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{live_server.url}/portal/payment-methods")
    expect(page.locator(".flashes")).to_contain_text("Payment method added.")
    open_invoice(page, live_server, "INV-2010")
    page.get_by_role("link", name="Pay Now").click()
    page.get_by_label(re.compile("Bank account ending 6789")).check()
    page.get_by_role("button", name="Review payment").click()
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url(PAYMENT)
    expect(page.locator("#payment-state")).to_have_text("Your payment is being processed")
    assert_axe_clean(page)
    screenshot(page, "payment-processing-390-light")
    # The panel polls itself; a keyboard user's place survives each refresh.
    page.locator("#payment-back").focus()
    page.wait_for_timeout(2500)
    assert page.evaluate("document.activeElement.id") == "payment-back"
    # No worker runs here: a minute past its time, the settlement is said to be late, on the
    # panel that polls itself.
    app = live_server.app
    app.extensions["portal.clock"].advance(LATE_AFTER + timedelta(seconds=5))
    expect(page.locator("#work-late")).to_contain_text("taking longer than usual", timeout=10_000)
    assert_axe_clean(page)
    screenshot(page, "payment-late-390-light")
    # Then it runs (here, by hand) and the page moves on.
    app.extensions["portal.jobs"].run_due()
    expect(page.locator("#payment-state")).to_contain_text("processed successfully", timeout=10_000)
    expect(page.locator("#payment-announcer")).to_contain_text("processed successfully")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_axe_clean(page)
    screenshot(page, "payment-settled-390-light")


def test_paying_without_javascript(browser: Any, live_server: LiveServer) -> None:
    context, page = sign_in_without_javascript(browser, live_server)
    page.goto(f"{live_server.url}/portal/invoices?status=open&q=INV-2003")
    page.locator("input.row-select").first.check()
    page.get_by_role("button", name="Pay selected").click()
    expect(page.locator("h1")).to_have_text("Make Payment")
    page.get_by_role("button", name="Review payment").click()
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url(PAYMENT)
    expect(page.locator("#payment-state")).to_contain_text("processed successfully")
    context.close()


@pytest.mark.parametrize(
    ("width", "scheme", "locale"),
    [(360, "light", "en-US"), (1280, "dark", "ar"), (360, "dark", "ar")],
)
def test_payment_pages_in_each_layout(
    live_server: LiveServer, new_page: Any, width: int, scheme: str, locale: str
) -> None:
    page = new_page(width=width, height=800, scheme=scheme, locale=locale)
    sign_in_by_keyboard(page, live_server)
    tag = f"{width}-{scheme}-{locale[:2]}"
    open_invoice(page, live_server, "INV-1001")
    form = page.locator("a[href*='/portal/payment?invoice=']").first.get_attribute("href")
    for name, path in (
        ("payment-form", form),
        ("payment-history", "/portal/payment-history"),
        ("payment-methods", "/portal/payment-methods"),
    ):
        page.goto(f"{live_server.url}{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, name
        assert_axe_clean(page)
        screenshot(page, f"{name}-{tag}")
    page.goto(f"{live_server.url}/portal/payment-history")
    receipt = page.locator("a[href*='/portal/payments/pay_']").first.get_attribute("href")
    page.goto(f"{live_server.url}{receipt}")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "receipt"
    assert_axe_clean(page)
    screenshot(page, f"payment-page-{tag}")
    page.goto(f"{live_server.url}{form}")
    page.locator("input.input-amount").first.fill("-1")
    page.locator("button[value=review]").click()
    expect(page.locator(".field-error").first).to_be_visible()
    assert_axe_clean(page)
    screenshot(page, f"payment-errors-{tag}")


def tab_to_checkbox_of(page: Any, number: str, limit: int = 150) -> None:
    """Tab until the focus is on the row checkbox of invoice `number`."""
    script = (
        "(n) => { const e = document.activeElement; return e && e.type === 'checkbox' && "
        "e.closest('tr') !== null && e.closest('tr').textContent.includes(n); }"
    )
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(script, number):
            return
    raise AssertionError(f"never reached the checkbox of {number} by Tab")


def test_two_accounts_paid_in_one_go_by_keyboard(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/invoices?status=all&sort=number")
    for number in ("INV-1002", "INV-2004"):  # Acme West's and Acme East's
        tab_to_checkbox_of(page, number)
        page.keyboard.press("Space")
    tab_until(page, "Pay selected")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/portal/payment\?invoice=.*&invoice=.*"))
    expect(page.locator("#accounts-hint")).to_contain_text("2 billing accounts")
    assert_axe_clean(page)
    tab_until(page, "Review payment")
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-title")).to_be_focused()
    captions = page.locator(".pay-table caption").all_inner_texts()
    assert [c.split(":")[0] for c in captions] == ["Acme East", "Acme West"]
    assert_axe_clean(page)
    screenshot(page, "payment-group-confirm-1280-dark")
    tab_until(page, "Pay $")
    page.keyboard.press("Enter")
    page.wait_for_url(GROUP)
    expect(page.locator("#payment-state")).to_contain_text("processed successfully")
    rows = page.locator(".group-table tbody tr")
    expect(rows).to_have_count(2)
    for row, account in zip(rows.all(), ("Acme East", "Acme West"), strict=True):
        assert account in row.inner_text() and "Paid" in row.inner_text()
        assert REFERENCE.match(row.locator("td").first.inner_text().strip())
    assert_axe_clean(page)
    screenshot(page, "payment-group-1280-dark")
    tab_until(page, "Receipt (PDF)")
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    assert re.match(r"^receipt-PMT-[0-9A-Z-]+\.pdf$", download.value.suggested_filename)


def test_two_accounts_paid_without_javascript(browser: Any, live_server: LiveServer) -> None:
    context, page = sign_in_without_javascript(browser, live_server)
    page.goto(f"{live_server.url}/portal/invoices?status=all&sort=number")
    for number in ("INV-1003", "INV-2002"):
        page.get_by_label(f"Select invoice {number}").check()
    page.get_by_role("button", name="Pay selected").click()
    expect(page.locator("#accounts-hint")).to_be_visible()
    page.get_by_role("button", name="Review payment").click()
    expect(page.locator(".pay-table caption")).to_have_count(2)
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url(GROUP)
    expect(page.locator("#payment-state")).to_contain_text("processed successfully")
    expect(page.locator(".group-table .badge-succeeded")).to_have_count(2)
    context.close()


@pytest.mark.parametrize(
    ("width", "scheme", "locale"),
    [(390, "light", "en-US"), (1280, "dark", "ar"), (390, "dark", "ar")],
)
def test_the_group_pages_in_each_layout(
    live_server: LiveServer, new_page: Any, width: int, scheme: str, locale: str
) -> None:
    page = new_page(width=width, height=844, scheme=scheme, locale=locale)
    sign_in_by_keyboard(page, live_server)
    tag = f"{width}-{scheme}-{locale[:2]}"
    page.goto(f"{live_server.url}/portal/invoices?status=all&sort=number")
    for number in ("INV-1012", "INV-2005"):  # a cent of each: both stay payable for the next
        page.locator("tr", has_text=number).locator("input.row-select").check()
    page.locator("button[formaction$='/portal/payment']").click()
    page.wait_for_url(re.compile(r".*/portal/payment\?invoice=.*"))
    for field in page.locator("input.input-amount:not(#total)").all():
        field.fill("0.01")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert_axe_clean(page)
    screenshot(page, f"payment-group-form-{tag}")
    page.locator("button[value=review]").click()
    expect(page.locator("#confirm-title")).to_be_visible()
    expect(page.locator(".pay-table caption")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert_axe_clean(page)
    screenshot(page, f"payment-group-confirm-{tag}")
    page.locator("button[value=confirm]").click()
    page.wait_for_url(GROUP)
    expect(page.locator(".group-table .badge-succeeded")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert_axe_clean(page)
    screenshot(page, f"payment-group-{tag}")
    page.goto(f"{live_server.url}/portal/payment-history")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert_axe_clean(page)
    screenshot(page, f"payment-history-{tag}")


def test_history_filters_apply_as_chosen_and_back_restores_the_page(
    live_server: LiveServer, new_page: Any
) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/payment-history")
    everything = page.locator("#result-count").inner_text()
    page.get_by_label("Status").select_option("failed")  # no button pressed
    page.wait_for_url("**/portal/payment-history?status=failed*")
    expect(page.locator("#result-count")).not_to_have_text(everything)
    badges = page.locator("#payment-results .badge").all_inner_texts()
    assert badges and set(badges) == {"Failed"}
    assert page.locator("#result-count").inner_text().startswith(f"{len(badges)} payment")
    assert "status=failed" in (page.locator("#history-csv").get_attribute("href") or "")
    assert_axe_clean(page)
    page.locator("#payment-results a.row-link").first.click()
    page.wait_for_url(PAYMENT)
    page.go_back()
    page.wait_for_url("**/portal/payment-history?status=failed*")
    expect(page.locator("h1")).to_have_text("Payment History")  # the whole page, not a table
    expect(page.get_by_label("Status")).to_have_value("failed")
    assert set(page.locator("#payment-results .badge").all_inner_texts()) == {"Failed"}


@pytest.mark.parametrize(
    ("width", "scheme", "locale"),
    [(1280, "dark", "en-US"), (390, "light", "en-US"), (1280, "light", "ar"), (390, "dark", "ar")],
)
def test_a_restricted_users_dashboard_says_its_scope(
    live_server: LiveServer, new_page: Any, width: int, scheme: str, locale: str
) -> None:
    page = new_page(width=width, height=844, scheme=scheme, locale=locale)
    sign_in_by_keyboard(page, live_server, "ap@acme.test")
    tag = f"{width}-{scheme}-{locale[:2]}"
    expect(page.locator("#page-scope")).to_contain_text("Acme West")
    credit = page.get_by_role("region", name=re.compile("Acme Corp"))
    expect(credit.locator("[data-figure=available-credit]")).to_be_visible()
    expect(page.locator("#balance-title + .figures [data-figure=available-credit]")).to_have_count(
        0
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert_axe_clean(page)
    screenshot(page, f"dashboard-restricted-{tag}")


def test_a_card_typed_on_the_hosted_page_leaves_no_trace(
    live_server: LiveServer, new_page: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs last: whatever the browser tests typed, the server's database and logs hold none."""
    import logging

    from tests.card_data import leaks

    caplog.set_level(logging.DEBUG)
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/payment-methods")
    page.get_by_role("button", name="Add a card").click()
    page.wait_for_url(re.compile(r".*/sandbox/setup/sbs_[\w-]+$"))
    assert_axe_clean(page)
    page.get_by_label("Card number").fill("4000 0000 0000 0002")
    page.get_by_label("Expiry (MM/YY)").fill("12/30")
    page.get_by_label("Security code").fill("9731")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".alert-error")).to_contain_text("Your card was declined.")
    assert page.get_by_label("Card number").input_value() == ""
    assert_axe_clean(page)
    screenshot(page, "sandbox-card-declined-1280-dark")
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Security code").fill("9731")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{live_server.url}/portal/payment-methods")
    with live_server.app.extensions["portal.db"].engine.connect() as connection:
        found = leaks(
            connection,
            ["4242424242424242", "4000000000000002", "000123456789", "cvc=9731"],
            caplog.text,
        )
    assert found == []
