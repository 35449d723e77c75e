"""Background work as rows (`outbox`): durable intent in the database, Redis only as transport.

The life of a row:

    pending ──dispatcher──▶ queued ──worker claims──▶ running ──▶ done
       ▲  (run_after due)      │ (Redis lost it:        │  ╲ error: pending again, later
       │                       │  handed over again)    │   ╲ (failed after MAX_ATTEMPTS)
       └───────────────────────┘                        ▼
                                               sending (mail only) ──▶ done

- A request (or a job) adds the row in its own transaction (`add`): if that transaction rolls
  back, the work was never asked for; if it commits, the work cannot be lost.
- A worker runs a row only after claiming it (`claim`: one row lock or SQLite's write lock, and
  a committed "running, by host:pid"); a second delivery of the same row finds it taken or done
  and does nothing. The job itself is written to be safe to run again (it looks at the state of
  what it changes), so a worker that dies after the side effect and before `finish` leaves the
  effect once: the row goes back to pending (`recover`) and the rerun finds nothing to do.
- Mail is the side effect that cannot look before it leaps: the row turns `sending` (committed)
  just before the message goes to the server, and a row found `sending` by a dead process, or
  whose server did not answer after taking the message, is never sent again (at most once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.models import UNFINISHED, Schedule, Work, WorkState

MAX_ATTEMPTS = 4  # the first run and three more
RETRY_DELAYS = (timedelta(seconds=10), timedelta(minutes=1), timedelta(minutes=5))
# A claim whose process cannot be looked at (another host) is given up after this long: longer
# than any job may run (RQ ends a job after 5 minutes).
LEASE = timedelta(minutes=10)
# Work waiting longer than this past its time is "late": pages and /readyz say so.
LATE_AFTER = timedelta(minutes=1)
KEEP = timedelta(days=14)  # finished rows are kept this long (for support), then removed
OUTCOME_LENGTH = 300


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one row while it runs it."""

    work_id: int
    job: str
    args: tuple[Any, ...]
    by: str
    attempt: int
    created: datetime

    def message_id(self, domain: str) -> str:
        """The Message-ID of the mail this work sends: the same for every attempt (a receiver
        can tell a repeat), never the same for two pieces of work (a row id may come again
        after rows are removed, hence its time too)."""
        return f"<work-{self.work_id}.{int(self.created.timestamp() * 1_000_000)}@{domain}>"


# The claim of the work running in this context (set by the worker around a job), so the mailer
# can mark it `sending` and give its message a stable Message-ID.
current: ContextVar[Claim | None] = ContextVar("portal_outbox_claim", default=None)


def add(
    session: Session,
    job: str,
    args: Sequence[Any],
    *,
    now: datetime,
    run_after: datetime | None = None,
    subject: str | None = None,
) -> Work:
    """Ask for `job(*args)` at `run_after` (now if None), in `session`'s transaction. Work due
    now is written as already handed over (`queued`): the caller hands it to Redis after the
    commit, and the dispatcher hands it over again should that not happen."""
    due_now = run_after is None or run_after <= now
    row = Work(
        job=job,
        args=list(args),
        subject=subject,
        state=WorkState.QUEUED if due_now else WorkState.PENDING,
        run_after=now if run_after is None else run_after,
        attempts=0,
        dispatched=1 if due_now else 0,
        dispatched_at=now if due_now else None,
        created_at=now,
    )
    session.add(row)
    session.flush()  # its id travels to Redis after the commit
    return row


def claim(session: Session, work_id: int, by: str, now: datetime) -> Claim | None:
    """Take the row for `by` (the caller commits). None when it is not there to take: done,
    failed, taken by another, or put back for later (a stale duplicate delivery)."""
    row = session.get(Work, work_id, with_for_update=True, populate_existing=True)
    if row is None:
        return None
    runnable = row.state is WorkState.QUEUED or (
        row.state is WorkState.PENDING and row.run_after <= now
    )
    if not runnable:
        return None
    if row.attempts >= MAX_ATTEMPTS:
        _end(row, WorkState.FAILED, now, f"out of attempts ({row.attempts})")
        return None
    row.state = WorkState.RUNNING
    row.claimed_by = by
    row.claimed_at = now
    row.attempts += 1
    return Claim(row.id, row.job, tuple(row.args), by, row.attempts, row.created_at)


