"""Odd input on the forms and filters: a 4xx with the field's own message, never a 500, never a
200 that dies half way, and nothing typed is lost."""

from __future__ import annotations

import html

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import AuditEvent, Dispute, Invoice, Payment
from tests.conftest import COOKIE, Auth, csrf_token
from tests.factories import account_named, make_invoice
from tests.web.payment_helpers import invoice, method, open_form, submit

TOO_LARGE = "Enter an amount up to $999,999,999,999.99."
# What Python's Decimal (and Babel) read as numbers but nobody writes as an amount: infinities,
# not-a-numbers and exponents (the largest of which no BIGINT holds).
NOT_A_NUMBER = ["Infinity", "inf", "-Infinity", "NaN", "sNaN", "1E+999999999", "1e309", "1e26"]
HUGE = ["1" * 27, "123456789012345678901234567.89", "1000000000000"]


def _count(db: Session, model: type[Dispute] | type[Payment]) -> int:
    with tenancy.system(db):
        return db.scalar(select(func.count()).select_from(model)) or 0


def _dispute(client: FlaskClient, inv: Invoice, amount: str) -> tuple[int, str]:
    token = csrf_token(client, f"/portal/invoices/{inv.public_id}/dispute")
    response = client.post(
        f"/portal/invoices/{inv.public_id}/dispute",
        data={"csrf_token": token, "reason": "incorrect_amount", "amount": amount, "message": "x"},
    )
    return response.status_code, response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        *((typed, "Enter an amount, like 125.00.") for typed in NOT_A_NUMBER),
        *((typed, TOO_LARGE) for typed in HUGE),
        ("0", "Enter an amount above zero."),
        ("-0.01", "Enter an amount above zero."),
    ],
)
def test_a_dispute_amount_that_is_no_amount_is_explained(
    client: FlaskClient, signed_in: Auth, db: Session, amount: str, message: str
) -> None:
    inv = invoice(db, "INV-1003")
    before = _count(db, Dispute)
    status, page = _dispute(client, inv, amount)
    assert status == 422, page
    assert html.escape(message) in page
    assert f'value="{html.escape(amount)}"' in page  # what was typed stays in the field
    assert 'aria-invalid="true"' in page
    assert _count(db, Dispute) == before


