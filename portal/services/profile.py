"""A user's own profile: name, phone, job title, language, time zone and number format; and
changing the e-mail address they sign in with, confirmed from the new address.

The e-mail change link is signed (SECRET_KEY, fallbacks accepted), lives 24 hours by the portal
clock, and names the user and a fingerprint (a keyed hash) of their current address and the one
asked for, which the user's row keeps (`pending_email`): no address is readable in the URL. Once
the change is made, or another one is asked for, the fingerprint no longer matches, so the link
is spent: the database's state is what makes it single use.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast
from zoneinfo import available_timezones

import phonenumbers
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import CursorResult, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.models import Company, PortalUser
from portal.services import ar_events, audit
from portal.services.auth import find_user_by_email, normalize_email
from portal.services.crypto import Keyring

EMAIL_CHANGE_LIFETIME = timedelta(hours=24)
_EMAIL_SALT = "portal.email-change.v2"
EDITABLE = ("name", "phone", "job_title", "locale", "timezone", "number_locale")


@lru_cache(maxsize=1)
def time_zones() -> tuple[str, ...]:
    """Every IANA zone name the system knows, sorted, without the legacy aliases."""
    legacy = ("Etc/", "SystemV/", "US/", "posix/", "right/")
    zones = sorted(n for n in available_timezones() if "/" in n and not n.startswith(legacy))
    return (*zones, "UTC")


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(time_zones())


def valid_time_zone(name: str) -> bool:
    """Exactly the names the form offers: a legacy alias ("US/Eastern") saved would not be among
    the options, and the form would then show, and save back, another zone."""
    return name in _zone_names()


def region_of(locale: str | None) -> str | None:
    """The country of a locale code ("de_DE" → "DE"), the default region of a phone number."""
    parts = (locale or "").replace("-", "_").split("_")
    return parts[1].upper() if len(parts) > 1 and len(parts[1]) == 2 else None


def parse_phone(text: str, region: str | None) -> str | None:
    """`text` as E.164 ("+14155550123"), or None if it is not a possible, valid number. Without
    a leading + it is read as a number of `region`."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def display_phone(e164: str | None) -> str:
    """A stored number as people write it internationally ("+1 415-555-0123")."""
    if not e164:
        return ""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL))


def update_profile(
    session: Session,
    user: PortalUser,
    values: dict[str, str | None],
    *,
    request: audit.RequestInfo,
) -> list[str]:
    """Set the profile's fields to `values` (already validated); the names of those that
    changed, audited as Portal.ProfileUpdated (names only, never values) when there are any."""
    changed: list[str] = []
    for name in EDITABLE:
        if name not in values:
            continue
        value = values[name] or None
        current = getattr(user, name)
        if name == "name":
            value = (value or "").strip() or user.name
        elif name == "timezone" and (value or "UTC") == (current or "UTC"):
            continue  # no zone chosen reads as UTC, which the form shows: not a change
        if current != value:
            setattr(user, name, value)
            changed.append(name)
    if changed:
        session.flush()
        audit.record_for(
            session, user, "Portal.ProfileUpdated", request=request, changed_fields=changed
        )
        _publish_profile(session, user, ar_events.PROFILE_UPDATED, changed)
    return changed


def _publish_profile(session: Session, user: PortalUser, kind: str, changed: list[str]) -> None:
    """The receivables feed hears which fields changed (names only, never values)."""
    company = session.get(Company, user.company_id)
    ar_events.record(
        session,
        user.company_id,
        kind,
        user.public_id,
        {
            "user_id": user.public_id,
            "company_id": company.public_id if company else None,
            "changed_fields": changed,
        },
    )


# --- e-mail change ------------------------------------------------------------------------------


class EmailLinkState(enum.StrEnum):
    OK = "ok"
    EXPIRED = "expired"  # older than 24 hours
    INVALID = "invalid"  # altered, or not a link of ours
    FOREIGN = "foreign"  # made for another user
    USED = "used"  # the address it changes from is no longer the user's (done, or changed since)
    TAKEN = "taken"  # the new address belongs to another account by now


@dataclass(frozen=True)
class EmailLinkCheck:
    state: EmailLinkState
    new_email: str | None = None


