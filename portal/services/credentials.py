"""Changing and resetting a password."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from argon2 import PasswordHasher
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select, true
from sqlalchemy.orm import Session, selectinload

from portal import tenancy
from portal.models import PortalUser, UserSession, UserStatus
from portal.services import api_tokens, audit, lockout
from portal.services.auth import revoke_sessions
from portal.services.crypto import Keyring
from portal.services.passwords import password_problem, verify_password

RESET_MAX_AGE_SECONDS = 3600
_RESET_SALT = "portal.password-reset.v1"


class ResetState(StrEnum):
    OK = "ok"
    EXPIRED = "expired"
    INVALID = "invalid"  # tampered, or already used (the password it was issued for changed)


@dataclass(frozen=True)
class ResetCheck:
    state: ResetState
    user: PortalUser | None = None


def _serializer(keys: Keyring, now: datetime) -> URLSafeTimedSerializer:
    return keys.links(_RESET_SALT, now)


def _fingerprint(secret_key: str, user: PortalUser) -> str:
    # Ties the token to the current password and e-mail address: once either changes, the
    # token is spent (a link mailed to an address the account has left opens nothing).
    material = f"{user.public_id}:{user.email}:{user.password_hash or ''}".encode()
    return hmac.new(secret_key.encode(), material, hashlib.sha256).hexdigest()[:24]


def reset_token(user: PortalUser, *, keys: Keyring, now: datetime) -> str:
    return str(
        _serializer(keys, now).dumps({"u": user.public_id, "f": _fingerprint(keys.current, user)})
    )


def check_reset_token(session: Session, token: str, *, keys: Keyring, now: datetime) -> ResetCheck:
    try:
        data = _serializer(keys, now).loads(token, max_age=RESET_MAX_AGE_SECONDS)
    except SignatureExpired:
        return ResetCheck(ResetState.EXPIRED)
    except BadSignature:
        return ResetCheck(ResetState.INVALID)
    if not isinstance(data, dict):
        return ResetCheck(ResetState.INVALID)
    # The token names the user before any company is known: a lookup across companies.
    with tenancy.system(session):
        user = session.scalars(
            select(PortalUser)
            .where(PortalUser.public_id == str(data.get("u", "")))
            .options(selectinload(PortalUser.company))
        ).one_or_none()
    if user is None or user.status is not UserStatus.ACTIVE:
        return ResetCheck(ResetState.INVALID)
    given = str(data.get("f", ""))
    if not any(hmac.compare_digest(given, _fingerprint(key, user)) for key in keys.all):
        return ResetCheck(ResetState.INVALID)
    return ResetCheck(ResetState.OK, user)


def set_password(
    session: Session,
    user: PortalUser,
    new_password: str,
    *,
    ph: PasswordHasher,
    keys: Keyring,
    now: datetime,
    keep_session_id: int | None,
    request: audit.RequestInfo,
) -> int:
    """Store the new hash, clear any lockout, and end every other session. Returns how many."""
    with tenancy.system(session):
        user.password_hash = ph.hash(new_password)
        user.password_changed_at = now
        lockout.clear(session, lockout.key_for(keys, user.email))
        others = UserSession.id != keep_session_id if keep_session_id is not None else true()
        api_tokens.revoke_login_tokens(session, user, now=now)
        return revoke_sessions(
            session, user, others, now=now, request=request, reason="password_changed"
        )


def note_reset_requested(session: Session, user: PortalUser, request: audit.RequestInfo) -> None:
    with tenancy.system(session):  # the requester is not signed in: no scope is bound
        audit.record_for(session, user, "Portal.PasswordResetRequested", request=request)


def complete_reset(
    session: Session,
    user: PortalUser,
    new_password: str,
    *,
    ph: PasswordHasher,
    keys: Keyring,
    now: datetime,
    request: audit.RequestInfo,
) -> None:
    """The reset link's owner chose a new password: every session of theirs ends."""
    set_password(
        session,
        user,
        new_password,
        ph=ph,
        keys=keys,
        now=now,
        keep_session_id=None,
        request=request,
    )
    with tenancy.system(session):
        audit.record_for(session, user, "Portal.PasswordReset", request=request)


class ChangeProblem(StrEnum):
    WRONG_CURRENT = "wrong_current"
    MISMATCH = "mismatch"
    SAME_AS_CURRENT = "same_as_current"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    TOO_COMMON = "too_common"


def new_password_problem(user: PortalUser, new: str, confirm: str) -> ChangeProblem | None:
    if new != confirm:
        return ChangeProblem.MISMATCH
    problem = password_problem(new, email=user.email, company=user.company.name)
    return ChangeProblem(problem) if problem else None


def change_password(
    session: Session,
    user: PortalUser,
    *,
    current: str,
    new: str,
    confirm: str,
    ph: PasswordHasher,
    keys: Keyring,
    now: datetime,
    keep_session_id: int,
    request: audit.RequestInfo,
) -> ChangeProblem | None:
    if not verify_password(user.password_hash, current, ph):
        return ChangeProblem.WRONG_CURRENT
    problem = new_password_problem(user, new, confirm)
    if problem is None and verify_password(user.password_hash, new, ph):
        problem = ChangeProblem.SAME_AS_CURRENT
    if problem is not None:
        return problem
    ended = set_password(
        session,
        user,
        new,
        ph=ph,
        keys=keys,
        now=now,
        keep_session_id=keep_session_id,
        request=request,
    )
    audit.record_for(
        session,
        user,
        "Portal.PasswordChanged",
        request=request,
        other_sessions_ended=ended,
    )
    return None
