"""The portal's runtime: what talks to the world outside the database, built once per app.

`create_app` builds one `Runtime` and keeps it at `app.extensions["portal.runtime"]`; a route
takes it with `current_runtime()` and hands it on, a job finds the same one on the worker's
app. Nothing else builds a gateway, a queue, a mailer or a public link:

- `gateway(session)`: the configured payment gateway (the sandbox keeps its records in the
  session, and its later settlement is scheduled here, as a job, after the commit), and
  `gateway_name`, the one answer to "which gateway's payments and saved methods does the portal
  deal with" (another gateway's are left alone: never offered, swept or asked about);
- `jobs`: the transport to the workers (RQ on REDIS_URL); jobs are named by dotted path, so
  the portal never imports `workers.jobs`. `hand_off` and `enqueue_at` write the work as a row
  of the outbox in the caller's transaction (portal/services/outbox.py) and hand work due now to
  the queue after the commit; the worker's dispatcher (workers/dispatch.py) hands over the rest;
- `mailer`, `files` (the invoice-PDF cache under STORAGE_DIR), `store` (statements and
  documents, portal/services/storage.py) and `links` (absolute links
  from PUBLIC_URL, never from a request header).

The runtime reads the app's settings and queue where the app keeps them (`app.config`,
`app.extensions`), so a test that swaps one for another swaps it for everyone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session
from werkzeug.routing import Map

from portal import clock
from portal.config import Settings
from portal.gateways import PaymentGateway
from portal.gateways.sandbox import SandboxGateway
from portal.gateways.stripe import StripeGateway
from portal.models import WorkState
from portal.services import ar_events, outbox
from portal.services.mail import MAIL_DOMAIN, Mailer
from portal.services.storage import FileStore, LocalStore
from workers.queue import WEB_TIMEOUT, JobQueue, RQJobQueue, Unqueued, defer, job_name

log = logging.getLogger(__name__)

# The jobs (workers/jobs.py), by name. Each runs from a row of the outbox (`RUN_WORK`).
JOBS = "workers.jobs"
RUN_WORK = f"{JOBS}.run_work"
SEND_PAYMENT_RESULT = f"{JOBS}.send_payment_result"
RUN_SCHEDULED_PAYMENT = f"{JOBS}.run_scheduled_payment"
DELIVER_SANDBOX_SETTLEMENT = f"{JOBS}.deliver_sandbox_settlement"
SEND_PASSWORD_RESET = f"{JOBS}.send_password_reset"
GENERATE_STATEMENT = f"{JOBS}.generate_statement"
SEND_STATEMENT_READY = f"{JOBS}.send_statement_ready"
SEND_INVITATION = f"{JOBS}.send_invitation"
SEND_DISPUTE_MAIL = f"{JOBS}.send_dispute_mail"
SEND_EMAIL_CHANGE_LINK = f"{JOBS}.send_email_change_link"
SEND_EMAIL_CHANGE_NOTICE = f"{JOBS}.send_email_change_notice"
SEND_EMAIL_CHANGED_NOTICE = f"{JOBS}.send_email_changed_notice"
SWEEP = f"{JOBS}.sweep"
SEND_REMINDERS = f"{JOBS}.send_reminders"
SEND_MONTHLY_STATEMENTS = f"{JOBS}.send_monthly_statements"
SEND_CARD_EXPIRY_NOTICES = f"{JOBS}.send_card_expiry_notices"
SEND_SECURITY_DIGESTS = f"{JOBS}.send_security_digests"
DELIVER_AR_EVENT = f"{JOBS}.deliver_ar_event"
RUN_AUTOPAY = f"{JOBS}.run_autopay"
# The recurring jobs, by schedule name: the worker's dispatcher runs each this often
# (`job_schedules` in the database says when next, so they come back by themselves). The
# reminders, the monthly statements, the cards about to expire and autopay run hourly: each
# tells once per user and key (day, month, card and expiry), and autopay takes each step once
# per invoice (its UNIQUE steps), so a run more, twice at once, or a run missed changes
# nothing of what is told or charged.
SWEEP_EVERY = timedelta(seconds=30)
REMIND_EVERY = timedelta(hours=1)
SCHEDULES: dict[str, tuple[timedelta, str]] = {
    "sweep": (SWEEP_EVERY, SWEEP),
    "reminders": (REMIND_EVERY, SEND_REMINDERS),
    "monthly_statements": (REMIND_EVERY, SEND_MONTHLY_STATEMENTS),
    "card_expiry": (REMIND_EVERY, SEND_CARD_EXPIRY_NOTICES),
    "autopay": (REMIND_EVERY, RUN_AUTOPAY),
    # Yesterday's security alerts to each company admin: hourly, once per admin and day.
    "security_digests": (REMIND_EVERY, SEND_SECURITY_DIGESTS),
}
REFUSED_AT = "portal.jobs.refused_at"  # in app.extensions: when the queue last refused work
DELAY_REMEMBERED = 300.0  # seconds
SWEEPS = {  # what `sweep` (and `flask jobs sweep`) runs, by the name it reports
    "scheduled": f"{JOBS}.run_due_payments",
    "reconciled": f"{JOBS}.reconcile_payments",
    "lockouts_forgotten": f"{JOBS}.forget_run_out_lockouts",
    "work_pruned": f"{JOBS}.prune_finished_work",
    "statements": f"{JOBS}.settle_statements",
}


@dataclass(frozen=True)
class Links:
    """Absolute links for mail and gateways, always from PUBLIC_URL: the same from a request as
    from a job, and never from a request header (a Host header must not steer a password reset
    link). A retried charge must repeat its parameters exactly, return address included.
    Production refuses to start without PUBLIC_URL; elsewhere it defaults to where we serve."""

    public_url: str
    payment_gateway: str
    url_map: Map

    def public(self, path: str) -> str:
        if not self.public_url:
            raise RuntimeError("PUBLIC_URL is not configured")
        return self.public_url.rstrip("/") + path

    def public_for(self, endpoint: str, **values: Any) -> str:
        """`public` for a route, built without a request (so a job can build it too)."""
        adapter = self.url_map.bind("localhost")  # the host is never used: a path only
        return self.public(adapter.build(endpoint, values))

    def gateway_return(self, path: str) -> str:
        """Where a gateway's hosted page sends the customer back. The sandbox's page is served
        by this very host, so a path keeps whatever host name the customer is using (and its
        cookie)."""
        return path if self.payment_gateway == "sandbox" else self.public(path)

    def payment(self, public_id: str) -> str:
        return self.public(f"/portal/payments/{public_id}")

    def payment_return(self, public_id: str) -> str:
        """Where the gateway sends the customer back after an authentication step."""
        return self.public(f"/portal/payments/{public_id}/return")


@dataclass(frozen=True)
class Files:
    """Files the portal keeps under STORAGE_DIR."""

    root: Path

    @property
    def invoice_pdf_dir(self) -> Path:
        return self.root / "invoice-pdf"


@dataclass(frozen=True)
class Runtime:
    config: MutableMapping[str, Any]  # the app's config (its SETTINGS)
    services: MutableMapping[str, Any]  # the app's extensions (its queue)
    url_map: Map

    @property
    def settings(self) -> Settings:
        value: Settings = self.config["SETTINGS"]
        return value

    @property
    def jobs(self) -> JobQueue:
        queue: JobQueue = self.services["portal.jobs"]
        return queue

    @property
    def files(self) -> Files:
        return Files(Path(self.settings.storage_dir))

    @property
    def store(self) -> FileStore:
        """Statements, documents and attachments (a local directory under STORAGE_DIR)."""
        return LocalStore(Path(self.settings.storage_dir))

    @property
    def links(self) -> Links:
        config = self.settings
        return Links(config.public_url, config.payment_gateway, self.url_map)

    @property
    def gateway_name(self) -> str:
        """The configured gateway ("sandbox" or "stripe"). Payments and saved methods record
        the gateway they were made with; only this one's are offered, charged, swept and asked
        about (a method saved with another gateway means nothing to this one)."""
        return self.settings.payment_gateway

    def gateway(self, session: Session) -> PaymentGateway:
        """The configured gateway, working in `session` (the sandbox keeps its records there)."""
        config = self.settings
        if self.gateway_name == "stripe":
            return StripeGateway(
                config.stripe_secret_key, config.stripe_webhook_secret, config.stripe_api_base
            )

        def settle_later(reference: str, when: datetime) -> None:
            self.enqueue_at(
                session,
                when,
                DELIVER_SANDBOX_SETTLEMENT,
                reference,
                subject=outbox.about_charge(reference),
            )

        return SandboxGateway(
            session,
            secret_key=config.secret_key,
            fallback_keys=config.secret_key_fallbacks,
            now=clock.now,
            on_processing=settle_later,
        )

    def hand_off(self, session: Session, job: str, *args: Any, subject: str | None = None) -> None:
        """Ask for `job(*args)` now: a row of the outbox in `session`'s transaction, handed to
        the queue once it commits. Should the queue refuse it (Redis away), the row waits and
        the dispatcher hands it over once Redis answers: late, never lost, never twice."""
        self.enqueue_at(session, clock.now(), job, *args, subject=subject)

    def enqueue_at(
        self, session: Session, when: datetime, job: str, *args: Any, subject: str | None = None
    ) -> None:
        """Ask for `job(*args)` at `when`, in `session`'s transaction (`subject`, e.g.
        "payment:42", lets a page say when that work is late). Work due now is handed to the
        queue after the commit; later work waits in the database for the dispatcher."""
        row = outbox.add(session, job, args, now=clock.now(), run_after=when, subject=subject)
        if row.state is not WorkState.QUEUED:
            return
        queue, work_id, rq_job_id = self.jobs, row.id, row.rq_job_id

        services = self.services

        def go() -> None:
            try:
                queue.enqueue(RUN_WORK, work_id, job_id=rq_job_id)
                services.pop(REFUSED_AT, None)
            except Exception as error:
                services[REFUSED_AT] = time.monotonic()
                log.warning(
                    "the job queue refused %s (%s: %s): it waits in the outbox, and the "
                    "dispatcher hands it over once the queue answers",
                    job_name(job),
                    type(error).__name__,
                    error,
                )

        defer(session, go)

    @property
    def work_delayed(self) -> bool:
        """Whether this process's last hand-off to the queue, within DELAY_REMEMBERED, was
        refused (Redis away): pages that hand off work a person waits for say it may be late."""
        refused = self.services.get(REFUSED_AT)
        return refused is not None and time.monotonic() - refused < DELAY_REMEMBERED

    @property
    def mailer(self) -> Mailer:
        """The mailer; inside a job, one that marks the job's row `sending` just before the
        message reaches the server (never sent twice) and names the message after the row."""
        held = outbox.current.get()
        if held is None:
            return Mailer(
                self.settings.mail_url, self.settings.mail_dir, self.settings.mail_timeout
            )
        database = self.services["portal.db"]

        def sending() -> None:
            with database.sessionmaker() as session:
                if not outbox.mark_sending(session, held):
                    raise WorkTakenOver(f"work {held.work_id} is no longer held by {held.by}")
                session.commit()

        return Mailer(
            self.settings.mail_url,
            self.settings.mail_dir,
            self.settings.mail_timeout,
            message_id=held.message_id(urlsplit(self.settings.public_url).hostname or MAIL_DOMAIN),
            before_sending=sending,
        )


class WorkTakenOver(RuntimeError):
    """The job's row was taken over by another process (this one was thought dead)."""


