"""Notification preferences, settings and the centre's rows: the domain, free of Flask.

A user's choice is a `NotificationPreference` row per (topic, channel); a missing row means the
default (`DEFAULTS`): every topic on in both channels except the monthly statement, which is
asked for (a file generated every month) only by a user who turns it on. The
centre lists a user's `Notification` rows shown in the portal, newest first, and counts the
unread ones with one indexed query.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import func, insert, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import new_public_id
from portal.models import (
    DEFAULT_REMIND_DAYS,
    REMIND_DAYS,
    Notification,
    NotificationChannel,
    NotificationPreference,
    NotificationSettings,
    NotificationTopic,
    PortalUser,
)
from portal.services import audit
from portal.services.crypto import Keyring

Choice = tuple[NotificationTopic, NotificationChannel]
PAGE_SIZE = 20


# Topics no preference turns off (either channel): stored choices are ignored, a saved form
# or an unsubscribe link cannot change them.
ALWAYS_ON = frozenset({NotificationTopic.SECURITY_ALERT})


def default(topic: NotificationTopic, channel: NotificationChannel) -> bool:
    """What a user gets without having chosen."""
    return topic is not NotificationTopic.MONTHLY_STATEMENT


DEFAULTS: dict[Choice, bool] = {
    (topic, channel): default(topic, channel)
    for topic in NotificationTopic
    for channel in NotificationChannel
}


def preferences(session: Session, user: PortalUser) -> dict[Choice, bool]:
    """Every (topic, channel) of the user: their choice, else the default (one query)."""
    chosen = dict(DEFAULTS)
    rows = session.execute(
        select(
            NotificationPreference.topic,
            NotificationPreference.channel,
            NotificationPreference.enabled,
        ).where(NotificationPreference.user_id == user.id)
    )
    for topic, channel, enabled in rows:
        if channel in NotificationChannel._value2member_map_ and topic not in ALWAYS_ON:
            chosen[(topic, NotificationChannel(channel))] = bool(enabled)
    return chosen


def channels(session: Session, user: PortalUser, topic: NotificationTopic) -> dict[str, bool]:
    """{"email": on?, "portal": on?} for one topic (one query)."""
    chosen = {channel.value: default(topic, channel) for channel in NotificationChannel}
    if topic in ALWAYS_ON:
        return chosen
    rows = session.execute(
        select(NotificationPreference.channel, NotificationPreference.enabled).where(
            NotificationPreference.user_id == user.id, NotificationPreference.topic == topic
        )
    )
    for channel, enabled in rows:
        if channel in chosen:
            chosen[channel] = bool(enabled)
    return chosen


def _insert(session: Session) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (the portal runs on these two)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _store(
    session: Session, model: Any, values: dict[str, Any], keys: list[str], column: str
) -> bool:
    """Insert the row, or set `column` on the existing one; whether it changed. One statement
    (INSERT … ON CONFLICT DO UPDATE … WHERE the value differs … RETURNING), so two requests at
    once neither collide on the unique key nor both count the same change."""
    statement = _insert(session)(model).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=keys,
        set_={column: getattr(statement.excluded, column)},
        where=getattr(model, column) != getattr(statement.excluded, column),
    ).returning(model.id)
    return session.execute(statement).scalar_one_or_none() is not None


def set_preferences(session: Session, user: PortalUser, wanted: Mapping[Choice, bool]) -> list[str]:
    """Store the user's choices; the names ("topic.channel") of those this call changed (a
    choice stored meanwhile by a concurrent request is not counted twice)."""
    current = preferences(session, user)
    changed: list[str] = []
    for (topic, channel), enabled in wanted.items():
        if topic in ALWAYS_ON or current[(topic, channel)] == enabled:
            continue
        values = {
            "company_id": user.company_id,
            "user_id": user.id,
            "topic": topic,
            "channel": channel.value,
            "enabled": enabled,
        }
        if _store(
            session, NotificationPreference, values, ["user_id", "topic", "channel"], "enabled"
        ):
            changed.append(f"{topic.value}.{channel.value}")
    return changed


def update_preferences(
    session: Session,
    user: PortalUser,
    wanted: Mapping[Choice, bool],
    days: int,
    *,
    request: audit.RequestInfo,
) -> list[str]:
    """The preferences page's Save: the switches and the reminder's lead time; the names of
    what changed ("topic.channel", "remind_days"), audited as Portal.NotificationPreferencesUpdated
    (names only, never values) when there are any."""
    changed = set_preferences(session, user, wanted)
    if set_remind_days(session, user, days):
        changed.append("remind_days")
    if changed:
        audit.record_for(
            session,
            user,
            "Portal.NotificationPreferencesUpdated",
            request=request,
            changed_fields=changed,
        )
    return changed


def remind_days(session: Session, user: PortalUser) -> int:
    value = session.scalar(
        select(NotificationSettings.remind_days_before).where(
            NotificationSettings.user_id == user.id
        )
    )
    return int(value) if value is not None else DEFAULT_REMIND_DAYS


def set_remind_days(session: Session, user: PortalUser, days: int) -> bool:
    """Store "remind me `days` before the due date"; whether this call changed it."""
    if days not in REMIND_DAYS:
        raise ValueError(f"remind days must be one of {REMIND_DAYS}")
    if remind_days(session, user) == days:
        return False
    values = {"company_id": user.company_id, "user_id": user.id, "remind_days_before": days}
    return _store(session, NotificationSettings, values, ["user_id"], "remind_days_before")


def record(
    session: Session,
    user: PortalUser,
    topic: NotificationTopic,
    *,
    key: str,
    params: Mapping[str, str | int],
    link: str | None,
    in_portal: bool,
    by_email: bool,
    now: datetime,
) -> Notification | None:
    """The notification's row, inserted once per (user, topic, key): None when it exists
    already (one statement, safe against a concurrent run on both databases)."""
    values: dict[str, Any] = {
        "public_id": new_public_id(Notification.public_id_prefix),
        "company_id": user.company_id,
        "user_id": user.id,
        "topic": topic,
        "key": key,
        "params": dict(params),
        "link": link,
        "in_portal": in_portal,
        "by_email": by_email,
        "created_at": now,
    }
    dialect = session.get_bind().dialect.name
    statement: Any
    if dialect == "postgresql":
        statement = (
            postgresql.insert(Notification)
            .values(values)
            .on_conflict_do_nothing(index_elements=["user_id", "topic", "key"])
        )
    elif dialect == "sqlite":
        statement = (
            sqlite.insert(Notification)
            .values(values)
            .on_conflict_do_nothing(index_elements=["user_id", "topic", "key"])
        )
    else:  # pragma: no cover - the portal runs on these two
        statement = insert(Notification).values(values)
    new_id = session.execute(statement.returning(Notification.id)).scalar_one_or_none()
    if new_id is None:
        return None
    return session.get(Notification, new_id)


def exists(session: Session, user: PortalUser, topic: NotificationTopic, key: str) -> bool:
    found = session.scalar(
        select(Notification.id).where(
            Notification.user_id == user.id, Notification.topic == topic, Notification.key == key
        )
    )
    return found is not None


# the centre ------------------------------------------------------------------------------


def _shown(user: PortalUser) -> Any:
    # `= true`, not `IS true`: PostgreSQL takes only the former as an index condition.
    return (Notification.user_id == user.id) & (Notification.in_portal == true())


def unread_count(session: Session, user: PortalUser) -> int:
    """The header's badge: one indexed count."""
    count = session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(_shown(user), Notification.read_at.is_(None))
    )
    return int(count or 0)


