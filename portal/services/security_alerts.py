"""Security alerts, the domain: which sign-ins are from somewhere new, the alerted events, the
rate limit on their mail, the "This wasn't me" link and what it does. Free of Flask; flushes,
never commits.

Where a user signs in from is kept as two keys per completed sign-in: the device (browser and
system family, from `auth.describe_device`) and the network (the IPv4 /24 or IPv6 /48), each a
keyed hash (a rotated SECRET_KEY still recognises hashes made under a key it keeps). A sign-in
from a device or network not seen for `KNOWN_FOR` is alerted; a user's first sign-in (no
history at all) is recorded without an alert. A user with no origins yet who has signed-in
sessions within `KNOWN_FOR` (from before alerts existed) has those as history.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import new_public_id
from portal.models import PortalUser, RecoveryCode, SecurityAlert, SignInOrigin, UserSession
from portal.services import api_tokens, audit, auth, profile
from portal.services.crypto import Keyring

KNOWN_FOR = timedelta(days=90)  # a device or network seen within this is known
BURST_THRESHOLD = 3  # failed passwords or codes within the lockout's window (before its 5)
MAILS_PER_HOUR = 3
MAILS_PER_DAY = 10
DIGEST_LINES = 100  # an admin's daily digest lists at most this many alerts, then says how many
LINK_LIFETIME = timedelta(days=7)
SESSION_MARGIN = timedelta(minutes=1)  # a session this recent is the sign-in being noted
RESET_AGAIN_AFTER = timedelta(minutes=15)  # a second "secure" within this sends no new mail
_ORIGIN_PURPOSE = b"portal.sign-in-origin.v1"
_LINK_SALT = "portal.security-alert.not-me.v1"


class Kind(StrEnum):
    NEW_SIGN_IN = "new_sign_in"
    FAILED_ATTEMPTS = "failed_attempts"
    MFA_RESET = "mfa_reset"
    API_TOKEN_CREATED = "api_token_created"  # noqa: S105 (a kind's name, no secret)
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    EMAIL_CHANGED = "email_changed"
    PAYMENT_METHOD_ADDED = "payment_method_added"
    RECOVERY_CODES_ISSUED = "recovery_codes_issued"


# where a sign-in came from ---------------------------------------------------------------


def device_of(user_agent: str) -> str:
    """A readable device: "Firefox on Windows", or what is known of it."""
    browser, system = auth.describe_device(user_agent)
    if browser and system:
        return f"{browser} / {system}"
    return browser or system or ""


def network_of(ip_address: str) -> str:
    """The network an address belongs to: its IPv4 /24 or IPv6 /48 ("" when unreadable)."""
    try:
        address = ipaddress.ip_address(ip_address.strip())
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _hashes(keys: Keyring, kind: str, value: str) -> list[str]:
    return keys.macs(_ORIGIN_PURPOSE, f"{kind}:{value}".encode())


@dataclass(frozen=True)
class Origin:
    first_sign_in: bool  # no history at all: recorded, never alerted
    new_device: bool
    new_network: bool

    @property
    def is_new(self) -> bool:
        return not self.first_sign_in and (self.new_device or self.new_network)


def note_sign_in(
    session: Session, user: PortalUser, request: audit.RequestInfo, *, keys: Keyring, now: datetime
) -> Origin:
    """Record the device and network of a completed sign-in; whether either is new (not seen
    within KNOWN_FOR) and whether the user had any history."""
    with tenancy.system(session):
        rows = list(session.scalars(select(SignInOrigin).where(SignInOrigin.user_id == user.id)))
        if not rows:  # none recorded yet (signed in only before alerts existed?): the sessions
            rows = _origins_of_sessions(session, user, keys=keys, now=now)
        first = not rows
        new: dict[str, bool] = {}
        for kind, value in (
            ("device", device_of(request.user_agent)),
            ("network", network_of(request.ip_address)),
        ):
            hashes = _hashes(keys, kind, value)
            seen = next((r for r in rows if r.kind == kind and r.key_hash in hashes), None)
            new[kind] = seen is None or seen.last_seen_at < now - KNOWN_FOR
            if seen is None:
                session.add(
                    SignInOrigin(
                        company_id=user.company_id,
                        user_id=user.id,
                        kind=kind,
                        key_hash=hashes[0],
                        last_seen_at=now,
                    )
                )
            else:
                seen.last_seen_at = now
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:  # the same origin recorded by a concurrent sign-in
            pass
    return Origin(first, new["device"], new["network"])


def _origins_of_sessions(
    session: Session, user: PortalUser, *, keys: Keyring, now: datetime
) -> list[SignInOrigin]:
    """The devices and networks of the user's signed-in sessions within KNOWN_FOR (the sign-in
    being noted, started within SESSION_MARGIN, left out), added as origins: a user who signed
    in before alerts existed has a history, so their first sign-in since from somewhere else is
    alerted, never passed as a quiet first one."""
    seen: dict[tuple[str, str], SignInOrigin] = {}
    for ip_address, user_agent, last_seen in session.execute(
        select(UserSession.ip_address, UserSession.user_agent, UserSession.last_seen_at)
        .where(
            UserSession.user_id == user.id,
            UserSession.mfa_verified.is_(True),
            UserSession.created_at < now - SESSION_MARGIN,
            UserSession.last_seen_at >= now - KNOWN_FOR,
        )
        .order_by(UserSession.last_seen_at.desc())
        .limit(200)
    ):
        for kind, value in (("device", device_of(user_agent)), ("network", network_of(ip_address))):
            key_hash = _hashes(keys, kind, value)[0]
            if (kind, key_hash) not in seen:
                seen[(kind, key_hash)] = SignInOrigin(
                    company_id=user.company_id,
                    user_id=user.id,
                    kind=kind,
                    key_hash=key_hash,
                    last_seen_at=last_seen,
                )
    session.add_all(seen.values())
    return list(seen.values())


# the alerted events ----------------------------------------------------------------------


def mails_left(session: Session, user: PortalUser, now: datetime) -> bool:
    """Whether one more alert may be mailed: at most MAILS_PER_HOUR an hour, MAILS_PER_DAY a day."""
    with tenancy.system(session):
        hour, day = session.execute(
            select(
                func.count().filter(SecurityAlert.created_at > now - timedelta(hours=1)),
                func.count(),
            ).where(
                SecurityAlert.user_id == user.id,
                SecurityAlert.mailed == true(),
                SecurityAlert.created_at > now - timedelta(days=1),
            )
        ).one()
    return int(hour) < MAILS_PER_HOUR and int(day) < MAILS_PER_DAY


def record(
    session: Session,
    user: PortalUser,
    kind: Kind,
    *,
    request: audit.RequestInfo,
    now: datetime,
    key: str | None = None,
) -> SecurityAlert | None:
    """The event's row and its audit (`Portal.SecurityAlert`), once per (user, kind, key); None
    when this key was alerted before. Whether it is mailed is decided here (the rate limit),
    under the user's row lock so alerts recorded at once cannot all pass it."""
    key = key or new_public_id("evt")
    with tenancy.system(session):
        # The user's row lock orders alerts recorded at once (PostgreSQL; SQLite serializes
        # writers): each counts the mails of those before it, so the rate limit holds.
        session.execute(select(PortalUser.id).where(PortalUser.id == user.id).with_for_update())
        found = session.scalar(
            select(SecurityAlert.id).where(
                SecurityAlert.user_id == user.id,
                SecurityAlert.kind == kind,
                SecurityAlert.key == key,
            )
        )
        if found is not None:
            return None
        alert = SecurityAlert(
            company_id=user.company_id,
            user_id=user.id,
            kind=kind.value,
            key=key[:80],
            ip_address=request.ip_address[:64],
            device=device_of(request.user_agent)[:120],
            created_at=now,
            mailed=mails_left(session, user, now),
        )
        try:
            with session.begin_nested():
                session.add(alert)
                session.flush()
        except IntegrityError:  # alerted by a concurrent request
            return None
        audit.record_for(
            session,
            user,
            "Portal.SecurityAlert",
            request=request,
            kind=kind.value,
            alert_id=alert.public_id,
            mailed=alert.mailed,
        )
    return alert


