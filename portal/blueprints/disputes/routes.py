"""Disputing an invoice from its page."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock, i18n
from portal.blueprints.disputes.forms import DisputeForm
from portal.extensions import db_session
from portal.models import DisputeReason
from portal.services import disputes, invoices
from portal.web import or_404, render, request_info

bp = Blueprint("disputes", __name__, url_prefix="/portal/invoices")


@bp.route("/<public_id>/dispute", methods=["GET", "POST"])
@login_required
def new(public_id: str) -> Response:
    db = db_session()
    invoice = or_404(invoices.get_invoice(db, public_id), _("Invoice not found."))
    if not disputes.can_dispute(invoice):
        flash(_("This invoice can't be disputed in its current state."), "warning")
        return redirect(url_for("invoices.show", public_id=public_id))
    form = DisputeForm(currency=invoice.currency, locale=i18n.format_locale())
    if not form.validate_on_submit():
        status = 422 if form.is_submitted() else 200
        return render("disputes/new.html", {"form": form, "invoice": invoice}, status=status)
    result = disputes.open_dispute(
        db,
        invoice,
        current_user,
        reason=DisputeReason(form.reason.data),
        amount=form.minor_amount,
        message=form.message.data or "",
        now=clock.now(),
        request=request_info(),
    )
    if result.refusal is disputes.DisputeRefusal.AMOUNT_TOO_HIGH:
        form.amount.errors = [_("That is more than the balance due.")]
        return render("disputes/new.html", {"form": form, "invoice": invoice}, status=422)
    flash(_("Dispute sent. We'll contact you about it."), "info")
    return redirect(url_for("invoices.show", public_id=public_id))
