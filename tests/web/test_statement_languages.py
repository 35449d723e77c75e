"""The statements page, its list, the refused download page and the "Statement ready" mail in
each language the portal speaks (the requester's language: their profile's)."""

from __future__ import annotations

from email.header import decode_header, make_header

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import PortalUser
from tests.conftest import Auth, Inbox, readable
from tests.web.test_statements import _form, _run, _today

pytestmark = pytest.mark.usefixtures("connection")

# language: (page heading, button, the list's "Ready", the refused page's heading, mail subject)
SAID = {
    "de": (
        "Kontoauszüge",
        "Kontoauszug anfordern",
        "Bereit",
        "Download-Link ungültig",
        "Ihr Kontoauszug ist bereit",
    ),
    "es": (
        "Extractos",
        "Solicitar extracto",
        "Listo",
        "El enlace de descarga no es válido",
        "Su extracto está listo",
    ),
    "ar": (
        "كشوف الحساب",
        "طلب كشف الحساب",
        "جاهز",
        "رابط التنزيل غير صالح",
        "كشف حسابك جاهز",
    ),
}


@pytest.mark.parametrize("language", sorted(SAID))
def test_statements_in_each_language(
    app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    smtp: Inbox,
    language: str,
) -> None:
    heading, button, ready, refused, subject = SAID[language]
    with tenancy.system(db):
        user = db.scalars(select(PortalUser).where(PortalUser.email == "admin@acme.test")).one()
        user.locale = {"de": "de_DE", "es": "es_ES", "ar": "ar_EG"}[language]
        db.flush()
    page = client.get("/portal/statements")
    assert page.status_code == 200
    assert f'lang="{language}"' in page.text
    assert ('dir="rtl"' in page.text) is (language == "ar")
    text = readable(page.text)
    assert heading in text and button in text
    assert "Request statement" not in text and "No statements yet." not in text
    errors = client.post(
        "/portal/statements", data=_form(client, start_date="2026-03-01", end_date="2026-02-01")
    )
    assert errors.status_code == 422
    assert "The end date must be on or after the start date." not in readable(errors.text)
    asked = client.post(
        "/portal/statements", data=_form(client, start_date="2026-01-01", end_date=_today(app))
    )
    assert asked.status_code == 303
    assert _run(app) == 2  # the statement, then its mail
    listed = readable(client.get("/portal/statements").text)
    assert ready in listed and "Download links work" not in listed
    [message] = smtp.messages
    assert str(make_header(decode_header(message["Subject"]))) == subject
    for part in message.walk():
        if part.get_content_maintype() == "text":
            body = part.get_payload(decode=True).decode()
            assert "Download statement" not in body and "Download it here" not in body
    gone = client.get("/portal/download/not-a-link")
    assert gone.status_code == 404 and refused in readable(gone.text)
