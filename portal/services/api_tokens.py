"""Bearer tokens of the JSON API (portal/api) and operator keys of the receivables side.

A token is random; only its sha256 is stored, with its first characters to tell it apart. A
personal token is created by its user (named, a scope, an expiry) and shown once; `login`
tokens come from `POST /api/portal/login` and live briefly. Operator keys (`ArKey`) act for the
receivables system across companies and are made on the command line.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, joinedload

from portal import tenancy
from portal.models import ApiToken, ArKey, PortalUser, TokenKind, TokenScope, UserStatus
from portal.services import audit

TOKEN_PREFIX = "pt_"  # noqa: S105 - a marker, not a secret; personal and login tokens: "pt_" + 43 url-safe characters
KEY_PREFIX = "ark_"  # operator keys of the receivables side
LOGIN_TOKEN_LIFETIME = timedelta(hours=1)
USE_RECORDED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often
PERSONAL_LIFETIMES = (30, 90, 365)  # days a personal token may live, as /portal/security offers


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    token: ApiToken
    raw: str  # shown once, never stored


def issue(
    session: Session,
    user: PortalUser,
    *,
    name: str,
    scope: TokenScope,
    expires_at: datetime,
    now: datetime,
    kind: TokenKind = TokenKind.PERSONAL,
) -> Issued:
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        company_id=user.company_id,
        user_id=user.id,
        kind=kind,
        name=name,
        scope=scope,
        token_hash=_digest(raw),
        prefix=raw[:10],
        created_at=now,
        expires_at=expires_at,
        last_used_ip="",
    )
    session.add(token)
    session.flush()
    return Issued(token=token, raw=raw)


def authenticate(session: Session, raw: str, *, now: datetime, ip: str = "") -> ApiToken | None:
    """The live token behind a bearer value, with its user; None when unknown, revoked, expired,
    its user is no longer active or no longer in the company it was made in. Notes its use (at
    most once a minute)."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    with tenancy.system(session):
        token = (
            session.scalars(
                select(ApiToken)
                .where(ApiToken.token_hash == _digest(raw))
                .options(
                    joinedload(ApiToken.user).joinedload(PortalUser.company),
                    joinedload(ApiToken.user).joinedload(PortalUser.grants),
                )
            )
            .unique()
            .one_or_none()
        )
        if token is None or token.revoked_at is not None or now >= token.expires_at:
            return None
        if token.user.status is not UserStatus.ACTIVE:
            return None
        if token.company_id != token.user.company_id:
            return None  # made for another company than the user's now
        if token.last_used_at is None or now - token.last_used_at >= USE_RECORDED_EVERY:
            session.execute(
                update(ApiToken)
                .where(ApiToken.id == token.id)
                .values(last_used_at=now, last_used_ip=ip[:64])
            )
    return token


def revoke(session: Session, token: ApiToken, *, now: datetime) -> bool:
    """End a token; False if it had already ended."""
    if token.revoked_at is not None:
        return False
    token.revoked_at = now
    session.flush()
    return True


def personal_tokens(session: Session, user: PortalUser) -> list[ApiToken]:
    """The user's personal tokens not revoked (expired ones too, marked by their date), newest
    first. Login tokens are not listed: they end by themselves within the hour."""
    return list(
        session.scalars(
            select(ApiToken)
            .where(
                ApiToken.user_id == user.id,
                ApiToken.kind == TokenKind.PERSONAL,
                ApiToken.revoked_at.is_(None),
            )
            .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
        )
    )


def find_personal(session: Session, user: PortalUser, public_id: str) -> ApiToken | None:
    """One of the user's own live personal tokens; None for anyone else's (or a revoked one)."""
    return session.scalars(
        select(ApiToken).where(
            ApiToken.public_id == public_id,
            ApiToken.user_id == user.id,
            ApiToken.kind == TokenKind.PERSONAL,
            ApiToken.revoked_at.is_(None),
        )
    ).one_or_none()


def create_personal(
    session: Session,
    user: PortalUser,
    *,
    name: str,
    scope: TokenScope,
    days: int,
    now: datetime,
    request: audit.RequestInfo,
) -> Issued:
    """A named personal token living `days` (one of PERSONAL_LIFETIMES), audited as
    Portal.ApiTokenCreated (its id, prefix, scope and expiry; never the token)."""
    if days not in PERSONAL_LIFETIMES:
        raise ValueError(f"a personal token lives one of {PERSONAL_LIFETIMES} days")
    issued = issue(
        session,
        user,
        name=name.strip(),
        scope=scope,
        expires_at=now + timedelta(days=days),
        now=now,
    )
    audit.record_for(
        session,
        user,
        "Portal.ApiTokenCreated",
        request=request,
        token_id=issued.token.public_id,
        prefix=issued.token.prefix,
        scope=scope.value,
        expires_at=issued.token.expires_at.isoformat(),
    )
    return issued


def revoke_personal(
    session: Session,
    user: PortalUser,
    token: ApiToken,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> bool:
    """The user ends one of their tokens (audited as Portal.ApiTokenRevoked); False if it had
    ended already."""
    if not revoke(session, token, now=now):
        return False
    audit.record_for(
        session,
        user,
        "Portal.ApiTokenRevoked",
        request=request,
        token_id=token.public_id,
        prefix=token.prefix,
    )
    return True


def revoke_login_tokens(session: Session, user: PortalUser, *, now: datetime) -> int:
    """End the user's live login tokens (they stand for a sign-in, as a session does): when the
    password changes or is reset, and when they sign out everywhere else. Personal tokens stay:
    they are revoked one by one on /portal/security. How many ended."""
    with tenancy.system(session):
        result = session.execute(
            update(ApiToken)
            .where(
                ApiToken.user_id == user.id,
                ApiToken.kind == TokenKind.LOGIN,
                ApiToken.revoked_at.is_(None),
                ApiToken.expires_at > now,
            )
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
    return int(cast(CursorResult[Any], result).rowcount)


def revoke_all(session: Session, user: PortalUser, *, now: datetime) -> int:
    """End every live token of the user, personal ones too: they are deactivated, and being
    reactivated must not bring tokens made before back to life. How many ended."""
    with tenancy.system(session):
        result = session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
    return int(cast(CursorResult[Any], result).rowcount)


def create_key(session: Session, *, name: str, now: datetime) -> tuple[ArKey, str]:
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ArKey(name=name, key_hash=_digest(raw), prefix=raw[:10], created_at=now)
    session.add(key)
    session.flush()
    return key, raw


def authenticate_key(session: Session, raw: str, *, now: datetime) -> ArKey | None:
    if not raw.startswith(KEY_PREFIX) or len(raw) > 200:
        return None
    key = session.scalars(select(ArKey).where(ArKey.key_hash == _digest(raw))).one_or_none()
    if key is None or key.revoked_at is not None:
        return None
    if key.last_used_at is None or now - key.last_used_at >= USE_RECORDED_EVERY:
        session.execute(update(ArKey).where(ArKey.id == key.id).values(last_used_at=now))
    return key
