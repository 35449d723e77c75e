"""Sign-in and sign-out."""

from __future__ import annotations

from argon2 import PasswordHasher
from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from portal import clock
from portal.blueprints.auth.forms import LoginForm
from portal.extensions import db_session, settings
from portal.services import auth
from portal.services.passwords import hasher
from portal.web import SESSION_TOKEN_KEY, request_info, safe_next, session_policy

bp = Blueprint("auth", __name__)

_MESSAGES = {
    auth.SignInOutcome.INVALID: lambda: _("Incorrect email or password."),
    auth.SignInOutcome.LOCKED: lambda: _(
        "This account is locked after too many failed attempts. Try again in %(minutes)d minutes.",
        minutes=settings().lockout_minutes,
    ),
    auth.SignInOutcome.DISABLED: lambda: _(
        "This account is disabled. Contact your company's portal administrator."
    ),
}


def _password_hasher() -> PasswordHasher:
    config = settings()
    return hasher(config.argon2_time_cost, config.argon2_memory_cost)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if g.get("user") is not None:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next")) or ""
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render_template("auth/login.html", form=form, error=None), status
    db = db_session()
    now = clock.now()
    result = auth.check_password(
        db,
        form.email.data or "",
        form.password.data or "",
        ph=_password_hasher(),
        policy=session_policy(),
        now=now,
        request=request_info(),
    )
    if result.outcome is not auth.SignInOutcome.OK or result.user is None:
        db.commit()  # the failure count and the audit record must stick
        form.password.data = ""
        return render_template("auth/login.html", form=form, error=_MESSAGES[result.outcome]()), 401
    token = auth.start_session(
        db, result.user, policy=session_policy(), now=now, request=request_info()
    )
    db.commit()
    session.clear()  # a fresh cookie: nothing from before sign-in carries over
    session[SESSION_TOKEN_KEY] = token
    return redirect(safe_next(form.next.data) or url_for("dashboard.index"))


@bp.post("/logout")
def logout() -> Response:
    token = session.get(SESSION_TOKEN_KEY)
    if token:
        auth.end_session(db_session(), token, clock.now())
        db_session().commit()
    session.clear()
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))
