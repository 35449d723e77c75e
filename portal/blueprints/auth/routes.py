"""Sign-in (password, then a TOTP or recovery code), MFA enrolment and sign-out."""

from __future__ import annotations

import hashlib

from argon2 import PasswordHasher
from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import login_required
from werkzeug.wrappers import Response

from portal import clock
from portal.blueprints.auth.forms import CodeForm, ForgotPasswordForm, LoginForm, NewPasswordForm
from portal.blueprints.auth.passwords import explain
from portal.extensions import db_session, limiter, send_later, settings
from portal.models import UserSession
from portal.services import audit, auth, credentials
from portal.services import mfa as totp
from portal.services.passwords import hasher
from portal.web import (
    SESSION_TOKEN_KEY,
    is_htmx,
    public_link,
    request_info,
    safe_next,
    session_policy,
)

bp = Blueprint("auth", __name__)

NEXT_KEY = "next"
# Per client address, and per account, on every step that takes a secret.
IP_LIMIT = "10 per minute;60 per hour"
ACCOUNT_LIMIT = "10 per minute"


def _login_account_key() -> str:
    return "login:" + auth.normalize_email(request.form.get("email", ""))


def _pending_account_key() -> str:
    pending = g.get("pending_session")
    return f"mfa:{pending.user_id}" if pending is not None else "mfa:none"


def _message(outcome: auth.SignInOutcome) -> str:
    if outcome is auth.SignInOutcome.LOCKED:
        return str(
            ngettext(
                "This account is locked after too many failed attempts. "
                "Try again in %(num)d minute.",
                "This account is locked after too many failed attempts. "
                "Try again in %(num)d minutes.",
                settings().lockout_minutes,
            )
        )
    if outcome is auth.SignInOutcome.DISABLED:
        return str(_("This account is disabled. Contact your company's portal administrator."))
    return str(_("Incorrect email or password."))


def _unknown_email_locked(email: str) -> bool:
    """Count failures for addresses without an account the way accounts count them, so the
    lockout message cannot tell which addresses exist."""
    config = settings()
    key = "unknown-login:" + hashlib.sha256(auth.normalize_email(email).encode()).hexdigest()
    window = config.lockout_minutes * 60
    return limiter.storage.incr(key, window) >= config.lockout_threshold


def _password_hasher() -> PasswordHasher:
    config = settings()
    return hasher(config.argon2_time_cost, config.argon2_memory_cost)


def _pending() -> UserSession:
    pending: UserSession | None = g.get("pending_session")
    if pending is None:
        abort(redirect(url_for("auth.login")))
    return pending


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
@limiter.limit(ACCOUNT_LIMIT, methods=["POST"], key_func=_login_account_key)
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
        outcome = result.outcome
        if result.user is None and _unknown_email_locked(form.email.data or ""):
            outcome = auth.SignInOutcome.LOCKED  # look exactly like a real account would
        return render_template("auth/login.html", form=form, error=_message(outcome)), 401
    token = auth.start_session(
        db, result.user, policy=session_policy(), now=now, request=request_info()
    )
    db.commit()
    session.clear()  # a fresh cookie: nothing from before sign-in carries over
    session[SESSION_TOKEN_KEY] = token
    session[NEXT_KEY] = safe_next(form.next.data) or ""
    if not result.user.mfa_enrolled:
        return redirect(url_for("auth.mfa_setup"))
    return redirect(url_for("auth.mfa"))


def _finish_sign_in(pending: UserSession) -> str:
    """Both factors passed: a new session id replaces the half-signed-in one."""
    token = auth.promote_session(
        db_session(),
        session[SESSION_TOKEN_KEY],
        pending.user,
        policy=session_policy(),
        now=clock.now(),
        request=request_info(),
    )
    target = safe_next(session.pop(NEXT_KEY, "")) or url_for("dashboard.index")
    session[SESSION_TOKEN_KEY] = token
    return target


