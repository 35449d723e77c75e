"""Disputing an invoice from its page, then the dispute's own page: the thread, a reply with
attachments, and withdrawal."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock, i18n
from portal import disputes as application
from portal.blueprints.disputes.forms import DisputeForm, ReplyForm, WithdrawForm
from portal.extensions import db_session
from portal.models import Dispute, DisputeReason
from portal.runtime import current_runtime
from portal.services import disputes, invoices
from portal.services.disputes import ActionRefusal, AttachmentRefusal, Upload
from portal.web import go, or_404, render, request_info

bp = Blueprint("disputes", __name__, url_prefix="/portal")

# A reply may carry five files of 10 MB each: its endpoint takes that much (and a little for
# the text); every other request keeps the app's MAX_CONTENT_LENGTH. Set before the CSRF check
# reads the body (URL value preprocessors run before every before_request function).
REPLY_BODY_LIMIT = disputes.MAX_ATTACHMENTS * disputes.MAX_ATTACHMENT + 1024 * 1024


@bp.url_value_preprocessor
def _limit_body(endpoint: str | None, _values: dict[str, Any] | None) -> None:
    if endpoint == "disputes.show" and request.method == "POST":
        request.max_content_length = REPLY_BODY_LIMIT


@bp.route("/invoices/<public_id>/dispute", methods=["GET", "POST"])
@login_required
def new(public_id: str) -> Response:
    db = db_session()
    invoice = or_404(invoices.get_invoice(db, public_id), _("Invoice not found."))
    if not disputes.can_dispute(invoice):
        existing = disputes.current_for(db, invoice)
        if existing is not None and request.method == "GET":
            return redirect(url_for("disputes.show", public_id=existing.public_id))
        flash(_("This invoice can't be disputed in its current state."), "warning")
        return redirect(url_for("invoices.show", public_id=public_id))
    form = DisputeForm(currency=invoice.currency, locale=i18n.format_locale())
    if not form.validate_on_submit():
        status = 422 if form.is_submitted() else 200
        return render("disputes/new.html", {"form": form, "invoice": invoice}, status=status)
    result = application.open_dispute(
        current_runtime(),
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
    if result.refusal is disputes.DisputeRefusal.NOT_DISPUTABLE:  # it changed meanwhile
        flash(_("This invoice can't be disputed in its current state."), "warning")
        return redirect(url_for("invoices.show", public_id=public_id))
    flash(_("Dispute sent. We'll contact you about it."), "info")
    return redirect(url_for("invoices.show", public_id=public_id))


def _dispute(public_id: str) -> Dispute:
    return or_404(disputes.get_dispute(db_session(), public_id), _("Dispute not found."))


def _page(dispute: Dispute, form: ReplyForm, status: int = 200) -> Response:
    context = {"dispute": dispute, "invoice": dispute.invoice, "form": form}
    return render("disputes/show.html", context, status=status)


def _uploads() -> list[Upload]:
    """The files as the form parser spooled them (the body's limit enforced as it streamed
    in): each is checked by its size and its first and last bytes, then stored in chunks,
    never read whole into memory."""
    files = [f for f in request.files.getlist("attachments") if f and f.filename]
    return [Upload.of(f.filename or "", f.stream) for f in files]


def _attachment_error(refusal: AttachmentRefusal) -> str:
    errors: dict[AttachmentRefusal, str] = {
        AttachmentRefusal.TYPE: _("Attach a PDF, PNG or JPEG file."),
        AttachmentRefusal.SIZE: _("Each file must be 10 MB or smaller."),
        AttachmentRefusal.COUNT: _("Attach at most 5 files to a message."),
    }
    return errors[refusal]


@bp.route("/disputes/<public_id>", methods=["GET", "POST"])
@login_required
def show(public_id: str) -> Response:
    dispute = _dispute(public_id)
    form = ReplyForm()
    if not form.validate_on_submit():
        return _page(dispute, form, 422 if form.is_submitted() else 200)
    outcome = application.customer_message(
        current_runtime(),
        db_session(),
        dispute,
        current_user,
        body=form.message.data or "",
        uploads=_uploads(),
        now=clock.now(),
        request=request_info(),
    )
    if isinstance(outcome.refusal, AttachmentRefusal):
        form.attachments.errors = [_attachment_error(outcome.refusal)]
        return _page(dispute, form, 422)
    if outcome.refusal is ActionRefusal.EMPTY:
        form.message.errors = [_("Write a message or attach a file.")]
        return _page(dispute, form, 422)
    if outcome.refusal is ActionRefusal.CLOSED:
        flash(_("This dispute is closed: it takes no more messages."), "warning")
        return go(url_for("disputes.show", public_id=public_id))
    flash(_("Message sent."), "info")
    return go(url_for("disputes.show", public_id=public_id, _anchor="thread-end"))


@bp.route("/disputes/<public_id>/withdraw", methods=["GET", "POST"])
@login_required
def withdraw(public_id: str) -> Response:
    dispute = _dispute(public_id)
    form = WithdrawForm()
    if not dispute.is_active:
        flash(_("This dispute is closed: it takes no more messages."), "warning")
        return go(url_for("disputes.show", public_id=public_id))
    if not form.validate_on_submit():
        context = {"dispute": dispute, "invoice": dispute.invoice, "form": form}
        return render("disputes/withdraw.html", context, status=422 if form.is_submitted() else 200)
    outcome = application.customer_withdraw(
        current_runtime(),
        db_session(),
        dispute,
        current_user,
        now=clock.now(),
        request=request_info(),
    )
    if outcome.refusal is ActionRefusal.CLOSED:  # closed by the billing team meanwhile
        flash(_("This dispute was closed in the meantime: it can no longer be withdrawn."), "error")
        return _page(dispute, ReplyForm(formdata=None), 409)
    flash(_("Dispute withdrawn. The invoice is due again."), "info")
    return go(url_for("disputes.show", public_id=public_id))
