"""The invoice list (one URL, two renderings), an invoice, its PDF, and several as a ZIP."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock, i18n
from portal.blueprints.invoices.forms import InvoiceFilterForm
from portal.extensions import db_session, settings
from portal.models import Invoice
from portal.services import audit, autopay, disputes, invoice_pdf, invoices
from portal.services.dashboard import viewing
from portal.templating import documents_enabled
from portal.web import or_404, render, request_info

bp = Blueprint("invoices", __name__, url_prefix="/portal/invoices")
RESULTS = "invoices/_results.html"
MAX_ZIP = 50  # each uncached PDF takes ~0.2 s to draw


def _missing() -> str:
    return str(_("Invoice not found."))


def _pdf_bytes(invoice: Invoice, credit_notes: list[str]) -> bytes:
    return invoice_pdf.cached_invoice_pdf(
        invoice,
        current_user.company,
        locale=i18n.format_locale(),
        date_locale=i18n.text_locale(),
        template_env=current_app.jinja_env,
        cache_dir=Path(settings().storage_dir) / "invoice-pdf",
        credit_notes=credit_notes,
    )


@bp.get("")
@login_required
def index() -> Response:
    form = InvoiceFilterForm(formdata=request.args)
    form.validate()
    query = form.to_query()
    db = db_session()
    today = clock.today()
    page = invoices.list_invoices(db, query, today)
    narrowed = bool(query.q or query.date_from or query.date_to)
    context: dict[str, Any] = {
        "form": form,
        "page": page,
        "query": query,
        "today": today,
        # The runbook's "all caught up" only when nothing at all is owed; otherwise the
        # filters are what hide the invoices.
        "caught_up": not page.items
        and not narrowed
        and query.status in ("all", "open", "overdue")
        and not invoices.has_outstanding(db),
        "list_args": form.list_args(),
        "viewing": viewing(db),
    }
    # One URL, two renderings: htmx swapping the results gets them alone (web.render).
    return render("invoices/index.html", context, fragments={"invoice-results": RESULTS})


@bp.get("/download")
@login_required
def download() -> Response:
    public_ids = request.args.getlist("invoice")
    if not public_ids:
        flash(_("Select at least one invoice to download."), "warning")
        return redirect(url_for("invoices.index"))
    if len(public_ids) > MAX_ZIP:
        abort(400, description=_("Download at most %(num)d invoices at a time.", num=MAX_ZIP))
    found = or_404(invoices.get_invoices(db_session(), public_ids), _missing())
    credited = invoices.credit_numbers(db_session(), found)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        used: set[str] = set()
        for invoice in found:
            name = invoice_pdf.pdf_filename(invoice)
            if name in used:  # "INV/7" and "INV-7" would both be invoice-INV-7.pdf
                name = name.removesuffix(".pdf") + f"-{invoice.public_id}.pdf"
            used.add(name)
            archive.writestr(name, _pdf_bytes(invoice, credited[invoice.id]))
    buffer.seek(0)
    return send_file(
        buffer,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"invoices-{clock.today().isoformat()}.zip",
    )


@bp.get("/<public_id>")
@login_required
def show(public_id: str) -> Response:
    db = db_session()
    invoice = or_404(invoices.get_invoice(db, public_id), _missing())
    applied = invoices.payments_applied(db, invoice)
    documents = invoices.documents_for(db, invoice) if documents_enabled() else []
    credits = invoices.credits_applied(db, invoice) if invoice.amount_credited else []
    audit.record_for(
        db,
        current_user,
        "Portal.InvoiceViewed",
        request=request_info(),
        customer_id=current_user.company.public_id,
        invoice_id=invoice.public_id,
    )
    context = {
        "invoice": invoice,
        "applied": applied,
        "documents": documents,
        "credits": credits,
        "today": clock.today(),
        "payable": invoices.is_payable(invoice),
        "disputable": disputes.can_dispute(invoice),
        "dispute_list": disputes.disputes_for(db, invoice),
        "autopay_day": autopay.will_charge(db, invoice, clock.today()),
    }
    return render("invoices/show.html", context)


@bp.get("/<public_id>/pdf")
@login_required
def pdf(public_id: str) -> Response:
    db = db_session()
    invoice = or_404(invoices.get_invoice(db, public_id), _missing())
    credited = invoices.credit_numbers(db, [invoice])
    return send_file(
        io.BytesIO(_pdf_bytes(invoice, credited[invoice.id])),
        mimetype="application/pdf",
        as_attachment=True,
        download_name=invoice_pdf.pdf_filename(invoice),
    )
