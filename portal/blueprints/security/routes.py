"""The signed-in user's own security: two-step status and active sessions."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock
from portal.blueprints.auth.forms import ChangePasswordForm, ConfirmPasswordForm
from portal.blueprints.auth.passwords import current_password_ok, explain
from portal.extensions import db_session, limiter, password_hasher, settings
from portal.services import audit, auth, credentials, mfa
from portal.web import render, request_info, session_policy

bp = Blueprint("security", __name__, url_prefix="/portal/security")


def _page(
    password_form: ChangePasswordForm | None = None,
    codes_form: ConfirmPasswordForm | None = None,
    status: int = 200,
) -> Response:
    db = db_session()
    sessions = auth.active_sessions(db, current_user, policy=session_policy(), now=clock.now())
    context = {
        "sessions": sessions,
        "current_session": g.user_session,
        "describe": auth.describe_device,
        "recovery_left": mfa.remaining_recovery_codes(db, current_user),
        "password_form": password_form or ChangePasswordForm(prefix="pw"),
        "codes_form": codes_form or ConfirmPasswordForm(prefix="rc"),
    }
    return render("security/show.html", context, status=status)


@bp.get("")
@login_required
def show() -> Response:
    return _page()


@bp.post("/password")
@login_required
@limiter.limit("10 per hour", key_func=lambda: f"pwchange:{current_user.id}")
def change_password() -> Response:
    form = ChangePasswordForm(prefix="pw")
    if not form.validate_on_submit():
        return _page(password_form=form, status=422)
    db = db_session()
    problem = credentials.change_password(
        db,
        current_user,
        current=form.current_password.data or "",
        new=form.new_password.data or "",
        confirm=form.confirm_password.data or "",
        ph=password_hasher(),
        keys=settings().keyring,
        now=clock.now(),
        keep_session_id=g.user_session.id,
        request=request_info(),
    )
    if problem is not None:
        explain(form, problem)
        return _page(password_form=form, status=422)
    flash(_("Password changed. Your other sessions were signed out."), "info")
    return redirect(url_for("security.show"))


@bp.post("/recovery-codes")
@login_required
@limiter.limit("10 per hour", key_func=lambda: f"codes:{current_user.id}")
def recovery_codes() -> Response:
    form = ConfirmPasswordForm(prefix="rc")
    if not form.validate_on_submit():
        return _page(codes_form=form, status=422)
    if not current_password_ok(form.current_password):
        return _page(codes_form=form, status=422)
    db = db_session()
    codes = mfa.issue_recovery_codes(db, current_user, keys=settings().keyring)
    audit.record_for(
        db,
        current_user,
        "Portal.RecoveryCodesIssued",
        request=request_info(),
    )
    return render("auth/recovery_codes.html", {"codes": codes, "target": url_for("security.show")})


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
    flash(_("That session was signed out."), "info")
    return redirect(url_for("security.show"))


@bp.post("/sessions/end-others")
@login_required
def end_others() -> Response:
    db = db_session()
    ended = auth.end_other_sessions(
        db, current_user, g.user_session, now=clock.now(), request=request_info()
    )
    flash(
        ngettext(
            "Signed out of %(num)d other session.", "Signed out of %(num)d other sessions.", ended
        ),
        "info",
    )
    return redirect(url_for("security.show"))
