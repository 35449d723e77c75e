"""TOTP multi-factor authentication: enrolment, verification without replay, recovery codes."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from datetime import datetime

import pyotp
import segno
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from portal import tenancy
from portal.models import PortalUser, RecoveryCode, UserSession
from portal.services.crypto import Keyring, Unreadable

STEP_SECONDS = 30
DRIFT_STEPS = 1  # one step of clock drift either way
RECOVERY_CODE_COUNT = 10
ISSUER = "Billing Portal"


class Enrolment(enum.StrEnum):
    CONFIRMED = "confirmed"
    WRONG_CODE = "wrong_code"
    ALREADY_ENROLLED = "already_enrolled"  # another session of the user confirmed first


def new_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits


def pending_secret(record: UserSession, *, keys: Keyring) -> tuple[str, bool]:
    """The secret offered to this session (password given, not yet enrolled).

    It lives encrypted on the session's own row, made on its first visit and kept from then on
    (a reload shows the same key): another holder of the password, in another session, is
    offered a different one, and cannot learn or keep the one this session confirms. Returns
    the secret and whether it was made just now (the row then needs saving)."""
    if record.user.mfa_enrolled:
        raise ValueError("already enrolled")
    if record.mfa_pending_secret is not None:
        try:
            secret, _earlier_key = keys.decrypt(record.mfa_pending_secret)
            return secret, False
        except Unreadable:
            pass  # made under a key that is gone: offer a new one
    secret = new_secret()
    record.mfa_pending_secret = keys.encrypt(secret)
    return secret, True


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """An inline SVG QR code (no scripts, no style attributes: it passes the CSP)."""
    svg: str = segno.make(uri, error="m").svg_inline(
        scale=4, border=2, dark="#000", light="#fff", omitsize=True
    )
    return svg


def _normalize(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step (one of drift either way) whose code this is, or None."""
    code = _normalize(code)
    if len(code) != 6 or not code.isascii() or not code.isdigit():  # "٠١٢٣٤٥" is digits too
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            found = step
    return found


def verify_totp(
    session: Session, user: PortalUser, code: str, *, keys: Keyring, now: datetime
) -> bool:
    """True for a current code (one step of drift) not used before; remembers its step.

    The step is claimed with a conditional UPDATE, so two requests racing with the same code
    cannot both pass. A secret still under an earlier key is stored again under the current
    one with that same UPDATE. Raises crypto.Unreadable when no configured key opens it."""
    if user.mfa_secret_encrypted is None:
        return False
    secret, earlier_key = keys.decrypt(user.mfa_secret_encrypted)
    step = _matching_step(secret, code, now)
    if step is None:
        return False
    values: dict[str, object] = {"mfa_last_step": step}
    if earlier_key:
        values["mfa_secret_encrypted"] = keys.encrypt(secret)
    if not _claim_step(session, user, step, values):
        return False
    for name, value in values.items():
        set_committed_value(user, name, value)
    return True


