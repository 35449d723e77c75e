"""Company users (customer.admin only): the list, invitations, and each user's role, access,
sessions and second factor. Anyone else gets 404, as for a page that does not exist."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, url_for
from flask import request as http_request
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from portal import clock
from portal import security_alerts as alerts
from portal.blueprints.users.forms import AccessForm, InviteForm
from portal.extensions import db_session, limiter, login_manager
from portal.models import PortalUser, UserStatus
from portal.runtime import SEND_INVITATION, current_runtime
from portal.services import users
from portal.services.users import INVITATION_LIFETIME, Refusal
from portal.web import go, or_404, render, request_info

bp = Blueprint("users", __name__, url_prefix="/portal/users")
INVITE_LIMIT = "20 per hour;100 per day"

# The confirm-first actions: the page's heading, what it says happens, the button.
ACTIONS = ("deactivate", "reactivate", "reset-mfa", "end-sessions")


@bp.before_request
def _admins_only() -> Response | None:
    if g.get("user") is None:
        response: Response = login_manager.unauthorized()
        return response
    if not g.user.is_admin:
        abort(404)
    return None


def _refusal_message(refusal: Refusal, email: str = "") -> str:
    messages = {
        Refusal.LAST_ADMIN: _(
            "This is the company's only active administrator. Make another user an "
            "administrator first."
        ),
        Refusal.ADDRESS_IN_COMPANY: _(
            "%(email)s already has an account in your company: find it in the list below.",
            email=email,
        ),
        Refusal.ADDRESS_UNAVAILABLE: _(
            "This address can't be invited. Ask the person for another work address, or "
            "contact support."
        ),
        Refusal.NOT_INVITED: _("This user has accepted their invitation already."),
        Refusal.DEACTIVATED: _(
            "This user is deactivated. Reactivate them to send a new invitation."
        ),
        Refusal.NOT_DEACTIVATED: _("This user is not deactivated: there is nothing to reactivate."),
    }
    return str(messages[refusal])


def _index(form: InviteForm | None = None, status: int = 200) -> Response:
    db = db_session()
    accounts = users.accounts(db)
    context: dict[str, Any] = {
        "rows": users.company_users(db),
        "form": form or InviteForm(account_rows=accounts),
        "lifetime": INVITATION_LIFETIME,
    }
    return render("users/index.html", context, status=status)


@bp.get("")
def index() -> Response:
    return _index()


def _invite_key() -> str:
    return f"invite:{current_user.id}"


@bp.post("")
@limiter.limit(INVITE_LIMIT, key_func=_invite_key)
def invite() -> Response:
    db = db_session()
    form = InviteForm(account_rows=users.accounts(db))
    if not form.validate_on_submit():
        return _index(form, status=422)
    user, refusal = users.invite(
        db,
        current_user,
        form.email.data or "",
        form.chosen_role,
        form.account_ids,
        now=clock.now(),
        request=request_info(),
    )
    if refusal is not None or user is None:
        form.email.errors = [
            *form.email.errors,
            _refusal_message(refusal or Refusal.ADDRESS_UNAVAILABLE, form.email.data or ""),
        ]
        return _index(form, status=422)
    _send(user)
    flash(_("Invitation sent to %(email)s.", email=user.email), "info")
    return go(url_for("users.show", public_id=user.public_id))


def _send(user: PortalUser) -> None:
    """The invitation mail, in the inviter's language, handed to the outbox with the change."""
    locale = str(get_locale() or current_user.locale or current_user.company.locale or "en")
    current_runtime().hand_off(db_session(), SEND_INVITATION, user.id, locale)


def _target(public_id: str) -> PortalUser:
    return or_404(users.find(db_session(), public_id), _("User not found."))


def _show(target: PortalUser, form: AccessForm | None = None, status: int = 200) -> Response:
    accounts = users.accounts(db_session())
    if form is None:
        form = AccessForm(account_rows=accounts)
        form.role.data = target.role.value
        held = {grant.billing_account_id for grant in target.grants}
        form.accounts.data = [a.public_id for a in accounts if a.id in held]
    context = {
        "target": target,
        "form": form,
        "is_self": target.id == current_user.id,
        "lifetime": INVITATION_LIFETIME,
    }
    return render("users/show.html", context, status=status)


@bp.get("/<public_id>")
def show(public_id: str) -> Response:
    return _show(_target(public_id))


