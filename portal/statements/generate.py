"""The statement job: build the file, keep progress on the row, deliver it once.

`run` is what the worker runs for a statement's outbox work (workers/jobs.py
`generate_statement`). It is safe to run any number of times:

1. *Begin* (a short transaction): a statement that is no longer queued or generating is left
   alone (a second delivery, or one the sweep failed); otherwise it turns "generating" and its
   attempt number goes up: this run's file is `statements/<id>-<attempt>.<ext>`, its own.
2. *Build*: the figures are read in the requesting user's scope as it is now (an account they
   lost is a failure, not a leak), rendered into the file store (written whole or not at all),
   with progress written to the row every few per cent (short transactions of their own).
3. *Finish* (one transaction): the row turns "ready" only if it is still this attempt's, and the
   requester is notified in that same transaction (`delivery.announce`: "Statement ready", or
   the monthly statement's notice), so there is one notice and one mail however often this
   runs. A run that lost (another attempt finished, or the sweep failed it) removes its own
   file, and the run that won removes earlier attempts' files (a worker killed between writing
   and recording leaves one), so one file remains.

An unexpected error leaves the statement generating (marked as retrying) and goes back to the
outbox, which runs it again after a pause (portal/services/outbox.py RETRY_DELAYS); the sweep
(`settle`) fails a statement whose work gave up or which has been generating past TIMEOUT, so
nothing stays "generating".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from flask_babel import force_locale
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal import metrics, tenancy
from portal.db import unit_of_work
from portal.i18n import language_of
from portal.models import (
    IN_PROGRESS,
    BillingAccount,
    Company,
    PortalUser,
    Statement,
    StatementState,
)
from portal.runtime import Runtime
from portal.services import audit, outbox
from portal.services.invoice_pdf import BRAND
from portal.services.statements import ledger
from portal.services.statements.data import StatementData
from portal.services.statements.render import RENDERERS, filename
from portal.statements import delivery
from portal.statements.service import subject

log = logging.getLogger(__name__)

TIMEOUT = timedelta(minutes=10)  # generating longer than this: the sweep fails it
PROGRESS_EVERY = 5  # per cent between progress writes
PROGRESS_PAUSE = 0.3  # seconds at least between progress writes


class Failure(StrEnum):
    """Why a statement failed (its page says it in words, with Retry)."""

    ACCESS = "access_changed"  # the user or one of its accounts is no longer theirs
    GAVE_UP = "generation_failed"  # every attempt failed
    TIMED_OUT = "timed_out"
    RETRYING = "retrying"  # not a failure yet: an attempt failed and another will follow


Sessions = Callable[[], Session]


@contextmanager
def _writing(sessions: Sessions) -> Iterator[Session]:
    with unit_of_work(writes=True), sessions() as session, tenancy.system(session):
        yield session
        session.commit()


@dataclass(frozen=True)
class _Begun:
    statement_id: int
    public_id: str
    attempt: int
    user_id: int


def run(
    runtime: Runtime, sessions: Sessions, statement_id: int, now: Callable[[], datetime]
) -> str:
    begun = _begin(sessions, statement_id, now())
    if isinstance(begun, str):
        return begun
    try:
        built = _build(runtime, sessions, begun)
    except _Refused as refused:
        with _writing(sessions) as session:
            _fail(session, begun, refused.failure, now())
        return f"failed: {refused.failure.value}"
    except Exception:
        held = outbox.current.get()
        last = held is not None and held.attempt >= outbox.MAX_ATTEMPTS
        with _writing(sessions) as session:
            if last:  # the outbox gives up after this one: say so now, not at the next sweep
                _fail(session, begun, Failure.GAVE_UP, now())
            else:
                session.execute(
                    update(Statement)
                    .where(Statement.id == begun.statement_id, Statement.attempts == begun.attempt)
                    .values(error_code=Failure.RETRYING.value)
                )
        raise
    return _finish(runtime, sessions, begun, built, now())


def _begin(sessions: Sessions, statement_id: int, now: datetime) -> _Begun | str:
    with _writing(sessions) as session:
        statement = session.get(Statement, statement_id, with_for_update=True)
        if statement is None:
            return "no statement"
        if statement.state not in IN_PROGRESS:
            return f"already {statement.state.value}"
        statement.state = StatementState.RUNNING
        statement.attempts += 1
        statement.progress = 0
        statement.started_at = now
        return _Begun(
            statement.id, statement.public_id, statement.attempts, statement.requested_by_user_id
        )


class _Refused(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.value)
        self.failure = failure


@dataclass(frozen=True)
class _Built:
    key: str
    filename: str
    line_count: int


def _build(runtime: Runtime, sessions: Sessions, begun: _Begun) -> _Built:
    with unit_of_work(writes=False), sessions() as session:
        with tenancy.system(session):
            statement = session.get(Statement, begun.statement_id)
            user = session.get(PortalUser, begun.user_id)
            if statement is None or user is None or not user.is_active:
                raise _Refused(Failure.ACCESS)
            company = session.get(Company, statement.company_id)
            assert company is not None  # the statement's company owns it
            scope = tenancy.scope_for_user(user)
        # From here on, what the user may see now: an account no longer theirs is not read.
        tenancy.bind(session, scope)
        wanted = [int(i) for i in statement.account_ids]
        accounts = list(
            session.scalars(
                select(BillingAccount)
                .where(BillingAccount.id.in_(wanted))
                .order_by(BillingAccount.name)
            )
        )
        if not wanted or len(accounts) != len(set(wanted)):
            raise _Refused(Failure.ACCESS)
        address = accounts[0].bill_to if len(accounts) == 1 else ""
        data = StatementData(
            reference=statement.public_id,
            issuer=BRAND,
            company_name=company.name,
            company_address=address,
            start=statement.start_date,
            end=statement.end_date,
            generated_at=statement.started_at or statement.created_at,
            locale=statement.locale,
            sections=ledger.sections(
                session, accounts, statement.start_date, statement.end_date, company.currency
            ),
        )
        renderer = RENDERERS[statement.format]
        key = attempt_key(begun.public_id, begun.attempt, renderer.extension)
        progress = _ProgressWriter(sessions, begun, data.line_count)
        with (
            force_locale(language_of(statement.locale)),
            runtime.store.writer(key) as out,
            metrics.timed(metrics.statements, format=renderer.extension),
        ):
            renderer.render(data, out, progress)
        return _Built(key, filename(data, statement.format), data.line_count)


def attempt_key(public_id: str, attempt: int, extension: str) -> str:
    """Where an attempt writes its statement's file: each attempt its own."""
    return f"statements/{public_id}-{attempt}.{extension}"


