"""Company users (/portal/users): who may see it, the list, invitations from the mail to the
dashboard, role and access changes taking effect at the next request, deactivation, MFA reset,
the last-admin guard, and tenancy."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import (
    AuditEvent,
    BillingAccount,
    Invoice,
    PortalUser,
    RecoveryCode,
    Role,
    UserAccountGrant,
    UserSession,
    UserStatus,
)
from portal.services import audit, auth, users
from tests.conftest import Auth, Inbox, csrf_token, readable, user_by_email

pytestmark = pytest.mark.usefixtures("connection")


def _run(app: Flask) -> int:
    return int(app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now()))


def _accounts(db: Session) -> dict[str, BillingAccount]:
    with tenancy.system(db):
        return {a.name: a for a in db.scalars(select(BillingAccount))}


def _events(db: Session, name: str) -> list[AuditEvent]:
    with tenancy.system(db):
        return list(db.scalars(select(AuditEvent).where(AuditEvent.name == name)))


def _user(db: Session, email: str) -> PortalUser:
    db.expire_all()
    return user_by_email(db, email)


def _invite(client: FlaskClient, email: str, role: str = "customer", **extra: Any) -> Any:
    data = {"csrf_token": csrf_token(client, "/portal/users"), "email": email, "role": role}
    return client.post("/portal/users", data={**data, **extra})


def _post(client: FlaskClient, path: str, **data: Any) -> Any:
    return client.post(path, data={"csrf_token": csrf_token(client, "/portal/users"), **data})


def _other_client(app: Flask, email: str) -> FlaskClient:
    other = app.test_client()
    Auth(app, other).sign_in(email)
    return other


def _mail_link(message: Any) -> str:
    (plain,) = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    body = plain.get_payload(decode=True).decode()
    match = re.search(r"https?://\S+/invitations/(\S+)", body)
    assert match, body
    return f"/invitations/{match.group(1)}"


# who may see it ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signed_in", ["ap@acme.test"], indirect=True)
def test_a_member_gets_404_on_every_users_route(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    admin = user_by_email(db, "admin@acme.test")
    token = csrf_token(client, "/portal/dashboard")
    assert client.get("/portal/users").status_code == 404
    assert client.get(f"/portal/users/{admin.public_id}").status_code == 404
    assert client.get(f"/portal/users/{admin.public_id}/deactivate").status_code == 404
    posted = client.post("/portal/users", data={"csrf_token": token, "email": "x@acme.test"})
    assert posted.status_code == 404
    demote = client.post(
        f"/portal/users/{admin.public_id}/access", data={"csrf_token": token, "role": "customer"}
    )
    assert demote.status_code == 404
    assert _user(db, "admin@acme.test").role is Role.ADMIN
    assert "/portal/users" not in client.get("/portal/dashboard").text  # not in the menu


def test_signed_out_goes_to_sign_in(client: FlaskClient) -> None:
    response = client.get("/portal/users")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


@pytest.mark.parametrize("signed_in", ["admin@globex.test"], indirect=True)
def test_another_companys_admin_cannot_see_or_touch_acme_users(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    target = user_by_email(db, "ap@acme.test")
    listed = client.get("/portal/users")
    assert listed.status_code == 200
    assert "admin@globex.test" in listed.text and "acme.test" not in listed.text
    assert client.get(f"/portal/users/{target.public_id}").status_code == 404
    for action in ("deactivate", "reset-mfa", "end-sessions"):
        assert client.get(f"/portal/users/{target.public_id}/{action}").status_code == 404
        assert _post(client, f"/portal/users/{target.public_id}/{action}").status_code == 404
    posted = _post(client, f"/portal/users/{target.public_id}/access", role="customer.admin")
    assert posted.status_code == 404
    after = _user(db, "ap@acme.test")
    assert after.role is Role.CUSTOMER and after.status is UserStatus.ACTIVE


# the list ---------------------------------------------------------------------------------------


def test_the_list_says_who_has_what(client: FlaskClient, signed_in: Auth) -> None:
    page = client.get("/portal/users")
    assert page.status_code == 200
    text = readable(page.text)
    assert "<h1>Users</h1>" in text
    row = re.search(r"admin@acme.test.*?</tr>", text, re.S)
    assert row and "Administrator" in row.group(0) and "customer.admin" in row.group(0)
    assert "All accounts" in row.group(0) and "Set up" in row.group(0) and "Active" in row.group(0)
    new = re.search(r"new@acme.test.*?</tr>", text, re.S)
    assert new and "Member" in new.group(0) and "customer)" in new.group(0)
    assert "Acme West" in new.group(0) and "Acme East" not in new.group(0)
    assert "Not yet" in new.group(0)
    for label in (">Email</label>", ">Role</label>", "Invite user", "Acme East (AE-2001)"):
        assert label in text


def test_the_list_costs_the_same_whatever_the_number_of_users(
    client: FlaskClient, signed_in: Auth, db: Session, count_queries: Any
) -> None:
    client.get("/portal/users")
    count_queries.statements.clear()
    assert client.get("/portal/users").status_code == 200
    few = count_queries.count
    accounts = _accounts(db)
    acme = user_by_email(db, "admin@acme.test").company_id
    with tenancy.system(db):
        for n in range(12):
            user = PortalUser(
                company_id=acme,
                email=f"extra{n}@acme.test",
                name=f"Extra {n}",
                role=Role.CUSTOMER,
                status=UserStatus.ACTIVE,
            )
            user.grants = [
                UserAccountGrant(company_id=acme, billing_account_id=accounts["Acme West"].id),
                UserAccountGrant(company_id=acme, billing_account_id=accounts["Acme East"].id),
            ]
            db.add(user)
        db.commit()
    count_queries.statements.clear()
    page = client.get("/portal/users")
    assert "extra11@acme.test" in page.text
    assert count_queries.count == few, count_queries.statements


# invitations ------------------------------------------------------------------------------------


def test_an_invitation_leads_from_the_mail_through_mfa_to_the_dashboard(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    west = _accounts(db)["Acme West"]
    west_id, west_public_id = west.id, west.public_id
    response = _invite(client, "Robin@Acme.test", accounts=[west_public_id])
    assert response.status_code == 303
    invited = _user(db, "robin@acme.test")
    assert invited.status is UserStatus.INVITED and invited.password_hash is None
    assert [g.billing_account_id for g in invited.grants] == [west_id]
    (event,) = _events(db, "Portal.UserInvited")
    assert event.properties == {
        "email": "robin@acme.test",
        "role": "customer",
        "billing_accounts": [west_public_id],
        "target_user": invited.public_id,
    }
    listed = readable(client.get("/portal/users").text)
    assert re.search(r"robin@acme.test.*?Invited.*?link expires", listed, re.S)

    assert _run(app) == 1
    (message,) = smtp.messages
    assert message["To"] == "robin@acme.test"
    assert message["Subject"] == "You're invited to the Billing Portal of Acme Corp"
    types = {part.get_content_type() for part in message.walk()}
    assert {"text/plain", "text/html"} <= types
    link = _mail_link(message)
    (html,) = [p for p in message.walk() if p.get_content_type() == "text/html"]
    assert f"http://localhost{link}" in html.get_payload(decode=True).decode()

    client.post("/logout", data={"csrf_token": csrf_token(client, "/portal/dashboard")})
    page = client.get(link)
    assert page.status_code == 200 and "Accept your invitation" in page.text
    short = client.post(
        link,
        data={
            "csrf_token": csrf_token(client, link),
            "name": "Robin Reader",
            "new_password": "short",
            "confirm_password": "short",
        },
    )
    assert short.status_code == 422 and "Use at least 12 characters." in short.text
    assert "Robin Reader" in short.text  # nothing typed is lost but the passwords
    password = "violet lantern harbor 42"
    accepted = client.post(
        link,
        data={
            "csrf_token": csrf_token(client, link),
            "name": "Robin Reader",
            "new_password": password,
            "confirm_password": password,
        },
    )
    assert accepted.status_code == 302 and accepted.headers["Location"] == "/mfa/setup"
    assert len(_events(db, "Portal.InvitationAccepted")) == 1
    assert client.get("/portal/dashboard").status_code == 302  # half signed in only

    setup = client.get("/mfa/setup").text
    secret = re.search(r"\b([A-Z2-7]{32})\b", setup.replace(" ", ""))
    assert secret, "the secret is shown for manual entry"
    app.extensions["portal.clock"].advance(timedelta(seconds=30))
    code = pyotp.TOTP(secret.group(1)).at(app.extensions["portal.clock"].now())
    done = client.post(
        "/mfa/setup", data={"csrf_token": csrf_token(client, "/mfa/setup"), "code": code}
    )
    assert done.status_code == 200 and "/portal/dashboard" in done.text
    dashboard = client.get("/portal/dashboard")
    assert dashboard.status_code == 200 and "Robin Reader" in dashboard.text
    robin = _user(db, "robin@acme.test")
    assert robin.status is UserStatus.ACTIVE and robin.mfa_enrolled and robin.name == "Robin Reader"

    again = client.get(link)
    assert again.status_code == 410 and "accepted already" in again.text


def test_the_mail_speaks_the_inviters_language(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    client.post(
        "/language",
        data={
            "csrf_token": csrf_token(client, "/portal/users"),
            "language": "de",
            "next": "/portal/users",
        },
    )
    assert _invite(client, "lena@acme.test", role="customer.admin").status_code == 303
    _run(app)
    (message,) = smtp.messages
    assert message["Subject"] != "You're invited to the Billing Portal of Acme Corp"
    assert "Acme Corp" in message["Subject"]


def test_a_member_needs_an_account_and_nothing_typed_is_lost(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    response = _invite(client, "kim@acme.test")
    assert response.status_code == 422
    assert "Choose at least one billing account for a member." in response.text
    assert 'value="kim@acme.test"' in response.text
    bad = _invite(client, "not an address")
    assert bad.status_code == 422 and "Enter a valid email address." in bad.text
    with tenancy.system(db):
        assert (
            db.scalars(select(PortalUser).where(PortalUser.email == "kim@acme.test")).first()
            is None
        )
    # an administrator needs none (any ticked are ignored)
    east = _accounts(db)["Acme East"]
    assert (
        _invite(
            client, "kim@acme.test", role="customer.admin", accounts=[east.public_id]
        ).status_code
        == 303
    )
    kim = _user(db, "kim@acme.test")
    assert kim.role is Role.ADMIN and kim.grants == []


def test_an_address_with_an_account_is_refused_without_naming_another_company(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    own = _invite(client, "ap@acme.test", role="customer.admin")
    assert own.status_code == 422 and "already has an account in your company" in own.text
    foreign = _invite(client, "Admin@Globex.test", role="customer.admin")
    assert foreign.status_code == 422
    assert "This address can&#39;t be invited." in foreign.text
    assert "Globex GmbH" not in foreign.text
    unknown_elsewhere = _invite(client, "nobody@globex.test", role="customer.admin")
    assert unknown_elsewhere.status_code == 303  # only an existing account is refused
    assert len(_events(db, "Portal.UserInvited")) == 1


def test_resending_renews_the_link_and_kills_the_old_one(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    assert _invite(client, "sam@acme.test", role="customer.admin").status_code == 303
    _run(app)
    first = _mail_link(smtp.messages[0])
    sam = _user(db, "sam@acme.test")
    assert _post(client, f"/portal/users/{sam.public_id}/resend").status_code == 303
    _run(app)
    second = _mail_link(smtp.messages[1])
    assert first != second
    assert len(_events(db, "Portal.InvitationResent")) == 1
    client.post("/logout", data={"csrf_token": csrf_token(client, "/portal/dashboard")})
    old = client.get(first)
    assert old.status_code == 410 and "a newer one was sent" in old.text
    assert client.get(second).status_code == 200


def test_expired_and_tampered_links(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    assert _invite(client, "lou@acme.test", role="customer.admin").status_code == 303
    _run(app)
    link = _mail_link(smtp.messages[0])
    tampered = client.get(link[:-3] + ("aaa" if not link.endswith("aaa") else "bbb"))
    assert tampered.status_code == 404 and "not valid" in tampered.text
    app.extensions["portal.clock"].advance(timedelta(hours=71))
    assert client.get(link).status_code == 200
    app.extensions["portal.clock"].advance(timedelta(hours=1, seconds=1))
    expired = client.get(link)
    assert expired.status_code == 410 and "has expired" in expired.text


def test_a_deactivated_invitees_link_is_dead(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    assert _invite(client, "max@acme.test", role="customer.admin").status_code == 303
    max_ = _user(db, "max@acme.test")
    keys = app.config["SETTINGS"].keyring
    token = users.invitation_token(max_, keys=keys, now=app.extensions["portal.clock"].now())
    assert _post(client, f"/portal/users/{max_.public_id}/deactivate").status_code == 303
    assert client.get(f"/invitations/{token}").status_code == 410


def test_an_administrator_is_invited_with_no_accounts_recorded(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    assert _invite(client, "ada@acme.test", role="customer.admin").status_code == 303
    (event,) = _events(db, "Portal.UserInvited")
    assert event.properties == {
        "email": "ada@acme.test",
        "role": "customer.admin",
        "billing_accounts": [],
        "target_user": _user(db, "ada@acme.test").public_id,
    }


def test_the_link_expires_72_hours_after_the_invitation_however_late_the_mail(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    from babel.dates import format_datetime

    assert _invite(client, "late@acme.test", role="customer.admin").status_code == 303
    invited_at = _user(db, "late@acme.test").invitation_sent_at
    assert invited_at is not None
    clock = app.extensions["portal.clock"]
    clock.advance(timedelta(hours=48))  # the mail goes out late
    _run(app)
    (message,) = smtp.messages
    (plain,) = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    body = " ".join(plain.get_payload(decode=True).decode().split())
    expires = format_datetime(invited_at + timedelta(hours=72), "medium", locale="en")
    assert f"until {' '.join(expires.split())}" in body  # not 72 hours after the mail
    link, invitee = _mail_link(message), app.test_client()
    clock.advance(timedelta(hours=24, minutes=-1))  # 71:59 after the invitation
    assert invitee.get(link).status_code == 200
    clock.advance(timedelta(minutes=2))  # 72:01 after the invitation, 24:01 after the mail
    expired = invitee.get(link)
    assert expired.status_code == 410 and "has expired" in expired.text


def test_resending_to_a_deactivated_invitee_says_to_reactivate_them(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    assert _invite(client, "gone@acme.test", role="customer.admin").status_code == 303
    _run(app)
    gone = _user(db, "gone@acme.test")
    assert _post(client, f"/portal/users/{gone.public_id}/deactivate").status_code == 303
    answer = _post(client, f"/portal/users/{gone.public_id}/resend")
    assert answer.status_code == 303
    page = readable(client.get(answer.headers["Location"]).text)
    assert "This user is deactivated. Reactivate them to send a new invitation." in page
    assert "accepted their invitation already" not in page
    assert _events(db, "Portal.InvitationResent") == []
    _run(app)
    assert len(smtp.messages) == 1  # the first invitation only


def test_an_address_invited_at_the_same_moment_elsewhere_is_refused_not_a_500(
    client: FlaskClient, signed_in: Auth, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two invitations of one address at once: both look it up before either is committed;
    the second insert meets the unique index. (The look-up is made to miss here, as it does
    in that race; tests/web/test_users_concurrency.py runs the race itself on PostgreSQL.)"""
    real = auth.find_user_by_email
    lookups: list[str] = []

    def first_lookup_misses(session: Session, address: str) -> PortalUser | None:
        lookups.append(address)
        return None if len(lookups) == 1 else real(session, address)

    monkeypatch.setattr(auth, "find_user_by_email", first_lookup_misses)
    answer = _invite(client, "AP@acme.test", role="customer.admin")
    assert answer.status_code == 422
    assert "already has an account in your company" in answer.text
    assert lookups == ["ap@acme.test", "ap@acme.test"]
    assert _events(db, "Portal.UserInvited") == []
    ap = _user(db, "ap@acme.test")
    assert ap.role is Role.CUSTOMER and ap.status is UserStatus.ACTIVE


