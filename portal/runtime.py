"""The portal's runtime: what talks to the world outside the database, built once per app.

`create_app` builds one `Runtime` and keeps it at `app.extensions["portal.runtime"]`; a route
takes it with `current_runtime()` and hands it on, a job finds the same one on the worker's
app. Nothing else builds a gateway, a queue, a mailer or a public link:

- `gateway(session)`: the configured payment gateway (the sandbox keeps its records in the
  session, and its later settlement is scheduled here, as a job, after the commit), and
  `gateway_name`, the one answer to "which gateway's payments and saved methods does the portal
  deal with" (another gateway's are left alone: never offered, swept or asked about);
- `jobs`: the job queue (RQ, or the embedded one); jobs are named by dotted path, so the
  portal never imports `workers.jobs`; `hand_off` and `enqueue_at` queue after the commit;
- `mailer`, `files` (the invoice-PDF cache under STORAGE_DIR) and `links` (absolute links
  from PUBLIC_URL, never from a request header).

The runtime reads the app's settings and queue where the app keeps them (`app.config`,
`app.extensions`), so a test that swaps one for another swaps it for everyone.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from sqlalchemy.orm import Session
from werkzeug.routing import Map

from portal import clock
from portal.config import Settings
from portal.gateways import PaymentGateway
from portal.gateways.sandbox import SandboxGateway
from portal.gateways.stripe import StripeGateway
from portal.migrate import schema_is_current
from portal.services.mail import Mailer
from workers.queue import (
    WEB_TIMEOUT,
    EmbeddedQueue,
    JobQueue,
    RQJobQueue,
    defer,
    job_name,
    resolve,
)

log = logging.getLogger(__name__)

# The jobs (workers/jobs.py), by name.
JOBS = "workers.jobs"
SEND_PAYMENT_RESULT = f"{JOBS}.send_payment_result"
RUN_SCHEDULED_PAYMENT = f"{JOBS}.run_scheduled_payment"
DELIVER_SANDBOX_SETTLEMENT = f"{JOBS}.deliver_sandbox_settlement"
SEND_PASSWORD_RESET = f"{JOBS}.send_password_reset"
SWEEP = f"{JOBS}.sweep"
SWEEP_JOB_ID = "portal-sweep"
# How often the sweeps run. The embedded queue runs these itself (RQ: `flask jobs
# start-sweeps` queues `sweep`, which queues itself again).
SWEEP_EVERY = timedelta(seconds=30)
SWEEPS = {  # what `sweep` (and `flask jobs sweep`) runs, by the name it reports
    "scheduled": f"{JOBS}.run_due_payments",
    "reconciled": f"{JOBS}.reconcile_payments",
    "lockouts_forgotten": f"{JOBS}.forget_run_out_lockouts",
}
PERIODIC: list[tuple[timedelta, str]] = [
    (SWEEP_EVERY, SWEEPS["scheduled"]),
    (SWEEP_EVERY, SWEEPS["reconciled"]),
    (timedelta(minutes=5), SWEEPS["lockouts_forgotten"]),
]


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
    def mailer(self) -> Mailer:
        return Mailer(self.settings.mail_url, self.settings.mail_dir)

    @property
    def files(self) -> Files:
        return Files(Path(self.settings.storage_dir))

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
            self.enqueue_at(session, when, DELIVER_SANDBOX_SETTLEMENT, reference)

        return SandboxGateway(
            session,
            secret_key=config.secret_key,
            fallback_keys=config.secret_key_fallbacks,
            now=clock.now,
            on_processing=settle_later,
        )

    def hand_off(self, session: Session, job: str, *args: Any) -> None:
        """Run `job(*args)` once `session` commits. Should the queue refuse it (Redis down), it
        runs right here instead: a receipt or a reset link is late, never lost."""
        queue = self.jobs

        def go() -> None:
            try:
                queue.enqueue(job, *args)
            except Exception:
                log.exception("the job queue refused %s; running it in this process", job_name(job))
                resolve(job)(*args)

        defer(session, go)

    def enqueue_at(
        self, session: Session, when: datetime, job: str, *args: Any, job_id: str | None = None
    ) -> None:
        """Queue `job(*args)` for `when`, once `session` commits. Should the queue refuse it
        (Redis away), the log says so and the request goes on: each job queued for later has a
        sweep that finds its work in the database too (a scheduled payment on its day, a bank
        debit still processing after two minutes), so it runs late, once the queue answers."""
        queue = self.jobs

        def go() -> None:
            try:
                queue.enqueue_at(when, job, *args, job_id=job_id)
            except Exception as error:
                log.error(
                    "the job queue refused %s for %s (%s: %s); the sweep does its work once "
                    "the queue answers",
                    job_name(job),
                    when.isoformat(),
                    type(error).__name__,
                    error,
                )

        defer(session, go)


def current_runtime() -> Runtime:
    """The runtime of the app serving this request (for routes, the edge that hands it on)."""
    runtime: Runtime = current_app.extensions["portal.runtime"]
    return runtime


def _build_queue(app: Flask, config: Settings) -> JobQueue:
    if config.redis_url:
        return RQJobQueue(config.redis_url, timeout=WEB_TIMEOUT)

    def in_app(job: Any) -> Any:
        with app.app_context():
            return job()

    engine = app.extensions["portal.db"].engine
    queue = EmbeddedQueue(
        run=in_app,
        ready=lambda: schema_is_current(engine),
        not_ready_message=(
            "background jobs wait: the database schema is not current "
            "(run `flask --app wsgi db upgrade`)"
        ),
    )
    queue.periodic = list(PERIODIC)
    if not config.is_testing:  # tests run the queue by hand, at the clock they set
        # The thread belongs to a process that serves: not to `flask db upgrade` or `seed`
        # (they would race the migration), nor to a reloader's watcher, nor to a pre-fork
        # master.
        @app.before_request
        def _start_jobs() -> None:
            if not queue.started:
                queue.start()

    return queue


def init_app(app: Flask, config: Settings) -> Runtime:
    """Build the app's queue and runtime (once; after the database)."""
    app.extensions["portal.jobs"] = _build_queue(app, config)
    runtime = Runtime(app.config, app.extensions, app.url_map)
    app.extensions["portal.runtime"] = runtime
    return runtime
