"""Sign-in and dashboard as a person uses them: keyboard only, axe clean, phone to desktop."""

from __future__ import annotations

from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe

from tests.browser.conftest import screenshot

pytestmark = pytest.mark.browser


def assert_axe_clean(page: Any) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def sign_in_by_keyboard(page: Any, base: str, email: str = "admin@acme.test") -> None:
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
    page.wait_for_url(f"{base}/portal/dashboard")


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_keyboard_sign_in_and_axe(live_server: str, new_page: Any, scheme: str) -> None:
    page = new_page(scheme=scheme)
    page.goto(f"{live_server}/login")
    assert_axe_clean(page)
    screenshot(page, f"login-1280-{scheme}")
    sign_in_by_keyboard(page, live_server)
    assert page.locator("h1").inner_text() == "Welcome, Acme Corp"
    assert_axe_clean(page)
    screenshot(page, f"dashboard-1280-{scheme}")


def test_wrong_password_is_announced_and_axe_clean(live_server: str, new_page: Any) -> None:
    page = new_page()
    page.goto(f"{live_server}/login")
    page.get_by_label("Email").fill("admin@acme.test")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Incorrect email or password."
    assert_axe_clean(page)


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_readable_at_360_pixels(live_server: str, new_page: Any, scheme: str) -> None:
    page = new_page(width=360, height=740, scheme=scheme)
    page.goto(f"{live_server}/login")
    screenshot(page, f"login-360-{scheme}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    sign_in_by_keyboard(page, live_server, "admin@globex.test")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert_axe_clean(page)
    screenshot(page, f"dashboard-360-{scheme}")
    for box in page.locator(".site-nav a, .button").all():
        size = box.bounding_box()
        assert size["height"] >= 44, "touch targets are at least 44 px tall"


def test_sign_out_by_keyboard(live_server: str, new_page: Any) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    page.get_by_role("button", name="Sign out").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/login")
    assert "You have signed out." in page.locator(".flashes").inner_text()
    page.go_back()
    page.reload()
    assert page.url.startswith(f"{live_server}/login")