def _past_this_session(user_id: int, **values: Any) -> Any:
    """An UPDATE as another transaction commits it: the user objects this session holds keep
    what they had read (they are not synchronized)."""
    return (
        update(PortalUser)
        .where(PortalUser.id == user_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _invited(app: Flask, db: Session, email: str) -> tuple[PortalUser, str]:
    """An invited administrator (invited by admin@) and their link's token."""
    now = app.extensions["portal.clock"].now()
    admin = user_by_email(db, "admin@acme.test")
    with tenancy.system(db):
        user, refusal = users.invite(
            db, admin, email, Role.ADMIN, [], now=now, request=audit.RequestInfo()
        )
    assert refusal is None and user is not None
    return user, users.invitation_token(user, keys=app.config["SETTINGS"].keyring, now=now)


def _accept(app: Flask, db: Session, user: PortalUser) -> users.InvitationState:
    from portal.extensions import password_hasher

    with app.app_context(), tenancy.system(db):
        return users.accept_invitation(
            db,
            user,
            "Pat",
            "violet lantern harbor 42",
            ph=password_hasher(),
            keys=app.config["SETTINGS"].keyring,
            now=app.extensions["portal.clock"].now(),
            request=audit.RequestInfo(),
        )


def test_an_invitee_deactivated_after_the_link_was_checked_stays_deactivated(
    app: Flask, db: Session
) -> None:
    """The invitee posts their password; the link is checked, then an administrator's
    deactivation is committed (another transaction: written past this session's copy)
    before the acceptance writes. Nothing is accepted."""
    invited, token = _invited(app, db, "pat@acme.test")
    now = app.extensions["portal.clock"].now()
    check = users.check_invitation(db, token, keys=app.config["SETTINGS"].keyring, now=now)
    assert check.state is users.InvitationState.OK and check.user is invited
    with tenancy.system(db):
        db.execute(
            _past_this_session(invited.id, status=UserStatus.DISABLED, invitation_nonce=None)
        )
    state = _accept(app, db, invited)
    after = _user(db, "pat@acme.test")
    assert after.status is UserStatus.DISABLED and after.password_hash is None
    assert state is users.InvitationState.REVOKED
    assert _events(db, "Portal.InvitationAccepted") == []


def test_a_link_accepted_meanwhile_in_another_tab_is_not_accepted_again(
    app: Flask, db: Session
) -> None:
    invited, token = _invited(app, db, "pat@acme.test")
    now = app.extensions["portal.clock"].now()
    check = users.check_invitation(db, token, keys=app.config["SETTINGS"].keyring, now=now)
    assert check.state is users.InvitationState.OK
    with tenancy.system(db):  # the other tab's acceptance, committed first
        db.execute(
            _past_this_session(
                invited.id, status=UserStatus.ACTIVE, invitation_nonce=None, password_hash="theirs"
            )
        )
    state = _accept(app, db, invited)
    assert _user(db, "pat@acme.test").password_hash == "theirs"
    assert state is users.InvitationState.USED
    assert _events(db, "Portal.InvitationAccepted") == []


# changes take effect at the next request --------------------------------------------------------


def _west_invoice(db: Session) -> str:
    west = _accounts(db)["Acme West"]
    with tenancy.system(db):
        return (
            db.scalars(
                select(Invoice.public_id).where(Invoice.billing_account_id == west.id)
            ).first()
            or ""
        )


def test_a_grant_removed_closes_that_accounts_invoice_at_the_next_request(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    ap_client = _other_client(app, "ap@acme.test")
    invoice = _west_invoice(db)
    assert ap_client.get(f"/portal/invoices/{invoice}").status_code == 200
    ap = user_by_email(db, "ap@acme.test")
    east = _accounts(db)["Acme East"]
    page = client.get(f"/portal/users/{ap.public_id}")
    assert page.status_code == 200 and "Role and access" in page.text
    saved = _post(
        client, f"/portal/users/{ap.public_id}/access", role="customer", accounts=[east.public_id]
    )
    assert saved.status_code == 303
    assert ap_client.get(f"/portal/invoices/{invoice}").status_code == 404
    (event,) = _events(db, "Portal.UserAccessChanged")
    assert event.properties == {"billing_accounts": [east.public_id], "target_user": ap.public_id}
    assert _events(db, "Portal.UserRoleChanged") == []
    promoted = _post(client, f"/portal/users/{ap.public_id}/access", role="customer.admin")
    assert promoted.status_code == 303
    assert ap_client.get(f"/portal/invoices/{invoice}").status_code == 200
    assert ap_client.get("/portal/users").status_code == 200
    (role_event,) = _events(db, "Portal.UserRoleChanged")
    assert role_event.properties == {"role": "customer.admin", "target_user": ap.public_id}


def test_a_demotion_records_the_accounts_the_user_is_left_with(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    """ap@ (member of Acme West) is promoted, then made a member again of Acme West: the
    grants kept while they were an administrator are the ones asked for, and still the
    accounts they are left with are recorded."""
    ap = user_by_email(db, "ap@acme.test")
    west = _accounts(db)["Acme West"].public_id
    assert (
        _post(client, f"/portal/users/{ap.public_id}/access", role="customer.admin").status_code
        == 303
    )
    demoted = _post(
        client, f"/portal/users/{ap.public_id}/access", role="customer", accounts=[west]
    )
    assert demoted.status_code == 303
    assert _user(db, "ap@acme.test").role is Role.CUSTOMER
    roles = [e.properties for e in _events(db, "Portal.UserRoleChanged")]
    assert {"role": "customer", "target_user": ap.public_id} in roles
    (access,) = _events(db, "Portal.UserAccessChanged")
    assert access.properties == {"billing_accounts": [west], "target_user": ap.public_id}


def test_deactivation_refuses_the_existing_session_and_reactivation_restores_sign_in(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    ap_client = _other_client(app, "ap@acme.test")
    assert ap_client.get("/portal/dashboard").status_code == 200
    ap = user_by_email(db, "ap@acme.test")
    confirm = client.get(f"/portal/users/{ap.public_id}/deactivate")
    assert confirm.status_code == 200 and "Deactivate ap@acme.test?" in readable(confirm.text)
    assert _user(db, "ap@acme.test").status is UserStatus.ACTIVE  # asking changes nothing
    assert _post(client, f"/portal/users/{ap.public_id}/deactivate").status_code == 303
    refused = ap_client.get("/portal/dashboard")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/login")
    after = _user(db, "ap@acme.test")
    assert after.status is UserStatus.DISABLED and after.deactivated_at is not None
    with tenancy.system(db):
        live = db.scalars(
            select(UserSession).where(
                UserSession.user_id == ap.id, UserSession.revoked_at.is_(None)
            )
        ).all()
    assert live == []
    assert len(_events(db, "Portal.UserDeactivated")) == 1
    assert "Deactivated" in client.get("/portal/users").text
    assert _post(client, f"/portal/users/{ap.public_id}/reactivate").status_code == 303
    assert _user(db, "ap@acme.test").status is UserStatus.ACTIVE
    assert len(_events(db, "Portal.UserReactivated")) == 1
    _other_client(app, "ap@acme.test")  # signs in again


def test_reactivating_a_user_who_is_not_deactivated_changes_and_mails_nothing(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    assert _invite(client, "pat@acme.test", role="customer.admin").status_code == 303
    _run(app)
    assert len(smtp.messages) == 1
    pat = _user(db, "pat@acme.test")
    nonce = pat.invitation_nonce
    for _ in range(2):
        answer = _post(client, f"/portal/users/{pat.public_id}/reactivate")
        assert answer.status_code == 303
    page = readable(client.get(answer.headers["Location"]).text)
    assert "This user is not deactivated: there is nothing to reactivate." in page
    assert "was reactivated" not in page
    _run(app)
    assert len(smtp.messages) == 1
    assert _events(db, "Portal.UserReactivated") == []
    assert _user(db, "pat@acme.test").invitation_nonce == nonce  # the mailed link still works


def test_reactivating_a_deactivated_invitee_sends_a_new_invitation(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    assert _invite(client, "pat@acme.test", role="customer.admin").status_code == 303
    _run(app)
    pat = _user(db, "pat@acme.test")
    assert _post(client, f"/portal/users/{pat.public_id}/deactivate").status_code == 303
    answer = _post(client, f"/portal/users/{pat.public_id}/reactivate")
    assert answer.status_code == 303
    page = readable(client.get(answer.headers["Location"]).text)
    assert "pat@acme.test was reactivated and sent a new invitation." in page
    assert _user(db, "pat@acme.test").status is UserStatus.INVITED
    assert len(_events(db, "Portal.UserReactivated")) == 1
    assert _run(app) == 1
    first, second = smtp.messages
    client.post("/logout", data={"csrf_token": csrf_token(client, "/portal/dashboard")})
    assert client.get(_mail_link(first)).status_code == 410
    assert client.get(_mail_link(second)).status_code == 200


def test_reset_mfa_and_end_sessions(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    ap_client = _other_client(app, "ap@acme.test")
    ap = user_by_email(db, "ap@acme.test")
    assert _post(client, f"/portal/users/{ap.public_id}/end-sessions").status_code == 303
    assert ap_client.get("/portal/dashboard").status_code == 302
    (ended,) = _events(db, "Portal.UserSessionsEnded")
    assert ended.properties == {"target_user": ap.public_id, "ended": 1}

    ap_client = _other_client(app, "ap@acme.test")
    assert "Reset two-step verification" in client.get(f"/portal/users/{ap.public_id}").text
    assert _post(client, f"/portal/users/{ap.public_id}/reset-mfa").status_code == 303
    assert ap_client.get("/portal/dashboard").status_code == 302
    after = _user(db, "ap@acme.test")
    assert not after.mfa_enrolled and after.mfa_secret_encrypted is None
    with tenancy.system(db):
        assert db.scalars(select(RecoveryCode).where(RecoveryCode.user_id == ap.id)).all() == []
    assert len(_events(db, "Portal.UserMfaReset")) == 1
    (operator_event,) = _events(db, "Portal.MfaReset")
    assert operator_event.properties == {"by": "administrator"}
    again = Auth(app, app.test_client()).login("ap@acme.test")
    assert again.headers["Location"] == "/mfa/setup"  # enrols again


# the last administrator -------------------------------------------------------------------------


def test_the_last_active_admin_cannot_demote_or_deactivate_themselves(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    admin = user_by_email(db, "admin@acme.test")
    demote = _post(
        client,
        f"/portal/users/{admin.public_id}/access",
        role="customer",
        accounts=[_accounts(db)["Acme West"].public_id],
    )
    assert demote.status_code == 409 and "only active administrator" in demote.text
    leave = _post(client, f"/portal/users/{admin.public_id}/deactivate")
    assert leave.status_code == 409 and "only active administrator" in leave.text
    after = _user(db, "admin@acme.test")
    assert after.role is Role.ADMIN and after.status is UserStatus.ACTIVE
    # with a second active administrator, the first may step down
    ap = user_by_email(db, "ap@acme.test")
    assert (
        _post(client, f"/portal/users/{ap.public_id}/access", role="customer.admin").status_code
        == 303
    )
    stepped = _post(
        client,
        f"/portal/users/{admin.public_id}/access",
        role="customer",
        accounts=[_accounts(db)["Acme West"].public_id],
    )
    assert stepped.status_code == 303
    assert client.get("/portal/users").status_code == 404  # at once: no longer an admin


def test_an_invited_admin_does_not_count_as_active(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    assert _invite(client, "pending@acme.test", role="customer.admin").status_code == 303
    admin = user_by_email(db, "admin@acme.test")
    leave = _post(client, f"/portal/users/{admin.public_id}/deactivate")
    assert leave.status_code == 409


@pytest.mark.parametrize("action", ["demote", "deactivate"])
def test_the_last_admin_guard_decides_on_the_targets_role_now_not_when_loaded(
    app: Flask, db: Session, action: str
) -> None:
    """ap@ is loaded as a member at the start of the request; meanwhile (other transactions,
    written past this session's copy) ap@ is made an administrator and admin@ steps down.
    Demoting or deactivating ap@ now would leave the company without an administrator."""
    admin = user_by_email(db, "admin@acme.test")
    ap = user_by_email(db, "ap@acme.test")
    _ = ap.grants
    assert ap.role is Role.CUSTOMER
    with tenancy.system(db):
        db.execute(_past_this_session(ap.id, role=Role.ADMIN))
        db.execute(_past_this_session(admin.id, role=Role.CUSTOMER))
        request, now = audit.RequestInfo(), app.extensions["portal.clock"].now()
        if action == "demote":
            refusal = users.change_access(db, admin, ap, Role.CUSTOMER, [], request=request)
        else:
            refusal = users.deactivate(db, admin, ap, now=now, request=request)
    assert refusal is users.Refusal.LAST_ADMIN
    after = _user(db, "ap@acme.test")
    assert after.role is Role.ADMIN and after.status is UserStatus.ACTIVE


def test_reactivation_is_rate_limited_like_invitations(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    ap = user_by_email(db, "ap@acme.test")
    token = csrf_token(client, "/portal/users")
    answers = [
        client.post(
            f"/portal/users/{ap.public_id}/reactivate", data={"csrf_token": token}
        ).status_code
        for _ in range(21)
    ]
    assert answers[:20] == [303] * 20 and answers[20] == 429
    # the other confirm-first actions are not limited by it
    ended = client.post(f"/portal/users/{ap.public_id}/end-sessions", data={"csrf_token": token})
    assert ended.status_code == 303


def test_invitations_are_rate_limited_per_administrator(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    token = csrf_token(client, "/portal/users")
    answers = [
        client.post(
            "/portal/users",
            data={"csrf_token": token, "email": f"bulk{n}@acme.test", "role": "customer.admin"},
        ).status_code
        for n in range(21)
    ]
    assert answers[:20] == [303] * 20 and answers[20] == 429
    assert len(_events(db, "Portal.UserInvited")) == 20


def test_a_link_signed_with_an_earlier_key_still_opens(app: Flask, db: Session) -> None:
    from portal.services.crypto import Keyring

    invitee = user_by_email(db, "new@acme.test")
    with tenancy.system(db):
        invitee.status, invitee.invitation_nonce = UserStatus.INVITED, "nonce-1"
        db.flush()
    now = app.extensions["portal.clock"].now()
    token = users.invitation_token(invitee, keys=Keyring("old-key"), now=now)
    rotated = Keyring("new-key", ("old-key",))
    assert users.check_invitation(db, token, keys=rotated, now=now).user is invitee
    forgotten = Keyring("new-key")
    check = users.check_invitation(db, token, keys=forgotten, now=now)
    assert check.state is users.InvitationState.INVALID
