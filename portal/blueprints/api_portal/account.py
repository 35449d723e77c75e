"""The API's own account: sign in for a short-lived token, the profile, notification choices.

`POST /api/portal/login` is the web sign-in (/login, then /login/mfa) in one request, through
the very same services: the same lockout count (a wrong password or code counts toward it; an
unknown address takes the same path and gets the same answer), TOTP replay refusal, the same
audit events (Portal.Login per factor, Portal.AccountLocked, Portal.RecoveryCodeUsed). A recovery
code is accepted in place of the TOTP code, as on /login/mfa (it is then spent). A user who has
not set up two-step verification gets no token: they finish enrolment on the web first.

The profile and the notification preferences use their pages' services and the pages' forms'
validation, so a refusal names the same fields with the same words (422). A read-only token
may GET them; changing them takes the session (with the CSRF header) or a read+pay token.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from flask import g, request, session
from flask_babel import gettext as _
from pydantic import BaseModel, Field
from werkzeug.datastructures import MultiDict

from portal import api, clock, tenancy
from portal import security_alerts as alerts
from portal.api import PORTAL_SECURITY, ProblemDetail, spec
from portal.blueprints.api_portal.routes import bp
from portal.blueprints.auth.routes import ACCOUNT_LIMIT, sign_in_message
from portal.blueprints.auth.routes import IP_LIMIT as SIGN_IN_IP_LIMIT
from portal.blueprints.notifications.forms import PreferencesForm, field_name
from portal.blueprints.profile.forms import ProfileForm
from portal.db import retry_on_conflict
from portal.extensions import db_session, limiter, password_hasher, settings
from portal.models import (
    REMIND_DAYS,
    NotificationChannel,
    NotificationTopic,
    PortalUser,
    TokenKind,
    TokenScope,
)
from portal.runtime import current_runtime
from portal.services import api_tokens, auth, notifications, profile
from portal.web import SESSION_TOKEN_KEY, request_info, session_policy

ACCOUNT_TAGS = ["account"]

# Every /api/portal/ request counts toward its caller's allowance (the token, else the signed-in
# session) and its client address's, across all endpoints. Login has its own (per address).
CALLER_LIMIT = "120 per minute"
ADDRESS_LIMIT = "300 per minute"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def caller_key() -> str:
    """The rate limit's key: the bearer token's hash, else the session's, else the address."""
    header = request.headers.get("Authorization", "")
    scheme, _sep, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return "api-token:" + _digest(value.strip())
    sid = session.get(SESSION_TOKEN_KEY)
    if isinstance(sid, str) and sid:
        return "api-session:" + _digest(sid)
    return "api-addr:" + (request.remote_addr or "")


def address_key() -> str:
    return "api-ip:" + (request.remote_addr or "")


limiter.shared_limit(CALLER_LIMIT, scope="api-portal-caller", key_func=caller_key)(bp)
limiter.shared_limit(ADDRESS_LIMIT, scope="api-portal-address", key_func=address_key)(bp)


# login -------------------------------------------------------------------------------------


class LoginIn(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)
    code: str = Field(
        max_length=64, description="The authenticator app's 6-digit code, or a recovery code."
    )