@bp.route("/login/mfa", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
@limiter.limit(ACCOUNT_LIMIT, methods=["POST"], key_func=_pending_account_key)
def mfa() -> Response | str | tuple[str, int]:
    pending = _pending()
    if not pending.user.mfa_enrolled:
        return redirect(url_for("auth.mfa_setup"))
    form = CodeForm()
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render_template("auth/mfa.html", form=form, error=None), status
    db = db_session()
    result = auth.check_second_factor(
        db,
        pending.user,
        form.code.data or "",
        secret_key=settings().secret_key,
        policy=session_policy(),
        now=clock.now(),
        request=request_info(),
    )
    if result.outcome is not auth.SignInOutcome.OK:
        db.commit()
        form.code.data = ""
        error = (
            _message(result.outcome)
            if result.outcome is auth.SignInOutcome.LOCKED
            else _("That code didn't work. Check your authenticator app and try again.")
        )
        return render_template("auth/mfa.html", form=form, error=error), 401
    target = _finish_sign_in(pending)
    db.commit()
    return redirect(target)


@bp.route("/mfa/setup", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
@limiter.limit(ACCOUNT_LIMIT, methods=["POST"], key_func=_pending_account_key)
def mfa_setup() -> Response | str | tuple[str, int]:
    pending = _pending()
    user = pending.user
    if user.mfa_enrolled:
        return redirect(url_for("auth.mfa"))
    db = db_session()
    config = settings()
    secret = totp.start_enrolment(user, config.secret_key)
    db.commit()
    form = CodeForm()
    uri = totp.provisioning_uri(secret, user.email)
    page = {"form": form, "secret": secret, "qr": totp.qr_svg(uri), "error": None}
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render_template("auth/mfa_setup.html", **page), status
    now = clock.now()
    if not totp.verify_totp(db, user, form.code.data or "", secret_key=config.secret_key, now=now):
        form.code.data = ""
        page["error"] = _("That code didn't work. Check your authenticator app and try again.")
        return render_template("auth/mfa_setup.html", **page), 422
    totp.confirm_enrolment(user, now)
    codes = totp.issue_recovery_codes(db, user, secret_key=config.secret_key)
    audit.record_for(
        db,
        user,
        "Portal.MfaEnrolled",
        request=request_info(),
        customer_id=user.company.public_id,
    )
    target = _finish_sign_in(pending)
    db.commit()
    return render_template("auth/recovery_codes.html", codes=codes, target=target)


def _forgot_account_key() -> str:
    return "forgot:" + auth.normalize_email(request.form.get("email", ""))


@bp.route("/password/forgot", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
@limiter.limit("5 per hour", methods=["POST"], key_func=_forgot_account_key)
def forgot_password() -> Response | str | tuple[str, int]:
    form = ForgotPasswordForm()
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render_template("auth/forgot_password.html", form=form), status
    db = db_session()
    email = form.email.data or ""
    user = auth.find_user_by_email(db, email)
    if user is not None and user.is_active:
        config = settings()
        token = credentials.reset_token(user, secret_key=config.secret_key, now=clock.now())
        link = public_link(url_for("auth.reset_password", token=token))  # never the Host header
        # Sent by a job after the commit: the answer takes as long for a known address as for
        # an unknown one, so its timing does not tell which addresses have accounts.
        send_later(
            db,
            user.email,
            _("Reset your Billing Portal password"),
            render_template("mail/password_reset.txt", user=user, link=link),
        )
        credentials.note_reset_requested(db, user, request_info())
        db.commit()
    # The same answer whether or not the address has an account.
    flash(
        _(
            "If %(email)s has an account, we've sent it a link to choose a new password. "
            "The link works once, within one hour.",
            email=email,
        ),
        "info",
    )
    return redirect(url_for("auth.login"))


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
def reset_password(token: str) -> Response | str | tuple[str, int]:
    db = db_session()
    config = settings()
    check = credentials.check_reset_token(db, token, secret_key=config.secret_key, now=clock.now())
    if check.state is not credentials.ResetState.OK or check.user is None:
        return render_template("auth/reset_password.html", form=None, state=check.state), 400
    user = check.user
    form = NewPasswordForm()
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render_template("auth/reset_password.html", form=form, state=check.state), status
    problem = credentials.new_password_problem(
        user, form.new_password.data or "", form.confirm_password.data or ""
    )
    if problem is not None:
        explain(form, problem)
        return render_template("auth/reset_password.html", form=form, state=check.state), 422
    credentials.complete_reset(
        db,
        user,
        form.new_password.data or "",
        ph=_password_hasher(),
        now=clock.now(),
        request=request_info(),
    )
    db.commit()
    session.clear()
    flash(_("Your password was changed. Sign in with your new password."), "info")
    return redirect(url_for("auth.login"))


@bp.post("/session/extend")
@login_required
def extend_session() -> Response | tuple[str, int]:
    """ "Stay signed in": counts as activity. htmx gets 204; a plain form goes back."""
    db = db_session()
    auth.touch_session(db, g.user_session, clock.now(), force=True)
    db.commit()
    if is_htmx():
        return "", 204
    return redirect(safe_next(request.form.get("next")) or url_for("dashboard.index"))


@bp.post("/logout")
def logout() -> Response:
    token = session.get(SESSION_TOKEN_KEY)
    if token:
        db = db_session()
        auth.sign_out(db, token, g.get("user"), now=clock.now(), request=request_info())
        db.commit()
    session.clear()
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))
