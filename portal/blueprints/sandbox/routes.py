"""The sandbox gateway's hosted page (served only with PAYMENT_GATEWAY=sandbox).

It stands where Stripe's hosted page stands: the portal never renders a card field, and this
page hands the portal a token. Entered numbers are checked against the test cards and then
dropped: only brand, last four digits and expiry are kept. A refused number is never echoed.
"""

from __future__ import annotations

import re

from flask import Blueprint, abort, make_response, redirect, render_template, request
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from portal import clock
from portal.extensions import db_session
from portal.gateways.sandbox import (
    TEST_BANK_ACCOUNT,
    TEST_BANK_ROUTING,
    CardRefused,
    SandboxGateway,
)
from portal.models import PaymentMethodKind, SandboxSetup
from portal.runtime import current_runtime

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox")
_EXPIRY = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*$")
_CVC = re.compile(r"^\d{3,4}$")


def _messages() -> dict[str, str]:
    return {
        "invalid_number": _("This sandbox accepts only the test card numbers listed below."),
        "card_declined": _("Your card was declined."),
        "insufficient_funds": _("Your card has insufficient funds."),
        "invalid_bank_account": _("Use the test bank account listed below."),
    }


@bp.before_request
def _only_in_sandbox() -> None:
    if current_runtime().gateway_name != "sandbox":
        abort(404)


def _setup(setup_id: str) -> tuple[SandboxGateway, SandboxSetup]:
    # This blueprint is the sandbox gateway's own hosted page (where Stripe's would be), so it
    # works with the gateway itself.
    gw = current_runtime().gateway(db_session())
    assert isinstance(gw, SandboxGateway)
    setup = gw.setup(setup_id)
    if setup is None or setup.token is not None:
        abort(404)
    return gw, setup


@bp.route("/setup/<setup_id>", methods=["GET", "POST"])
def setup(setup_id: str) -> Response:
    gw, record = _setup(setup_id)
    errors: dict[str, str] = {}
    if request.method == "POST":
        if record.kind == PaymentMethodKind.CARD.value:
            errors = _attach_card(gw, record)
        else:
            errors = _attach_bank(gw, record)
        if not errors:
            separator = "&" if "?" in record.return_url else "?"
            return redirect(f"{record.return_url}{separator}session_id={record.id}", code=303)
    body = render_template(
        "sandbox/setup.html",
        setup=record,
        errors=errors,
        values={k: v for k, v in request.form.items() if k in ("name", "expiry", "holder")},
        bank=(TEST_BANK_ROUTING, TEST_BANK_ACCOUNT),
    )
    response = make_response(body, 422 if errors else 200)
    response.headers["Cache-Control"] = "no-store"
    return response


def _attach_card(gw: SandboxGateway, record: SandboxSetup) -> dict[str, str]:
    errors: dict[str, str] = {}
    number = request.form.get("number", "")
    match = _EXPIRY.match(request.form.get("expiry", ""))
    if not number.strip():
        errors["number"] = _("Enter the card number.")
    if match is None:
        errors["expiry"] = _("Enter the expiry as MM/YY.")
    else:
        month, year = int(match.group(1)), int(match.group(2))
        year = year + 2000 if year < 100 else year
        today = clock.today()
        if not 1 <= month <= 12:
            errors["expiry"] = _("Enter the expiry as MM/YY.")
        elif (year, month) < (today.year, today.month) or year > today.year + 20:
            errors["expiry"] = _("This card has expired.")
    if not _CVC.match(request.form.get("cvc", "").strip()):
        errors["cvc"] = _("Enter the 3 or 4 digit security code.")
    if errors:
        return errors
    assert match is not None
    try:
        gw.attach_card(record, number, month, year)
    except CardRefused as refused:
        return {"number": _messages()[refused.code]}
    return {}


def _attach_bank(gw: SandboxGateway, record: SandboxSetup) -> dict[str, str]:
    try:
        gw.attach_bank_account(
            record, request.form.get("routing", ""), request.form.get("account", "")
        )
    except CardRefused as refused:
        return {"account": _messages()[refused.code]}
    return {}
