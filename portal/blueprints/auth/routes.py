"""Sign-in (password, then a TOTP or recovery code), MFA enrolment and sign-out."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, abort, flash, g, redirect, request, session, url_for
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _
from flask_login import login_required
from sqlalchemy.orm import Session as DbSession
from werkzeug.wrappers import Response

from portal import clock
from portal import security_alerts as alerts
from portal.blueprints.auth.forms import CodeForm, ForgotPasswordForm, LoginForm, NewPasswordForm
from portal.blueprints.auth.passwords import explain
from portal.db import retry_on_conflict
from portal.extensions import db_session, limiter, password_hasher, settings
from portal.models import UserSession
from portal.runtime import SEND_PASSWORD_RESET, current_runtime
from portal.services import audit, auth, credentials
from portal.services import mfa as totp
from portal.web import (
    SESSION_TOKEN_KEY,
    done,
    render,
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


def sign_in_message(outcome: auth.SignInOutcome) -> str:
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


def _pending() -> UserSession:
    pending: UserSession | None = g.get("pending_session")
    if pending is None:
        abort(redirect(url_for("auth.login")))
    return pending


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
@limiter.limit(ACCOUNT_LIMIT, methods=["POST"], key_func=_login_account_key)
def login() -> Response:
    if g.get("user") is not None:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next")) or ""
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render("auth/login.html", {"form": form, "error": None}, status=status)
    db = db_session()
    result, token = retry_on_conflict(
        db, lambda: _check_password(db, form.email.data or "", form.password.data or "")
    )
    # At the burst threshold every address (with an account or not) hands off the same job.
    alerts.failed_attempt(
        current_runtime(), db, form.email.data or "", result.failures, request=request_info()
    )
    if token is None or result.user is None:
        form.password.data = ""
        error = sign_in_message(result.outcome)
        return render("auth/login.html", {"form": form, "error": error}, status=401)
    session.clear()  # a fresh cookie: nothing from before sign-in carries over
    session[SESSION_TOKEN_KEY] = token
    session[NEXT_KEY] = safe_next(form.next.data) or ""
    if not result.user.mfa_enrolled:
        return redirect(url_for("auth.mfa_setup"))
    return redirect(url_for("auth.mfa"))


def _check_password(
    db: DbSession, email: str, password: str
) -> tuple[auth.SignInResult, str | None]:
    """One try of the password (run again whole on a stale SQLite snapshot): the result, and
    the half-signed-in session's token when it was right."""
    now = clock.now()
    result = auth.check_password(
        db,
        email,
        password,
        ph=password_hasher(),
        keys=settings().keyring,
        policy=session_policy(),
        now=now,
        request=request_info(),
    )
    token = None
    if result.outcome is auth.SignInOutcome.OK and result.user is not None:
        token = auth.start_session(
            db, result.user, policy=session_policy(), now=now, request=request_info()
        )
    db.flush()  # a conflict shows here, inside the retry; a failure too commits at the edge
    return result, token


def _promote(pending: UserSession) -> str:
    """Both factors passed: a new session id replaces the half-signed-in one (the
    request commits it; `_signed_in` hands the token to the cookie)."""
    return auth.promote_session(
        db_session(),
        session[SESSION_TOKEN_KEY],
        pending.user,
        policy=session_policy(),
        now=clock.now(),
        request=request_info(),
    )


def _signed_in(token: str) -> str:
    """The new session's token goes to the cookie; returns where to go next."""
    target = safe_next(session.pop(NEXT_KEY, "")) or url_for("dashboard.index")
    session[SESSION_TOKEN_KEY] = token
    return target


