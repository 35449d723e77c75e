"""Property-based: any input on any route, signed in or not, answers below 500, and a 4xx
changes no data.

Every route in `app.url_map` is a case (a new route without a row in ROUTES fails, it is never
skipped). Each example sends arbitrary text (unicode, control characters, NUL, very long),
numbers of every shape, dates far and invalid, and real ids, to every query parameter and form
field the route reads, plus keys nobody expects; with a valid CSRF token (so the form logic
runs), without one, or with a wrong one. While the app handles the request, every read of a
query parameter or form field by the portal's code is recorded: reading a name the table does
not list fails the test, so the table cannot fall behind the routes.

Each example runs inside a savepoint that is rolled back afterwards, with the actor's cookie
put back, so examples are independent; the tables' digest taken once before the examples must
still hold after every 4xx.

The values, and the settings (deterministic in CI, longer with PORTAL_FUZZ_EXAMPLES), are in
fuzz_helpers.py.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import ImmutableMultiDict, MultiDict

from portal import clock, create_app, tenancy
from portal.extensions import limiter
from portal.gateways.sandbox import SIGNATURE_HEADER, sign, signing_secret
from portal.models import (
    BillingAccount,
    Dispute,
    Document,
    Invoice,
    Notification,
    NotificationChannel,
    NotificationTopic,
    Payment,
    PaymentGroup,
    PaymentMethod,
    PortalUser,
    SecurityAlert,
    Statement,
    StatementState,
    UserSession,
)
from portal.services import (
    autopay,
    credentials,
    downloads,
    notifications,
    security_alerts,
    seed,
    users,
)
from portal.services.crypto import Keyring
from portal.services.downloads import FileKind
from portal.services.invoices import PAYABLE
from tests.conftest import TEST_SECRET, Auth, csrf_token, totp_code, transactional, user_by_email
from tests.web.fuzz_helpers import ANY, DATES, FUZZ, JSON, NEXT, NUMBERS, TEXT, digest

# the routes --------------------------------------------------------------------------------

ADMIN, AP, ANONYMOUS, PENDING, ENROLLING = "admin", "ap", "anonymous", "pending", "enrolling"
SIGNED_IN = (ADMIN, AP)


@dataclass(frozen=True)
class Route:
    """What one endpoint reads: query parameters, form fields (name -> kind of value), names
    read by pattern, path parameters (name -> kind), and who to send it as."""

    query: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)
    patterns: dict[str, str] = field(default_factory=dict)  # regex -> kind
    path: dict[str, str] = field(default_factory=dict)
    actors: tuple[str, ...] = SIGNED_IN
    multi: frozenset[str] = frozenset()  # names that take several values
    iterates_form: bool = False  # reads every form field (then filters by name itself)
    webhook: str | None = None  # raw body + signature, no form

    def reads(self, name: str) -> bool:
        return (
            name in self.query
            or name in self.form
            or name in ALWAYS_READ
            or any(re.fullmatch(p, name) for p in self.patterns)
        )


# Read by every form (Flask-WTF's CSRF field), whatever the route.
ALWAYS_READ = frozenset({"csrf_token"})
HISTORY = {"status": "history_status", "from": "date", "to": "date", "page": "page"}
ACTIVITY = {"user": "text", "kind": "activity_kind", "from": "date", "to": "date", "page": "page"}
PUBLIC = (ANONYMOUS, ADMIN)
SECURITY_FORMS = {
    "pw-csrf_token": "text",
    "pw-current_password": "password",
    "pw-new_password": "password",
    "pw-confirm_password": "password",
    "rc-csrf_token": "text",
    "rc-current_password": "password",
}
TOKEN_FORM = {
    "tk-csrf_token": "text",
    "tk-name": "text",
    "tk-scope": "token_scope",
    "tk-expires_in": "token_days",
}
# The profile page renders both of its forms whichever was posted.
PROFILE_FORMS = {
    "p-csrf_token": "text",
    "p-name": "text",
    "p-phone": "phone",
    "p-job_title": "text",
    "p-locale": "language",
    "p-timezone": "time_zone",
    "p-number_locale": "number_locale",
    "em-csrf_token": "text",
    "em-new_email": "email",
    "em-current_password": "password",
}

PREFERENCES = {
    "remind_days": "remind_days",
    **{f"{c.value}-{t.value}": "checkbox" for t in NotificationTopic for c in NotificationChannel},
}

ROUTES: dict[str, Route] = {
    "static": Route(path={"filename": "static_file"}, actors=PUBLIC),
    "auth.login": Route(
        query={"next": "next"},
        form={"email": "email", "password": "password", "next": "next"},
        actors=PUBLIC,
    ),
    "auth.mfa": Route(form={"code": "code"}, actors=(PENDING, ADMIN)),
    "auth.mfa_setup": Route(form={"code": "code"}, actors=(ENROLLING, ADMIN)),
    "auth.forgot_password": Route(form={"email": "email"}, actors=PUBLIC),
    "auth.reset_password": Route(
        path={"token": "reset_token"},
        form={"new_password": "password", "confirm_password": "password"},
        actors=PUBLIC,
    ),
    "auth.extend_session": Route(form={"next": "next"}),
    "auth.logout": Route(actors=(ADMIN, AP, ANONYMOUS)),
    "dashboard.root": Route(actors=PUBLIC),
    "dashboard.index": Route(),
    "health.healthz": Route(actors=PUBLIC),
    "health.readyz": Route(actors=PUBLIC),
    "health.metrics": Route(actors=PUBLIC),
    "disputes.new": Route(
        path={"public_id": "disputable_invoice"},
        form={"reason": "dispute_reason", "amount": "amount", "message": "text"},
    ),
    "disputes.show": Route(
        path={"public_id": "dispute"}, form={"message": "text", "attachments": "text"}
    ),
    "disputes.withdraw": Route(path={"public_id": "dispute"}),
    "invoices.index": Route(
        query={
            "status": "invoice_status",
            "q": "text",
            "from": "date",
            "to": "date",
            "sort": "sort",
            "page": "page",
        }
    ),
    "invoices.download": Route(query={"invoice": "invoice"}, multi=frozenset({"invoice"})),
    "documents.index": Route(
        query={
            "type": "document_type",
            "q": "text",
            "from": "date",
            "to": "date",
            "account": "account",
            "page": "page",
        }
    ),
    "downloads.fetch": Route(path={"token": "download_token"}),
    "statements.index": Route(query={"watch": "statement"}, multi=frozenset({"watch"})),
    "statements.create": Route(
        form={
            "start_date": "date",
            "end_date": "date",
            "accounts": "account",
            "format": "statement_format",
        },
        multi=frozenset({"accounts"}),
    ),
    "statements.retry": Route(path={"public_id": "statement"}),
    "invoices.show": Route(path={"public_id": "invoice"}),
    "invoices.pdf": Route(path={"public_id": "invoice"}),
    "language.change": Route(form={"language": "language", "next": "next"}, actors=PUBLIC),
    "security.show": Route(),
    # Each refusal shows the page again with both forms, each filled from the POST.
    "security.change_password": Route(form=SECURITY_FORMS),
    "security.recovery_codes": Route(form=SECURITY_FORMS),
    "security.end": Route(path={"public_id": "user_session"}),
    "security.end_others": Route(),
    # The API tokens section: its answer is the page (or the section), which builds the page's
    # other forms from what was posted too.
    "security.create_token": Route(form={**SECURITY_FORMS, **TOKEN_FORM}),
    "security.revoke_token": Route(form=SECURITY_FORMS, path={"public_id": "api_token"}),
    # The API's account endpoints take JSON (fuzzed in tests/api/test_account.py and by
    # Schemathesis): a form gets 415 (or 401/403 before that), the session reads. SpecTree
    # reads a posted form whole before the view refuses it.
    **{
        f"api_portal.{name}": Route(actors=PUBLIC)
        for name in ("login", "profile_show", "notifications_show")
    },
    **{
        f"api_portal.{name}": Route(actors=PUBLIC, iterates_form=True)
        for name in ("profile_update", "notifications_update")
    },
    "payments.new": Route(
        query={"invoice": "payable_invoice", "method": "method", "balance": "balance_currency"},
        form={"scheduled_for": "date"},  # the form's template asks (empty on a GET)
        multi=frozenset({"invoice"}),
    ),
    "payments.create": Route(
        form={
            "idempotency_key": "idempotency_key",
            "invoice": "payable_invoice",
            "action": "payment_action",
            "total": "amount",
            "method": "method",
            "scheduled_for": "date",
        },
        patterns={r"amount-.*": "amount"},
        multi=frozenset({"invoice"}),
    ),
    "payments.show": Route(path={"public_id": "payment"}, query={"fragment": "fragment"}),
    "payments.cancel": Route(path={"public_id": "payment"}, form={"back": "back"}),
    "payments.returned": Route(path={"public_id": "payment"}),
    "payments.receipt_pdf": Route(path={"public_id": "payment"}),
    "payments.group": Route(path={"public_id": "payment_group"}, query={"fragment": "fragment"}),
    "payments.history": Route(query=HISTORY),
    "payments.history_csv": Route(query=HISTORY),
    "payment_methods.index": Route(),
    "payment_methods.new": Route(form={"kind": "method_kind", "next": "next"}),
    "payment_methods.added": Route(query={"next": "next", "session_id": "setup"}),
    "payment_methods.remove": Route(path={"public_id": "method"}),
    "payment_methods.make_default": Route(path={"public_id": "method"}),
    "payment_methods.update": Route(path={"public_id": "method"}, form={"next": "next"}),
    "payment_methods.updated": Route(
        path={"public_id": "method"}, query={"next": "next", "session_id": "setup"}
    ),
    "users.index": Route(),
    "users.invite": Route(
        form={"email": "email", "role": "role", "accounts": "account"},
        multi=frozenset({"accounts"}),
    ),
    "users.show": Route(path={"public_id": "portal_user"}),
    "users.change_access": Route(
        path={"public_id": "portal_user"},
        form={"role": "role", "accounts": "account"},
        multi=frozenset({"accounts"}),
    ),
    "users.resend": Route(path={"public_id": "portal_user"}),
    "users.confirm": Route(path={"public_id": "portal_user", "action": "user_action"}),
    "users.act": Route(path={"public_id": "portal_user", "action": "user_action"}),
    "invitations.accept": Route(
        path={"token": "invitation_token"},
        form={"name": "text", "new_password": "password", "confirm_password": "password"},
        actors=PUBLIC,
    ),
    # This app's gateway is the sandbox: Stripe's webhook is not served (404); its parsing is
    # fuzzed by test_the_stripe_webhook_takes_any_body on an app configured for Stripe.
    "webhooks.stripe": Route(actors=(ANONYMOUS,), webhook="stripe"),
    "webhooks.sandbox": Route(actors=(ANONYMOUS,), webhook="sandbox"),
    "sandbox.setup": Route(
        path={"setup_id": "setup"},
        form={
            "number": "card_number",
            "expiry": "expiry",
            "cvc": "cvc",
            "name": "text",
            "holder": "text",
            "routing": "bank",
            "account": "bank",
        },
        iterates_form=True,  # echoes back name, expiry and holder only
        actors=PUBLIC,
    ),
    "profile.show": Route(),
    "profile.update": Route(form=PROFILE_FORMS),
    "profile.request_email_change": Route(form=PROFILE_FORMS),
    "profile.confirm_email": Route(path={"token": "text"}),
    "activity.index": Route(query=ACTIVITY),
    "activity.export": Route(query=ACTIVITY),
    "notifications.show": Route(form=PREFERENCES),
    "notifications.inbox": Route(query={"page": "page"}),
    "notifications.mark_read": Route(path={"public_id": "notification"}, form={"page": "page"}),
    "notifications.mark_all_read": Route(form={"page": "page"}),
    # No sign-in, and no CSRF token either (RFC 8058 one-click): the signed link decides.
    "notifications.unsubscribe": Route(path={"token": "unsubscribe_token"}, actors=PUBLIC),
    "autopay.index": Route(),
    "autopay.save": Route(
        path={"account_id": "account"},
        form={
            "method": "method",
            "timing": "autopay_timing",
            "days": "autopay_days",
            "notice": "autopay_notice",
        },
    ),
    "autopay.turn_off": Route(path={"account_id": "account"}),
    "autopay.skip_invoice": Route(path={"invoice_id": "invoice"}),
    "autopay.skip_link": Route(path={"token": "autopay_skip_token"}, actors=PUBLIC),
    "security_alerts.not_me": Route(path={"token": "not_me_token"}, actors=PUBLIC),
    # The receivables system's upserts take JSON and an operator key: neither a session nor a
    # form reaches them (401); their bodies are fuzzed in tests/api/test_ar_upserts.py.
    **{
        f"api_ar.upsert_{kind}": Route(actors=PUBLIC)
        for kind in ("companies", "billing_accounts", "users", "invoices", "credit_notes")
    },
    # The JSON API: its bodies are JSON (fuzzed by tests/api); here any query and form
    # (SpecTree looks at every form field of a route that takes a body).
    "api_docs.openapi": Route(actors=PUBLIC),
    "api_docs.docs": Route(actors=PUBLIC),
    "api_portal.dashboard": Route(actors=(ADMIN, AP, ANONYMOUS)),
    "api_portal.pay": Route(iterates_form=True, actors=(ADMIN, AP, ANONYMOUS)),
    "api_portal.balance": Route(
        path={"currency": "balance_currency"}, actors=(ADMIN, AP, ANONYMOUS)
    ),
    "api_portal.payment_status": Route(
        path={"public_id": "payment"}, actors=(ADMIN, AP, ANONYMOUS)
    ),
    "api_portal.request_statement": Route(iterates_form=True, actors=(ADMIN, AP, ANONYMOUS)),
    "api_portal.statements": Route(
        query={"limit": "page", "after": "text"}, actors=(ADMIN, AP, ANONYMOUS)
    ),
    "api_portal.statement": Route(path={"public_id": "statement"}, actors=(ADMIN, AP, ANONYMOUS)),
    "api_portal.list_invoices": Route(
        query={
            "status": "text",
            "q": "text",
            "from": "date",
            "to": "date",
            "sort": "text",
            "account": "text",
            "limit": "page",
            "after": "text",
        },
        actors=(ADMIN, AP, ANONYMOUS),
    ),
    "api_portal.show_invoice": Route(path={"public_id": "invoice"}, actors=(ADMIN, AP, ANONYMOUS)),
    "api_portal.invoice_pdf_file": Route(
        path={"public_id": "invoice"}, actors=(ADMIN, AP, ANONYMOUS)
    ),
    "api_portal.list_documents": Route(
        query={
            "type": "text",
            "q": "text",
            "from": "date",
            "to": "date",
            "account": "text",
            "limit": "page",
            "after": "text",
        },
        actors=(ADMIN, AP, ANONYMOUS),
    ),
    "api_portal.payment_history_list": Route(
        query={**HISTORY, "limit": "page", "after": "text"}, actors=(ADMIN, AP, ANONYMOUS)
    ),
    # The receivables system's feed and actions: an operator key only (a session gets 401);
    # their bodies and queries are fuzzed in tests/api/test_ar_events.py and test_ar_actions.py.
    "api_ar.events": Route(query={"after": "text", "limit": "page"}, actors=PUBLIC),
    "api_ar.void_invoice": Route(path={"reference": "text"}, actors=PUBLIC),
    "api_ar.credit_invoice": Route(path={"reference": "text"}, actors=PUBLIC),
    "api_ar.answer_dispute": Route(path={"public_id": "text"}, actors=PUBLIC),
}

# 4xx answers that change data by design: a failed sign-in counts toward the lockout and is
# audited (the failure must stick, or guessing would be free).
CHANGES_ON_4XX = {
    ("auth.login", 401): {"login_throttles", "audit_events"},
    ("auth.mfa", 401): {"login_throttles", "audit_events"},
}


def _url_map_cases() -> list[tuple[str, str, str]]:
    """(endpoint, method, actor) for every rule of a freshly created app: the routes as built."""
    app = create_app({"env": "testing", "secret_key": TEST_SECRET, "database_url": "sqlite://"})
    cases = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            route = ROUTES.get(rule.endpoint)
            for actor in route.actors if route else ("(no row in ROUTES)",):
                cases.append((f"{method} {rule.rule}", rule.endpoint, actor))
    app.extensions["portal.db"].engine.dispose()
    return cases


CASES = _url_map_cases()


def test_every_route_has_a_row_and_every_row_a_route(app: Flask) -> None:
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - ROUTES.keys() == set(), "add these routes to ROUTES"
    assert ROUTES.keys() - endpoints == set(), "these rows name no route any more"
    built = {(f"{m} {r.rule}", r.endpoint) for r in app.url_map.iter_rules() for m in r.methods}
    assert {(path, endpoint) for path, endpoint, _ in CASES} <= built
    for rule in app.url_map.iter_rules():
        assert set(rule.arguments) == set(ROUTES[rule.endpoint].path), rule.rule


# recording what the portal reads -----------------------------------------------------------


class _Reads:
    names: set[str] = set()
    iterated: bool = False

    @classmethod
    def reset(cls) -> None:
        cls.names = set()
        cls.iterated = False


def _by_portal() -> bool:
    """Is the portal's own code (a route, a form, a template it renders) asking? Flask-WTF's
    CSRF check, which looks at every field named *csrf_token, is not; nor is the NUL guard,
    which looks at every field of a multipart form before any route runs. Reaching the
    dispatch itself (Flask's, and the portal's that runs a read again: portal.web.PortalApp)
    without meeting the portal's code means a library asked (SpecTree, Flask-WTF)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name in {"_refuse_nul", "full_dispatch_request"}:
            return False
        if frame.f_globals.get("__name__", "").startswith("portal."):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class RecordingDict(ImmutableMultiDict[str, str]):
    def _note(self, key: object) -> None:
        if isinstance(key, str) and _by_portal():
            _Reads.names.add(key)

    def _note_all(self) -> None:
        if _by_portal():
            _Reads.iterated = True

    def __getitem__(self, key: str) -> str:
        self._note(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None, type: Any = None) -> Any:
        self._note(key)
        return super().get(key, default, type)

    def getlist(self, key: str, type: Any = None) -> Any:
        self._note(key)
        return super().getlist(key, type)

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self._note_all()
        return super().__iter__()

    def items(self, multi: bool = False) -> Any:
        self._note_all()
        return super().items(multi)

    def lists(self) -> Any:
        self._note_all()
        return super().lists()

    def values(self) -> Any:
        self._note_all()
        return super().values()

    def to_dict(self, flat: bool = True) -> Any:
        self._note_all()
        return super().to_dict(flat)


