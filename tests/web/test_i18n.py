"""Languages: Accept-Language, the switcher, the profile, right to left."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests.conftest import Auth, csrf_token, user_by_email


def _lang(page: str) -> tuple[str, str]:
    match = re.search(r'<html lang="(\w+)" dir="(\w+)">', page)
    assert match
    return match.group(1), match.group(2)


@pytest.mark.parametrize(
    ("header", "lang", "direction"),
    [
        ("de-DE,de;q=0.9", "de", "ltr"),
        ("es", "es", "ltr"),
        ("ar", "ar", "rtl"),
        ("fr", "en", "ltr"),
    ],
)
def test_accept_language(client: FlaskClient, header: str, lang: str, direction: str) -> None:
    page = client.get("/login", headers={"Accept-Language": header}).get_data(as_text=True)
    assert _lang(page) == (lang, direction)
    if lang != "en":
        assert ">Sign in</button>" not in page  # translated


def test_switcher_remembers_the_choice_and_the_profile_keeps_it(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in()
    token = csrf_token(client, "/portal/dashboard")
    response = client.post(
        "/language", data={"csrf_token": token, "language": "de", "next": "/portal/invoices"}
    )
    assert response.headers["Location"] == "/portal/invoices"
    page = client.get("/portal/dashboard").get_data(as_text=True)
    assert _lang(page) == ("de", "ltr")
    assert "Willkommen, Acme Corp" in page
    assert re.search(
        r'data-figure="account-balance"><bdi dir="ltr">[\d.]+,\d\d\xa0\$</bdi>', page
    )  # German digits
    assert user_by_email(db, "admin@acme.test").locale == "de"


def test_unknown_language_is_ignored(client: FlaskClient) -> None:
    token = csrf_token(client)
    client.post("/language", data={"csrf_token": token, "language": "xx", "next": "/login"})
    assert _lang(client.get("/login").get_data(as_text=True)) == ("en", "ltr")


def test_money_follows_the_browsers_language_else_the_company(
    client: FlaskClient, auth: Auth
) -> None:
    auth.sign_in("admin@globex.test")
    company = client.get("/portal/dashboard").get_data(as_text=True)
    assert re.search(
        r'data-figure="credit-limit"><bdi dir="ltr">50\.000,00\xa0€</bdi>', company
    )  # de_DE
    english = client.get("/portal/dashboard", headers={"Accept-Language": "en-GB"})
    assert 'data-figure="credit-limit"><bdi dir="ltr">€50,000.00</bdi>' in english.get_data(
        as_text=True
    )
    arabic = client.get("/portal/dashboard", headers={"Accept-Language": "ar"})
    page = arabic.get_data(as_text=True)
    assert _lang(page) == ("ar", "rtl") and "50,000.00" in page and "€" in page
