"""The runbook's rollout flags, read once per request."""

from __future__ import annotations

from flask import g
from sqlalchemy import select

from portal.extensions import db_session
from portal.models import DEFAULT_FLAGS, FeatureFlag


def enabled(name: str) -> bool:
    if "flags" not in g:
        stored = {f.name: f.enabled for f in db_session().scalars(select(FeatureFlag))}
        g.flags = {**DEFAULT_FLAGS, **stored}
    value: bool = g.flags.get(name, False)
    return value