def _held(session: Session, held: Claim, states: Iterable[WorkState]) -> Work | None:
    """The row, if `held` still holds it in one of `states` (else another process took it over)."""
    row = session.get(Work, held.work_id, with_for_update=True, populate_existing=True)
    if row is None or row.claimed_by != held.by or row.state not in tuple(states):
        return None
    return row


def _end(row: Work, state: WorkState, now: datetime, outcome: str) -> None:
    row.state = state
    row.finished_at = now
    row.outcome = outcome[:OUTCOME_LENGTH]
    if state is WorkState.DONE:
        row.args = []  # what it needed to run (an address, an IP) is not kept once it ran


def mark_sending(session: Session, held: Claim) -> bool:
    """The message is about to reach the mail server: from here on it is never sent again."""
    row = _held(session, held, (WorkState.RUNNING, WorkState.SENDING))
    if row is None:
        return False
    row.state = WorkState.SENDING
    return True


def finish(session: Session, held: Claim, outcome: str, now: datetime) -> bool:
    row = _held(session, held, (WorkState.RUNNING, WorkState.SENDING))
    if row is None:
        return False
    _end(row, WorkState.DONE, now, outcome)
    return True


def give_up_or_retry(
    session: Session,
    held: Claim,
    error: str,
    now: datetime,
    *,
    retry: bool = True,
    refused: bool = False,
) -> WorkState | None:
    """The job failed: run it again later (RETRY_DELAYS), or give up after MAX_ATTEMPTS, or at
    once when `retry` is false (an error that a rerun would meet again). A row already `sending`
    runs again only when the mail server `refused` the message (it said no: not taken); any
    other error there may have come after the message went out, so the row ends "unconfirmed"
    rather than risk a second copy."""
    row = _held(session, held, (WorkState.RUNNING, WorkState.SENDING))
    if row is None:
        return None
    if row.state is WorkState.SENDING and not refused:
        _end(row, WorkState.DONE, now, f"unconfirmed: {error}")
    elif retry and row.attempts < MAX_ATTEMPTS:
        row.state = WorkState.PENDING
        row.run_after = now + RETRY_DELAYS[min(row.attempts, len(RETRY_DELAYS)) - 1]
        row.claimed_by = None
        row.outcome = error[:OUTCOME_LENGTH]
    else:
        _end(row, WorkState.FAILED, now, error)
    return row.state


# the dispatcher's side ------------------------------------------------------------------


def due(session: Session, now: datetime, limit: int = 200) -> list[int]:
    """Pending rows whose time has come, oldest first."""
    return list(
        session.scalars(
            select(Work.id)
            .where(Work.state == WorkState.PENDING, Work.run_after <= now)
            .order_by(Work.run_after, Work.id)
            .limit(limit)
        )
    )


def hand_over(
    session: Session, work_id: int, now: datetime, *, again_after: int | None = None
) -> str | None:
    """Record a (new) hand-off of a pending row to Redis: its RQ job id, or None if another
    dispatcher got there first or the row moved on. `again_after`: hand over again a queued row
    that Redis lost, whose last hand-off was that one (so two dispatchers make one)."""
    condition = (
        (Work.state == WorkState.PENDING)
        if again_after is None
        else (Work.state == WorkState.QUEUED) & (Work.dispatched == again_after)
    )
    changed = session.execute(
        update(Work)
        .where(Work.id == work_id, condition)
        .values(state=WorkState.QUEUED, dispatched=Work.dispatched + 1, dispatched_at=now)
        .returning(Work.dispatched)
    ).scalar_one_or_none()
    return None if changed is None else f"outbox-{work_id}-{changed}"


def handed_over_before(session: Session, before: datetime, limit: int = 200) -> list[Work]:
    """Queued rows handed to Redis before `before` (to ask Redis whether it still has them)."""
    return list(
        session.scalars(
            select(Work)
            .where(Work.state == WorkState.QUEUED, Work.dispatched_at < before)
            .order_by(Work.dispatched_at)
            .limit(limit)
        )
    )


