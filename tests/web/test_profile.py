"""The profile: its fields, what saving records, the time zone and number format the portal then
uses, and changing the sign-in e-mail address through a link sent to the new one."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from portal import tenancy
from portal.models import AuditEvent, PortalUser, UserSession
from portal.services import profile, seed
from tests.conftest import Auth, Inbox, readable, user_by_email

pytestmark = pytest.mark.usefixtures("connection")


def _token(page: str, prefix: str) -> str:
    found = re.search(
        rf'id="{prefix}-csrf_token" name="{prefix}-csrf_token" type="hidden" value="([^"]+)"', page
    )
    assert found, "the form carries its CSRF token"
    return found.group(1)


def _profile_data(client: FlaskClient, **fields: str) -> dict[str, str]:
    page = client.get("/portal/profile").get_data(as_text=True)
    data = {
        "p-csrf_token": _token(page, "p"),
        "p-name": "Alex Admin",
        "p-phone": "",
        "p-job_title": "",
        "p-locale": "en",
        "p-timezone": "UTC",
        "p-number_locale": "",
    }
    data.update({f"p-{k}": v for k, v in fields.items()})
    return data


def _user(db: Session, email: str = "admin@acme.test") -> PortalUser:
    db.expire_all()
    return user_by_email(db, email)


def _events(db: Session, name: str) -> list[AuditEvent]:
    with tenancy.system(db):
        return list(
            db.scalars(select(AuditEvent).where(AuditEvent.name == name).order_by(AuditEvent.id))
        )


def test_page_shows_the_fields(client: FlaskClient, signed_in: Auth) -> None:
    page = client.get("/portal/profile")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "<h1>Profile</h1>" in text
    for label in (
        "Name",
        "Phone",
        "Job title",
        "Language",
        "Time zone",
        "Number format",
        "New email",
        "Current password",
    ):
        assert f">{label}</label>" in text, label
    assert (
        '<optgroup label="Europe">' in text
        and '<option value="Europe/Berlin">Berlin</option>' in text
    )
    assert '<option selected value="">Follow language</option>' in text
    assert 'aria-current="page"' in text.split('href="/portal/profile"', 1)[1][:40] or (
        'href="/portal/profile" aria-current="page"' in text
    )


def test_save_updates_audits_names_only_and_says_so(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    data = _profile_data(
        client, phone="(415) 555-0132", job_title="Controller", timezone="America/New_York"
    )
    response = client.post("/portal/profile", data=data)
    assert response.status_code == 303 and response.headers["Location"] == "/portal/profile"
    user = _user(db)
    assert user.phone == "+14155550132"  # E.164, read in the company's country (en_US)
    assert user.job_title == "Controller" and user.timezone == "America/New_York"
    page = client.get("/portal/profile").get_data(as_text=True)
    assert "Profile updated successfully" in page
    assert 'value="+1 415-555-0132"' in page  # shown formatted, internationally
    (event,) = _events(db, "Portal.ProfileUpdated")
    assert sorted(event.properties["changed_fields"]) == ["job_title", "phone", "timezone"]
    assert "Controller" not in str(event.properties) and "555" not in str(event.properties)
    # The same values again: nothing changed, nothing recorded.
    again = client.post(
        "/portal/profile",
        data=_profile_data(
            client, phone="+1 415-555-0132", job_title="Controller", timezone="America/New_York"
        ),
    )
    assert again.status_code == 303
    assert len(_events(db, "Portal.ProfileUpdated")) == 1


def test_saving_the_form_untouched_records_nothing(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    user = _user(db)
    assert user.timezone is None and user.number_locale is None  # never chosen
    page = client.get("/portal/profile").get_data(as_text=True)
    assert '<option selected value="UTC">UTC</option>' in page  # what the form shows for it
    response = client.post("/portal/profile", data=_profile_data(client, name=user.name))
    assert response.status_code == 303
    assert _events(db, "Portal.ProfileUpdated") == []
    assert _user(db).timezone is None


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"phone": "12"}, "phone", "Enter a valid phone number"),
        ({"phone": "+49 30 1"}, "phone", "Enter a valid phone number"),
        ({"timezone": "Mars/Olympus"}, "timezone", "Choose a time zone from the list."),
        ({"timezone": "US/Eastern"}, "timezone", "Choose a time zone from the list."),
        ({"timezone": "EST5EDT"}, "timezone", "Choose a time zone from the list."),
        ({"name": ""}, "name", "Enter your name."),
        ({"name": "x" * 201}, "name", "Field cannot be longer than 200 characters."),
        ({"job_title": "x" * 101}, "job_title", "Field cannot be longer than 100 characters."),
    ],
)
def test_bad_values_are_refused_inline_and_kept(
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    fields: dict[str, str],
    field: str,
    message: str,
) -> None:
    data = _profile_data(client, **{"job_title": "Keeps this", **fields})
    response = client.post("/portal/profile", data=data)
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert f'<p class="field-error" id="p-{field}-error">{message}</p>' in text
    assert 'value="Keeps this"' in text or field == "job_title"  # nothing typed is lost
    assert _events(db, "Portal.ProfileUpdated") == []


def test_phone_with_a_prefix_is_read_in_its_own_country(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    response = client.post("/portal/profile", data=_profile_data(client, phone="+49 30 901820"))
    assert response.status_code == 303
    assert _user(db).phone == "+4930901820"
    assert profile.display_phone("+4930901820") == "+49 30 901820"


def test_times_show_in_the_chosen_zone(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    with tenancy.system(db):
        created = db.scalars(
            select(UserSession.created_at)
            .where(UserSession.mfa_verified.is_(True))
            .order_by(UserSession.id.desc())
        ).first()
    assert created is not None
    utc = format_datetime(created, "short", tzinfo=profile_zone("UTC"), locale="en")
    tokyo = format_datetime(created, "short", tzinfo=profile_zone("Asia/Tokyo"), locale="en")
    assert utc != tokyo
    assert utc in readable(client.get("/portal/security").get_data(as_text=True))
    client.post("/portal/profile", data=_profile_data(client, timezone="Asia/Tokyo"))
    page = readable(client.get("/portal/security").get_data(as_text=True))
    assert tokyo in page and utc not in page


def test_every_zone_offered_is_accepted_and_nothing_else() -> None:
    offered = profile.time_zones()
    assert all(profile.valid_time_zone(name) for name in offered)
    assert not any(profile.valid_time_zone(n) for n in ("US/Pacific", "Etc/GMT+5", "GMT", ""))


def profile_zone(name: str) -> Any:
    return ZoneInfo(name)


def test_number_format_follows_the_choice(client: FlaskClient, signed_in: Auth) -> None:
    before = client.get("/portal/invoices").get_data(as_text=True)
    amounts = re.findall(r"\$[\d,]+\.\d\d", before)
    assert amounts, "the invoice list shows amounts in US format"
    client.post("/portal/profile", data=_profile_data(client, number_locale="de_DE"))
    after = client.get("/portal/invoices").get_data(as_text=True)
    assert re.search(r"[\d.]+,\d\d\s?\$", after), "German format: comma decimals"
    assert not re.findall(r"\$[\d,]+\.\d\d", after)
    assert "Profile updated successfully" in after


def test_number_format_reaches_numbers_only_not_dates_or_the_statements_language(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    from portal.models import Statement

    client.post("/portal/profile", data=_profile_data(client, number_locale="de_DE"))
    invoices = readable(client.get("/portal/invoices").get_data(as_text=True))
    assert re.search(r"[\d.]+,\d\d\s?\$", invoices), "amounts: the chosen number format"
    assert re.search(r"\b[A-Z][a-z]{2} \d{1,2}, 20\d\d\b", invoices), "dates: the language's"
    assert not re.search(r"\b\d{2}\.\d{2}\.20\d\d\b", invoices), "no German dates"
    page = client.get("/portal/statements").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token
    today = app.extensions["portal.clock"].today().isoformat()
    asked = client.post(
        "/portal/statements",
        data={
            "csrf_token": token.group(1),
            "format": "csv",
            "accounts": re.findall(r'name="accounts" type="checkbox" value="([^"]+)"', page),
            "start_date": "2026-01-01",
            "end_date": today,
        },
    )
    assert asked.status_code == 303
    with tenancy.system(db):
        (statement,) = db.scalars(select(Statement)).all()
    assert not statement.locale.startswith("de"), statement.locale  # in the language: English


def test_language_is_saved_and_the_page_follows_it(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    client.post("/portal/profile", data=_profile_data(client, locale="de"))
    assert _user(db).locale == "de"
    page = client.get("/portal/profile").get_data(as_text=True)
    assert '<html lang="de"' in page
    assert "Profil erfolgreich aktualisiert" in page


# --- e-mail change ------------------------------------------------------------------------------


def _email_data(client: FlaskClient, new: str, password: str = "") -> dict[str, str]:
    page = client.get("/portal/profile").get_data(as_text=True)
    return {
        "em-csrf_token": _token(page, "em"),
        "em-new_email": new,
        "em-current_password": password or seed.DEMO_PASSWORD,
    }


def _run(app: Flask) -> int:
    return int(app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now()))


def _link(message: Any) -> str:
    (plain,) = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    found = re.search(
        r"http://localhost(/portal/profile/email/\S+)", plain.get_payload(decode=True).decode()
    )
    assert found, "the mail carries the confirmation link"
    return found.group(1)


def test_email_change_sends_a_link_to_the_new_address_and_a_notice_to_the_old(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox, auth: Auth
) -> None:
    response = client.post("/portal/profile/email", data=_email_data(client, "Alex.New@Acme.test"))
    assert response.status_code == 303
    assert "We&#39;ve sent a confirmation link to alex.new@acme.test" in client.get(
        "/portal/profile"
    ).get_data(as_text=True)
    assert _user(db).email == "admin@acme.test"  # nothing changes before the link is opened
    assert len(_events(db, "Portal.EmailChangeRequested")) == 1
    assert _run(app) == 2
    by_address = {m["To"]: m for m in smtp.messages}
    assert set(by_address) == {"alex.new@acme.test", "admin@acme.test"}
    assert by_address["alex.new@acme.test"]["Subject"] == "Confirm your new email address"
    notice = by_address["admin@acme.test"]
    assert notice["Subject"] == "Your email address is about to change"
    (text,) = [p for p in notice.walk() if p.get_content_type() == "text/plain"]
    assert "If it wasn't you" in text.get_payload(decode=True).decode()
    link = _link(by_address["alex.new@acme.test"])

    # Another session of the same user, to be ended by the change.
    other = app.test_client()
    other_auth = Auth(app, other)
    other_auth.sign_in("admin@acme.test")
    assert other.get("/portal/dashboard").status_code == 200

    confirmed = client.get(link)
    assert confirmed.status_code == 303
    assert _user(db, "alex.new@acme.test").email == "alex.new@acme.test"
    assert "Your email address is now alex.new@acme.test" in client.get("/portal/profile").get_data(
        as_text=True
    )
    assert len(_events(db, "Portal.EmailChanged")) == 1
    assert other.get("/portal/dashboard").status_code == 302  # signed out
    assert _run(app) == 2  # the notice and the security alert, both to the old address
    changed = next(m for m in smtp.messages if m["Subject"] == "Your email address was changed")
    assert changed["To"] == "admin@acme.test"
    alerted = next(m for m in smtp.messages if m["Subject"] == "Your e-mail address was changed")
    assert alerted["To"] == "admin@acme.test"  # its "This wasn't me" reaches the owner
    # The link is spent: the address it changes from is no longer the user's.
    again = client.get(link)
    assert again.status_code == 410 and "Confirmation link already used" in again.get_data(
        as_text=True
    )


def _text(message: Any) -> str:
    (plain,) = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    return str(plain.get_payload(decode=True).decode())


def test_the_old_address_hears_of_a_change_confirmed_before_the_mail_went_out(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    asked = client.post("/portal/profile/email", data=_email_data(client, "quick@acme.test"))
    assert asked.status_code == 303
    # Confirmed (a link signed like the mailed one) before any job has run.
    confirmed = client.get(f"/portal/profile/email/{_sign(app, _user(db), 'quick@acme.test')}")
    assert confirmed.status_code == 303
    assert _user(db, "quick@acme.test").email == "quick@acme.test"
    _run(app)
    subjects = sorted((m["To"], m["Subject"]) for m in smtp.messages)
    # The link is spent already (no mail to the new address); the old one hears both.
    assert subjects == [
        ("admin@acme.test", "Your e-mail address was changed"),  # the security alert
        ("admin@acme.test", "Your email address is about to change"),
        ("admin@acme.test", "Your email address was changed"),
    ]
    changed = next(m for m in smtp.messages if m["Subject"] == "Your email address was changed")
    assert "from admin@acme.test to quick@acme.test" in _text(changed)
    assert _run(app) == 0 and len(smtp.messages) == 3  # once


def test_wrong_password_or_same_address_is_refused_inline(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    wrong = client.post(
        "/portal/profile/email", data=_email_data(client, "x@acme.test", "not it at all")
    )
    assert wrong.status_code == 422
    text = wrong.get_data(as_text=True)
    assert "Your current password is incorrect." in text and 'value="x@acme.test"' in text
    same = client.post("/portal/profile/email", data=_email_data(client, "ADMIN@acme.test"))
    assert same.status_code == 422 and "That is already your email address." in same.get_data(
        as_text=True
    )
    bad = client.post("/portal/profile/email", data=_email_data(client, "not-an-address"))
    assert bad.status_code == 422 and "Enter a valid email address." in bad.get_data(as_text=True)
    assert _events(db, "Portal.EmailChangeRequested") == []


def test_an_address_is_the_same_however_it_is_typed(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    from portal.services import auth

    assert auth.normalize_email(" \uff21dmin@\uff21CME.Test ") == "admin@acme.test"
    assert auth.find_user_by_email(db, "\uff41dmin@ACME.\uff34EST") is not None  # as sign-in
    same = client.post("/portal/profile/email", data=_email_data(client, "\uff21DMIN@acme.test"))
    assert same.status_code == 422
    assert "That is already your email address." in same.get_data(as_text=True)
    assert _events(db, "Portal.EmailChangeRequested") == []


def test_an_address_of_another_account_is_not_revealed_then_refused_on_confirm(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    taken = client.post("/portal/profile/email", data=_email_data(client, "ap@acme.test"))
    _run(app)
    link = _link(next(m for m in smtp.messages if m["To"] == "ap@acme.test"))
    refused = client.get(link)
    assert refused.status_code == 409
    assert "That email address is taken" in refused.get_data(as_text=True)
    assert _user(db).email == "admin@acme.test"
    free = client.post("/portal/profile/email", data=_email_data(client, "free@acme.test"))
    assert taken.status_code == free.status_code == 303  # the same answer either way


def test_the_link_names_no_address_and_a_newer_request_voids_it(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    client.post("/portal/profile/email", data=_email_data(client, "first@acme.test"))
    _run(app)
    first = _link(next(m for m in smtp.messages if m["To"] == "first@acme.test"))
    token = first.rsplit("/", 1)[1]
    _valid, payload = URLSafeTimedSerializer("any key").loads_unsafe(token)
    assert payload == [_user(db).public_id, payload[1]] and "@" not in str(payload)
    assert "acme" not in first and "admin" not in first
    client.post("/portal/profile/email", data=_email_data(client, "second@acme.test"))
    _run(app)
    second = _link(next(m for m in smtp.messages if m["To"] == "second@acme.test"))
    voided = client.get(first)
    assert voided.status_code == 410
    assert client.get(second).status_code == 303
    assert _user(db, "second@acme.test").pending_email is None


def test_an_address_taken_between_the_check_and_the_change_is_refused_not_a_500(
    app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    smtp: Inbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link = f"/portal/profile/email/{_sign(app, _user(db), 'ap@acme.test')}"
    # Another account takes the address after the link was checked: the check saw it free.
    monkeypatch.setattr(profile, "find_user_by_email", lambda _session, _email: None)
    refused = client.get(link)
    assert refused.status_code == 409
    assert "That email address is taken" in refused.get_data(as_text=True)
    assert _user(db).email == "admin@acme.test" and _user(db, "ap@acme.test").role
    assert _events(db, "Portal.EmailChanged") == []
    _run(app)
    assert smtp.messages == []  # nothing changed, nobody is told it did
    assert client.get("/portal/profile").status_code == 200  # the session carries on


def _sign(app: Flask, user: PortalUser, new: str, now: Any = None) -> str:
    """A link as the mail carries it, for a change to `new` asked for just now."""
    session = object_session(user)
    assert session is not None
    settings = app.config["SETTINGS"]
    with tenancy.system(session):
        user.pending_email = new
        session.commit()
        return profile.email_change_token(
            user, keys=settings.keyring, now=now or app.extensions["portal.clock"].now()
        )


def test_expired_tampered_and_foreign_links_say_which(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    admin = _user(db)
    clock = app.extensions["portal.clock"]
    old = _sign(app, admin, "late@acme.test", clock.now() - timedelta(hours=24, seconds=5))
    expired = client.get(f"/portal/profile/email/{old}")
    assert expired.status_code == 410 and "Confirmation link expired" in expired.get_data(
        as_text=True
    )
    good = _sign(app, admin, "fine@acme.test")
    tampered = client.get(f"/portal/profile/email/{good[:-3]}abc")
    assert tampered.status_code == 404
    assert "Confirmation link not valid" in tampered.get_data(as_text=True)
    foreign = client.get(
        f"/portal/profile/email/{_sign(app, _user(db, 'ap@acme.test'), 'p@acme.test')}"
    )
    assert foreign.status_code == 404
    assert "This link was made for another user" in foreign.get_data(as_text=True)
    assert _user(db).email == "admin@acme.test"


def test_a_link_opened_signed_out_signs_in_first_and_comes_back(
    app: Flask, client: FlaskClient, auth: Auth, db: Session
) -> None:
    link = f"/portal/profile/email/{_sign(app, _user(db), 'back@acme.test')}"
    response = client.get(link)
    assert response.status_code == 302 and "next=" in response.headers["Location"]
    signed = auth.sign_in("admin@acme.test", next=link)
    assert signed.headers["Location"] == link
    assert client.get(link).status_code == 303
    assert _user(db, "back@acme.test").email == "back@acme.test"


def test_email_change_requests_are_rate_limited(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    for n in range(5):
        answer = client.post("/portal/profile/email", data=_email_data(client, f"n{n}@acme.test"))
        assert answer.status_code == 303
    refused = client.post("/portal/profile/email", data=_email_data(client, "n5@acme.test"))
    assert refused.status_code == 429
    assert len(_events(db, "Portal.EmailChangeRequested")) == 5
