"""The outbox: every piece of background work, written in the transaction that asks for it.

A row is the durable intent ("mail this payment's result", "settle this debit at 10:02");
Redis only carries its id to a worker. The row's state says how far it got, so work that Redis
lost is handed over again, and work that runs twice (a retry, a crash after the side effect, a
duplicate hand-off) does its side effect once (`portal/services/outbox.py`).

Global on purpose: written by requests of every company and by the worker, read by the
dispatcher across companies; what a job touches is scoped by the job itself.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, UTCDateTime, str_enum, utcnow


class WorkState(enum.StrEnum):
    PENDING = "pending"  # waits for its time (run_after), or for the dispatcher to hand it over
    QUEUED = "queued"  # handed to Redis (as job `rq_job_id`), not yet taken by a worker
    RUNNING = "running"  # taken by `claimed_by`; safe to run again should that process die
    SENDING = "sending"  # a mail server has (or may have) the message: never sent again
    DONE = "done"
    FAILED = "failed"  # given up: out of attempts, or sent with no answer (see `outcome`)


UNFINISHED = (WorkState.PENDING, WorkState.QUEUED, WorkState.RUNNING, WorkState.SENDING)


class Work(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_state_run_after", "state", "run_after"),
        Index("ix_outbox_subject", "subject"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    job: Mapped[str] = mapped_column(String(120))  # the job's dotted name (workers.jobs.…)
    args: Mapped[list[Any]] = mapped_column(JSON)
    # What the work is about, for a page that says it is late ("payment:42").
    subject: Mapped[str | None] = mapped_column(String(80))
    state: Mapped[WorkState] = mapped_column(str_enum(WorkState, "work_state"))
    run_after: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times a worker took it
    dispatched: Mapped[int] = mapped_column(Integer, default=0)  # times handed to Redis
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(120))  # "host:pid" running it
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(300))  # what it returned, or its error
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The request (its X-Request-ID) or job that asked for it: the job's log lines carry it.
    request_id: Mapped[str | None] = mapped_column(String(128))

    @property
    def rq_job_id(self) -> str:
        """The id of its latest hand-off to Redis (a new one each time: an abandoned RQ job of
        an earlier hand-off can never be mistaken for this one)."""
        return f"outbox-{self.id}-{self.dispatched}"


class Schedule(Base):
    """When a recurring job (the sweep) is next due. Whichever worker moves `next_run_at` on
    first runs it: in the database, so it survives Redis coming back empty and any worker."""

    __tablename__ = "job_schedules"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime())