class RecordingRequest(Flask.request_class):  # type: ignore[name-defined,misc]
    parameter_storage_class = RecordingDict


# the data every example can point at -------------------------------------------------------


@dataclass
class Known:
    invoices: list[str]
    payable: list[str]
    disputable: list[str]
    payments: list[str]
    groups: list[str]
    methods: list[str]
    sessions: list[str]
    setups: list[str]
    references: list[str]
    reset_tokens: list[str]
    emails: list[str]
    accounts: list[str]
    download_tokens: list[str]
    statements: list[str]
    portal_users: list[str] = field(default_factory=list)
    invitation_tokens: list[str] = field(default_factory=list)
    disputes: list[str] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    unsubscribe_tokens: list[str] = field(default_factory=list)
    skip_tokens: list[str] = field(default_factory=list)
    not_me_tokens: list[str] = field(default_factory=list)


def _known(app: Flask, db: Session, admin: FlaskClient) -> Known:
    setups: list[str] = []
    token = csrf_token(admin, "/portal/payment-methods")
    for kind in ("card", "bank_account"):  # the sandbox's hosted page needs a setup to show
        started = admin.post(
            "/portal/payment-methods/new", data={"csrf_token": token, "kind": kind}
        )
        assert started.status_code == 303, started.get_data(as_text=True)
        setups.append(started.headers["Location"].rsplit("/", 1)[1])
    today = app.extensions["portal.clock"].today()
    accounts = re.findall(
        r'name="accounts" type="checkbox" value="([^"]+)"', admin.get("/portal/statements").text
    )
    for fmt in ("csv", "pdf"):  # one to be generated, one failed (Retry answers for it)
        asked = admin.post(
            "/portal/statements",
            data={
                "csrf_token": csrf_token(admin, "/portal/statements"),
                "start_date": (today - timedelta(days=60)).isoformat(),
                "end_date": today.isoformat(),
                "accounts": accounts,
                "format": fmt,
            },
        )
        assert asked.status_code == 303, asked.get_data(as_text=True)
    invited = admin.post(
        "/portal/users",
        data={
            "csrf_token": csrf_token(admin, "/portal/users"),
            "email": "invited@acme.test",
            "role": "customer",
            "accounts": accounts[:1],
        },
    )
    assert invited.status_code == 303, invited.get_data(as_text=True)
    app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now())
    now = app.extensions["portal.clock"].now()
    with tenancy.system(db):
        asked_for = db.scalars(select(Statement).order_by(Statement.id)).all()
        asked_for[-1].state = StatementState.FAILED
    db.commit()
    with tenancy.system(db):
        invoices = db.scalars(select(Invoice).order_by(Invoice.id)).all()
        known = Known(
            invoices=[i.public_id for i in invoices],
            payable=[i.public_id for i in invoices if i.status in PAYABLE and i.balance_due > 0],
            disputable=[i.public_id for i in invoices if i.balance_due > 0],
            payments=list(db.scalars(select(Payment.public_id).order_by(Payment.id))),
            groups=list(db.scalars(select(PaymentGroup.public_id).order_by(PaymentGroup.id))),
            methods=list(db.scalars(select(PaymentMethod.public_id).order_by(PaymentMethod.id))),
            sessions=list(db.scalars(select(UserSession.public_id).order_by(UserSession.id))),
            setups=setups,
            references=[
                r for r in db.scalars(select(Payment.gateway_reference).order_by(Payment.id)) if r
            ],
            reset_tokens=[
                credentials.reset_token(
                    user_by_email(db, email), keys=Keyring(TEST_SECRET), now=now
                )
                for email in ("admin@acme.test", "ap@acme.test")
            ],
            emails=["admin@acme.test", "ap@acme.test", "new@acme.test", "admin@globex.test"],
            accounts=list(db.scalars(select(BillingAccount.public_id).order_by(BillingAccount.id))),
            download_tokens=[
                downloads.sign(
                    FileKind.DOCUMENT,
                    document,
                    user_by_email(db, email).public_id,
                    keys=Keyring(TEST_SECRET),
                    now=now,
                )
                for document in db.scalars(select(Document.public_id).order_by(Document.id))
                for email in ("admin@acme.test", "ap@acme.test")
            ]
            + [
                downloads.sign(
                    FileKind.STATEMENT,
                    statement.public_id,
                    user_by_email(db, email).public_id,
                    keys=Keyring(TEST_SECRET),
                    now=now,
                )
                for statement in asked_for
                for email in ("admin@acme.test", "ap@acme.test")
            ],
            statements=[statement.public_id for statement in asked_for],
            portal_users=list(db.scalars(select(PortalUser.public_id).order_by(PortalUser.id))),
            invitation_tokens=[
                users.invitation_token(user_by_email(db, email), keys=Keyring(TEST_SECRET), now=now)
                for email in ("invited@acme.test", "new@acme.test")
            ],
            disputes=list(db.scalars(select(Dispute.public_id).order_by(Dispute.id))),
            notifications=list(
                db.scalars(select(Notification.public_id).order_by(Notification.id))
            ),
            unsubscribe_tokens=[
                notifications.unsubscribe_token(
                    user_by_email(db, email), topic, keys=Keyring(TEST_SECRET), now=now
                )
                for email in ("admin@acme.test", "ap@acme.test", "admin@globex.test")
                for topic in (NotificationTopic.PAYMENT_DUE, NotificationTopic.DISPUTE_UPDATED)
            ],
            skip_tokens=[
                autopay.skip_token(
                    invoice, today + timedelta(days=3), keys=Keyring(TEST_SECRET), now=now
                )
                for invoice in invoices[:4]
            ],
            # well signed, for an alert that was never stored: the route's every check but the last
            not_me_tokens=[
                security_alerts.not_me_token(
                    user_by_email(db, "ap@acme.test"),
                    SecurityAlert(kind="new_sign_in", key="k"),
                    keys=Keyring(TEST_SECRET),
                    now=now,
                )
            ],
        )
    db.rollback()
    return known


