"""Signed download links (portal/services/downloads.py): a statement's, a document's or a
dispute attachment's file.

The link must be valid (signed by us, not altered, under 24 hours old) and made for the user
signed in; anything else gets a page that says what happened, never the file.
"""

from __future__ import annotations

from flask import Blueprint, abort, send_file
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock, flags
from portal.extensions import db_session, settings
from portal.runtime import current_runtime
from portal.services import audit, disputes, documents, downloads
from portal.services.downloads import FileKind, LinkState
from portal.services.storage import StorageError
from portal.statements import service as statements
from portal.web import render, request_info

bp = Blueprint("downloads", __name__, url_prefix="/portal/download")
_FLAGS = {
    FileKind.STATEMENT: flags.STATEMENTS,
    FileKind.DOCUMENT: flags.DOCUMENTS,
    FileKind.DISPUTE_ATTACHMENT: flags.MASTER,
}


def _switched_off(kind: FileKind) -> str:
    if kind is FileKind.STATEMENT:
        return str(_("Statements aren't available right now."))
    if kind is FileKind.DOCUMENT:
        return str(_("Documents aren't available right now."))
    return str(_("The portal is briefly unavailable. Please try again soon."))


def _refused(state: LinkState) -> Response:
    status = 410 if state is LinkState.EXPIRED else 404
    return render("downloads/refused.html", {"state": state.value}, status=status)


@bp.route("/<token>")
@login_required
def fetch(token: str) -> Response:
    checked = downloads.check(
        token, current_user.public_id, keys=settings().keyring, now=clock.now()
    )
    if checked.state is not LinkState.OK or checked.public_id is None or checked.kind is None:
        return _refused(checked.state)
    if not flags.enabled(_FLAGS[checked.kind]):
        flags.note_refusal()
        abort(503, description=_switched_off(checked.kind))  # its page is off: its files too
    db = db_session()
    if checked.kind is FileKind.STATEMENT:
        found = statements.for_download(db, checked.public_id, current_user, clock.now())
        gone = LinkState.EXPIRED  # its file was removed after the retention period
    elif checked.kind is FileKind.DISPUTE_ATTACHMENT:
        found = disputes.attachment_for_download(db, checked.public_id)
        gone = LinkState.INVALID  # no longer the user's to see
    else:
        found = documents.for_download(db, checked.public_id)
        gone = LinkState.INVALID  # no longer the user's to see (documents are kept)
    if found is None:
        return _refused(gone)
    store = current_runtime().store
    try:
        stream = store.open(found.key)
    except StorageError:
        return _refused(LinkState.EXPIRED)
    audit.record_for(db, current_user, found.event, request=request_info(), **found.properties)
    response = send_file(
        stream,
        mimetype=found.content_type,
        as_attachment=True,
        download_name=found.filename,
        max_age=0,
    )
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
