"""The signed-in user's own profile, and changing their sign-in e-mail address."""

from __future__ import annotations

from flask import Blueprint, flash, g, url_for
from flask_babel import force_locale, get_locale
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock
from portal import security_alerts as alerts
from portal.blueprints.auth.passwords import current_password_ok
from portal.blueprints.profile.forms import EmailChangeForm, ProfileForm
from portal.extensions import db_session, limiter, settings
from portal.models import PortalUser
from portal.runtime import (
    SEND_EMAIL_CHANGE_LINK,
    SEND_EMAIL_CHANGE_NOTICE,
    SEND_EMAIL_CHANGED_NOTICE,
    current_runtime,
)
from portal.services import auth, profile
from portal.services.profile import EmailLinkState
from portal.web import go, render, request_info

bp = Blueprint("profile", __name__, url_prefix="/portal/profile")


def _profile_form(**kwargs: object) -> ProfileForm:
    user = current_user
    form = ProfileForm(prefix="p", region=profile.region_of(user.company.locale), **kwargs)
    if not form.is_submitted():
        form.name.data = user.name
        form.phone.data = profile.display_phone(user.phone)
        form.job_title.data = user.job_title or ""
        form.locale.data = _shown_language(user)
        form.timezone.data = user.timezone or "UTC"
        form.number_locale.data = user.number_locale or ""
    return form


def _shown_language(user: PortalUser) -> str:
    """The language the form shows: the profile's, else the one the portal speaks to them now."""
    return (user.locale or str(get_locale() or "en")).split("_")[0]


def _page(
    profile_form: ProfileForm | None = None,
    email_form: EmailChangeForm | None = None,
    status: int = 200,
) -> Response:
    context = {
        "profile_form": profile_form or _profile_form(),
        "email_form": email_form or EmailChangeForm(prefix="em"),
    }
    return render("profile/show.html", context, status=status)


@bp.get("")
@login_required
def show() -> Response:
    return _page()


@bp.post("")
@login_required
def update() -> Response:
    form = _profile_form()
    if not form.validate_on_submit():
        return _page(profile_form=form, status=422)
    values = form.values()
    if current_user.locale is None and values["locale"] == _shown_language(current_user):
        values["locale"] = None  # the language shown by default was kept: still not chosen
    profile.update_profile(db_session(), current_user, values, request=request_info())
    with force_locale(_shown_language(current_user)):  # in the language just chosen
        flash(_("Profile updated successfully"), "info")
    return go(url_for("profile.show"))


@bp.post("/email")
@login_required
@limiter.limit("5 per hour", key_func=lambda: f"emailchange:{current_user.id}")
def request_email_change() -> Response:
    form = EmailChangeForm(prefix="em")
    if not form.validate_on_submit():
        return _page(email_form=form, status=422)
    if not current_password_ok(form.current_password):
        return _page(email_form=form, status=422)
    new_email = auth.normalize_email(form.new_email.data or "")
    if new_email == current_user.email:
        form.new_email.errors = [_("That is already your email address.")]
        return _page(email_form=form, status=422)
    db = db_session()
    profile.request_email_change(db, current_user, new_email, request=request_info())
    # Whether the new address has an account of its own is not said here: confirming refuses it.
    runtime = current_runtime()
    runtime.hand_off(db, SEND_EMAIL_CHANGE_LINK, current_user.id, current_user.email, new_email)
    runtime.hand_off(db, SEND_EMAIL_CHANGE_NOTICE, current_user.id, current_user.email)
    flash(
        _(
            "We've sent a confirmation link to %(email)s. Your email changes when you open it "
            "(within 24 hours).",
            email=new_email,
        ),
        "info",
    )
    return go(url_for("profile.show"))


def _refused(state: EmailLinkState) -> Response:
    status = {
        EmailLinkState.EXPIRED: 410,
        EmailLinkState.USED: 410,
        EmailLinkState.TAKEN: 409,
    }.get(state, 404)
    return render("profile/email_refused.html", {"state": state.value}, status=status)


@bp.get("/email/<token>")
@login_required
def confirm_email(token: str) -> Response:
    db = db_session()
    checked = profile.check_email_change(
        db, token, current_user, keys=settings().keyring, now=clock.now()
    )
    if checked.state is not EmailLinkState.OK or checked.new_email is None:
        return _refused(checked.state)
    info = request_info()
    old_email = current_user.email
    state = profile.change_email(
        db, current_user, checked.new_email, old_email=old_email, request=info
    )
    if state is not EmailLinkState.OK:  # changed or taken since the link was checked
        return _refused(state)
    current_runtime().hand_off(
        db, SEND_EMAIL_CHANGED_NOTICE, current_user.id, old_email, current_user.email
    )
    auth.end_other_sessions(db, current_user, g.user_session, now=clock.now(), request=info)
    # Told to the address the account moved away from: its owner, if this wasn't them.
    alerts.alert(
        current_runtime(), db, current_user, alerts.Kind.EMAIL_CHANGED, request=info, to=old_email
    )
    flash(_("Your email address is now %(email)s.", email=checked.new_email), "info")
    return go(url_for("profile.show"))
