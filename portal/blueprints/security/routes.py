"""The signed-in user's own security: two-step status and active sessions."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock
from portal import security_alerts as alerts
from portal.blueprints.auth.forms import ChangePasswordForm, ConfirmPasswordForm
from portal.blueprints.auth.passwords import current_password_ok, explain
from portal.blueprints.security.forms import ApiTokenForm
from portal.extensions import db_session, limiter, password_hasher, settings
from portal.models import TokenScope
from portal.runtime import current_runtime
from portal.services import api_tokens, audit, auth, credentials, mfa
from portal.web import go, is_htmx, or_404, render, request_info, session_policy

bp = Blueprint("security", __name__, url_prefix="/portal/security")


TOKENS = {"api-tokens": "security/_api_tokens.html"}


def _page(
    password_form: ChangePasswordForm | None = None,
    codes_form: ConfirmPasswordForm | None = None,
    status: int = 200,
    *,
    token_form: ApiTokenForm | None = None,
    new_token: api_tokens.Issued | None = None,
    news: str | None = None,
) -> Response:
    db = db_session()
    now = clock.now()
    sessions = auth.active_sessions(db, current_user, policy=session_policy(), now=now)
    context = {
        "tokens": api_tokens.personal_tokens(db, current_user),
        "token_form": token_form or ApiTokenForm(prefix="tk", formdata=None),
        "new_token": new_token,  # the raw token: in this one answer, never stored
        "news": news,
        "now": now,
        "sessions": sessions,
        "current_session": g.user_session,
        "describe": auth.describe_device,
        "recovery_left": mfa.remaining_recovery_codes(db, current_user),
        "password_form": password_form or ChangePasswordForm(prefix="pw"),
        "codes_form": codes_form or ConfirmPasswordForm(prefix="rc"),
    }
    return render("security/show.html", context, fragments=TOKENS, status=status)


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
    alerts.alert(
        current_runtime(), db, current_user, alerts.Kind.PASSWORD_CHANGED, request=request_info()
    )
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
    # They pass the second factor without the authenticator: the owner hears of them.
    alerts.alert(
        current_runtime(),
        db,
        current_user,
        alerts.Kind.RECOVERY_CODES_ISSUED,
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
    # Tokens from POST /api/portal/login are sign-ins too; personal tokens are revoked above.
    api_tokens.revoke_login_tokens(db, current_user, now=clock.now())
    flash(
        ngettext(
            "Signed out of %(num)d other session.", "Signed out of %(num)d other sessions.", ended
        ),
        "info",
    )
    return redirect(url_for("security.show"))


@bp.post("/tokens")
@login_required
@limiter.limit("20 per hour", key_func=lambda: f"apitokens:{current_user.id}")
def create_token() -> Response:
    """A personal API token: shown once, in this answer (the page, or the section for htmx)."""
    form = ApiTokenForm(prefix="tk")
    if not form.validate_on_submit():
        return _page(token_form=form, status=422)
    db = db_session()
    issued = api_tokens.create_personal(
        db,
        current_user,
        name=form.name.data or "",
        scope=TokenScope(form.scope.data),
        days=form.expires_in.data,
        now=clock.now(),
        request=request_info(),
    )
    alerts.alert(
        current_runtime(), db, current_user, alerts.Kind.API_TOKEN_CREATED, request=request_info()
    )
    return _page(new_token=issued, status=201)


@bp.post("/tokens/<public_id>/revoke")
@login_required
def revoke_token(public_id: str) -> Response:
    db = db_session()
    token = or_404(
        api_tokens.find_personal(db, current_user, public_id), _("That token was not found.")
    )
    api_tokens.revoke_personal(db, current_user, token, now=clock.now(), request=request_info())
    news = _("The token “%(name)s” was revoked. It no longer works.", name=token.name)
    if is_htmx():
        return _page(news=news)
    flash(news, "info")
    return go(url_for("security.show"))
