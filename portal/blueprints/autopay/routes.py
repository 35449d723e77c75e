"""Automatic payments (the domain is portal/services/autopay.py, the job portal/autopay/): per
billing account in the user's scope, its state, the form that turns it on or changes it, "Turn
off", and the invoices it will charge with "Skip this invoice"; and the signed skip link a
notice mails (no sign-in: the link is the authority, valid until the charge day)."""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, abort, flash, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select
from werkzeug.wrappers import Response

from portal import clock, tenancy
from portal.extensions import db_session, limiter, settings
from portal.models import BillingAccount, Invoice, PaymentMethod
from portal.runtime import current_runtime
from portal.services import autopay, payment_methods
from portal.services.autopay import Refusal
from portal.web import go, or_404, render, request_info

bp = Blueprint("autopay", __name__)
SKIP_LIMIT = "10 per minute"


def _refusal_message(refusal: Refusal) -> str:
    messages = {
        Refusal.NOT_ALLOWED: _(
            "Only an administrator, or a member with a payment method they added, can set up "
            "automatic payments for this account."
        ),
        Refusal.METHOD_UNUSABLE: _(
            "Choose one of your saved payment methods that has not expired."
        ),
        Refusal.TIMING_INVALID: _("Choose when to pay: on the due date or some days after issue."),
        Refusal.DAYS_INVALID: _("Enter a number of days from 0 to 90."),
        Refusal.NOTICE_INVALID: _("Choose how many days before a charge we tell you."),
        Refusal.ALREADY_OFF: _("Automatic payments are already off for this account."),
        Refusal.NOTHING_TO_SKIP: _("This invoice has nothing left for automatic payment."),
        Refusal.ALREADY_SKIPPED: _("This invoice was already skipped."),
        Refusal.ALREADY_CHARGING: _(
            "Today's automatic payment of this invoice has already started. "
            "Its receipt or result comes by e-mail."
        ),
    }
    return str(messages[refusal])


def _accounts() -> list[BillingAccount]:
    return list(db_session().scalars(select(BillingAccount).order_by(BillingAccount.name)))


def _account(public_id: str) -> BillingAccount:
    found = db_session().scalar(select(BillingAccount).where(BillingAccount.public_id == public_id))
    return or_404(found, _("Billing account not found."))


def _page(
    errors: dict[str, str] | None = None, typed: dict[int, Any] | None = None, status: int = 200
) -> Response:
    session = db_session()
    today = clock.today()
    accounts = _accounts()
    settings_ = autopay.settings_by_account(session)
    methods = payment_methods.usable(session, current_runtime().gateway_name)
    live = [m for m in methods if not m.is_expired(today)]
    current_methods = {
        s.billing_account_id: autopay.method_of(session, s) for s in settings_.values()
    }
    rows = []
    upcoming = autopay.upcoming(session, list(settings_.values()), today)
    for account in accounts:
        setting = settings_.get(account.id)
        mine = [m for m in live if autopay.may_manage(current_user, account, m)]
        method = current_methods.get(account.id)
        may_change = bool(mine)
        may_turn_off = (
            setting is not None
            and setting.enabled
            and autopay.may_manage(current_user, account, method)
        )
        rows.append(
            {
                "account": account,
                "setting": setting,
                "method": method,
                "methods": mine,
                "may_change": may_change,
                "may_turn_off": may_turn_off,
                "upcoming": upcoming.get(account.id, []),
            }
        )
    context = {
        "rows": rows,
        "errors": errors or {},
        "typed": typed or {},
        "notice_choices": autopay.NOTICE_CHOICES,
        "default_notice": autopay.DEFAULT_NOTICE_DAYS,
    }
    return render("autopay/index.html", context, status=status)


@bp.get("/portal/autopay")
@login_required
def index() -> Response:
    return _page()


