"""The documents library (one URL, two renderings, like the invoice list). Each file leaves
through a signed link made for the signed-in user when the page is drawn (`document_url`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, request
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from portal import flags, tenancy
from portal.blueprints.documents.forms import DocumentFilterForm, kind_labels
from portal.extensions import db_session
from portal.services import documents
from portal.services.dashboard import Viewing
from portal.web import render

bp = Blueprint("documents", __name__, url_prefix="/portal/documents")
RESULTS = "documents/_results.html"


@bp.before_request
def _documents_enabled() -> None:
    if not flags.enabled(flags.DOCUMENTS):
        flags.note_refusal()
        abort(503, description=_("Documents aren't available right now."))


@bp.get("")
@login_required
def index() -> Response:
    db = db_session()
    accounts = documents.accounts_in_scope(db)
    form = DocumentFilterForm(formdata=request.args)
    form.set_accounts(accounts)
    form.validate()
    query = form.to_query()
    page = documents.list_documents(db, query)
    scope = tenancy.current_scope(db)
    context: dict[str, Any] = {
        "form": form,
        "page": page,
        "query": query,
        "list_args": form.list_args(),
        "several_accounts": len(accounts) > 1,
        "kinds": {key: str(label) for key, label in kind_labels().items()},
        "viewing": Viewing(company_wide=scope.company_wide, accounts=[n for _, n in accounts]),
    }
    # One URL, two renderings: htmx swapping the results gets them alone (web.render).
    return render("documents/index.html", context, fragments={"document-results": RESULTS})