def _claim_step(session: Session, user: PortalUser, step: int, values: dict[str, object]) -> bool:
    with tenancy.system(session):
        claimed = session.execute(
            update(PortalUser)
            .where(
                PortalUser.id == user.id,
                or_(PortalUser.mfa_last_step.is_(None), PortalUser.mfa_last_step < step),
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    # No row: a replay, or an older code after a newer one was used.
    return bool(getattr(claimed, "rowcount", 0))


def confirm_enrolment(
    session: Session, record: UserSession, code: str, *, keys: Keyring, now: datetime
) -> Enrolment:
    """The code proves this session's pending secret: it becomes the user's second factor and
    every other session's pending secret is discarded. Only the first of several sessions
    confirming at once wins (a conditional UPDATE on a user not yet enrolled)."""
    user = record.user
    if record.mfa_pending_secret is None:
        return Enrolment.WRONG_CODE
    try:
        secret, _earlier_key = keys.decrypt(record.mfa_pending_secret)
    except Unreadable:
        return Enrolment.WRONG_CODE
    step = _matching_step(secret, code, now)
    if step is None:
        return Enrolment.WRONG_CODE
    values: dict[str, object] = {
        "mfa_secret_encrypted": keys.encrypt(secret),
        "mfa_enrolled_at": now,
        "mfa_last_step": step,  # the code that enrolled cannot sign in again
    }
    with tenancy.system(session):
        claimed = session.execute(
            update(PortalUser)
            .where(PortalUser.id == user.id, PortalUser.mfa_enrolled_at.is_(None))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if not getattr(claimed, "rowcount", 0):
            session.refresh(user)
            return Enrolment.ALREADY_ENROLLED
        session.execute(
            update(UserSession)
            .where(UserSession.user_id == user.id, UserSession.mfa_pending_secret.is_not(None))
            .values(mfa_pending_secret=None)
            .execution_options(synchronize_session=False)
        )
    for name, value in values.items():
        set_committed_value(user, name, value)
    set_committed_value(record, "mfa_pending_secret", None)
    return Enrolment.CONFIRMED


def _code_hash(secret_key: str, code: str) -> str:
    # Recovery codes carry 40 bits of randomness: a keyed hash is enough and fast to check.
    return hmac.new(secret_key.encode(), _normalize(code).encode(), hashlib.sha256).hexdigest()


def issue_recovery_codes(session: Session, user: PortalUser, *, keys: Keyring) -> list[str]:
    """Replace the user's recovery codes with ten new ones; returns them to show once."""
    with tenancy.system(session):
        for old in session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id)):
            session.delete(old)
        codes = []
        for _ in range(RECOVERY_CODE_COUNT):
            raw = secrets.token_hex(5)  # 10 hex digits
            codes.append(f"{raw[:5]}-{raw[5:]}")
            session.add(
                RecoveryCode(
                    company_id=user.company_id,
                    user_id=user.id,
                    code_hash=_code_hash(keys.current, raw),
                )
            )
    return codes


def use_recovery_code(
    session: Session, user: PortalUser, code: str, *, keys: Keyring, now: datetime
) -> bool:
    """Spend one unused code. Codes issued under an earlier key (SECRET_KEY_FALLBACKS) count."""
    wanted = [_code_hash(key, code) for key in keys.all]
    with tenancy.system(session):
        spent = session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user.id,
                RecoveryCode.code_hash.in_(wanted),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
    # Conditional: of two requests racing with one code, only one spends it.
    return bool(getattr(spent, "rowcount", 0))


def remaining_recovery_codes(session: Session, user: PortalUser) -> int:
    with tenancy.system(session):
        return len(
            session.scalars(
                select(RecoveryCode.id).where(
                    RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
                )
            ).all()
        )


def reencrypt_secrets(session: Session, *, keys: Keyring) -> tuple[int, int]:
    """Store every TOTP secret (enrolled and pending) under the current key. Returns how many
    were rewritten and how many no configured key can open (left as they are)."""
    rewritten = unreadable = 0
    with tenancy.system(session):
        users = session.scalars(
            select(PortalUser).where(PortalUser.mfa_secret_encrypted.is_not(None))
        ).all()
        sessions = session.scalars(
            select(UserSession).where(UserSession.mfa_pending_secret.is_not(None))
        ).all()
        for row, attribute in [
            *((u, "mfa_secret_encrypted") for u in users),
            *((s, "mfa_pending_secret") for s in sessions),
        ]:
            try:
                secret, earlier_key = keys.decrypt(getattr(row, attribute))
            except Unreadable:
                unreadable += 1
                continue
            if earlier_key:
                setattr(row, attribute, keys.encrypt(secret))
                rewritten += 1
    return rewritten, unreadable


def reset_enrolment(session: Session, user: PortalUser) -> None:
    """Forget the user's second factor and recovery codes: they enrol again at next sign-in.
    (For an operator, when the key a secret was made with is gone.)"""
    with tenancy.system(session):
        user.mfa_secret_encrypted = None
        user.mfa_enrolled_at = None
        user.mfa_last_step = None
        for old in session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id)):
            session.delete(old)