def _kinds(known: Known, app: Flask) -> dict[str, st.SearchStrategy[str]]:
    """Values that mean something to the route, so the examples reach past the first check."""
    today = clock.today()
    return {
        "text": TEXT,
        "amount": NUMBERS,
        "date": st.one_of(
            DATES, st.integers(-2, 400).map(lambda d: (today + timedelta(days=d)).isoformat())
        ),
        "page": st.one_of(st.integers(-5, 5).map(str), NUMBERS),
        "invoice": st.sampled_from(known.invoices),
        "payable_invoice": st.sampled_from(known.payable),
        "balance_currency": st.one_of(st.sampled_from(["USD", "EUR", "usd"]), TEXT),
        "disputable_invoice": st.sampled_from(known.disputable),
        "dispute": st.one_of(st.sampled_from(known.disputes), TEXT),
        "payment": st.sampled_from(known.payments),
        # The demo has no group: a group's id shape, and text, reach its 404.
        "payment_group": st.one_of(st.sampled_from([*known.groups, "pgr_AAAAAAAAAAAAAAAA"]), TEXT),
        "method": st.sampled_from(known.methods),
        "user_session": st.sampled_from(known.sessions),
        # The demo has no API token: a token's id shape, and text, reach the 404.
        "api_token": st.one_of(st.just("tok_AAAAAAAAAAAAAAAA"), TEXT),
        "token_scope": st.one_of(st.sampled_from(["read", "read+pay"]), TEXT),
        "token_days": st.one_of(st.sampled_from(["30", "90", "365"]), TEXT),
        "setup": st.sampled_from(known.setups),
        "reset_token": st.sampled_from(known.reset_tokens),
        "email": st.sampled_from(known.emails),
        "password": st.sampled_from([seed.DEMO_PASSWORD, "correct horse battery staple 42"]),
        "code": st.builds(lambda: totp_code(app)),
        "idempotency_key": st.from_regex(r"\A[A-Za-z0-9_-]{32}\Z"),
        "next": st.sampled_from(NEXT),
        "fragment": st.just("status"),
        "back": st.one_of(st.just("group"), TEXT),
        "history_status": st.sampled_from(["scheduled", "processing", "succeeded", "failed"]),
        "invoice_status": st.sampled_from(["all", "open", "overdue", "paid", "disputed"]),
        "document_type": st.sampled_from(["all", "contract", "credit_note", "tax_form"]),
        "account": st.sampled_from(known.accounts),
        "download_token": st.sampled_from(known.download_tokens),
        "statement": st.one_of(st.sampled_from(known.statements), TEXT),
        "statement_format": st.sampled_from(["pdf", "xlsx", "csv"]),
        "portal_user": st.one_of(st.sampled_from(known.portal_users), TEXT),
        "user_action": st.one_of(
            st.sampled_from(["deactivate", "reactivate", "reset-mfa", "end-sessions"]), TEXT
        ),
        "role": st.sampled_from(["customer", "customer.admin"]),
        "invitation_token": st.one_of(st.sampled_from(known.invitation_tokens), TEXT),
        "sort": st.sampled_from(["date", "-date", "due", "-amount", "number", "-status"]),
        "dispute_reason": st.sampled_from(["incorrect_amount", "quality", "other"]),
        "payment_action": st.sampled_from(["review", "confirm", "edit", "allocate"]),
        "method_kind": st.sampled_from(["card", "bank_account"]),
        "language": st.sampled_from(["en", "es", "de", "ar"]),
        "static_file": st.sampled_from(["css/portal.css", "js/portal.js", "favicon.svg"]),
        "card_number": st.sampled_from(["4242 4242 4242 4242", "4000000000000002"]),
        "expiry": st.sampled_from(["12/34", "1/30", "13/30", "00/00", "12/2034"]),
        "cvc": st.sampled_from(["123", "1234", "12"]),
        "bank": st.sampled_from(["110000000", "000123456789"]),
        "phone": st.sampled_from(["+1 415 555 0132", "(415) 555-0132", "+49 30 901820", "12"]),
        "time_zone": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Mars/Base"]),
        "number_locale": st.sampled_from(["", "de_DE", "ar", "xx_YY"]),
        "activity_kind": st.sampled_from(["", "security", "payments", "people", "nope"]),
        "checkbox": st.sampled_from(["y", "on", "", "false"]),
        "remind_days": st.sampled_from(["1", "3", "7", "14", "5", "0", "-1"]),
        "notification": st.one_of(st.sampled_from(known.notifications), TEXT),
        "unsubscribe_token": st.one_of(st.sampled_from(known.unsubscribe_tokens), TEXT),
        "autopay_timing": st.sampled_from(["due_date", "after_issue", "weekly"]),
        "autopay_days": st.sampled_from(["0", "14", "90", "91", "-1", "1.5"]),
        "autopay_notice": st.sampled_from(["0", "3", "14", "5", ""]),
        "autopay_skip_token": st.one_of(st.sampled_from(known.skip_tokens), TEXT),
        "not_me_token": st.one_of(st.sampled_from(known.not_me_tokens), TEXT),
    }


