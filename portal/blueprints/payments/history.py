"""Payment History (`payments.history`) and its CSV export.

Like the invoice list: one GET form, one URL, two renderings (htmx asks for the results only)."""

from __future__ import annotations

from datetime import date

from flask import Response, render_template, request, stream_with_context
from flask_login import login_required

from portal import clock
from portal.blueprints.payments.routes import bp
from portal.extensions import db_session
from portal.services import payment_history
from portal.services.dashboard import viewing
from portal.services.payment_history import HistoryQuery
from portal.web import wants_fragment


def _date(name: str) -> tuple[date | None, bool]:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None, True
    try:
        return date.fromisoformat(raw), True
    except ValueError:
        return None, False


def _query() -> tuple[HistoryQuery, dict[str, str], dict[str, bool]]:
    status = request.args.get("status", "")
    date_from, ok_from = _date("from")
    date_to, ok_to = _date("to")
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        page = 1
    args = {k: v for k, v in request.args.items() if k in ("status", "from", "to") and v}
    valid = {"from": ok_from, "to": ok_to}
    status = status if status in payment_history.STATUSES else ""
    return HistoryQuery(status, date_from, date_to, page), args, valid


@bp.get("/payment-history")
@login_required
def history() -> str:
    query, args, valid = _query()
    session = db_session()
    context = {
        "page": payment_history.list_payments(session, query),
        "query": query,
        "args": args,
        "valid": valid,
        "statuses": payment_history.STATUSES,
        "today": clock.today(),
        "viewing": viewing(session),
    }
    if wants_fragment():
        return render_template("payments/_history_results.html", **context)
    return render_template("payments/history.html", **context)


@bp.get("/payment-history.csv")
@login_required
def history_csv() -> Response:
    query, _args, _valid = _query()
    rows = payment_history.export_csv(db_session(), query)
    response = Response(stream_with_context(rows), mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="payment-history-{clock.today().isoformat()}.csv"'
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response
