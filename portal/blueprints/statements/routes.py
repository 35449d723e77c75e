"""Statements: ask for one, watch it being generated, download it (portal/statements)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock, flags, i18n
from portal.blueprints.statements.forms import StatementForm, format_choices
from portal.extensions import db_session, settings
from portal.models import IN_PROGRESS, Statement, StatementFormat
from portal.runtime import current_runtime
from portal.services import downloads
from portal.services.downloads import FileKind
from portal.statements import service
from portal.web import go, or_404, render, request_info

bp = Blueprint("statements", __name__, url_prefix="/portal/statements")
LIST = "statements/_list.html"


@bp.before_request
def _enabled() -> None:
    if not flags.enabled(flags.STATEMENTS):
        flags.note_refusal()
        abort(503, description=_("Statements aren't available right now."))


def _form() -> StatementForm:
    return StatementForm(
        accounts=service.accounts(db_session()),
        today=clock.today(),
        max_days=settings().statement_max_days,
    )


def _link(statement: Statement) -> str:
    token = downloads.sign(
        FileKind.STATEMENT,
        statement.public_id,
        current_user.public_id,
        keys=settings().keyring,
        now=clock.now(),
    )
    return url_for("downloads.fetch", token=token)


def _failure_reasons() -> dict[str, str]:
    return {
        "access_changed": _("You no longer have access to one of its billing accounts."),
        "generation_failed": _("We couldn't generate this statement. Please try again."),
        "timed_out": _("Generating this statement took too long. Please try again."),
    }


def _format_labels() -> dict[str, str]:
    return {value: str(label) for value, label in format_choices()}


def _context(form: StatementForm, watched: frozenset[str] = frozenset()) -> dict[str, Any]:
    db = db_session()
    now = clock.now()
    statements = service.recent(db, current_user)
    busy = [s for s in statements if s.state in IN_PROGRESS]
    # The statements the polling list was watching that have now finished: said aloud.
    news = [s for s in statements if s.public_id in watched and s.state not in IN_PROGRESS]
    return {
        "form": form,
        "statements": statements,
        "busy": [s.public_id for s in busy],
        "news": news,
        "late": service.any_late(db, busy, now) or current_runtime().work_delayed,
        "link": _link,
        "names": {a.id: a.name for a in form.account_rows},
        "failure_reasons": _failure_reasons(),
        "format_labels": _format_labels(),
        "retention_days": settings().statement_retention_days,
    }


@bp.get("")
@login_required
def index() -> Response:
    context = _context(_form(), frozenset(request.args.getlist("watch")))
    return render("statements/index.html", context, fragments={"statement-list": LIST})


@bp.post("")
@login_required
def create() -> Response:
    form = _form()
    if not form.validate_on_submit():
        return render("statements/index.html", _context(form), status=422)
    service.request_statement(
        current_runtime(),
        db_session(),
        current_user,
        start=form.start_date.data,
        end=form.end_date.data,
        account_ids=form.account_ids,
        fmt=StatementFormat(form.format.data),
        locale=i18n.text_locale(),  # the statement's language; not the number format
        now=clock.now(),
        request=request_info(),
    )
    flash(_("Statement requested. We'll e-mail you when it's ready."), "info")
    return go(url_for("statements.index"))


@bp.post("/<public_id>/retry")
@login_required
def retry(public_id: str) -> Response:
    db = db_session()
    statement = or_404(service.get_own(db, public_id, current_user), _("Statement not found."))
    if service.retry(current_runtime(), db, statement, clock.now()):
        flash(_("Statement requested again. We'll e-mail you when it's ready."), "info")
    return go(url_for("statements.index"))
