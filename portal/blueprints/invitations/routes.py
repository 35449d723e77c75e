"""Accepting an invitation: the link mailed by `/portal/users` (public: nobody is signed in).

The invitee chooses a password (the password policy and forms of sign-in), is signed in half-way
and goes through two-step enrolment (`/mfa/setup`), which ends on the dashboard."""

from __future__ import annotations

from flask import Blueprint, redirect, request, session, url_for
from werkzeug.wrappers import Response

from portal import clock
from portal.blueprints.auth.passwords import explain
from portal.blueprints.auth.routes import IP_LIMIT
from portal.blueprints.users.forms import AcceptForm
from portal.extensions import db_session, limiter, password_hasher, settings
from portal.services import auth, credentials, users
from portal.services.users import InvitationState
from portal.web import SESSION_TOKEN_KEY, render, request_info, session_policy

bp = Blueprint("invitations", __name__, url_prefix="/invitations")
PAGE = "invitations/accept.html"
REFUSED_STATUS = {InvitationState.INVALID: 404}  # expired, used, revoked: gone (410)


@bp.route("/<token>", methods=["GET", "POST"])
@limiter.limit(IP_LIMIT, methods=["POST"])
def accept(token: str) -> Response:
    db = db_session()
    config = settings()
    check = users.check_invitation(db, token, keys=config.keyring, now=clock.now())
    if check.state is not InvitationState.OK or check.user is None:
        status = REFUSED_STATUS.get(check.state, 410)
        return render(PAGE, {"form": None, "state": check.state.value}, status=status)
    user = check.user
    form = AcceptForm()
    context = {"form": form, "state": check.state.value, "invitee": user}
    if not form.validate_on_submit():
        return render(PAGE, context, status=422 if request.method == "POST" else 200)
    password = form.new_password.data or ""
    problem = credentials.new_password_problem(user, password, form.confirm_password.data or "")
    if problem is not None:
        explain(form, problem)
        return render(PAGE, context, status=422)
    now = clock.now()
    accepted = users.accept_invitation(
        db,
        user,
        form.name.data or "",
        password,
        ph=password_hasher(),
        keys=config.keyring,
        now=now,
        request=request_info(),
    )
    if accepted is not InvitationState.OK:  # accepted, revoked or re-sent since the check
        return render(PAGE, {"form": None, "state": accepted.value}, status=410)
    signed = auth.start_session(db, user, policy=session_policy(), now=now, request=request_info())
    session.clear()  # whoever was signed in here before, this is the invitee's browser now
    session[SESSION_TOKEN_KEY] = signed
    return redirect(url_for("auth.mfa_setup"))