@bp.route("/login/mfa", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
@limiter.limit(ACCOUNT_LIMIT, methods=["POST"], key_func=_pending_account_key)
def mfa() -> Response:
    pending = _pending()
    if not pending.user.mfa_enrolled:
        return redirect(url_for("auth.mfa_setup"))
    form = CodeForm()
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render("auth/mfa.html", {"form": form, "error": None}, status=status)
    db = db_session()

    def attempt() -> tuple[auth.SignInResult, str | None]:
        result = auth.check_second_factor(
            db,
            pending.user,
            form.code.data or "",
            keys=settings().keyring,
            policy=session_policy(),
            now=clock.now(),
            request=request_info(),
        )
        token = _promote(pending) if result.outcome is auth.SignInOutcome.OK else None
        db.flush()  # a failure is counted and audited too (kept by the edge commit)
        return result, token

    result, token = retry_on_conflict(db, attempt)
    runtime, info = current_runtime(), request_info()
    alerts.failed_attempt(runtime, db, pending.user.email, result.failures, request=info)
    if token is not None:
        alerts.signed_in(runtime, db, pending.user, request=info)
    if token is None:
        form.code.data = ""
        if result.outcome is auth.SignInOutcome.LOCKED:
            error = sign_in_message(result.outcome)
        elif result.secret_unreadable:
            error = _(
                "We can't check codes for this account right now. Contact your company's "
                "portal administrator."
            )
        else:
            error = _("That code didn't work. Check your authenticator app and try again.")
        return render("auth/mfa.html", {"form": form, "error": error}, status=401)
    return redirect(_signed_in(token))


@bp.route("/mfa/setup", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
@limiter.limit(ACCOUNT_LIMIT, methods=["POST"], key_func=_pending_account_key)
def mfa_setup() -> Response:
    pending = _pending()
    user = pending.user
    if user.mfa_enrolled:
        if request.method == "POST":  # another session of the user enrolled meanwhile
            _already_enrolled()
        return redirect(url_for("auth.mfa"))
    db = db_session()
    keys = settings().keyring

    def offer() -> str:
        # This session's own secret, made on its first visit and shown unchanged after that.
        secret, made = totp.pending_secret(pending, keys=keys)
        if made:
            db.flush()
        return secret

    secret = retry_on_conflict(db, offer)
    form = CodeForm()
    uri = totp.provisioning_uri(secret, user.email)
    page = {"form": form, "secret": secret, "qr": totp.qr_svg(uri), "error": None}
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render("auth/mfa_setup.html", page, status=status)
    enrolment, codes, token = retry_on_conflict(
        db, lambda: _enrol(db, pending, form.code.data or "")
    )
    if enrolment is totp.Enrolment.ALREADY_ENROLLED:  # the same, by a hair
        _already_enrolled()
        return redirect(url_for("auth.mfa"))
    if token is None:
        form.code.data = ""
        page["error"] = _("That code didn't work. Check your authenticator app and try again.")
        return render("auth/mfa_setup.html", page, status=422)
    alerts.signed_in(current_runtime(), db, user, request=request_info())
    return render("auth/recovery_codes.html", {"codes": codes, "target": _signed_in(token)})


def _enrol(
    db: DbSession, pending: UserSession, code: str
) -> tuple[totp.Enrolment, list[str], str | None]:
    """One try of the enrolling code: on success the recovery codes and the signed-in token."""
    user, keys, now = pending.user, settings().keyring, clock.now()
    enrolment = totp.confirm_enrolment(db, pending, code, keys=keys, now=now)
    if enrolment is not totp.Enrolment.CONFIRMED:
        return enrolment, [], None
    codes = totp.issue_recovery_codes(db, user, keys=keys)
    audit.record_for(
        db, user, "Portal.MfaEnrolled", request=request_info(), customer_id=user.company.public_id
    )
    auth.second_factor_passed(db, user, keys=keys, now=now)
    token = _promote(pending)
    db.flush()
    return enrolment, codes, token


def _already_enrolled() -> None:
    flash(
        _(
            "Two-step verification is already set up for this account. "
            "Enter a code from that authenticator app."
        ),
        "warning",
    )


def _forgot_account_key() -> str:
    return "forgot:" + auth.normalize_email(request.form.get("email", ""))


@bp.route("/password/forgot", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
@limiter.limit("5 per hour", methods=["POST"], key_func=_forgot_account_key)
def forgot_password() -> Response:
    form = ForgotPasswordForm()
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render("auth/forgot_password.html", {"form": form}, status=status)
    email = form.email.data or ""
    # The very same work for every address: no lookup here, one job handed to the queue after
    # the request's commit. The job finds the account (if any), and only then makes, mails and
    # audits a link. So neither the answer nor its timing tells which addresses have accounts.
    db = db_session()
    current_runtime().hand_off(
        db,
        SEND_PASSWORD_RESET,
        auth.normalize_email(email),
        str(get_locale() or "en"),
        asdict(request_info()),
    )
    # The same answer whether or not the address has an account.
    flash(
        _(
            "If %(email)s has an account, we've sent it a link to choose a new password. "
            "The link works once, within one hour.",
            email=email,
        ),
        "info",
    )
    if current_runtime().work_delayed:  # the queue refused work lately: the mail waits
        flash(
            _(
                "Our e-mail is running late right now: the link may take a few minutes to "
                "arrive. Nothing is lost."
            ),
            "info",
        )
    return redirect(url_for("auth.login"))


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
def reset_password(token: str) -> Response:
    db = db_session()
    config = settings()
    check = credentials.check_reset_token(db, token, keys=config.keyring, now=clock.now())
    if check.state is not credentials.ResetState.OK or check.user is None:
        return render("auth/reset_password.html", {"form": None, "state": check.state}, status=400)
    user = check.user
    form = NewPasswordForm()
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render(
            "auth/reset_password.html", {"form": form, "state": check.state}, status=status
        )
    problem = credentials.new_password_problem(
        user, form.new_password.data or "", form.confirm_password.data or ""
    )
    if problem is not None:
        explain(form, problem)
        return render("auth/reset_password.html", {"form": form, "state": check.state}, status=422)
    credentials.complete_reset(
        db,
        user,
        form.new_password.data or "",
        ph=password_hasher(),
        keys=config.keyring,
        now=clock.now(),
        request=request_info(),
    )
    alerts.alert(current_runtime(), db, user, alerts.Kind.PASSWORD_CHANGED, request=request_info())
    session.clear()
    flash(_("Your password was changed. Sign in with your new password."), "info")
    return redirect(url_for("auth.login"))


@bp.post("/session/extend")
@login_required
def extend_session() -> Response:
    """ "Stay signed in": counts as activity. htmx gets 204; a plain form goes back (web.done)."""
    db = db_session()
    auth.touch_session(db, g.user_session, clock.now(), force=True)
    return done(safe_next(request.form.get("next")) or url_for("dashboard.index"))


@bp.post("/logout")
def logout() -> Response:
    token = session.get(SESSION_TOKEN_KEY)
    if token:
        db = db_session()
        auth.sign_out(db, token, g.get("user"), now=clock.now(), request=request_info())
    session.clear()
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))
