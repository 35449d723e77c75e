"""Job entry points. Each takes plain ids and values, opens its own app context and session.

Run by RQ (`make worker`, with its scheduler for jobs due later) or, without Redis, by the
embedded queue of the web process. Every job is safe to run twice.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from flask import Flask, current_app, has_app_context
from sqlalchemy.orm import Session

from portal.db import unit_of_work

log = logging.getLogger(__name__)

# How often the sweeps run, and how long a payment may sit in processing before we ask.
SWEEP_EVERY = timedelta(seconds=30)
STUCK_AFTER = timedelta(minutes=2)
_app: Flask | None = None


def healthcheck(token: str) -> dict[str, str]:
    """Proves a worker is consuming the queue: echoes the token with who ran it and when."""
    return {
        "token": token,
        "host": platform.node(),
        "pid": str(os.getpid()),
        "at": datetime.now(UTC).isoformat(),
    }


@contextmanager
def _context() -> Iterator[Flask]:
    """The current app context, or one of the worker's own app (built once per process)."""
    global _app
    if has_app_context():
        yield current_app._get_current_object()  # type: ignore[attr-defined]
        return
    if _app is None:
        from portal import create_app

        _app = create_app()
    with _app.app_context():
        yield _app


@contextmanager
def _session(*, writes: bool = True) -> Iterator[Session]:
    """A job's session, a unit of work that writes: on SQLite each of its transactions takes the
    write lock when it begins, so a read-then-write is never refused. A job that only reads
    (and then waits on something slow, like a mail server) says `writes=False`."""
    with (
        _context() as app,
        unit_of_work(writes=writes),
        app.extensions["portal.db"].sessionmaker() as session,
    ):
        yield session


def deliver_sandbox_settlement(reference: str) -> str:
    """The sandbox settles a bank debit and sends its signed webhook to the portal."""
    from portal import payflow
    from portal.extensions import gateway
    from portal.gateways.sandbox import SIGNATURE_HEADER, SandboxGateway

    with _session() as session:
        sandbox = gateway(session)
        assert isinstance(sandbox, SandboxGateway)
        signed = sandbox.settle(reference)
        session.commit()
        if signed is None:
            return "unknown charge"
        body, signature = signed
        outcome = payflow.receive_webhook(session, sandbox, body, {SIGNATURE_HEADER: signature})
        session.commit()
        return outcome.value


def run_scheduled_payment(payment_id: int) -> str:
    from portal import payflow

    with _session() as session:
        return payflow.run_scheduled(session, payment_id)


def run_due_payments() -> int:
    """Scheduled payments whose day has come (a safety net for the jobs queued for that day)."""
    from portal import clock, tenancy
    from portal.services import payments

    with _session() as session, tenancy.system(session):
        due = payments.due_scheduled(session, clock.today())
    for payment_id in due:
        try:
            run_scheduled_payment(payment_id)
        except Exception:  # one payment's trouble must not hold up the others
            log.exception("scheduled payment %s failed to run", payment_id)
    return len(due)


def reconcile_payments() -> int:
    """Ask the gateway about payments stuck in processing (a lost webhook or a dropped call)."""
    from portal import clock, payflow, tenancy
    from portal.services import payments

    with _session() as session, tenancy.system(session):
        stuck = payments.stuck_processing(session, clock.now() - STUCK_AFTER)
    for payment_id in stuck:
        try:
            with _session() as session:
                payflow.reconcile(session, payment_id)
        except Exception:  # one payment's trouble must not hold up the others
            log.exception("reconciling payment %s failed", payment_id)
    return len(stuck)


def send_payment_result(payment_id: int) -> str:
    from portal import payflow

    with _session(writes=False) as session:
        return payflow.mail_result(session, payment_id)


def send_mail(to: str, subject: str, text: str) -> str:
    from portal.extensions import mailer

    with _context():
        return mailer().send(to, subject, text)


def send_password_reset(email: str, locale: str, request: dict[str, str]) -> str:
    """Mail a reset link to the account behind `email`, if it has an active one.

    `/password/forgot` hands this job over for every address, known or not, so the request
    does the same work either way; only here is the address looked up. The link comes from
    PUBLIC_URL (never from a request's Host header), the mail is in the user's language (else
    the language the request was read in), and the request is audited for the account."""
    from flask import render_template
    from flask_babel import force_locale
    from flask_babel import gettext as _

    from portal import clock
    from portal.extensions import mailer, settings
    from portal.i18n import SUPPORTED_LOCALES
    from portal.services import audit, auth, credentials
    from portal.web import public_url_for

    # A short writing unit: look up, record the request, commit. The mail goes out after it,
    # holding no write lock (on SQLite a slow mail server would otherwise stall every writer,
    # and only for addresses that exist).
    with _session() as session:
        user = auth.find_user_by_email(session, email)
        if user is None or not user.is_active:
            return "no account"
        token = credentials.reset_token(user, keys=settings().keyring, now=clock.now())
        link = public_url_for("auth.reset_password", token=token)
        chosen = (user.locale or locale or user.company.locale or "en").split("_")[0]
        with force_locale(chosen if chosen in SUPPORTED_LOCALES else SUPPORTED_LOCALES[0]):
            subject = _("Reset your Billing Portal password")
            text = render_template("mail/password_reset.txt", user=user, link=link)
        address = user.email
        credentials.note_reset_requested(session, user, audit.RequestInfo(**request))
        session.commit()
    with _context():
        mailer().send(address, subject, text)
    return "sent"


def forget_run_out_lockouts() -> int:
    """Drop sign-in failure counts whose window or lock is over (they would start afresh)."""
    from portal import clock
    from portal.services import lockout
    from portal.web import session_policy

    with _session() as session:
        rule = session_policy().lockout_rule
        forgotten = lockout.forget_run_out(session, rule=rule, now=clock.now())
        session.commit()
        return forgotten


def sweep() -> dict[str, int]:
    """Both sweeps; on RQ it puts itself back on the queue for the next round."""
    from portal.extensions import jobs

    # The next round is queued first, so an error in this one cannot end the chain.
    with _context():
        jobs().enqueue_at(datetime.now(UTC) + SWEEP_EVERY, sweep, job_id=SWEEP_JOB_ID)
    return {
        "scheduled": run_due_payments(),
        "reconciled": reconcile_payments(),
        "lockouts_forgotten": forget_run_out_lockouts(),
    }


SWEEP_JOB_ID = "portal-sweep"
# The embedded queue runs these itself, every SWEEP_EVERY.
PERIODIC = [
    (SWEEP_EVERY, run_due_payments),
    (SWEEP_EVERY, reconcile_payments),
    (timedelta(minutes=5), forget_run_out_lockouts),
]
