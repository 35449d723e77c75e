"""Sign-in: who is this, and the server-side session that remembers it.

A little over the portal's ~400-line norm on purpose: the password step, the second factor and
the session's lifetimes are one sequence sharing the lockout rule and the audit events; split,
a reader would follow one sign-in across three modules. The lockout store, MFA secrets and
credentials already live apart (lockout.py, mfa.py, credentials.py).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from argon2 import PasswordHasher
from sqlalchemy import ColumnElement, CursorResult, select, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from portal import metrics, tenancy
from portal.models import PortalUser, UserSession, UserStatus
from portal.services import audit, lockout, mfa
from portal.services.crypto import Keyring, Unreadable
from portal.services.lockout import Rule as LockoutRule
from portal.services.lockout import normalize_email as normalize_email
from portal.services.passwords import equalize_timing, verify_password

log = logging.getLogger(__name__)


class SignInOutcome(StrEnum):
    OK = "ok"
    INVALID = "invalid"  # unknown e-mail or wrong password: the same answer for both
    LOCKED = "locked"
    DISABLED = "disabled"


@dataclass(frozen=True)
class SignInResult:
    outcome: SignInOutcome
    user: PortalUser | None = None
    # The user's TOTP secret could not be decrypted with any configured key (SECRET_KEY was
    # changed without keeping the old one in SECRET_KEY_FALLBACKS).
    secret_unreadable: bool = False
    # Failures counted in the address's window after this attempt (0 when it did not fail):
    # the same for an address with or without an account.
    failures: int = 0


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta
    absolute: timedelta
    lockout_threshold: int
    lockout: timedelta

    @property
    def lockout_rule(self) -> LockoutRule:
        return LockoutRule(self.lockout_threshold, self.lockout)


# How long a session that passed the password but not yet the second factor lives.
PENDING_MFA_LIFETIME = timedelta(minutes=10)


def find_user_by_email(session: Session, email: str) -> PortalUser | None:
    """The account behind an address, with its company, in one query."""
    # Sign-in happens before any company is known: the one lookup across companies.
    with tenancy.system(session):
        return session.scalars(
            select(PortalUser)
            .where(PortalUser.email == normalize_email(email))
            .options(joinedload(PortalUser.company))
        ).one_or_none()


def check_password(
    session: Session,
    email: str,
    password: str,
    *,
    ph: PasswordHasher,
    keys: Keyring,
    policy: SessionPolicy,
    now: datetime,
    request: audit.RequestInfo,
) -> SignInResult:
    """The password step. An address without an account takes the very same path (the same
    queries, the same hashing, the same lockout rule) and gets the same answers as an account
    with a wrong password, so neither the message nor the work tells which addresses exist."""
    key = lockout.key_for(keys, email)
    with tenancy.system(session):
        user = find_user_by_email(session, email)
        outcome, failures = SignInOutcome.INVALID, 0
        if lockout.locked_until(session, key, now=now) is not None:
            equalize_timing(ph)  # a locked address costs what a checked one costs
            outcome = SignInOutcome.LOCKED
        elif verify_password(user.password_hash if user else None, password, ph):
            assert user is not None  # no hash, no match
            outcome = SignInOutcome.OK if user.is_active else SignInOutcome.DISABLED
            # The failure count is cleared only once the second factor passes too: a known
            # password must not buy fresh guesses at the code.
            if outcome is SignInOutcome.OK and ph.check_needs_rehash(user.password_hash or ""):
                user.password_hash = ph.hash(password)
        else:
            outcome, failures = _count_failure(session, user, key, policy, now, request)
        _audit(
            session,
            user,
            "Portal.Login",
            request,
            factor="password",
            success=outcome is SignInOutcome.OK,
            reason=outcome.value,
        )
    metrics.sign_ins.labels(outcome.value).inc()
    return SignInResult(outcome, user, failures=failures)


def _audit(
    session: Session,
    user: PortalUser | None,
    name: str,
    request: audit.RequestInfo,
    **properties: Any,
) -> None:
    """One audit row, whether or not the address has an account (the same insert either way)."""
    if user is None:
        audit.record(session, name, company_id=None, request=request, **properties)
    else:
        audit.record_for(
            session, user, name, request=request, customer_id=user.company.public_id, **properties
        )


def _count_failure(
    session: Session,
    user: PortalUser | None,
    key: str,
    policy: SessionPolicy,
    now: datetime,
    request: audit.RequestInfo,
) -> tuple[SignInOutcome, int]:
    """Count the failure: the outcome, and how many failures the window holds now."""
    failure = lockout.record_failure(session, key, rule=policy.lockout_rule, now=now)
    if failure.locked_until is None:
        return SignInOutcome.INVALID, failure.failures
    if failure.just_locked:
        _audit(
            session, user, "Portal.AccountLocked", request, until=failure.locked_until.isoformat()
        )
    return SignInOutcome.LOCKED, failure.failures


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    session: Session,
    user: PortalUser,
    *,
    policy: SessionPolicy,
    now: datetime,
    request: audit.RequestInfo,
    mfa_verified: bool = False,
) -> str:
    """Create a server-side session; returns the random token for the cookie (shown once)."""
    token = secrets.token_urlsafe(32)
    with tenancy.system(session):
        session.add(
            UserSession(
                company_id=user.company_id,
                user_id=user.id,
                token_hash=_token_hash(token),
                ip_address=request.ip_address[:64],
                user_agent=request.user_agent[:400],
                created_at=now,
                last_seen_at=now,
                expires_at=now + policy.absolute,
                mfa_verified=mfa_verified,
            )
        )
        session.flush()
    return token


def load_session(
    session: Session, token: str, *, policy: SessionPolicy, now: datetime
) -> UserSession | None:
    """The live session behind a cookie token, with its user; None if ended or expired."""
    with tenancy.system(session):
        record = (
            session.scalars(
                select(UserSession)
                .where(UserSession.token_hash == _token_hash(token))
                .options(
                    # One statement: the user and company (many-to-one) and the user's grants (a
                    # list of a few rows, needed for the scope every request binds) joined in.
                    joinedload(UserSession.user).joinedload(PortalUser.company),
                    joinedload(UserSession.user).joinedload(PortalUser.grants),
                )
            )
            .unique()
            .one_or_none()
        )
    if record is None or record.revoked_at is not None:
        return None
    if now >= record.expires_at or now - record.last_seen_at >= policy.idle:
        return None
    if not record.mfa_verified and now - record.created_at >= PENDING_MFA_LIFETIME:
        return None  # half signed in: the code must follow soon
    if record.user.status is not UserStatus.ACTIVE:
        return None
    return record


def touch_session(
    session: Session, record: UserSession, now: datetime, *, force: bool = False
) -> bool:
    """Note activity at most once a minute (an UPDATE per request would be wasted writes)."""
    if not force and now - record.last_seen_at < timedelta(minutes=1):
        return False
    with tenancy.system(session):
        session.execute(
            update(UserSession).where(UserSession.id == record.id).values(last_seen_at=now)
        )
    set_committed_value(record, "last_seen_at", now)
    return True


def end_session(session: Session, token: str, now: datetime) -> None:
    with tenancy.system(session):
        session.execute(
            update(UserSession)
            .where(UserSession.token_hash == _token_hash(token), UserSession.revoked_at.is_(None))
            .values(revoked_at=now, mfa_pending_secret=None)
        )


def sign_out(
    session: Session,
    token: str,
    user: PortalUser | None,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> None:
    end_session(session, token, now)
    if user is not None:
        audit.record_for(
            session,
            user,
            "Portal.SessionEnded",
            request=request,
            reason="signed_out",
        )


def check_second_factor(
    session: Session,
    user: PortalUser,
    code: str,
    *,
    keys: Keyring,
    policy: SessionPolicy,
    now: datetime,
    request: audit.RequestInfo,
) -> SignInResult:
    """A TOTP code, or one unused recovery code. Failures count toward the same lockout as
    passwords (the same address, the same rule); a pass clears it."""
    key = lockout.key_for(keys, user.email)
    with tenancy.system(session):
        if lockout.locked_until(session, key, now=now) is not None:
            metrics.mfa_failures.labels(SignInOutcome.LOCKED.value).inc()
            return SignInResult(SignInOutcome.LOCKED, user)
        unreadable, failures = False, 0
        try:
            ok = mfa.verify_totp(session, user, code, keys=keys, now=now)
        except Unreadable:
            log.error(
                "the TOTP secret of user %s cannot be decrypted with SECRET_KEY or any key in "
                "SECRET_KEY_FALLBACKS: put the key it was made with back in "
                "SECRET_KEY_FALLBACKS, or reset the user's two-step verification "
                "(flask --app wsgi users reset-mfa EMAIL)",
                user.public_id,
            )
            ok, unreadable = False, True
        used_recovery = False
        if not ok:
            ok = used_recovery = mfa.use_recovery_code(session, user, code, keys=keys, now=now)
        if ok:
            outcome = SignInOutcome.OK
            second_factor_passed(session, user, keys=keys, now=now)
        else:
            outcome, failures = _count_failure(session, user, key, policy, now, request)
            metrics.mfa_failures.labels(outcome.value).inc()
        _audit(
            session,
            user,
            "Portal.Login",
            request,
            success=ok,
            factor="recovery_code" if used_recovery else "totp",
            reason=outcome.value,
        )
        if used_recovery:
            audit.record_for(
                session,
                user,
                "Portal.RecoveryCodeUsed",
                request=request,
                remaining=mfa.remaining_recovery_codes(session, user),
            )
    return SignInResult(outcome, user, secret_unreadable=unreadable and not ok, failures=failures)


def second_factor_passed(
    session: Session, user: PortalUser, *, keys: Keyring, now: datetime
) -> None:
    """Both factors passed (a code at sign-in, or the code that confirmed enrolment): the
    address's failure count is cleared."""
    with tenancy.system(session):
        lockout.clear(session, lockout.key_for(keys, user.email))
        user.last_login_at = now