def _value(kinds: dict[str, st.SearchStrategy[str]], kind: str) -> st.SearchStrategy[str]:
    """Mostly a value of the field's kind, else anything at all."""
    key = f"any {kind}"
    if key not in kinds:
        kinds[key] = st.one_of(kinds[kind], kinds[kind], ANY)
    return kinds[key]


@dataclass
class Example:
    path: str
    query: list[tuple[str, str]]
    form: MultiDict[str, str]
    headers: dict[str, str]
    body: bytes | None = None
    signature: str = "none"  # for webhooks: none, garbage, signed
    multipart: bool = False  # a form sent as multipart/form-data instead of url-encoded


def _fields(
    draw: Callable[..., Any],
    kinds: dict[str, st.SearchStrategy[str]],
    names: dict[str, str],
    multi: frozenset[str],
) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name, kind in names.items():
        if name in multi:
            count = draw(st.sampled_from([0, 1, 1, 2, 3, 51]))
            pairs += [(name, draw(_value(kinds, kind))) for _ in range(count)]
        elif draw(st.integers(0, 5)):  # usually present
            pairs.append((name, draw(_value(kinds, kind))))
    extra = draw(st.lists(st.tuples(TEXT, ANY), max_size=2))  # keys nobody expects
    return pairs + extra


