"""The web layer's conventions (portal/web.py), as a browser and htmx meet them: one redirect for
both, the loader's 404, where sign-in may send you next, and what a request that is not signed
in gets."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import NotFound

from portal.web import go, or_404, safe_next
from tests.conftest import COOKIE, Auth, csrf_token

HTMX = {"HX-Request": "true"}


def test_go_is_a_303_for_a_browser_and_an_hx_redirect_for_htmx(app: Flask) -> None:
    with app.test_request_context("/portal/payment", method="POST"):
        plain = go("/portal/invoices")
    assert plain.status_code == 303 and plain.headers["Location"] == "/portal/invoices"
    with app.test_request_context("/portal/payment", method="POST", headers=HTMX):
        swapped = go("/portal/invoices")
    # htmx follows HX-Redirect with a whole page; a 3xx would be followed inside the swap.
    assert swapped.status_code == 204 and swapped.headers["HX-Redirect"] == "/portal/invoices"
    assert "Location" not in swapped.headers


def test_or_404_passes_what_was_found_and_turns_nothing_into_the_pages_404(app: Flask) -> None:
    with app.test_request_context("/"):
        assert or_404("found", "Invoice not found.") == "found"
        assert or_404(0, "Invoice not found.") == 0  # falsy, but found
        with pytest.raises(NotFound) as missing:
            or_404(None, "Invoice not found.")
    assert missing.value.description == "Invoice not found."


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/portal\x00/invoices",
        "/portal/\x7f",
        "invoices",
    ],
)
def test_sign_in_never_sends_you_off_the_site(target: str | None) -> None:
    assert safe_next(target) is None


@pytest.mark.parametrize(
    "target", ["/portal/invoices", "/portal/invoices?status=paid&page=2", "/portal/payment#x"]
)
def test_sign_in_sends_you_back_to_a_local_page(target: str) -> None:
    assert safe_next(target) == target


def test_an_htmx_request_that_is_not_signed_in_is_sent_to_sign_in_as_a_whole_page(
    client: FlaskClient,
) -> None:
    response = client.get("/portal/invoices?status=paid", headers=HTMX)
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login?next=")
    assert "status%3Dpaid" in response.headers["HX-Redirect"]
    plain = client.get("/portal/invoices?status=paid")
    assert plain.status_code == 302 and plain.headers["Location"].startswith("/login?next=")


def test_a_post_that_is_not_signed_in_is_not_replayed_after_sign_in(client: FlaskClient) -> None:
    token = csrf_token(client)  # a real form's token, from the sign-in page
    response = client.post("/portal/payment", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/login"


def test_an_expired_session_says_so_on_the_sign_in_page(
    app: Flask, client: FlaskClient, signed_in: Auth
) -> None:
    from datetime import timedelta

    assert client.get_cookie(COOKIE) is not None
    app.extensions["portal.clock"].advance(timedelta(days=2))
    response = client.get("/portal/invoices")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Session expired. Please log in again." in page