def test_a_dispute_amount_is_read_like_a_payment_amount(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    """The same parser as the payment form: the locale's separators, the currency's decimals."""
    auth.sign_in("admin@globex.test")  # de-DE: "1.000,25" is one thousand and a quarter
    inv = invoice(db, "RE-2026-002")
    status, page = _dispute(client, inv, "1,005")
    assert status == 422 and "Use at most two decimals." in page and 'value="1,005"' in page
    status, page = _dispute(client, inv, "1.000,25")
    assert status == 302, page
    with tenancy.system(db):
        dispute = db.scalars(select(Dispute).where(Dispute.invoice_id == inv.id)).one()
    assert dispute.amount_disputed == 100_025


@pytest.mark.parametrize("typed", [*NOT_A_NUMBER, *HUGE])
@pytest.mark.parametrize("action", ["review", "confirm"])
def test_a_payment_amount_that_is_no_amount_is_explained(
    client: FlaskClient, signed_in: Auth, db: Session, typed: str, action: str
) -> None:
    inv = invoice(db, "INV-1003")
    before = _count(db, Payment)
    _page, key, token = open_form(client, inv.public_id)
    response = submit(
        client,
        [inv],
        key=key,
        token=token,
        action=action,
        method_id=method(db, "4242").public_id,
        amounts={inv.public_id: typed},
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422, page
    message = TOO_LARGE if typed in HUGE else "Enter an amount, like 125.00."
    assert "Payment validation failed." in page and html.escape(message) in page
    assert f'value="{typed}"' in page
    assert _count(db, Payment) == before


@pytest.mark.parametrize("typed", [*NOT_A_NUMBER, *HUGE])
def test_a_total_that_is_no_amount_is_explained(
    client: FlaskClient, signed_in: Auth, db: Session, typed: str
) -> None:
    west = account_named(db, "Acme West")
    first, second = make_invoice(db, west, due=10), make_invoice(db, west, due=-45)
    _page, key, token = open_form(client, first.public_id, second.public_id)
    response = submit(
        client,
        [first, second],
        key=key,
        token=token,
        action="allocate",
        method_id=None,
        total=typed,
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422, page
    message = TOO_LARGE if typed in HUGE else "Enter an amount, like 125.00."
    assert html.escape(message) in page and f'value="{typed}"' in page


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("999999999999.99", 99_999_999_999_999),  # the largest amount anyone may type
        ("999,999,999,999.99", 99_999_999_999_999),
        ("1000000000000", "amount_too_large"),
        ("999999999999.991", "amount_too_large"),  # too large says more than too precise
        ("1e2", "amount_invalid"),  # nobody writes amounts with an exponent
        ("1E+999999999", "amount_invalid"),
        ("9" * 5000, "amount_too_large"),  # longer than int() converts: still just too large
        ("0." + "0" * 5000 + "1", "amount_decimals"),
        ("Infinity", "amount_invalid"),
        ("sNaN", "amount_invalid"),
        ("١٢٣", 12_300),  # digits as Arabic writes them
        ("1_000", "amount_invalid"),  # Python's digit grouping is nobody's
        ("12\x0034", "amount_invalid"),
        ("0", 0),
        ("0.00", 0),
        ("-0", "amount_not_positive"),
    ],
)
def test_one_amount_rule(raw: str, expected: int | str) -> None:
    from portal.services.money import parse_amount

    assert parse_amount(raw, "USD", "en_US") == expected


def test_the_bound_is_in_minor_units_and_fits_every_currency() -> None:
    from portal.services.money import MAX_MINOR, parse_amount

    assert MAX_MINOR < 2**63 - 1  # PostgreSQL's and SQLite's BIGINT
    assert parse_amount("99999999999999", "JPY", "en_US") == MAX_MINOR
    assert parse_amount("100000000000000", "JPY", "en_US") == "amount_too_large"
    assert parse_amount("99999999999.999", "KWD", "en_US") == MAX_MINOR


@pytest.mark.parametrize(
    "query",
    [
        "to=9999-12-31",
        "from=9999-12-31",
        "from=0001-01-01",
        "to=0001-01-01",
        "from=0001-01-01&to=9999-12-31",
        "from=someday",
        "to=2026-02-30",
        "from=%2B002026-01-01",
    ],
)
@pytest.mark.parametrize("path", ["/portal/payment-history", "/portal/payment-history.csv"])
def test_history_dates_out_of_range_are_a_400_with_the_message(
    client: FlaskClient, signed_in: Auth, path: str, query: str
) -> None:
    response = client.get(f"{path}?status=failed&{query}")
    page = response.get_data(as_text=True)  # reads the whole body: a stream would die here
    assert response.status_code == 400, page
    assert response.mimetype == "text/html"
    assert "Invalid payment data. Check your input." in page  # the runbook's 400
    assert (
        "Enter a date between 2000-01-01 and 2099-12-31." in page
        or "Enter a date like 2026-12-31." in page
    )
    assert 'aria-invalid="true"' in page
    assert '<option value="failed" selected>' in page  # the rest of the filter is kept


def test_history_dates_at_the_bounds_are_fine(client: FlaskClient, signed_in: Auth) -> None:
    for path in ("/portal/payment-history", "/portal/payment-history.csv"):
        response = client.get(f"{path}?from=2000-01-01&to=2099-12-31")
        assert response.status_code == 200, path
    page = client.get("/portal/payment-history?from=2000-01-01&to=2099-12-31")
    assert 'min="2000-01-01"' in page.get_data(as_text=True)


def test_the_export_link_carries_only_filters_that_hold(
    client: FlaskClient, signed_in: Auth
) -> None:
    page = client.get("/portal/payment-history?status=failed&from=2026-01-01&to=9999-12-31")
    body = page.get_data(as_text=True)
    assert "/portal/payment-history.csv?status=failed&amp;from=2026-01-01" in body
    assert "payment-history.csv?status=failed&amp;from=2026-01-01&amp;to=" not in body
    assert 'value="9999-12-31"' in body  # what was typed stays in the field


@pytest.mark.parametrize("query", ["from=0001-01-01", "to=9999-12-31", "from=1899-12-31"])
def test_invoice_list_dates_out_of_range_are_explained(
    client: FlaskClient, signed_in: Auth, query: str
) -> None:
    response = client.get(f"/portal/invoices?{query}&q=INV")
    page = response.get_data(as_text=True)
    assert response.status_code == 200  # the list's filters explain and apply the rest
    assert "Enter a date between 2000-01-01 and 2099-12-31." in page
    assert 'value="INV"' in page


@pytest.mark.parametrize("path", ["/portal/invoices", "/portal/payment-history"])
def test_a_page_number_of_any_size_is_the_last_page(
    client: FlaskClient, signed_in: Auth, path: str
) -> None:
    for page in ("9" * 400, "-" + "9" * 400, "1e9", "\u0663"):
        response = client.get(f"{path}?page={page}")
        assert response.status_code == 200, page


# What the property suite (test_any_input.py) found --------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/portal/invoices/%00/dispute"),
        ("GET", "/portal/invoices/inv_%00"),
        ("GET", "/portal/invoices?q=a%00b"),
        ("GET", "/portal/invoices/download?invoice=%00"),
        ("GET", "/portal/payment?invoice=%00"),
        ("GET", "/portal/payments/%00"),
        ("POST", "/portal/security/sessions/%00/end"),
    ],
)
def test_a_nul_anywhere_is_a_400_on_every_database(
    client: FlaskClient, signed_in: Auth, method: str, path: str
) -> None:
    """PostgreSQL cannot hold NUL in text: it raised DataError (a 500) on every lookup."""
    token = csrf_token(client, "/portal/dashboard")
    response = client.open(path, method=method, data={"csrf_token": token})
    assert response.status_code == 400
    assert "Invalid payment data. Check your input." in response.get_data(as_text=True)