def _webhook_body(draw: Callable[..., Any], known: Known) -> bytes:
    reference = st.one_of(st.sampled_from(known.references or ["ch_none"]), TEXT)
    event = st.fixed_dictionaries(
        {
            "id": st.one_of(TEXT, JSON),
            "type": st.one_of(st.sampled_from(["charge.succeeded", "charge.failed"]), TEXT),
            "data": st.one_of(
                JSON,
                st.fixed_dictionaries(
                    {
                        "reference": st.one_of(reference, JSON),
                        "status": st.one_of(
                            st.sampled_from(["succeeded", "failed", "processing"]), JSON
                        ),
                        "failure_code": st.one_of(st.none(), TEXT, JSON),
                    }
                ),
            ),
        }
    )
    return bytes(
        draw(
            st.one_of(
                st.binary(max_size=300),
                JSON.map(lambda v: json.dumps(v).encode()),
                event.map(lambda v: json.dumps(v).encode()),
            )
        )
    )


@st.composite
def examples(
    draw: Callable[..., Any],
    route: Route,
    rule: str,
    kinds: dict[str, st.SearchStrategy[str]],
    known: Known,
    token: str,
) -> Example:
    path = rule
    for name, kind in route.path.items():
        value = draw(_value(kinds, kind))
        converter = re.search(rf"<(?:(\w+):)?{name}>", path)
        assert converter is not None
        safe = "/" if converter.group(1) == "path" else ""
        path = path.replace(converter.group(0), quote(value, safe=safe))
    headers = {}
    if draw(st.booleans()):
        headers["HX-Request"] = "true"
    if draw(st.booleans()):  # the locale decides how amounts and dates are read
        headers["Accept-Language"] = draw(
            st.one_of(
                st.sampled_from(["ar", "de-DE", "es", "xx-YY", "*", "de;q=x", "ar-SA-u-nu-arab"]),
                st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
            )
        )
    if route.webhook:
        body = _webhook_body(draw, known)
        signature = draw(st.sampled_from(["none", "garbage", "signed", "signed"]))
        if signature == "signed":
            stamp = int(time.time())
            headers[SIGNATURE_HEADER] = sign(body, signing_secret(TEST_SECRET), stamp)
        elif signature == "garbage":
            headers[SIGNATURE_HEADER] = draw(
                st.one_of(
                    st.sampled_from(["t=1e400,v1=x", f"t={'9' * 400},v1=x", "t=,v1=", "=,="]),
                    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
                )
            )
        return Example(path, [], MultiDict(), headers, body, signature)
    query = _fields(draw, kinds, route.query, route.multi)
    form = MultiDict(_fields(draw, kinds, route.form, route.multi))
    for name, kind in route.patterns.items():  # e.g. amount-<invoice> for each invoice sent
        prefix = name.split("-")[0] + "-"
        for pid in dict.fromkeys(form.getlist("invoice")):
            if draw(st.integers(0, 3)):
                form.add(prefix + pid, draw(_value(kinds, kind)))
    csrf = draw(st.sampled_from(["valid", "valid", "valid", "missing", "wrong"]))
    if csrf == "valid":
        form.add("csrf_token", token)
    elif csrf == "wrong":
        form.add("csrf_token", draw(TEXT))
    return Example(path, query, form, headers, multipart=draw(st.booleans()))


