"""The company's activity log: admins only (anyone else gets a missing page's 404), one company's
events, filters, pages of 25 at a constant number of queries, and the CSV export."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal import tenancy
from portal.blueprints.activity.routes import EVENT_LABELS
from portal.services import audit
from portal.services.activity import GROUPS, KNOWN_EVENTS
from tests.conftest import Auth, QueryCounter, readable, user_by_email

pytestmark = pytest.mark.usefixtures("connection")
HTMX = {"HX-Request": "true", "HX-Target": "activity-results"}
SHARED_NAMES = [
    "Portal.ProfileUpdated",
    "Portal.EmailChangeRequested",
    "Portal.EmailChanged",
    "Portal.UserInvited",
    "Portal.InvitationAccepted",
    "Portal.UserRoleChanged",
    "Portal.UserAccessChanged",
    "Portal.UserDeactivated",
    "Portal.UserReactivated",
    "Portal.UserMfaReset",
    "Portal.UserSessionsEnded",
    "Portal.InvitationResent",
    "Portal.NotificationPreferencesUpdated",
    "Portal.Unsubscribed",
    "Portal.DisputeMessagePosted",
    "Portal.DisputeResolved",
    "Portal.DisputeWithdrawn",
    "Portal.Login",
    "Portal.SessionEnded",
    "Portal.PaymentMade",
    "Portal.PaymentFailed",
    "Portal.PaymentSubmitted",
    "Portal.PaymentScheduled",
    "Portal.PaymentCanceled",
    "Portal.PaymentMethodAdded",
    "Portal.PaymentMethodRemoved",
    "Portal.PaymentMethodDefault",
    "Portal.StatementRequested",
    "Portal.StatementGenerated",
    "Portal.StatementDownloaded",
    "Portal.DocumentDownloaded",
    "Portal.InvoiceViewed",
    "Portal.DisputeOpened",
    "Portal.PasswordChanged",
    "Portal.PasswordReset",
    "Portal.PasswordResetRequested",
    "Portal.MfaEnrolled",
    "Portal.MfaReset",
    "Portal.RecoveryCodeUsed",
    "Portal.RecoveryCodesIssued",
    "Portal.AccountLocked",
    "Portal.CreditApplied",
    "Portal.ApiTokenCreated",
    "Portal.ApiTokenRevoked",
]


def _add(
    db: Session,
    actor: str | None,
    name: str,
    *,
    company_of: str = "admin@acme.test",
    at: datetime | None = None,
    ip: str = "203.0.113.7",
    agent: str = "Mozilla/5.0 (Windows NT 10.0) Chrome/120.0 Safari/537.36",
    **properties: Any,
) -> None:
    owner = user_by_email(db, company_of)
    user = user_by_email(db, actor) if actor else None
    with tenancy.system(db):
        event = audit.record(
            db,
            name,
            company_id=owner.company_id,
            user_id=user.id if user else None,
            request=audit.RequestInfo(ip, agent),
            **properties,
        )
        if at is not None:
            event.created_at = at
        db.flush()
    db.commit()


def _rows(page: str) -> list[str]:
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in page else ""
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


def test_labels_cover_every_shared_name() -> None:
    assert set(SHARED_NAMES) <= set(EVENT_LABELS)
    assert {n for names in GROUPS.values() for n in names} <= set(EVENT_LABELS)


def test_every_event_the_portal_records_has_a_label_and_a_kind() -> None:
    """Walks the code for the event names it records ("Portal.…" literals): each has a label
    and belongs to a kind of activity the filter offers."""
    root = Path(__file__).resolve().parents[2]
    recorded: set[str] = set()
    for folder in ("portal", "workers"):
        for source in (root / folder).rglob("*.py"):
            recorded |= set(re.findall(r"[\"'](Portal\.[A-Z][A-Za-z]+)[\"']", source.read_text()))
    assert "Portal.DisputeAttachmentDownloaded" in recorded  # the walk finds what it should
    assert recorded - set(EVENT_LABELS) == set()
    assert recorded - KNOWN_EVENTS == set()


def test_sign_in_steps_say_which_step_and_whether_it_passed(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    steps: list[dict[str, Any]] = [
        {"factor": "password", "success": True, "reason": "ok"},
        {"factor": "password", "success": False, "reason": "invalid"},
        {"factor": "totp", "success": True, "reason": "ok"},
        {"factor": "recovery_code", "success": False, "reason": "locked"},
        {"factor": "password", "success": False, "reason": "disabled"},
    ]
    base = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    for n, step in enumerate(steps):
        _add(db, "ap@acme.test", "Portal.Login", at=base + timedelta(minutes=n), **step)
    _add(
        db,
        "ap@acme.test",
        "Portal.SessionEnded",
        at=base + timedelta(minutes=9),
        reason="ended_by_administrator",
        ended=2,
    )
    text = readable(client.get("/portal/activity?kind=security").get_data(as_text=True))
    rows = [r for r in _rows(text) if "ap@acme.test" in r]
    assert "Session ended" in rows[0] and "Reason: Ended by an administrator" in rows[0]
    assert "Sign-in failed" in rows[1] and "Reason: The user is deactivated" in rows[1]
    assert "Two-step verification failed" in rows[2]
    assert "Reason: Too many attempts: locked for now" in rows[2]
    assert "Two-step verification passed" in rows[3] and "Reason" not in rows[3]
    assert "Sign-in failed" in rows[4] and "Reason: Wrong password or code" in rows[4]
    assert "Signed in" in rows[5] and "Reason" not in rows[5]
    assert "ended_by_administrator" not in text and "Reason: ok" not in text
    csv_rows = list(
        csv.reader(
            io.StringIO(
                client.get("/portal/activity.csv?kind=security").get_data().decode("utf-8-sig")
            )
        )
    )
    assert ["Sign-in failed", "Reason: Wrong password or code"] in [r[2:4] for r in csv_rows]


def test_reasons_and_field_names_are_in_the_readers_language(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    _add(db, "ap@acme.test", "Portal.ProfileUpdated", changed_fields=["phone", "timezone"])
    _add(db, "ap@acme.test", "Portal.DisputeOpened", reason="duplicate")
    _add(db, "ap@acme.test", "Portal.DisputeAttachmentDownloaded", dispute="dsp_x")
    english = readable(client.get("/portal/activity").get_data(as_text=True))
    assert "Reason: We were billed twice" in english and "Dispute attachment downloaded" in english
    german = client.get("/portal/activity", headers={"Accept-Language": "de"})
    text = readable(german.get_data(as_text=True))
    assert '<html lang="de"' in german.get_data(as_text=True)
    assert "Felder: Telefon, Zeitzone" in text
    assert "duplicate" not in text and "timezone" not in text


_TOKEN = re.compile(r'(name="csrf_token" value="|"X-CSRFToken": ")[^"]+')


def _without_tokens(html: str) -> str:
    return _TOKEN.sub(r"\1", html)


@pytest.mark.parametrize("signed_in", ["ap@acme.test"], indirect=True)
def test_anyone_but_an_admin_gets_a_missing_pages_404(client: FlaskClient, signed_in: Auth) -> None:
    for path, query in (("/activity", ""), ("/activity.csv", ""), ("/activity", "?kind=payments")):
        missing = client.get(f"/portal/no-such-page{query}").get_data(as_text=True)
        response = client.get(f"/portal{path}{query}")
        assert response.status_code == 404
        # The same page, but for its own address (the idle dialog's way back); the CSRF token
        # carries the second it was signed in, so it may differ between the two answers.
        same = response.get_data(as_text=True).replace(f"/portal{path}", "/portal/no-such-page")
        assert _without_tokens(same) == _without_tokens(missing)
    assert 'href="/portal/activity"' not in client.get("/portal/dashboard").get_data(as_text=True)


def test_admin_sees_the_nav_entry_and_the_log(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    _add(db, "ap@acme.test", "Portal.ProfileUpdated", changed_fields=["phone", "job_title"])
    _add(db, None, "Portal.CreditApplied", amount=12345, currency="USD")
    _add(db, None, "Portal.MfaReset", by="operator")
    _add(db, "ap@acme.test", "Portal.SomethingNew")
    page = client.get("/portal/activity")
    assert page.status_code == 200
    text = readable(page.get_data(as_text=True))
    assert "<h1>Activity</h1>" in text
    assert 'href="/portal/activity" aria-current="page"' in text
    rows = _rows(text)
    assert len(rows) >= 4
    newest = rows[0]
    assert "Portal.SomethingNew" in newest and "ap@acme.test" in newest  # unknown: raw name
    assert "Two-step verification reset" in rows[1] and "Operator" in rows[1]
    assert "Credit applied" in rows[2] and "System" in rows[2] and "$123.45" in rows[2]
    assert "Profile updated" in rows[3] and "Fields: Phone, Job title" in rows[3]
    assert "203.0.113.7 · Chrome on Windows" in rows[3]


def test_details_never_show_what_is_not_listed(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    _add(
        db,
        "ap@acme.test",
        "Portal.PasswordResetRequested",
        email="secret-ish@x.test",
        note="hidden",
    )
    text = client.get("/portal/activity").get_data(as_text=True)
    assert "Password reset requested" in text
    assert "secret-ish@x.test" not in text and "hidden-note-value" not in text


@pytest.mark.parametrize("signed_in", ["admin@globex.test"], indirect=True)
def test_globex_sees_only_its_own_events(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    _add(db, "admin@acme.test", "Portal.PaymentSubmitted", reference="ACME-ONLY-1")
    _add(
        db,
        "admin@globex.test",
        "Portal.PaymentSubmitted",
        company_of="admin@globex.test",
        reference="GLOBEX-ONLY-1",
    )
    text = client.get("/portal/activity").get_data(as_text=True)
    assert "GLOBEX-ONLY-1" in text
    assert "ACME-ONLY-1" not in text and "acme.test" not in text
    exported = client.get("/portal/activity.csv").get_data(as_text=True)
    assert "GLOBEX-ONLY-1" in exported and "ACME-ONLY-1" not in exported
    users = text.split('id="user"', 1)[1].split("</select>", 1)[0]
    assert "admin@globex.test" in users and "acme.test" not in users


def test_filters_by_user_kind_and_dates(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    now = app.extensions["portal.clock"].now()
    _add(
        db,
        "ap@acme.test",
        "Portal.PaymentSubmitted",
        reference="PAY-AP",
        at=now - timedelta(days=40),
    )
    _add(db, "admin@acme.test", "Portal.PaymentSubmitted", reference="PAY-ADMIN")
    _add(db, "ap@acme.test", "Portal.StatementRequested", format="pdf")
    ap = user_by_email(db, "ap@acme.test").public_id

    text = client.get(f"/portal/activity?user={ap}").get_data(as_text=True)
    assert "PAY-AP" in text and "PAY-ADMIN" not in text and "Statement requested" in text
    text = client.get("/portal/activity?kind=payments").get_data(as_text=True)
    assert "PAY-AP" in text and "PAY-ADMIN" in text and "Statement requested" not in text
    assert "Signed in" not in text
    since = (now - timedelta(days=10)).date().isoformat()
    text = client.get(f"/portal/activity?kind=payments&from={since}").get_data(as_text=True)
    assert "PAY-ADMIN" in text and "PAY-AP" not in text
    until = (now - timedelta(days=30)).date().isoformat()
    text = client.get(f"/portal/activity?to={until}").get_data(as_text=True)
    assert "PAY-AP" in text and "PAY-ADMIN" not in text
    assert '<option value="payments" selected>' in client.get(
        "/portal/activity?kind=payments"
    ).get_data(as_text=True)


def test_a_bad_date_is_refused_with_the_rest_applied(client: FlaskClient, signed_in: Auth) -> None:
    response = client.get("/portal/activity?from=2026-02-30&kind=security")
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert 'id="from-error">Enter a date like 2026-12-31.</p>' in text
    assert '<option value="security" selected>' in text
    assert "Signed in" in text  # the kind still applies
    csv_refused = client.get("/portal/activity.csv?to=nonsense")
    assert csv_refused.status_code == 400 and "text/html" in csv_refused.content_type


def test_htmx_gets_the_results_with_count_and_export_out_of_band(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    _add(db, "ap@acme.test", "Portal.PaymentSubmitted", reference="PAY-HX")
    _add(db, "ap@acme.test", "Portal.ProfileUpdated", changed_fields=["name"])
    ap = user_by_email(db, "ap@acme.test").public_id
    response = client.get(f"/portal/activity?kind=payments&user={ap}", headers=HTMX)
    fragment = response.get_data(as_text=True)
    assert "<html" not in fragment and '<form class="filters' not in fragment
    assert "PAY-HX" in fragment
    assert '<span data-hx-swap-oob="innerHTML:#result-count">1 event</span>' in fragment
    assert re.search(
        rf'<a id="activity-csv" [^>]*href="/portal/activity.csv\?user={ap}&amp;kind=payments"[^>]*'
        r'data-hx-swap-oob="true"',
        fragment,
    )
    full = client.get("/portal/activity?kind=payments").get_data(as_text=True)
    assert full.lstrip().lower().startswith("<!doctype html>")
    form = full.split('<form class="filters card"', 1)[1].split(">", 1)[0]
    assert 'method="get"' in form and 'data-hx-get="/portal/activity"' in form
    assert ">Apply filters</button>" in full  # without JavaScript: one submit


def test_pages_of_25_at_a_constant_number_of_queries(
    client: FlaskClient, signed_in: Auth, db: Session, count_queries: QueryCounter
) -> None:
    def queries(path: str) -> int:
        before = count_queries.count
        assert client.get(path).status_code == 200
        return count_queries.count - before

    ap = user_by_email(db, "ap@acme.test")
    named = {"invoice_ids": ["inv_gone"], "target_user": ap.public_id}
    for n in range(2):
        _add(db, "ap@acme.test", "Portal.PaymentSubmitted", reference=f"REF-{n:03d}", **named)
    few = queries(f"/portal/activity?kind=payments&user={ap.public_id}")
    for n in range(2, 40):
        _add(db, "ap@acme.test", "Portal.PaymentSubmitted", reference=f"REF-{n:03d}", **named)
    many = queries(f"/portal/activity?kind=payments&user={ap.public_id}")
    assert many == few, count_queries.statements[-many:]
    first = client.get(f"/portal/activity?kind=payments&user={ap.public_id}").get_data(as_text=True)
    assert len(_rows(first)) == 25
    assert "40 events, page 1 of 2" in first
    assert "REF-039" in first and "REF-014" not in first
    second = client.get(f"/portal/activity?kind=payments&user={ap.public_id}&page=2").get_data(
        as_text=True
    )
    assert len(_rows(second)) == 15 and "REF-014" in second and "REF-000" in second


@pytest.mark.parametrize("page", [str(10**30), "4001", "-5", "x"])
def test_a_page_number_out_of_reach_is_capped_not_a_500(
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
    page: str,
) -> None:
    from portal.services import activity

    # A count that stops short (as past 1,000 events): the page asked for is not bounded by it.
    monkeypatch.setattr(activity, "count_bound", lambda _page, _size: 2)
    for n in range(4):
        _add(db, "ap@acme.test", "Portal.PaymentSubmitted", reference=f"FAR-{n}")
    response = client.get(f"/portal/activity?kind=payments&page={page}")
    assert response.status_code == 200
    assert len(_rows(response.get_data(as_text=True))) <= 25


def test_csv_is_streamed_with_bom_filters_and_neutralised_text(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    _add(db, "ap@acme.test", "Portal.PaymentSubmitted", reference='=HYPERLINK("http://x")')
    _add(db, "ap@acme.test", "Portal.StatementRequested", format="csv")
    ap = user_by_email(db, "ap@acme.test").public_id
    response = client.get(f"/portal/activity.csv?kind=payments&user={ap}")
    assert response.status_code == 200 and response.is_streamed
    assert response.headers["Content-Disposition"].startswith('attachment; filename="activity-')
    body = response.get_data()
    assert body.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == ["When", "Who", "What", "Details", "IP address", "Device"]
    assert len(rows) == 2  # the statement is not a payment
    when, who, what, details, ip, device = rows[1]
    assert who == "ap@acme.test" and what == "Payment submitted"
    assert details == 'Reference: =HYPERLINK("http://x")'  # not at the start: never evaluated
    assert ip == "203.0.113.7" and device == "Chrome / Windows"
    assert datetime.fromisoformat(when.replace(" ", "T")).tzinfo is not None


def test_csv_reads_each_chunk_in_a_transaction_closed_before_it_is_sent(
    app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from portal.services import activity

    monkeypatch.setattr(activity, "EXPORT_CHUNK", 2)
    for n in range(5):
        _add(db, "ap@acme.test", "Portal.PaymentSubmitted", reference=f"CHUNK-{n}")
    database = app.extensions["portal.db"]
    opened: list[Session] = []
    make = database.sessionmaker

    def spy() -> Session:
        session = make()
        opened.append(session)
        return session

    monkeypatch.setattr(database, "sessionmaker", spy)
    ap = user_by_email(db, "ap@acme.test").public_id
    response = client.get(f"/portal/activity.csv?kind=payments&user={ap}", buffered=False)
    assert response.status_code == 200
    lines: list[str] = []
    for piece in response.response:
        # Whatever has been sent so far was read in transactions that are over by now.
        assert not any(s.in_transaction() for s in opened[-3:]), len(lines)
        lines.append(piece.decode() if isinstance(piece, bytes) else piece)
    response.close()
    assert sum("CHUNK-" in line for line in lines) == 5
    assert len(opened) >= 3  # one session per chunk of 2 (5 rows: 3 chunks)


def test_csv_exports_are_rate_limited(client: FlaskClient, signed_in: Auth) -> None:
    for _n in range(10):
        answer = client.get("/portal/activity.csv")
        assert answer.status_code == 200 and answer.get_data().startswith("\ufeff".encode())
    refused = client.get("/portal/activity.csv")
    assert refused.status_code == 429
    assert "Too many attempts" in refused.get_data(as_text=True)
    assert client.get("/portal/activity").status_code == 200  # the page itself is not limited


def test_csv_neutralises_a_cell_that_starts_a_formula(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    _add(db, "ap@acme.test", "Portal.Custom=1", agent="")
    rows = list(
        csv.reader(io.StringIO(client.get("/portal/activity.csv").get_data().decode("utf-8-sig")))
    )
    assert any(row[2] == "Portal.Custom=1" for row in rows)
    _add(db, None, "=cmd|' /C calc'!A0", agent="")
    rows = list(
        csv.reader(io.StringIO(client.get("/portal/activity.csv").get_data().decode("utf-8-sig")))
    )
    assert any(row[2] == "'=cmd|' /C calc'!A0" for row in rows)


def test_times_show_in_the_viewers_zone(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    at = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)
    _add(db, "ap@acme.test", "Portal.PaymentSubmitted", reference="PAY-TZ", at=at)
    admin = user_by_email(db, "admin@acme.test")
    with tenancy.system(db):
        db.merge(admin).timezone = "Europe/Berlin"
        db.commit()
    text = readable(client.get("/portal/activity?kind=payments").get_data(as_text=True))
    row = next(r for r in _rows(text) if "PAY-TZ" in r)
    assert "6/2/26" in row and "1:30" in row  # 01:30 on 2 June in Berlin
    early = client.get("/portal/activity?kind=payments&from=2026-06-02&to=2026-06-02")
    assert "PAY-TZ" in early.get_data(as_text=True)  # the day is Berlin's
