"""Payment History (`payments.history`) and its CSV export.

Like the invoice list: one GET form, one URL, two renderings (htmx asks for the results only)."""

from __future__ import annotations

from dataclasses import replace

from flask import Response, request, stream_with_context
from flask_babel import gettext as _
from flask_login import login_required

from portal import clock, i18n
from portal.blueprints.payments.routes import bp
from portal.extensions import db_session
from portal.services import dates, payment_history
from portal.services.dashboard import viewing
from portal.services.dates import DateError
from portal.services.payment_history import HistoryQuery
from portal.web import render


def date_message(error: DateError) -> str:
    if error is DateError.OUT_OF_RANGE:
        return str(
            _(
                "Enter a date between %(earliest)s and %(latest)s.",
                earliest=dates.EARLIEST.isoformat(),
                latest=dates.LATEST.isoformat(),
            )
        )
    return str(_("Enter a date like 2026-12-31."))


def _query() -> tuple[HistoryQuery, dict[str, str], dict[str, str]]:
    """The filters, the query parameters that hold (for links: pages, CSV) and the errors."""
    query, problems = payment_history.read_query(request.args)
    query = replace(query, zone=i18n.user_zone())  # the days of the dates the page shows
    errors = {name: date_message(problem) for name, problem in problems.items()}
    held = {
        "status": query.status,
        "from": query.date_from.isoformat() if query.date_from else "",
        "to": query.date_to.isoformat() if query.date_to else "",
    }
    return query, {k: v for k, v in held.items() if v}, errors


def _page(query: HistoryQuery, args: dict[str, str], errors: dict[str, str]) -> Response:
    """The page (or its results, for htmx); with a refused filter a 400 that says which, the
    rest of the filters applied."""
    session = db_session()
    context = {
        "page": payment_history.list_payments(session, query),
        "query": query,
        "args": args,
        "errors": errors,
        "statuses": payment_history.STATUSES,
        "today": clock.today(),
        "viewing": viewing(session),
        "earliest": dates.EARLIEST.isoformat(),
        "latest": dates.LATEST.isoformat(),
    }
    return render(
        "payments/history.html",
        context,
        fragments={"payment-results": "payments/_history_results.html"},
        status=400 if errors else 200,
    )


@bp.get("/payment-history")
@login_required
def history() -> Response:
    return _page(*_query())


@bp.get("/payment-history.csv")
@login_required
def history_csv() -> Response:
    query, args, errors = _query()
    if errors:  # checked before the download starts: a 200 cannot take back its status
        return _page(query, args, errors)
    rows = payment_history.export_csv(db_session(), query)
    response = Response(stream_with_context(rows), mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="payment-history-{clock.today().isoformat()}.csv"'
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response