class LoginOut(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer …`. Shown only here.")
    expires_at: datetime
    scope: TokenScope


def _login_address_key() -> str:
    body = request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    return "api-login:" + auth.normalize_email(email if isinstance(email, str) else "")


class _Refusal(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}
        self.failures = 0  # the failed attempt's count in the address's window (alerts)


def _sign_in(email: str, password: str, code: str) -> api_tokens.Issued | _Refusal:
    """One try of both factors (run again whole on a stale SQLite snapshot); a refusal is
    returned, not raised, so the failure it counted is kept (the edge commits it)."""
    db, now, info, policy = db_session(), clock.now(), request_info(), session_policy()
    keys = settings().keyring
    first = auth.check_password(
        db, email, password, ph=password_hasher(), keys=keys, policy=policy, now=now, request=info
    )
    db.flush()
    if first.outcome is not auth.SignInOutcome.OK or first.user is None:
        return _counted(_refusal(first.outcome), first.failures)
    user: PortalUser = first.user
    if not user.mfa_enrolled:
        return _Refusal(
            403,
            _("Set up two-step verification by signing in on the web first; API tokens need it."),
        )
    second = auth.check_second_factor(
        db, user, code, keys=keys, policy=policy, now=now, request=info
    )
    if second.outcome is not auth.SignInOutcome.OK:
        db.flush()
        if second.outcome is auth.SignInOutcome.LOCKED:
            return _counted(_refusal(second.outcome), second.failures)
        if second.secret_unreadable:
            return _Refusal(
                401,
                _(
                    "We can't check codes for this account right now. Contact your company's "
                    "portal administrator."
                ),
            )
        return _counted(
            _Refusal(401, _("That code didn't work. Check your authenticator app and try again.")),
            second.failures,
        )
    with tenancy.system(db):  # no scope is bound yet: a restricted user's grants read across
        scope = tenancy.scope_for_user(user)
    tenancy.bind(db, scope)  # signed in: their company from here on
    issued = api_tokens.issue(
        db,
        user,
        name="login",
        scope=TokenScope.PAY,
        expires_at=now + api_tokens.LOGIN_TOKEN_LIFETIME,
        now=now,
        kind=TokenKind.LOGIN,
    )
    db.flush()
    return issued


def _counted(refusal: _Refusal, failures: int) -> _Refusal:
    refusal.failures = failures
    return refusal


def _refusal(outcome: auth.SignInOutcome) -> _Refusal:
    if outcome is auth.SignInOutcome.LOCKED:
        wait = str(settings().lockout_minutes * 60)
        return _Refusal(429, sign_in_message(outcome), {"Retry-After": wait})
    return _Refusal(401, sign_in_message(outcome))


@api.public
@bp.post("/login")
@limiter.limit(SIGN_IN_IP_LIMIT)
@limiter.limit(ACCOUNT_LIMIT, key_func=_login_address_key)
@spec.validate(
    json=LoginIn,
    resp=api.answers(
        HTTP_200=LoginOut,
        HTTP_400=ProblemDetail,
        HTTP_403=ProblemDetail,
        HTTP_415=ProblemDetail,
    ),
    tags=ACCOUNT_TAGS,
    security={},
)
def login(json: LoginIn) -> LoginOut:
    """E-mail, password and a current code for a token that reads and pays for one hour.

    The same checks and lockout as signing in on the web; a recovery code works in place of
    the code (and is spent). Users without two-step verification set up get 403."""
    body = api.require_json(json)
    db = db_session()
    result = retry_on_conflict(db, lambda: _sign_in(body.email, body.password, body.code))
    runtime, info = current_runtime(), request_info()
    if isinstance(result, _Refusal):
        # At the burst threshold every address hands off the same job (as on the web).
        alerts.failed_attempt(runtime, db, body.email, result.failures, request=info)
        raise api.Problem(result.status, result.detail, headers=result.headers)
    alerts.signed_in(runtime, db, result.token.user, request=info)
    return LoginOut(token=result.raw, expires_at=result.token.expires_at, scope=result.token.scope)


# profile -----------------------------------------------------------------------------------


class ProfileOut(BaseModel):
    id: str
    email: str
    name: str
    phone: str | None = Field(description="E.164 (+14155550123), or null.")
    job_title: str | None
    locale: str | None = Field(description="The language chosen, or null (the portal's default).")
    timezone: str
    number_locale: str | None = Field(description="Number format; null follows the language.")
    company: str


class ProfilePatch(BaseModel):
    """Only the fields sent change; null (or "") clears phone, job title, language and number
    format."""

    name: str | None = Field(default=None, max_length=1000)
    phone: str | None = Field(default=None, max_length=1000)
    job_title: str | None = Field(default=None, max_length=1000)
    locale: str | None = Field(default=None, max_length=100)
    timezone: str | None = Field(default=None, max_length=100)
    number_locale: str | None = Field(default=None, max_length=100)


def _profile_out(user: PortalUser) -> ProfileOut:
    return ProfileOut(
        id=user.public_id,
        email=user.email,
        name=user.name,
        phone=user.phone,
        job_title=user.job_title,
        locale=user.locale,
        timezone=user.timezone or "UTC",
        number_locale=user.number_locale,
        company=user.company.name,
    )


WRITE_ANSWERS: dict[str, Any] = {
    "HTTP_400": ProblemDetail,
    "HTTP_403": ProblemDetail,
    "HTTP_415": ProblemDetail,
    "HTTP_422": ProblemDetail,
}


@bp.get("/profile")
@spec.validate(resp=api.answers(HTTP_200=ProfileOut), tags=ACCOUNT_TAGS, security=PORTAL_SECURITY)
def profile_show() -> ProfileOut:
    """The signed-in user's profile."""
    return _profile_out(g.user)


def _field_errors(form: Any) -> list[tuple[str, str]]:
    return [(name, str(message)) for name, messages in form.errors.items() for message in messages]


@bp.patch("/profile")
@spec.validate(
    json=ProfilePatch,
    resp=api.answers(HTTP_200=ProfileOut, **WRITE_ANSWERS),
    tags=ACCOUNT_TAGS,
    security=PORTAL_SECURITY,
)
def profile_update(json: ProfilePatch) -> ProfileOut:
    """Change some of the profile's fields: the profile page's checks and words (422)."""
    api.require_write_scope()
    json = api.require_json(json)
    user: PortalUser = g.user
    sent = json.model_fields_set
    # The page's form, filled with what is stored and what was sent: the same validation.
    current = {
        "name": user.name,
        "phone": profile.display_phone(user.phone),
        "job_title": user.job_title or "",
        "locale": user.locale or "",
        "timezone": user.timezone or "UTC",
        "number_locale": user.number_locale or "",
    }
    for name in sent:
        current[name] = getattr(json, name) or ""
    clear_locale = "locale" in sent and not json.locale
    if not current["locale"]:
        current["locale"] = "en"  # none chosen (or cleared): the form needs one of its choices
    elif "locale" not in sent:
        current["locale"] = current["locale"].split("_")[0]  # as the page shows it
    form = ProfileForm(
        formdata=MultiDict(current),
        region=profile.region_of(user.company.locale),
        meta={"csrf": False},
    )
    if not form.validate():
        raise api.Problem(422, errors=_field_errors(form))
    values = {k: v for k, v in form.values().items() if k in sent}
    if clear_locale:
        values["locale"] = None
    profile.update_profile(db_session(), user, values, request=request_info())
    return _profile_out(user)


# notification preferences ------------------------------------------------------------------


class TopicChoice(BaseModel):
    topic: NotificationTopic
    email: bool
    portal: bool
    always_on: bool = Field(
        default=False,
        description="Security alerts: on in both channels whatever is sent (read only).",
    )


class NotificationsOut(BaseModel):
    remind_days: int = Field(description=f"Days before a due date to remind: one of {REMIND_DAYS}.")
    topics: list[TopicChoice]


class NotificationsIn(BaseModel):
    """Topics left out keep their current choices."""

    remind_days: int
    topics: list[TopicChoice] = Field(default=[], max_length=len(NotificationTopic))


def _notifications_out(user: PortalUser) -> NotificationsOut:
    db = db_session()
    chosen = notifications.preferences(db, user)
    return NotificationsOut(
        remind_days=notifications.remind_days(db, user),
        topics=[
            TopicChoice(
                topic=topic,
                email=chosen[(topic, NotificationChannel.EMAIL)],
                portal=chosen[(topic, NotificationChannel.PORTAL)],
                always_on=topic in notifications.ALWAYS_ON,
            )
            for topic in NotificationTopic
        ],
    )


@bp.get("/notifications")
@spec.validate(
    resp=api.answers(HTTP_200=NotificationsOut),
    tags=ACCOUNT_TAGS,
    security=PORTAL_SECURITY,
)
def notifications_show() -> NotificationsOut:
    """Which notifications the user gets, by mail and in the portal, and the reminder's lead."""
    return _notifications_out(g.user)


@bp.put("/notifications")
@spec.validate(
    json=NotificationsIn,
    resp=api.answers(HTTP_200=NotificationsOut, **WRITE_ANSWERS),
    tags=ACCOUNT_TAGS,
    security=PORTAL_SECURITY,
)
def notifications_update(json: NotificationsIn) -> NotificationsOut:
    """Set the choices: the preferences page's checks and words (422)."""
    api.require_write_scope()
    json = api.require_json(json)
    user: PortalUser = g.user
    db = db_session()
    topics = [choice.topic for choice in json.topics]
    if len(set(topics)) != len(topics):
        raise api.Problem(422, errors=[("topics", _("Each topic may appear once."))])
    chosen = notifications.preferences(db, user)
    for choice in json.topics:
        chosen[(choice.topic, NotificationChannel.EMAIL)] = choice.email
        chosen[(choice.topic, NotificationChannel.PORTAL)] = choice.portal
    data: MultiDict[str, Any] = MultiDict({"remind_days": str(json.remind_days)})
    for (topic, channel), enabled in chosen.items():
        if enabled:
            data[field_name(topic, channel)] = "y"
    form = PreferencesForm(formdata=data, meta={"csrf": False})
    if not form.validate():
        raise api.Problem(422, errors=_field_errors(form))
    notifications.update_preferences(
        db, user, form.wanted(), form.remind_days.data, request=request_info()
    )
    return _notifications_out(user)