@bp.post("/<public_id>/access")
def change_access(public_id: str) -> Response:
    target = _target(public_id)
    db = db_session()
    form = AccessForm(account_rows=users.accounts(db))
    if not form.validate_on_submit():
        return _show(target, form, status=422)
    refusal = users.change_access(
        db,
        current_user,
        target,
        form.chosen_role,
        form.account_ids,
        request=request_info(),
        now=clock.now(),
    )
    if refusal is not None:
        form.role.errors = [*form.role.errors, _refusal_message(refusal)]
        return _show(target, form, status=409)
    flash(_("Role and access saved for %(email)s.", email=target.email), "info")
    return go(url_for("users.show", public_id=target.public_id))


@bp.post("/<public_id>/resend")
@limiter.limit(INVITE_LIMIT, key_func=_invite_key)
def resend(public_id: str) -> Response:
    target = _target(public_id)
    refusal = users.resend_invitation(
        db_session(), current_user, target, now=clock.now(), request=request_info()
    )
    if refusal is not None:
        flash(_refusal_message(refusal), "warning")
    else:
        _send(target)
        flash(
            _(
                "A new invitation was sent to %(email)s. The earlier link no longer works.",
                email=target.email,
            ),
            "info",
        )
    return go(url_for("users.show", public_id=target.public_id))


def _confirm_copy(action: str, target: PortalUser) -> dict[str, str]:
    email = target.email
    copy = {
        "deactivate": {
            "title": _("Deactivate %(email)s?", email=email),
            "text": _(
                "They are signed out everywhere at once and can't sign in until an "
                "administrator reactivates them. Their history stays."
            ),
            "button": _("Deactivate user"),
        },
        "reactivate": {
            "title": _("Reactivate %(email)s?", email=email),
            "text": _(
                "They can sign in again with their password and two-step verification. "
                "Someone who never accepted their invitation needs a new one."
            ),
            "button": _("Reactivate user"),
        },
        "reset-mfa": {
            "title": _("Reset two-step verification for %(email)s?", email=email),
            "text": _(
                "Their authenticator and recovery codes stop working and they are signed out "
                "everywhere. They set up two-step verification again at their next sign-in."
            ),
            "button": _("Reset two-step verification"),
        },
        "end-sessions": {
            "title": _("Sign %(email)s out everywhere?", email=email),
            "text": _("Every session they have open ends now. They can sign in again."),
            "button": _("Sign out everywhere"),
        },
    }
    return copy[action]


@bp.get("/<public_id>/<action>")
def confirm(public_id: str, action: str) -> Response:
    if action not in ACTIONS:
        abort(404)
    target = _target(public_id)
    context = {"target": target, "action": action, "copy": _confirm_copy(action, target)}
    return render("users/confirm.html", context)


def _not_reactivating() -> bool:
    """Reactivating an invitee mails them a new invitation: limited like the other mails."""
    return (http_request.view_args or {}).get("action") != "reactivate"


@bp.post("/<public_id>/<action>")
@limiter.limit(INVITE_LIMIT, key_func=_invite_key, exempt_when=_not_reactivating)
def act(public_id: str, action: str) -> Response:
    if action not in ACTIONS:
        abort(404)
    target = _target(public_id)
    db, now, request = db_session(), clock.now(), request_info()
    if action == "deactivate":
        refusal = users.deactivate(db, current_user, target, now=now, request=request)
        if refusal is not None:
            context = {
                "target": target,
                "action": action,
                "copy": _confirm_copy(action, target),
                "error": _refusal_message(refusal),
            }
            return render("users/confirm.html", context, status=409)
        message = _("%(email)s was deactivated and signed out everywhere.", email=target.email)
    elif action == "reactivate":
        refusal = users.reactivate(db, current_user, target, now=now, request=request)
        if refusal is not None:
            flash(_refusal_message(refusal), "warning")
            return go(url_for("users.show", public_id=target.public_id))
        if target.status is UserStatus.INVITED:  # never accepted: a new invitation
            _send(target)
            message = _("%(email)s was reactivated and sent a new invitation.", email=target.email)
        else:
            message = _("%(email)s was reactivated.", email=target.email)
    elif action == "reset-mfa":
        users.reset_user_mfa(db, current_user, target, now=now, request=request)
        alerts.alert(current_runtime(), db, target, alerts.Kind.MFA_RESET, request=request)
        message = _(
            "Two-step verification was reset for %(email)s. They set it up again at their "
            "next sign-in.",
            email=target.email,
        )
    else:
        users.end_sessions(db, current_user, target, now=now, request=request)
        message = _("%(email)s was signed out everywhere.", email=target.email)
    flash(message, "info")
    if target.id == current_user.id and action in {"deactivate", "reset-mfa", "end-sessions"}:
        return go(url_for("auth.login"))
    return go(url_for("users.show", public_id=target.public_id))