def test_a_nul_in_a_form_is_a_400_and_the_text_nul_is_just_text(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    inv = invoice(db, "INV-1003")
    before = _count(db, Dispute)
    token = csrf_token(client, "/portal/dashboard")
    path = f"/portal/invoices/{inv.public_id}/dispute"
    form = {"csrf_token": token, "reason": "other", "message": "bad\x00seats"}
    assert client.post(path, data=form).status_code == 400
    assert _count(db, Dispute) == before
    assert client.get("/portal/invoices?q=%2500").status_code == 200  # the text "%00"
    status, _page = _dispute(client, inv, "%00")
    assert status == 422  # "%00" typed as an amount is no amount, nothing more


@pytest.mark.parametrize(
    "form",
    [
        {"reason": "other", "message": "bad\x00seats"},
        {"reason": "other\x00", "message": "seats"},
        {"reason": "other", "message": "seats", "extra\x00": "x"},
    ],
)
def test_a_nul_in_a_multipart_form_is_a_400_too(
    client: FlaskClient, signed_in: Auth, db: Session, form: dict[str, str]
) -> None:
    """The same form sent as multipart/form-data: it was stored on SQLite and a 500 on
    PostgreSQL ("text fields cannot contain NUL")."""
    inv = invoice(db, "INV-1003")
    before = _count(db, Dispute)
    token = csrf_token(client, "/portal/dashboard")
    path = f"/portal/invoices/{inv.public_id}/dispute"
    response = client.post(
        path, data={"csrf_token": token, **form}, content_type="multipart/form-data"
    )
    assert response.status_code == 400
    assert _count(db, Dispute) == before


@pytest.mark.parametrize("name", ["\r", "\n", "a\r\nb"])
def test_a_multipart_part_whose_name_cannot_be_read_is_a_400(
    client: FlaskClient, signed_in: Auth, name: str
) -> None:
    """A line break in a part's name leaves it nameless (None): Flask-WTF's CSRF check raised
    AttributeError on it, a 500 on every POST route."""
    token = csrf_token(client, "/portal/dashboard")
    response = client.post(
        "/logout", data={"csrf_token": token, name: "x"}, content_type="multipart/form-data"
    )
    assert response.status_code == 400


def test_a_nul_in_a_header_is_not_kept(client: FlaskClient, db: Session) -> None:
    """A User-Agent carrying a NUL reaches the audit row of a failed sign-in: PostgreSQL
    refused it with a 500. The audit log keeps the printable part."""
    token = csrf_token(client)
    response = client.post(
        "/login",
        data={"csrf_token": token, "email": "ap@acme.test", "password": "not it at all"},
        headers={"User-Agent": "Mozilla\x00evil\x01"},
    )
    assert response.status_code < 500
    with tenancy.system(db):
        agents = db.scalars(select(AuditEvent.user_agent)).all()
    assert "Mozillaevil" in agents and not any("\x00" in a for a in agents)


@pytest.mark.parametrize("target", ["//[", "http://[::1", "/a\r\nSet-Cookie: x=1"])
def test_a_next_that_is_no_url_is_ignored(client: FlaskClient, target: str) -> None:
    """urlsplit() raised ValueError ("Invalid IPv6 URL") on these: a 500 on the sign-in page."""
    assert client.get("/login", query_string={"next": target}).status_code == 200
    token = csrf_token(client)
    response = client.post(
        "/language", data={"csrf_token": token, "language": "de", "next": target}
    )
    assert response.status_code == 302 and response.headers["Location"] == "/portal/dashboard"


@pytest.mark.parametrize(
    "signature",
    ["t=" + "9" * 400 + ",v1=00", "t=-" + "9" * 400 + ",v1=00", "t=1e400,v1=00", "t=,v1=", "="],
)
def test_a_webhook_signature_of_any_shape_is_a_400(client: FlaskClient, signature: str) -> None:
    """A timestamp too large for a float made the tolerance check raise OverflowError."""
    response = client.post(
        "/webhooks/sandbox",
        data=b'{"id": "evt_1"}',
        headers={"Sandbox-Signature": signature, "Content-Type": "application/json"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "code", ["\u0660\u0661\u0662\u0663\u0664\u0665", "\u0660-00-000", "12345\u00b2"]
)
def test_a_code_in_other_digits_is_a_wrong_code(client: FlaskClient, auth: Auth, code: str) -> None:
    """str.isdigit() takes Arabic-Indic digits and superscripts; hmac.compare_digest() then
    raised TypeError on the non-ASCII text: a 500 on both second-factor pages."""
    assert auth.login().headers["Location"] == "/login/mfa"
    assert auth.code(code).status_code == 401
    client.delete_cookie(COOKIE)  # start again as someone not enrolled yet
    assert auth.login("new@acme.test").headers["Location"] == "/mfa/setup"
    token = csrf_token(client, "/mfa/setup")
    response = client.post("/mfa/setup", data={"csrf_token": token, "code": code})
    assert response.status_code == 422
    assert "That code didn&#39;t work." in response.get_data(as_text=True)