@bp.post("/portal/autopay/<account_id>")
@login_required
def save(account_id: str) -> Response:
    session = db_session()
    account = _account(account_id)
    form = request.form
    method_id = form.get("method", "")
    method: PaymentMethod | None = payment_methods.get(
        session, method_id, current_runtime().gateway_name
    )
    choice = autopay.Choice(
        method=method,
        timing=form.get("timing", ""),
        days_after_issue=form.get("days", "0"),
        notice_days=form.get("notice", ""),
    )
    outcome = autopay.turn_on(
        session,
        current_user,
        account,
        choice,
        today=clock.today(),
        now=clock.now(),
        gateway_name=current_runtime().gateway_name,
        request=request_info(),
    )
    if isinstance(outcome, Refusal):
        status = 403 if outcome is Refusal.NOT_ALLOWED else 422
        typed = {account.id: {k: form.get(k, "") for k in ("method", "timing", "days", "notice")}}
        return _page({account.public_id: _refusal_message(outcome)}, typed, status=status)
    flash(_("Automatic payments are on for %(account)s.", account=account.name), "info")
    return go(url_for("autopay.index"))


@bp.post("/portal/autopay/<account_id>/off")
@login_required
def turn_off(account_id: str) -> Response:
    session = db_session()
    account = _account(account_id)
    setting = autopay.settings_by_account(session).get(account.id)
    setting = or_404(setting, _("Automatic payments are not set up for this account."))
    refusal = autopay.turn_off(
        session, current_user, setting, now=clock.now(), request=request_info()
    )
    if refusal is Refusal.NOT_ALLOWED:
        abort(403, description=_refusal_message(refusal))
    if refusal is None:
        flash(_("Automatic payments are off for %(account)s.", account=account.name), "info")
    else:
        flash(_refusal_message(refusal), "info")
    return go(url_for("autopay.index"))


@bp.post("/portal/autopay/invoices/<invoice_id>/skip")
@login_required
def skip_invoice(invoice_id: str) -> Response:
    session = db_session()
    invoice = or_404(
        session.scalar(select(Invoice).where(Invoice.public_id == invoice_id)),
        _("Invoice not found."),
    )
    setting = autopay.settings_by_account(session).get(invoice.billing_account_id)
    account = session.get(BillingAccount, invoice.billing_account_id)
    if (
        setting is None
        or account is None
        or not autopay.may_manage(current_user, account, autopay.method_of(session, setting))
    ):
        abort(403, description=_refusal_message(Refusal.NOT_ALLOWED))
    refusal = autopay.skip(
        session,
        invoice,
        user=current_user,
        today=clock.today(),
        now=clock.now(),
        request=request_info(),
    )
    if refusal is None:
        flash(
            _("Invoice %(invoice)s will not be paid automatically.", invoice=invoice.number),
            "info",
        )
    else:
        flash(_refusal_message(refusal), "info")
    return go(url_for("autopay.index"))


def _skip_key() -> str:
    token = str((request.view_args or {}).get("token", ""))
    return "autopay-skip:" + hashlib.sha256(token.encode()).hexdigest()[:32]


@bp.route("/autopay/skip/<token>", methods=["GET", "POST"])
@limiter.limit(SKIP_LIMIT, methods=["POST"], key_func=_skip_key)
def skip_link(token: str) -> Response:
    """The notice's link: asks, then skips the invoice (once). No sign-in needed."""
    session = db_session()
    now = clock.now()
    read = autopay.read_skip_token(token, keys=settings().keyring, now=now)
    invoice = autopay.invoice_for_skip(session, read[0]) if read is not None else None
    if read is None or invoice is None:
        return render("autopay/skip.html", {"state": "invalid"}, status=404)
    context: dict[str, Any] = {"state": "ask", "invoice": invoice, "day": read[1]}
    if request.method == "POST":
        with tenancy.system(session):  # the signed link is the authority, not a sign-in
            refusal = autopay.skip(
                session, invoice, user=None, today=now.date(), now=now, request=request_info()
            )
        context["state"] = "done" if refusal is None else "refused"
        context["message"] = _refusal_message(refusal) if refusal is not None else ""
        return render("autopay/skip.html", context, status=200 if refusal is None else 409)
    return render("autopay/skip.html", context)