class _ProgressWriter:
    """Writes the percentage to the row, every PROGRESS_EVERY points and PROGRESS_PAUSE s."""

    def __init__(self, sessions: Sessions, begun: _Begun, total: int) -> None:
        self.sessions = sessions
        self.begun = begun
        self.total = max(total, 1)
        self.written = 0
        self.at = 0.0

    def __call__(self, done: int) -> None:
        percent = min(99, done * 100 // self.total)  # 100 is "ready", set when it is
        moment = time.monotonic()
        if percent - self.written < PROGRESS_EVERY or moment - self.at < PROGRESS_PAUSE:
            return
        self.written, self.at = percent, moment
        with _writing(self.sessions) as session:
            session.execute(
                update(Statement)
                .where(
                    Statement.id == self.begun.statement_id,
                    Statement.attempts == self.begun.attempt,
                    Statement.state == StatementState.RUNNING,
                )
                .values(progress=percent)
            )


def _finish(
    runtime: Runtime, sessions: Sessions, begun: _Begun, built: _Built, now: datetime
) -> str:
    stored = runtime.store.stat(built.key)
    if stored is None:
        if _overtaken(sessions, begun):  # the attempt that won removed this one's file
            return "superseded"
        raise RuntimeError(f"statement file {built.key} is missing after writing it")
    with _writing(sessions) as session:
        won = session.scalar(
            update(Statement)
            .where(
                Statement.id == begun.statement_id,
                Statement.attempts == begun.attempt,
                Statement.state == StatementState.RUNNING,
            )
            .values(
                state=StatementState.READY,
                progress=100,
                error_code=None,
                storage_key=built.key,
                filename=built.filename,
                size_bytes=stored.size,
                sha256=stored.sha256,
                line_count=built.line_count,
                completed_at=now,
                available_until=now + runtime.settings.statement_retention,
            )
            .returning(Statement.company_id)
        )
        if won is not None:
            delivery.announce(runtime, session, begun.statement_id)
            audit.record(
                session,
                "Portal.StatementGenerated",
                company_id=won,
                user_id=begun.user_id,
                statement_id=begun.public_id,
                lines=built.line_count,
                size_bytes=stored.size,
            )
    if won is None:
        runtime.store.delete(built.key)  # another attempt's file is the statement's
        return "superseded"
    # An earlier attempt killed between writing its file and recording it left that file:
    # now that this one is the statement's, nothing can point to theirs.
    extension = built.key.rsplit(".", 1)[1]
    for earlier in range(1, begun.attempt):
        runtime.store.delete(attempt_key(begun.public_id, earlier, extension))
    return "ready"


def _overtaken(sessions: Sessions, begun: _Begun) -> bool:
    with unit_of_work(writes=False), sessions() as session, tenancy.system(session):
        attempts = session.scalar(
            select(Statement.attempts).where(Statement.id == begun.statement_id)
        )
    return attempts is None or attempts != begun.attempt


def _fail(session: Session, begun: _Begun, failure: Failure, now: datetime) -> None:
    session.execute(
        update(Statement)
        .where(Statement.id == begun.statement_id, Statement.attempts == begun.attempt)
        .where(Statement.state.in_(IN_PROGRESS))
        .values(state=StatementState.FAILED, error_code=failure.value, completed_at=now)
    )


# the sweep's part --------------------------------------------------------------------------


def settle(session: Session, now: datetime) -> int:
    """Fail statements that would otherwise stay queued or generating: those whose work gave
    up (no unfinished outbox work is left for them) and those generating past TIMEOUT. The
    caller holds a writing, cross-company session."""
    failed = 0
    for statement in session.scalars(
        select(Statement).where(Statement.state.in_(IN_PROGRESS)).with_for_update()
    ):
        if statement.state is StatementState.RUNNING and (
            statement.started_at is not None and statement.started_at < now - TIMEOUT
        ):
            failure = Failure.TIMED_OUT
        elif not outbox.has_unfinished(session, subject(statement.id)):
            failure = Failure.GAVE_UP
        else:
            continue
        statement.state = StatementState.FAILED
        statement.error_code = failure.value
        statement.completed_at = now
        failed += 1
        log.warning("statement %s failed: %s", statement.public_id, failure.value)
    session.flush()
    return failed


def expire(session: Session, now: datetime) -> list[str]:
    """Mark the statements kept past their retention expired; answers their files' keys, which
    the caller removes (`remove_files`) once this is committed: a file goes only after nothing
    points to it, so a rollback never leaves a ready statement without its file."""
    keys = []
    for statement in session.scalars(
        select(Statement)
        .where(Statement.state == StatementState.READY, Statement.available_until < now)
        .with_for_update()
    ):
        if statement.storage_key:
            keys.append(statement.storage_key)
        statement.state = StatementState.EXPIRED
        statement.storage_key = None
    session.flush()
    return keys


def remove_files(runtime: Runtime, keys: list[str]) -> int:
    """Delete expired statements' files, each on its own: one that fails is logged and left
    (nothing points to it any more), the others still go."""
    removed = 0
    for key in keys:
        try:
            removed += runtime.store.delete(key)
        except OSError:
            log.exception("statement file %s could not be removed", key)
    return removed