def promote_session(
    session: Session,
    old_token: str,
    user: PortalUser,
    *,
    policy: SessionPolicy,
    now: datetime,
    request: audit.RequestInfo,
) -> str:
    """Both factors passed: end the half-signed-in session and issue a new id (rotation)."""
    end_session(session, old_token, now)
    return start_session(session, user, policy=policy, now=now, request=request, mfa_verified=True)


def _rowcount(result: object) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def active_sessions(
    session: Session, user: PortalUser, *, policy: SessionPolicy, now: datetime
) -> list[UserSession]:
    """The user's signed-in sessions that are still alive, most recently used first."""
    rows = session.scalars(
        select(UserSession)
        .where(
            UserSession.user_id == user.id,
            UserSession.revoked_at.is_(None),
            UserSession.mfa_verified.is_(True),
            UserSession.expires_at > now,
            UserSession.last_seen_at > now - policy.idle,
        )
        .order_by(UserSession.last_seen_at.desc())
    )
    return list(rows)


def revoke_sessions(
    session: Session,
    user: PortalUser,
    which: ColumnElement[bool],
    *,
    now: datetime,
    request: audit.RequestInfo,
    **properties: Any,
) -> int:
    """Revoke the user's live sessions matching `which`; audited when any were."""
    ended = _rowcount(
        session.execute(
            update(UserSession)
            .where(which, UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
            .values(revoked_at=now, mfa_pending_secret=None)
        )
    )
    if ended:
        audit.record_for(
            session,
            user,
            "Portal.SessionEnded",
            request=request,
            ended=ended,
            **properties,
        )
    return ended


def end_user_session(
    session: Session,
    user: PortalUser,
    public_id: str,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> bool:
    """End one of the user's own sessions; False if there is no such live session."""
    which = UserSession.public_id == public_id
    return bool(
        revoke_sessions(session, user, which, now=now, request=request, session_id=public_id)
    )


def end_other_sessions(
    session: Session,
    user: PortalUser,
    keep: UserSession,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> int:
    """Every session of the user but `keep` (the one asking)."""
    return revoke_sessions(session, user, UserSession.id != keep.id, now=now, request=request)


_BROWSERS = (
    ("Edg/", "Edge"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("Windows", "Windows"),
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


def describe_device(user_agent: str) -> tuple[str | None, str | None]:
    """Browser and system names for a session list ("Firefox", "Windows"); None when unknown.
    Order matters: Edge's agent also says Chrome, and Chrome's also says Safari."""
    agent = user_agent or ""

    def first(table: tuple[tuple[str, str], ...]) -> str | None:
        return next((name for token, name in table if token in agent), None)

    return first(_BROWSERS), first(_SYSTEMS)
