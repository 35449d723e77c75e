"""TOTP multi-factor authentication: enrolment, verification without replay, recovery codes."""

from __future__ import annotations

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
from portal.models import PortalUser, RecoveryCode
from portal.services import crypto

STEP_SECONDS = 30
DRIFT_STEPS = 1  # one step of clock drift either way
RECOVERY_CODE_COUNT = 10
ISSUER = "Billing Portal"


def new_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits


def start_enrolment(user: PortalUser, secret_key: str) -> str:
    """A fresh secret for a user who is not enrolled yet (kept until confirmed or replaced)."""
    if user.mfa_enrolled:
        raise ValueError("already enrolled")
    if user.mfa_secret_encrypted is not None:
        return crypto.decrypt(secret_key, user.mfa_secret_encrypted)
    secret = new_secret()
    user.mfa_secret_encrypted = crypto.encrypt(secret_key, secret)
    return secret


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


def verify_totp(
    session: Session, user: PortalUser, code: str, *, secret_key: str, now: datetime
) -> bool:
    """True for a current code (one step of drift) not used before; remembers its step.

    The step is claimed with a conditional UPDATE, so two requests racing with the same code
    cannot both pass."""
    if user.mfa_secret_encrypted is None:
        return False
    code = _normalize(code)
    if len(code) != 6 or not code.isascii() or not code.isdigit():  # "٠١٢٣٤٥" is digits too
        return False
    totp = pyotp.TOTP(crypto.decrypt(secret_key, user.mfa_secret_encrypted))
    current = int(now.timestamp()) // STEP_SECONDS
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return _claim_step(session, user, step)
    return False


def _claim_step(session: Session, user: PortalUser, step: int) -> bool:
    with tenancy.system(session):
        claimed = session.execute(
            update(PortalUser)
            .where(
                PortalUser.id == user.id,
                or_(PortalUser.mfa_last_step.is_(None), PortalUser.mfa_last_step < step),
            )
            .values(mfa_last_step=step)
            .execution_options(synchronize_session=False)
        )
    if not getattr(claimed, "rowcount", 0):
        return False  # a replay, or an older code after a newer one was used
    set_committed_value(user, "mfa_last_step", step)
    return True


def _code_hash(secret_key: str, code: str) -> str:
    # Recovery codes carry 50 bits of randomness: a keyed hash is enough and fast to check.
    return hmac.new(secret_key.encode(), _normalize(code).encode(), hashlib.sha256).hexdigest()


def issue_recovery_codes(session: Session, user: PortalUser, *, secret_key: str) -> list[str]:
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
                    code_hash=_code_hash(secret_key, raw),
                )
            )
    return codes


def use_recovery_code(
    session: Session, user: PortalUser, code: str, *, secret_key: str, now: datetime
) -> bool:
    wanted = _code_hash(secret_key, code)
    with tenancy.system(session):
        spent = session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user.id,
                RecoveryCode.code_hash == wanted,
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


def confirm_enrolment(user: PortalUser, now: datetime) -> None:
    user.mfa_enrolled_at = now
