"""Signed download links: the only way a stored file (a statement, a document) leaves the portal.

A link names what it opens and the user it was made for, and is valid for 24 hours (the
runbook's "secure signed URLs; expiry after 24h"). The download route also requires that user
signed in: a link forwarded to a colleague, expired, or altered opens nothing.
Signed with SECRET_KEY; links signed with a key in SECRET_KEY_FALLBACKS still open.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from portal.services.crypto import Keyring

LIFETIME = timedelta(hours=24)
_SALT = "portal.download.v1"


class FileKind(enum.StrEnum):
    STATEMENT = "statement"
    DOCUMENT = "document"
    DISPUTE_ATTACHMENT = "dispute_attachment"


class LinkState(enum.StrEnum):
    OK = "ok"
    EXPIRED = "expired"
    INVALID = "invalid"  # altered, or not a link of ours
    FOREIGN = "foreign"  # made for another user


@dataclass(frozen=True)
class Downloadable:
    """What a valid link opens: a file in the store, how to name it, and the audit event its
    download records (once the file is found: a missing file records nothing)."""

    key: str
    filename: str
    content_type: str
    event: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkCheck:
    state: LinkState
    kind: FileKind | None = None
    public_id: str | None = None


def _serializer(keys: Keyring, now: datetime) -> URLSafeTimedSerializer:
    return keys.links(_SALT, now)


def sign(
    kind: FileKind, public_id: str, user_public_id: str, *, keys: Keyring, now: datetime
) -> str:
    return str(_serializer(keys, now).dumps([kind.value, public_id, user_public_id]))


def check(token: str, user_public_id: str, *, keys: Keyring, now: datetime) -> LinkCheck:
    try:
        data = _serializer(keys, now).loads(token, max_age=int(LIFETIME.total_seconds()))
    except SignatureExpired:
        return LinkCheck(LinkState.EXPIRED)
    except BadSignature:
        return LinkCheck(LinkState.INVALID)
    if (
        not isinstance(data, list)
        or len(data) != 3
        or not all(isinstance(part, str) for part in data)
        or data[0] not in FileKind._value2member_map_
    ):
        return LinkCheck(LinkState.INVALID)
    kind, public_id, owner = data
    if owner != user_public_id:
        return LinkCheck(LinkState.FOREIGN)
    return LinkCheck(LinkState.OK, FileKind(kind), public_id)
