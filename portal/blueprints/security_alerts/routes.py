""" "This wasn't me": the link in a security alert's mail. No sign-in (whoever holds the account
may hold its session too): the signed link is the authority. GET asks to confirm; the POST
ends every session and API token of the user, makes the password unusable and mails a link to
choose a new one (once within minutes: a second POST answers the same and mails nothing new)."""

from __future__ import annotations

import hashlib

from flask import Blueprint, request
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response

from portal import clock
from portal import security_alerts as alerts
from portal.extensions import db_session, limiter, settings
from portal.runtime import current_runtime
from portal.services import notifications
from portal.services import security_alerts as domain
from portal.web import render, request_info

bp = Blueprint("security_alerts", __name__)

_STATUS = {domain.LinkState.EXPIRED: 410, domain.LinkState.INVALID: 404}


def _link_key() -> str:
    token = str((request.view_args or {}).get("token", ""))
    return "not-me:" + hashlib.sha256(token.encode()).hexdigest()[:32]


@bp.route("/security/not-me/<token>", methods=["GET", "POST"])
@limiter.limit("10 per hour", methods=["POST"], key_func=_link_key)
@limiter.limit("30 per hour", methods=["POST"])
def not_me(token: str) -> Response:
    db = db_session()
    check = domain.check_not_me(db, token, keys=settings().keyring, now=clock.now())
    if check.state is not domain.LinkState.OK or check.user is None or check.alert is None:
        status = _STATUS.get(check.state, 404)
        return render("security_alerts/not_me.html", {"state": check.state.value}, status=status)
    form = FlaskForm()
    context = {
        "state": "ask",
        "form": form,
        # The mailbox the link came to, which may not be the account's address any more.
        "email": notifications.masked_email(check.address or check.user.email),
    }
    if request.method == "POST":
        if not form.validate_on_submit():
            context["error"] = _("The form expired. Please press the button again.")
            return render("security_alerts/not_me.html", context, status=400)
        alerts.not_me_done(
            current_runtime(),
            db,
            check.user,
            check.alert,
            request=request_info(),
            restore_email=check.address,
        )
        # An e-mail change's link gave the old address back: the page names that one.
        context["state"], context["email"] = "done", notifications.masked_email(check.user.email)
    return render("security_alerts/not_me.html", context)