@dataclass(frozen=True)
class DigestLine:
    email: str
    kind: str
    created_at: datetime
    ip_address: str
    device: str


def company_alerts(
    session: Session, company_id: int, start: datetime, end: datetime, *, limit: int = DIGEST_LINES
) -> tuple[list[DigestLine], int]:
    """A company's alerted events in [start, end), oldest first, with whose they were: at most
    `limit` of them (a flood of alerts makes no flood of a mail), and how many there were."""
    with tenancy.system(session):
        total = session.scalar(
            select(func.count()).where(
                SecurityAlert.company_id == company_id,
                SecurityAlert.created_at >= start,
                SecurityAlert.created_at < end,
            )
        )
        rows = session.execute(
            select(
                PortalUser.email,
                SecurityAlert.kind,
                SecurityAlert.created_at,
                SecurityAlert.ip_address,
                SecurityAlert.device,
            )
            .join(PortalUser, PortalUser.id == SecurityAlert.user_id)
            .where(
                SecurityAlert.company_id == company_id,
                SecurityAlert.created_at >= start,
                SecurityAlert.created_at < end,
            )
            .order_by(SecurityAlert.created_at, SecurityAlert.id)
            .limit(limit)
        )
        return [DigestLine(*row) for row in rows], int(total or 0)


def companies_with_alerts(session: Session, start: datetime, end: datetime) -> list[int]:
    with tenancy.system(session):
        return list(
            session.scalars(
                select(SecurityAlert.company_id)
                .where(SecurityAlert.created_at >= start, SecurityAlert.created_at < end)
                .distinct()
            )
        )


# "This wasn't me" ------------------------------------------------------------------------


class LinkState(StrEnum):
    OK = "ok"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class LinkCheck:
    state: LinkState
    user: PortalUser | None = None
    alert: SecurityAlert | None = None
    address: str | None = None  # the address the link was mailed to


def _serializer(keys: Keyring, now: datetime) -> URLSafeTimedSerializer:
    return keys.links(_LINK_SALT, now)


