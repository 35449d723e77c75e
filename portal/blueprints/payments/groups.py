"""The page of several payments made in one go: one per billing account, each with its status."""

from __future__ import annotations

from collections import Counter

from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import login_required
from werkzeug.wrappers import Response

from portal.blueprints.payments.routes import bp, polling, retry_url
from portal.extensions import db_session
from portal.models import Payment, PaymentStatus
from portal.payments import copy
from portal.services import payments
from portal.templating import isolated_date, isolated_money
from portal.web import or_404, render

STATUS_PANEL = {"payment-panel": "payments/_group_status.html"}


def _headline(made: list[Payment]) -> str:
    """One line for the whole group, in the runbook's words where it has them."""
    statuses = Counter(p.status for p in made)
    total = isolated_money(sum(p.amount for p in made), made[0].currency)
    if statuses[PaymentStatus.PROCESSING] or statuses[PaymentStatus.PENDING]:
        return str(_("Your payments are being processed"))
    if statuses[PaymentStatus.SUCCEEDED] == len(made):
        return str(_("Payments of %(amount)s processed successfully", amount=total))
    if statuses[PaymentStatus.SCHEDULED] == len(made):
        return str(
            _(
                "Payments of %(amount)s scheduled for %(date)s",
                amount=total,
                date=isolated_date(made[0].scheduled_for),
            )
        )
    return str(
        ngettext(
            "%(done)d of %(num)d payment processed successfully",
            "%(done)d of %(num)d payments processed successfully",
            len(made),
            done=statuses[PaymentStatus.SUCCEEDED],
        )
    )


@bp.get("/payments/group/<public_id>")
@login_required
def group(public_id: str) -> Response:
    session = db_session()
    found = payments.get_group(session, public_id)
    # A restricted user sees the payments of their own accounts, and no group without one.
    made = payments.group_payments(session, found) if found is not None else []
    found = or_404(found if made else None, _("Payment not found."))
    context = {
        "group": found,
        "payments": made,
        "total": sum(p.amount for p in made),
        "currency": made[0].currency,
        "headline": _headline(made),
        "reasons": {p.id: copy.failure_reason(p.failure_code) for p in made},
        "retry_urls": {p.id: retry_url(p) for p in made},
        "polling": any(polling(p) for p in made),
    }
    return render("payments/group.html", context, fragments=STATUS_PANEL)
