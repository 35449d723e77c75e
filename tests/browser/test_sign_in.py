"""Sign-in and dashboard as a person uses them: keyboard only, axe clean, phone to desktop."""

from __future__ import annotations

from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe

from tests.browser.conftest import LiveServer, screenshot

pytestmark = pytest.mark.browser


def assert_axe_clean(page: Any) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def sign_in_by_keyboard(page: Any, live: LiveServer, email: str = "admin@acme.test") -> None:
    base = live.url
    page.goto(f"{base}/login")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    assert page.locator(".skip-link").bounding_box()["y"] >= 0  # visible when focused
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "email":
            break
    assert page.evaluate("document.activeElement.id") == "email"
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type("portal-demo-2026")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/login/mfa")
    assert_axe_clean(page)
    tab_to(page, "code")
    page.keyboard.type(live.totp())
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/portal/dashboard")


def sign_in_without_javascript(browser: Any, live: LiveServer) -> tuple[Any, Any]:
    """A context with JavaScript off, signed in as admin@acme.test; returns (context, page)."""
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 800}
    )
    page = context.new_page()
    page.goto(f"{live.url}/login")
    page.get_by_label("Email").fill("admin@acme.test")
    page.get_by_label("Password").fill("portal-demo-2026")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Authentication code").fill(live.totp())
    page.get_by_role("button", name="Verify").click()
    return context, page


def tab_to(page: Any, element_id: str) -> None:
    for _ in range(8):
        if page.evaluate("document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == element_id


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_keyboard_sign_in_and_axe(live_server: LiveServer, new_page: Any, scheme: str) -> None:
    page = new_page(scheme=scheme)
    page.goto(f"{live_server.url}/login")
    assert_axe_clean(page)
    screenshot(page, f"login-1280-{scheme}")
    sign_in_by_keyboard(page, live_server)
    assert page.locator("h1").inner_text() == "Welcome, Acme Corp"
    assert_axe_clean(page)
    screenshot(page, f"dashboard-1280-{scheme}")
    page.get_by_role("link", name="Security").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/portal/security")
    assert page.locator(".session").count() >= 1
    assert_axe_clean(page)
    screenshot(page, f"security-1280-{scheme}")


def test_wrong_password_is_announced_and_axe_clean(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    page.goto(f"{live_server.url}/login")
    page.get_by_label("Email").fill("admin@acme.test")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Incorrect email or password."
    assert_axe_clean(page)


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_readable_at_360_pixels(live_server: LiveServer, new_page: Any, scheme: str) -> None:
    page = new_page(width=360, height=740, scheme=scheme)
    page.goto(f"{live_server.url}/login")
    screenshot(page, f"login-360-{scheme}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    sign_in_by_keyboard(page, live_server, "admin@globex.test")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert_axe_clean(page)
    screenshot(page, f"dashboard-360-{scheme}")
    for box in page.locator(".site-nav a:visible, .button:visible").all():
        size = box.bounding_box()
        assert size["height"] >= 44, "touch targets are at least 44 px tall"


def test_sign_out_by_keyboard(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    page.get_by_role("button", name="Sign out").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/login")
    assert "You have signed out." in page.locator(".flashes").inner_text()
    page.go_back()
    page.reload()
    assert page.url.startswith(f"{live_server.url}/login")


def test_enrolment_by_keyboard_alone(live_server: LiveServer, new_page: Any) -> None:
    base = live_server.url
    page = new_page(width=390, height=844)
    page.goto(f"{base}/login")
    tab_to(page, "email")
    page.keyboard.type("new@acme.test")
    page.keyboard.press("Tab")
    page.keyboard.type("portal-demo-2026")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/mfa/setup")
    assert_axe_clean(page)
    screenshot(page, "mfa-setup-390-dark")
    secret = page.locator("#mfa-secret").inner_text()
    tab_to(page, "code")
    page.keyboard.type("000000")
    page.keyboard.press("Enter")
    assert "didn't work" in page.get_by_role("alert").inner_text()
    assert_axe_clean(page)
    tab_to(page, "code")
    page.keyboard.type(live_server.totp(secret))
    page.keyboard.press("Enter")
    page.wait_for_selector(".recovery-codes")
    assert page.locator(".recovery-codes li").count() == 10
    assert_axe_clean(page)
    screenshot(page, "mfa-recovery-codes-390-dark")
    page.get_by_role("link", name="Continue to the portal").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/portal/dashboard")
    assert page.locator("h1").inner_text() == "Welcome, Acme Corp"


def test_idle_warning_offers_to_stay_signed_in(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    page.clock.install()
    sign_in_by_keyboard(page, live_server)
    dialog = page.locator("#idle-warning")
    assert not dialog.is_visible()
    page.clock.fast_forward("28:30")
    dialog.wait_for(state="visible")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Stay signed in"
    assert_axe_clean(page)
    screenshot(page, "idle-warning-1280-dark")
    with page.expect_response(lambda r: r.url.endswith("/session/extend")) as answer:
        page.keyboard.press("Enter")
    assert answer.value.status == 204
    dialog.wait_for(state="hidden")
    page.clock.fast_forward("28:30")
    dialog.wait_for(state="visible")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")


def test_password_reset_pages_are_axe_clean(live_server: LiveServer, new_page: Any) -> None:
    page = new_page(scheme="light")
    page.goto(f"{live_server.url}/login")
    page.get_by_role("link", name="Forgot your password?").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/password/forgot")
    assert_axe_clean(page)
    page.get_by_role("button", name="Send reset link").click()
    assert page.locator(".field-error").inner_text() == "Enter your email address."
    assert_axe_clean(page)
    page.goto(f"{live_server.url}/password/reset/not-a-real-token")
    assert "not valid" in page.get_by_role("alert").inner_text()
    assert_axe_clean(page)


def test_sign_in_and_security_in_arabic(live_server: LiveServer, new_page: Any) -> None:
    page = new_page(locale="ar", scheme="light")
    page.goto(f"{live_server.url}/login")
    assert page.evaluate("document.documentElement.dir") == "rtl"
    assert_axe_clean(page)
    sign_in_by_keyboard(page, live_server)  # axe runs on the MFA step inside
    page.goto(f"{live_server.url}/portal/security")
    assert_axe_clean(page)
    screenshot(page, "security-1280-light-ar")
    page.goto(f"{live_server.url}/password/forgot")
    assert_axe_clean(page)