@dataclass(frozen=True)
class Page:
    items: list[Notification]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def inbox(session: Session, user: PortalUser, page: int = 1, size: int = PAGE_SIZE) -> Page:
    """One page of the user's notifications, newest first (one query: a row past the page says
    whether there is a next one)."""
    page = max(1, page)
    rows = list(
        session.scalars(
            select(Notification)
            .where(_shown(user))
            .order_by(Notification.created_at.desc(), Notification.id.desc())
            .offset((page - 1) * size)
            .limit(size + 1)
        )
    )
    return Page(rows[:size], page, len(rows) > size)


def find(session: Session, user: PortalUser, public_id: str) -> str | None:
    """The public id of one of the user's notifications shown in the centre, None for someone
    else's or a missing one. Only the id is read: a row loaded here would keep its stale
    `read_at` in the session after `mark_read`'s bulk UPDATE."""
    found: str | None = session.scalar(
        select(Notification.public_id).where(_shown(user), Notification.public_id == public_id)
    )
    return found


def mark_read(session: Session, user: PortalUser, public_ids: Iterable[str], now: datetime) -> int:
    """Mark the user's notifications read; how many changed."""
    ids = list(public_ids)
    if not ids:
        return 0
    result = session.execute(
        update(Notification)
        .where(_shown(user), Notification.public_id.in_(ids), Notification.read_at.is_(None))
        .values(read_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def mark_all_read(session: Session, user: PortalUser, now: datetime) -> int:
    result = session.execute(
        update(Notification)
        .where(_shown(user), Notification.read_at.is_(None))
        .values(read_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# one-click unsubscribe links --------------------------------------------------------------

UNSUBSCRIBE_LIFETIME = timedelta(days=90)
_UNSUBSCRIBE_SALT = "portal.unsubscribe.v1"


@dataclass(frozen=True)
class Unsubscribe:
    """What a valid unsubscribe link stands for: one user's e-mail for one topic, sent to one
    address (`address`: a keyed hash of it, so the link dies when the address changes)."""

    user_public_id: str
    topic: NotificationTopic
    address: str


def _unsubscribe_serializer(keys: Keyring, now: datetime) -> URLSafeTimedSerializer:
    return keys.links(_UNSUBSCRIBE_SALT, now)


def _address_tag(email: str | None, key: str) -> str:
    """A short keyed hash of the address the mail went to (the token is signed, not secret:
    a plain hash would let its holder confirm a guessed address)."""
    message = ("portal.unsubscribe.address:" + (email or "").strip().lower()).encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()[:16]


def unsubscribe_token(
    user: PortalUser, topic: NotificationTopic, *, keys: Keyring, now: datetime
) -> str:
    tag = _address_tag(user.email, keys.current)
    return str(_unsubscribe_serializer(keys, now).dumps([user.public_id, topic.value, tag]))


def read_unsubscribe(token: str, *, keys: Keyring, now: datetime) -> Unsubscribe | None:
    """The link's user, topic and address; None when altered, expired or not ours."""
    try:
        data = _unsubscribe_serializer(keys, now).loads(
            token, max_age=int(UNSUBSCRIBE_LIFETIME.total_seconds())
        )
    except BadSignature:  # SignatureExpired is one
        return None
    if (
        not isinstance(data, list)
        or len(data) != 3
        or not all(isinstance(part, str) for part in data)
        or data[1] not in NotificationTopic._value2member_map_
    ):
        return None
    return Unsubscribe(data[0], NotificationTopic(data[1]), data[2])


def unsubscriber(session: Session, link: Unsubscribe, *, keys: Keyring) -> PortalUser | None:
    """The user a valid link names, whoever is signed in here (nobody need be): a lookup
    across companies by the signed public id; None when there is no such user any more, or
    their address is no longer the one the mail went to (a link in an old mailbox)."""
    with tenancy.system(session):  # the link is the authority, not a session's scope
        user: PortalUser | None = session.scalar(
            select(PortalUser).where(PortalUser.public_id == link.user_public_id)
        )
        if user is None or not any(
            hmac.compare_digest(link.address, _address_tag(user.email, key)) for key in keys.all
        ):
            return None
        _ = user.company  # read while the company is visible
    return user


def unsubscribe(
    session: Session, user: PortalUser, topic: NotificationTopic, *, request: audit.RequestInfo
) -> bool:
    """Turn off `user`'s e-mail for `topic` (and nothing else); whether it was on. Audited as
    Portal.Unsubscribed when it changed, so a second click (or a mail client's retry) changes
    and records nothing. An always-on topic (security alerts) is refused: nothing changes."""
    if topic in ALWAYS_ON:
        return False
    with tenancy.system(session):  # the person following the link may be signed in elsewhere
        changed = set_preferences(session, user, {(topic, NotificationChannel.EMAIL): False})
        if changed:
            audit.record_for(
                session, user, "Portal.Unsubscribed", request=request, topic=topic.value
            )
    return bool(changed)


def masked_email(email: str) -> str:
    """An address as an unsubscribe page may show it to whoever holds the link: "a•••@acme.test"."""
    local, at, domain = email.partition("@")
    if not at:
        return f"{email[:1]}•••"
    return f"{local[:1]}•••@{domain}"
