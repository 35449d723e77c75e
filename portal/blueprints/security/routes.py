"""The signed-in user's own security: two-step status and active sessions."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock
from portal.extensions import db_session
from portal.services import auth, mfa
from portal.web import request_info, session_policy

bp = Blueprint("security", __name__, url_prefix="/portal/security")


@bp.get("")
@login_required
def show() -> str:
    db = db_session()
    sessions = auth.active_sessions(db, current_user, policy=session_policy(), now=clock.now())
    return render_template(
        "security/show.html",
        sessions=sessions,
        current_session=g.user_session,
        describe=auth.describe_device,
        recovery_left=mfa.remaining_recovery_codes(db, current_user),
    )


@bp.post("/sessions/<public_id>/end")
@login_required
def end(public_id: str) -> Response:
    if public_id == g.user_session.public_id:
        abort(400, description=_("Use Sign out to end this session."))
    db = db_session()
    if not auth.end_user_session(
        db, current_user, public_id, now=clock.now(), request=request_info()
    ):
        abort(404)
    db.commit()
    flash(_("That session was signed out."), "info")
    return redirect(url_for("security.show"))


@bp.post("/sessions/end-others")
@login_required
def end_others() -> Response:
    db = db_session()
    ended = auth.end_other_sessions(
        db, current_user, g.user_session, now=clock.now(), request=request_info()
    )
    db.commit()
    flash(_("Signed out of %(count)d other sessions.", count=ended), "info")
    return redirect(url_for("security.show"))
