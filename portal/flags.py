"""The runbook's rollout flags, as every process sees them.

Operators flip them with `flask --app wsgi flags set NAME=on|off` (a row of `feature_flags`).
Each process (a web worker, an RQ worker) keeps one snapshot of all of them, read again at
most every FLAGS_REFRESH_SECONDS (2 s by default; 0 reads them for every request and every job,
what the tests use), so a busy worker does not ask the database per request, and a change
reaches every process within that interval. Should a read fail (the database away or being
restored), the process keeps the flags it last read until one succeeds; while one thread reads
them, the process's other threads go on with the last ones read rather than wait. A request
takes the snapshot once, when it starts (`g.flags`), so everything it draws and refuses agrees.

What each flag switches off:
- `m25_portal`: the whole portal (portal/maintenance.py: the maintenance page, the API's 503),
  and the background work that talks to customers (reminders, monthly statements, scheduled
  charges wait; mail already queued still goes).
- `m25_portal_payment`: every pay action and route; scheduled charges wait.
- `m25_portal_statements`: the Statements page, its API and statement downloads.
- `m25_portal_documents`: the Documents library, its API and document downloads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from flask import Flask, current_app, g, has_request_context
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from portal.db import unit_of_work
from portal.extensions import Database
from portal.models import DEFAULT_FLAGS, FeatureFlag

MASTER = "m25_portal"
PAYMENT = "m25_portal_payment"
STATEMENTS = "m25_portal_statements"
DOCUMENTS = "m25_portal_documents"

Snapshot = Mapping[str, bool]
log = logging.getLogger(__name__)


def read(session: Session) -> dict[str, bool]:
    """Every known flag: its row's value, else its default. (feature_flags is global.)"""
    stored = {f.name: f.enabled for f in session.scalars(select(FeatureFlag))}
    return {name: stored.get(name, default) for name, default in DEFAULT_FLAGS.items()}


class FlagCache:
    """One process's view of the flags, read again once it is `refresh` seconds old."""

    def __init__(
        self,
        database: Database,
        refresh: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._refresh = refresh
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._read_at = 0.0

    def current(self) -> Snapshot:
        known = self._snapshot
        if known is not None and self._refresh > 0 and not self._lock.acquire(blocking=False):
            # Another thread is reading them (which may take a connect timeout while the
            # database is away): the last ones read hold meanwhile, nobody waits in line.
            return known
        if known is None or self._refresh <= 0:
            self._lock.acquire()
        try:
            return self._read_if_old()
        finally:
            self._lock.release()

    def _read_if_old(self) -> Snapshot:
        now = self._monotonic()
        if self._snapshot is None or now - self._read_at >= self._refresh:
            try:
                # Its own short read, not the request's transaction (nor, on SQLite, its lock).
                with unit_of_work(writes=False), self._database.sessionmaker() as session:
                    self._snapshot = MappingProxyType(read(session))
            except SQLAlchemyError:
                if self._snapshot is None:
                    raise  # nothing known yet: the request is answered as the error says
                # The database is away (stopped, restarting, being restored) or its table is:
                # the last flags read still hold, so a portal switched off for the work keeps
                # its maintenance page rather than a 503 or 500 of its own; read again after
                # another interval, not per request.
                log.warning("flags could not be read: the last ones read still hold")
            self._read_at = now
        return self._snapshot

    def forget(self) -> None:
        """Read afresh next time (after this process changed a flag itself)."""
        with self._lock:
            self._snapshot = None


def init_app(app: Flask, refresh: float) -> None:
    app.extensions["portal.flags"] = FlagCache(app.extensions["portal.db"], refresh)


def cache(app: Flask | None = None) -> FlagCache:
    found: FlagCache = (app or current_app).extensions["portal.flags"]
    return found


def snapshot() -> Snapshot:
    """The flags as this request sees them (taken once, at its start), or, outside a request
    (a job), this process's current snapshot."""
    if not has_request_context():
        return cache().current()
    if "flags" not in g:
        g.flags = cache().current()
    taken: Snapshot = g.flags
    return taken


SWITCHED_OFF = "portal_switched_off"  # on g: this request is refused because a flag is off


def note_refusal() -> None:
    """Say that this request's answer (a 503) is a switch doing its work, not a fault: the
    request metrics count it under the endpoint "switched_off" (portal/blueprints/health), which
    the error-rate alert leaves out, so switching the portal off does not page anyone and the
    rollback's "5xx share under 0.1%" can be watched while it is off."""
    if has_request_context():
        setattr(g, SWITCHED_OFF, True)


def enabled(name: str) -> bool:
    """Whether a flag is on. A sub-flag counts as off while the whole portal is off."""
    flags = snapshot()
    return bool(flags.get(name, False)) and (name == MASTER or bool(flags.get(MASTER, False)))
