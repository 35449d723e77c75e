"""Saved payment methods: list, add through the gateway's hosted page, remove, set default."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, request, url_for
from flask import session as browser
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock
from portal import security_alerts as alerts
from portal.db import commit_now
from portal.extensions import db_session
from portal.gateways import GatewayError, SavedMethod
from portal.models import Company, Payment, PaymentMethod, PaymentMethodKind
from portal.payments import methods
from portal.runtime import current_runtime
from portal.services import payment_methods, payments
from portal.templating import isolated_date
from portal.web import go, or_404, render, request_info, safe_next

bp = Blueprint("payment_methods", __name__, url_prefix="/portal/payment-methods")
# The cards whose update this browser started ("Update", the last few: one per tab): only their
# return addresses replace them, so a link built around someone else's completed hosted page
# cannot replace a card by a click.
PENDING_UPDATE = "card_update"
PENDING_KEPT = 5


def _pending() -> list[str]:
    found = browser.get(PENDING_UPDATE)
    return [str(item) for item in found] if isinstance(found, list) else []


def _method(public_id: str) -> PaymentMethod:
    found = payment_methods.get(db_session(), public_id, current_runtime().gateway_name)
    return or_404(found, _("Payment method not found."))


def _add(saved: SavedMethod) -> PaymentMethod:
    """Store what a completed hosted page produced and alert its owner (once per method: a
    reload of the return page alerts no more)."""
    method = payment_methods.add(
        db_session(),
        current_user,
        saved,
        gateway_name=current_runtime().gateway_name,
        now=clock.now(),
        request=request_info(),
    )
    alerts.alert(
        current_runtime(),
        db_session(),
        current_user,
        alerts.Kind.PAYMENT_METHOD_ADDED,
        request=request_info(),
        key=method.public_id,
    )
    return method


@bp.get("")
@login_required
def index() -> Response:
    context = {
        "methods": payment_methods.usable(db_session(), current_runtime().gateway_name),
        "today": clock.today(),
        "may_manage": lambda m: payment_methods.may_manage(current_user, m),
        "is_expiring": payment_methods.is_expiring,
    }
    return render("payment_methods/index.html", context)


@bp.post("/new")
@login_required
def new() -> Response:
    """Send the customer to the gateway's hosted page; it comes back to `added`."""
    session = db_session()
    kind_raw = request.form.get("kind", PaymentMethodKind.CARD.value)
    kind = PaymentMethodKind(kind_raw) if kind_raw in set(PaymentMethodKind) else None
    if kind is None:
        abort(400, description=_("Invalid payment data. Check your input."))
    back = safe_next(request.form.get("next")) or url_for("payment_methods.index")
    company = session.get(Company, current_user.company_id)
    assert company is not None
    try:
        location = methods.start_setup(
            current_runtime(),
            session,
            company,
            kind,
            return_path=url_for("payment_methods.added", next=back),
            cancel_path=back,
        )
    except GatewayError:
        flash(_("We couldn't reach the payment gateway. Please try again."), "error")
        return go(url_for("payment_methods.index"))
    return go(location)


@bp.get("/added")
@login_required
def added() -> Response:
    session = db_session()
    company = session.get(Company, current_user.company_id)
    assert company is not None
    back = safe_next(request.args.get("next")) or url_for("payment_methods.index")
    saved = methods.finish_setup(
        current_runtime(), session, company, request.args.get("session_id", "")
    )
    if saved is None:
        flash(_("The payment method was not added."), "warning")
        return go(back)
    method = _add(saved)
    flash(_("Payment method added."), "info")
    if urlsplit(back).path == url_for("payments.new"):  # preselect it on the way back
        separator = "&" if "?" in back else "?"
        back = f"{back}{separator}method={method.public_id}"
    return go(back)