def recover(session: Session, now: datetime, alive: Callable[[str], bool | None]) -> dict[str, int]:
    """Rows whose process died while holding them (`alive(by)` False), or held longer than
    LEASE (longer than any job may run: whatever the process that looks alive is, say one that
    took a dead one's pid, it is not running this): running ones go back to pending (run again at
    once), sending ones end (their mail may have gone: never twice)."""
    counts = {"rerun": 0, "unconfirmed": 0}
    held = session.scalars(
        select(Work)
        .where(Work.state.in_((WorkState.RUNNING, WorkState.SENDING)))
        .with_for_update(skip_locked=True)
    ).all()
    for row in held:
        expired = row.claimed_at is None or row.claimed_at < now - LEASE
        if not expired and alive(row.claimed_by or "") is not False:
            continue
        if row.state is WorkState.SENDING:
            _end(row, WorkState.DONE, now, f"unconfirmed: {row.claimed_by} ended while sending")
            counts["unconfirmed"] += 1
        else:
            row.state = WorkState.PENDING
            row.run_after = now
            row.outcome = f"{row.claimed_by} ended while running it"
            row.claimed_by = None
            counts["rerun"] += 1
    return counts


def claim_schedule(session: Session, name: str, every: timedelta, now: datetime) -> bool:
    """True for the one caller that moves a recurring job's next run on (it runs it now). The
    first call for a name creates its row, due at once."""
    if session.get(Schedule, name) is None:
        try:
            with session.begin_nested():
                session.add(Schedule(name=name, next_run_at=now))
        except IntegrityError:  # another dispatcher created it just now
            pass
    moved = session.execute(
        update(Schedule)
        .where(Schedule.name == name, Schedule.next_run_at <= now)
        .values(next_run_at=now + every)
    )
    return bool(getattr(moved, "rowcount", 0))


def prune(session: Session, now: datetime) -> int:
    result = session.execute(
        delete(Work).where(
            Work.state.in_((WorkState.DONE, WorkState.FAILED)), Work.finished_at < now - KEEP
        )
    )
    return int(getattr(result, "rowcount", 0))


# what pages and /readyz say -----------------------------------------------------------


def late(session: Session, now: datetime) -> int:
    """How many unfinished rows wait more than LATE_AFTER past their time."""
    count = session.scalar(
        select(func.count()).where(Work.state.in_(UNFINISHED), Work.run_after < now - LATE_AFTER)
    )
    return int(count or 0)


@dataclass(frozen=True)
class Backlog:
    """Work waiting for a worker (pending or queued, its time come) at one moment: /metrics."""

    due: int
    oldest_due_at: datetime | None
    late: int


WAITING = (WorkState.PENDING, WorkState.QUEUED)


def backlog(session: Session, now: datetime) -> Backlog:
    """How much due work waits, since when, and how many unfinished rows are late."""
    due, oldest = session.execute(
        select(func.count(), func.min(Work.run_after)).where(
            Work.state.in_(WAITING), Work.run_after <= now
        )
    ).one()
    return Backlog(int(due or 0), oldest, late(session, now))


def about_payment(payment_id: int) -> str:
    """The subject of work about a payment (its scheduled run, the mail of its outcome)."""
    return f"payment:{payment_id}"


def about_charge(reference: str) -> str:
    """The subject of work about a gateway's charge (the sandbox's settlement of it)."""
    return f"charge:{reference}"


def is_late(session: Session, subjects: Sequence[str], now: datetime) -> bool:
    """Whether work about any of `subjects` ("payment:42") is waiting past LATE_AFTER."""
    if not subjects:
        return False
    found = session.scalar(
        select(Work.id)
        .where(
            Work.subject.in_(list(subjects)),
            Work.state.in_(UNFINISHED),
            Work.run_after < now - LATE_AFTER,
        )
        .limit(1)
    )
    return found is not None


def has_unfinished(session: Session, subject: str) -> bool:
    """Whether any work about `subject` is still to run (or running)."""
    found = session.scalar(
        select(Work.id).where(Work.subject == subject, Work.state.in_(UNFINISHED)).limit(1)
    )
    return found is not None


def unfinished(session: Session) -> list[Work]:
    """Every unfinished row, by time (tests and `flask jobs list`)."""
    return list(
        session.scalars(
            select(Work).where(Work.state.in_(UNFINISHED)).order_by(Work.run_after, Work.id)
        )
    )