def _hand_off_ar_webhooks(session: Session) -> None:
    """Before a transaction that wrote receivables events commits: each event's webhook
    delivery, a row of the outbox in the same transaction (when AR_WEBHOOK_URL is set)."""
    written = ar_events.written(session)
    if not written or not has_app_context():
        return
    runtime: Runtime | None = current_app.extensions.get("portal.runtime")
    if runtime is None or not runtime.settings.ar_webhook_url:
        return
    for event_id in written:
        runtime.hand_off(session, DELIVER_AR_EVENT, event_id, subject=f"ar_event:{event_id}")


def _forget_ar_events(session: Session, *_: object) -> None:
    ar_events.forget(session)


event.listen(Session, "before_commit", _hand_off_ar_webhooks)
event.listen(Session, "after_rollback", _forget_ar_events)


def current_runtime() -> Runtime:
    """The runtime of the app serving this request (for routes, the edge that hands it on)."""
    runtime: Runtime = current_app.extensions["portal.runtime"]
    return runtime


def _build_queue(config: Settings) -> JobQueue:
    if config.redis_url:
        return RQJobQueue(config.redis_url, timeout=WEB_TIMEOUT)
    return Unqueued()


def init_app(app: Flask, config: Settings) -> Runtime:
    """Build the app's queue and runtime (once; after the database)."""
    app.extensions["portal.jobs"] = _build_queue(config)
    runtime = Runtime(app.config, app.extensions, app.url_map)
    app.extensions["portal.runtime"] = runtime
    return runtime