@bp.post("/<public_id>/remove")
@login_required
def remove(public_id: str) -> Response:
    session = db_session()
    method = _method(public_id)
    outcome = payment_methods.remove(
        session,
        current_user,
        method,
        now=clock.now(),
        request=request_info(),
        gateway_name=current_runtime().gateway_name,
    )
    if isinstance(outcome, Payment) and payments.get_payment(session, outcome.public_id) is None:
        # In an account this user does not see: say who can act, not what they cannot see.
        flash(
            _(
                "A payment an administrator scheduled uses this method. "
                "Ask them to change it first."
            ),
            "error",
        )
        return go(url_for("payment_methods.index"))
    if isinstance(outcome, Payment):
        when = isolated_date(outcome.scheduled_for) if outcome.scheduled_for else ""
        flash(
            _(
                "This method pays a scheduled payment on %(date)s. Cancel that payment or "
                "choose another method for it first.",
                date=when,
            )
            if when
            else _("A payment with this method is still processing. Try again once it is done."),
            "error",
        )
        return go(url_for("payment_methods.index"))
    if outcome is not None:
        abort(403, description=_("Only an administrator or the person who added it can remove it."))
    commit_now(session, "removed in the portal first: the gateway's answer cannot bring it back")
    methods.detach(current_runtime(), session, method)
    flash(_("Payment method removed."), "info")
    return go(url_for("payment_methods.index"))


@bp.post("/<public_id>/default")
@login_required
def make_default(public_id: str) -> Response:
    session = db_session()
    method = _method(public_id)
    if payment_methods.set_default(session, current_user, method, request=request_info()):
        abort(403, description=_("Only an administrator or the person who added it can change it."))
    flash(_("Default payment method updated."), "info")
    return go(url_for("payment_methods.index"))


@bp.post("/<public_id>/update")
@login_required
def update(public_id: str) -> Response:
    """Replace a card (one about to expire): the gateway's hosted page for a new one of the
    same kind, back to `updated`, which puts it in the old one's place."""
    session = db_session()
    method = _method(public_id)
    if not payment_methods.may_manage(current_user, method):
        abort(403, description=_("Only an administrator or the person who added it can change it."))
    back = safe_next(request.form.get("next")) or url_for("payment_methods.index")
    company = session.get(Company, current_user.company_id)
    assert company is not None
    try:
        location = methods.start_setup(
            current_runtime(),
            session,
            company,
            method.kind,
            return_path=url_for("payment_methods.updated", public_id=public_id, next=back),
            cancel_path=url_for("payment_methods.updated", public_id=public_id, next=back),
        )
    except GatewayError:
        flash(_("We couldn't reach the payment gateway. Please try again."), "error")
        return go(back)
    kept = [item for item in _pending() if item != method.public_id]
    browser[PENDING_UPDATE] = [*kept, method.public_id][-PENDING_KEPT:]
    return go(location)


@bp.get("/<public_id>/updated")
@login_required
def updated(public_id: str) -> Response:
    """Back from the hosted page: add the new method and, in the same transaction, move the
    old one's scheduled payments and default to it and remove the old one; then forget the
    old one at the gateway. Canceled (no completed page): nothing changes."""
    session = db_session()
    back = safe_next(request.args.get("next")) or url_for("payment_methods.index")
    company = session.get(Company, current_user.company_id)
    assert company is not None
    old = payment_methods.get(session, public_id, current_runtime().gateway_name)
    saved = methods.finish_setup(
        current_runtime(), session, company, request.args.get("session_id", "")
    )
    if saved is None:
        if old is None:
            abort(404, description=_("Payment method not found."))
        flash(_("The card was not updated."), "warning")
        return go(back)
    if old is None:  # a reload after it was replaced: the new one is there already
        or_404(payment_methods.by_token(session, saved.token), _("Payment method not found."))
        flash(_("Payment method updated."), "info")
        return go(back)
    if not payment_methods.may_manage(current_user, old):
        abort(403, description=_("Only an administrator or the person who added it can change it."))
    if old.public_id not in _pending():  # not an update this browser started
        flash(_("The card was not updated."), "warning")
        return go(back)
    new = _add(saved)  # a card that will be charged changed hands: alerted as any method added
    payment_methods.replace(
        session, current_user, old, new, now=clock.now(), request=request_info()
    )
    commit_now(session, "the new method stands in the portal before the gateway forgets the old")
    browser[PENDING_UPDATE] = [item for item in _pending() if item != old.public_id]
    methods.detach(current_runtime(), session, old)
    flash(_("Payment method updated."), "info")
    return go(back)