# actors ------------------------------------------------------------------------------------


class StillClock(clock.Clock):
    """Time stands still for the examples: no session activity to note between requests."""

    def __init__(self, at: datetime) -> None:
        super().__init__()
        self.at = at

    def now(self) -> datetime:
        return self.at


@dataclass(repr=False)
class Actor:
    name: str
    client: FlaskClient
    token: str  # a valid CSRF token for this actor's session
    cookie: str | None  # the session cookie every example starts from


class Stage:
    """One transaction for the whole module (per backend): the actors sign in once, each
    example runs in a savepoint of it and is rolled back."""

    def __init__(
        self, app: Flask, connection: Connection, known: Known, actors: dict[str, Actor]
    ) -> None:
        self.app = app
        self.connection = connection
        self.known = known
        self.actors = actors
        self.kinds = _kinds(known, app)
        self.baseline = digest(connection)

    def __repr__(self) -> str:
        return "<stage>"


def _cookie_name(app: Flask) -> str:
    return str(app.config["SESSION_COOKIE_NAME"])


def _actor(app: Flask, name: str) -> Actor:
    client = app.test_client()
    auth = Auth(app, client)
    if name in SIGNED_IN:
        auth.sign_in("admin@acme.test" if name == ADMIN else "ap@acme.test")
        token = csrf_token(client, "/portal/dashboard")
    elif name == PENDING:  # the password given, the code still to come
        app.extensions["portal.clock"].advance(timedelta(seconds=30))
        assert auth.login().headers["Location"] == "/login/mfa"
        token = csrf_token(client, "/login/mfa")
    elif name == ENROLLING:  # a first sign-in: the enrolment secret is chosen on this page
        assert auth.login("new@acme.test").headers["Location"] == "/mfa/setup"
        token = csrf_token(client, "/mfa/setup")
    else:
        token = csrf_token(client, "/login")
    cookie = client.get_cookie(_cookie_name(app))
    return Actor(name, client, token, cookie.value if cookie else None)