def not_me_token(
    user: PortalUser,
    alert: SecurityAlert,
    *,
    keys: Keyring,
    now: datetime,
    address: str | None = None,
) -> str:
    """The signed link's token; `address`: the address the alert is mailed to (for an e-mail
    change, the one the account moved away from), which "This wasn't me" gives back if the
    account has left it since."""
    data = [user.public_id, alert.public_id] + ([address] if address else [])
    return str(_serializer(keys, now).dumps(data))


def check_not_me(session: Session, token: str, *, keys: Keyring, now: datetime) -> LinkCheck:
    """The user and alert a "This wasn't me" link names, whoever is signed in (nobody need be)."""
    try:
        data = _serializer(keys, now).loads(token, max_age=int(LINK_LIFETIME.total_seconds()))
    except SignatureExpired:
        return LinkCheck(LinkState.EXPIRED)
    except BadSignature:
        return LinkCheck(LinkState.INVALID)
    if (
        not isinstance(data, list)
        or len(data) not in (2, 3)
        or not all(isinstance(d, str) for d in data)
    ):
        return LinkCheck(LinkState.INVALID)
    with tenancy.system(session):  # the link is the authority, not a session's scope
        found = session.execute(
            select(PortalUser, SecurityAlert)
            .join(SecurityAlert, SecurityAlert.user_id == PortalUser.id)
            .where(PortalUser.public_id == data[0], SecurityAlert.public_id == data[1])
        ).one_or_none()
        if found is None:
            return LinkCheck(LinkState.INVALID)
        user, alert = found
        _ = user.company  # read while the company is visible
    address = data[2] if len(data) == 3 else None
    return LinkCheck(LinkState.OK, user, alert, address)


def secure_account(
    session: Session,
    user: PortalUser,
    alert: SecurityAlert,
    *,
    now: datetime,
    request: audit.RequestInfo,
    restore_email: str | None = None,
) -> bool:
    """End every session and API token of the user and make the password unusable; whether a
    new password-reset mail is due (not when the account was secured within RESET_AGAIN_AFTER).
    Audited as Portal.AccountSecured. Every device and network the user signed in from counts
    as new again (the intruder's too). A link works once: an alert secured before does nothing
    again (its mail, forwarded or read days later, cannot lock the owner out of the password
    they chose since). `restore_email`: the address the link was mailed to; if the account
    has moved away from it (an intruder's e-mail change), it comes back (unless another
    account holds it now) before the reset mail, which is then due even within
    RESET_AGAIN_AFTER; new recovery codes' alert voids the unused codes (the intruder saw
    them).
    """
    with tenancy.system(session):
        # The user's row lock orders two presses at once (a double click, a mail scanner):
        # the second reads what the first did, and finds this link spent.
        session.execute(select(PortalUser.id).where(PortalUser.id == user.id).with_for_update())
        spent = session.scalar(select(SecurityAlert.secured_at).where(SecurityAlert.id == alert.id))
        if alert.secured_at is not None or spent is not None:
            return False
        recently = session.scalar(
            select(SecurityAlert.id).where(
                SecurityAlert.user_id == user.id,
                SecurityAlert.secured_at > now - RESET_AGAIN_AFTER,
            )
        )
        ended = auth.revoke_sessions(
            session, user, true(), now=now, request=request, reason="not_me"
        )
        tokens = api_tokens.revoke_all(session, user, now=now)
        # Nothing seen so far is trusted any more (the intruder's sign-in taught us their
        # device and network): each counts as not seen for KNOWN_FOR, so the next sign-in from
        # anywhere alerts. The rows stay, so it is not a quiet first sign-in either.
        session.execute(
            update(SignInOrigin)
            .where(SignInOrigin.user_id == user.id)
            .values(last_seen_at=now - KNOWN_FOR - timedelta(days=1))
            .execution_options(synchronize_session=False)
        )
        if session.scalar(select(SignInOrigin.id).where(SignInOrigin.user_id == user.id)) is None:
            # None recorded yet: a marker, so the next sign-in is neither a quiet first one
            # nor one that the sessions (the intruder's among them) could vouch for.
            session.add(
                SignInOrigin(
                    company_id=user.company_id,
                    user_id=user.id,
                    kind="secured",
                    key_hash="",
                    last_seen_at=now - KNOWN_FOR - timedelta(days=1),
                )
            )
        alert.secured_at = now  # this link is spent
        if alert.kind == Kind.RECOVERY_CODES_ISSUED:  # the intruder saw them: void them
            session.execute(
                update(RecoveryCode)
                .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
                .values(used_at=now)
                .execution_options(synchronize_session=False)
            )
        # The address moved away from the mailbox this link was mailed to: it comes back
        # (and any reset link mailed to the other is spent: it names the other address).
        restored = bool(restore_email) and profile.restore_email(
            session, user, restore_email or "", request=request
        )
        fresh = recently is None or restored
        if fresh:
            user.password_hash = None
            audit.record_for(
                session,
                user,
                "Portal.AccountSecured",
                request=request,
                alert_id=alert.public_id,
                sessions_ended=ended,
                tokens_revoked=tokens,
            )
        session.flush()
    return fresh