def _serializer(keys: Keyring, now: datetime) -> URLSafeTimedSerializer:
    return keys.links(_EMAIL_SALT, now)


def _fingerprint(secret_key: str, user: PortalUser) -> str:
    material = f"{user.public_id}:{user.email}:{user.pending_email or ''}".encode()
    return hmac.new(secret_key.encode(), material, hashlib.sha256).hexdigest()[:24]


def email_change_token(user: PortalUser, *, keys: Keyring, now: datetime) -> str:
    """The link's token for the change the user asked for last (`pending_email`)."""
    return str(_serializer(keys, now).dumps([user.public_id, _fingerprint(keys.current, user)]))


def check_email_change(
    session: Session, token: str, user: PortalUser, *, keys: Keyring, now: datetime
) -> EmailLinkCheck:
    try:
        data: Any = _serializer(keys, now).loads(
            token, max_age=int(EMAIL_CHANGE_LIFETIME.total_seconds())
        )
    except SignatureExpired:
        return EmailLinkCheck(EmailLinkState.EXPIRED)
    except BadSignature:
        return EmailLinkCheck(EmailLinkState.INVALID)
    if not isinstance(data, list) or len(data) != 2 or not all(isinstance(p, str) for p in data):
        return EmailLinkCheck(EmailLinkState.INVALID)
    owner, given = data
    if owner != user.public_id:
        return EmailLinkCheck(EmailLinkState.FOREIGN)
    new_email = user.pending_email
    if new_email is None or not any(
        hmac.compare_digest(given, _fingerprint(key, user)) for key in keys.all
    ):
        return EmailLinkCheck(EmailLinkState.USED)
    holder = find_user_by_email(session, new_email)
    if holder is not None and holder.id != user.id:
        return EmailLinkCheck(EmailLinkState.TAKEN)
    return EmailLinkCheck(EmailLinkState.OK, new_email)


def request_email_change(
    session: Session, user: PortalUser, new_email: str, *, request: audit.RequestInfo
) -> str:
    """Keep the normalized new address as the user's pending one (a link asked for earlier is
    void from now on), audit the request (no addresses recorded) and return it. Whether it
    belongs to another account is not looked at here: the confirmation refuses it."""
    user.pending_email = normalize_email(new_email)
    session.flush()
    audit.record_for(session, user, "Portal.EmailChangeRequested", request=request)
    return user.pending_email


def change_email(
    session: Session,
    user: PortalUser,
    new_email: str,
    *,
    old_email: str,
    request: audit.RequestInfo,
) -> EmailLinkState:
    """Move the user from `old_email` to `new_email` in one conditional UPDATE: OK, else USED
    when their address is no longer `old_email` (another request changed it first), or TAKEN
    when another account took `new_email` since the link was checked (the unique index says so;
    nothing changes)."""
    session.flush()
    try:
        with session.begin_nested():
            result = session.execute(
                update(PortalUser)
                .where(
                    PortalUser.id == user.id,
                    PortalUser.email == old_email,
                    PortalUser.pending_email == new_email,
                )
                .values(email=normalize_email(new_email), pending_email=None)
            )
            changed = int(cast(CursorResult[Any], result).rowcount)
    except IntegrityError:
        return EmailLinkState.TAKEN
    if not changed:
        return EmailLinkState.USED
    audit.record_for(session, user, "Portal.EmailChanged", request=request)
    _publish_profile(session, user, ar_events.EMAIL_CHANGED, ["email"])
    return EmailLinkState.OK


def restore_email(
    session: Session, user: PortalUser, address: str, *, request: audit.RequestInfo
) -> bool:
    """Give the user back `address`, the one an e-mail change moved them away from ("This
    wasn't me" on an alert mailed there), and drop any change still pending: whether it
    changed (not when it is theirs already, or another account holds it now). Audited and
    published like a change."""
    address = normalize_email(address)
    if address == user.email:
        return False
    session.flush()
    try:
        with session.begin_nested():
            session.execute(
                update(PortalUser)
                .where(PortalUser.id == user.id)
                .values(email=address, pending_email=None)
            )
    except IntegrityError:
        return False
    audit.record_for(session, user, "Portal.EmailChanged", request=request, reason="not_me")
    _publish_profile(session, user, ar_events.EMAIL_CHANGED, ["email"])
    return True