@pytest.fixture(scope="module")
def stage(app: Flask) -> Iterator[Stage]:
    with transactional(app) as connection, pytest.MonkeyPatch.context() as patch:
        actors = {name: _actor(app, name) for name in (ADMIN, AP, ANONYMOUS, PENDING, ENROLLING)}
        db: Session = app.extensions["portal.db"].sessionmaker()
        try:
            known = _known(app, db, actors[ADMIN].client)
        finally:
            db.close()
        app.extensions["portal.clock"] = StillClock(clock.now())
        patch.setattr(app, "request_class", RecordingRequest)
        yield Stage(app, connection, known, actors)


def _send(stage: Stage, actor: Actor, endpoint: str, method: str, example: Example) -> None:
    """One request in a savepoint that is rolled back, from the actor's own cookie."""
    app, client = stage.app, actor.client
    savepoint = stage.connection.begin_nested()
    try:
        if actor.cookie is None:
            client.delete_cookie(_cookie_name(app))
        else:
            client.set_cookie(_cookie_name(app), actor.cookie)
        limiter.reset()
        app.extensions["portal.jobs"].clear()
        _Reads.reset()
        url = example.path + ("?" + urlencode(example.query) if example.query else "")
        if example.body is not None:
            response = client.open(url, method=method, data=example.body, headers=example.headers)
        elif method == "GET":
            response = client.open(url, method=method, headers=example.headers)
        else:
            response = client.open(
                url,
                method=method,
                data=example.form,
                headers=example.headers,
                content_type="multipart/form-data" if example.multipart else None,
            )
        response.get_data()  # a streamed body is read to its end here
        response.close()
        status = response.status_code
        what = f"{method} {url[:300]!r} {dict(example.form)!r:.600} -> {status}"
        assert status < 500, f"{what} (the log above has the traceback)"
        route = ROUTES[endpoint]
        unread = {name for name in _Reads.names if not route.reads(name)}
        assert not unread, f"{endpoint} reads {sorted(unread)!r}: list them in ROUTES"
        everything = f"{endpoint} reads every parameter there is: say so in ROUTES"
        assert route.iterates_form or not _Reads.iterated, everything
        if route.webhook == "sandbox" and example.signature != "signed":
            assert status == 400, what  # garbage is refused as garbage
        if 400 <= status < 500:
            after = digest(stage.connection)
            changed = {t for t in after if after[t] != stage.baseline[t]}
            allowed = CHANGES_ON_4XX.get((endpoint, status), set())
            assert changed <= allowed, f"{what} changed {sorted(changed - allowed)}"
    finally:
        savepoint.rollback()


@pytest.mark.parametrize(
    ("rule", "endpoint", "actor"),
    CASES,
    ids=[f"{endpoint}-{rule.split()[0]}-{actor}" for rule, endpoint, actor in CASES],
)
@FUZZ
@given(data=st.data())
def test_any_input_answers_below_500_and_a_4xx_changes_nothing(
    stage: Stage, rule: str, endpoint: str, actor: str, data: st.DataObject
) -> None:
    assert endpoint in ROUTES, f"{rule} has no row in ROUTES: say what it reads"
    method, path = rule.split(" ", 1)
    sender = stage.actors[actor]
    example = data.draw(examples(ROUTES[endpoint], path, stage.kinds, stage.known, sender.token))
    _send(stage, sender, endpoint, method, example)
