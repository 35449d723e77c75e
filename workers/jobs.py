"""Job entry points. Each takes plain ids and values, opens its own app context and session.

Every piece of work is a row of the outbox (portal/services/outbox.py); RQ (`make worker`:
`flask --app wsgi jobs worker`, workers/worker.py) runs `run_work(row id)`, which claims the row
and runs the job it names, once. Every job is safe to run again after a crash (it looks at the
state of what it changes); mail is sent at most once (the row turns `sending` first). The portal
names jobs by their dotted path (portal/runtime.py), so only the worker imports this module;
each job finds the runtime (gateway, queue, mail, links) on the app it runs in.
"""

from __future__ import annotations

import logging
import os
import platform
import smtplib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from flask import Flask, current_app, has_app_context, render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal import autopay as autopay_job
from portal import clock, create_app, flags, logs, metrics, security_alerts, tenancy
from portal.db import unit_of_work
from portal.disputes import mail as dispute_mail
from portal.i18n import language_of
from portal.models import Company, PortalUser, UserStatus
from portal.notifications import cards, reminders
from portal.notifications import mail as notification_mail
from portal.payments import charging, mail, scheduling, webhooks
from portal.runtime import Runtime
from portal.services import (
    ar_events,
    audit,
    auth,
    autopay,
    credentials,
    lockout,
    outbox,
    payments,
    profile,
    users,
)
from portal.services.mail import DeliveryUnknown
from portal.statements import delivery, generate, monthly
from portal.templating import format_datetime
from portal.web import session_policy
from workers.queue import job_name, resolve

log = logging.getLogger(__name__)

# How long a payment may sit in processing before we ask.
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


def use_app(app: Flask) -> None:
    """The worker's app, built once before any job (workers/worker.py)."""
    global _app
    _app = app


def worker_identity() -> str:
    """Who holds a row while running it: "host:pid-namespace:pid". The dispatcher looks whether
    that process lives only from the same host and pid namespace (two containers may share a
    host name, each with its own pids); from anywhere else the claim's lease decides."""
    return f"{platform.node()}:{pid_namespace()}:{os.getpid()}"


def pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:  # no /proc: one namespace as far as we can tell
        return "-"


@contextmanager
def _context() -> Iterator[Flask]:
    """The current app context, or one of the worker's own app (built once per process)."""
    global _app
    if has_app_context():
        yield current_app._get_current_object()  # type: ignore[attr-defined]
        return
    if _app is None:
        _app = create_app()
    with _app.app_context():
        yield _app


def _runtime(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions["portal.runtime"]
    return runtime


@contextmanager
def _session(*, writes: bool = True) -> Iterator[tuple[Runtime, Session]]:
    """A job's runtime and session, a unit of work that writes: on SQLite each of its
    transactions takes the write lock when it begins, so a read-then-write is never refused. A
    job that only reads (and then waits on something slow, like a mail server) says
    `writes=False`. What the job did commits here, once, when it ends without an error (the
    edge of the job, as the end of a request is a route's); an error rolls it back."""
    with (
        _context() as app,
        unit_of_work(writes=writes),
        app.extensions["portal.db"].sessionmaker() as session,
    ):
        yield _runtime(app), session
        session.commit()


def deliver_sandbox_settlement(reference: str) -> str:
    """The sandbox settles a bank debit and sends its signed webhook to the portal."""
    with _session() as (runtime, session):
        return webhooks.settle_sandbox(runtime, session, reference)


def run_scheduled_payment(payment_id: int) -> str:
    with _session() as (runtime, session):
        return scheduling.run_scheduled(runtime, session, payment_id)


def _report_elsewhere(found: payments.Found, what: str, gateway_name: str, outcome: str) -> None:
    """One line per sweep (and per other gateway) for the payments of another gateway."""
    for other, ids in sorted(found.elsewhere.items()):
        log.warning(
            "%d %s belong to gateway %s, not %s: %s", len(ids), what, other, gateway_name, outcome
        )


def run_due_payments() -> int:
    """Scheduled payments whose day has come (a safety net for the jobs queued for that day).

    Those made with another gateway are not charged: each fails with its payer told (see
    `scheduling.run_scheduled`), and the sweep says how many. While online payment (or the
    whole portal) is off they wait: none is run, and the sweep after the flag is back on runs
    them, late but neither failed nor canceled."""
    with _context():
        if not flags.enabled(flags.PAYMENT):
            log.info("scheduled payments wait: online payment is switched off")
            return 0
    with _session() as (runtime, session), tenancy.system(session):
        gateway_name = runtime.gateway_name
        found = payments.due_scheduled(session, clock.today(), gateway_name)
    _report_elsewhere(
        found,
        "scheduled payments due",
        gateway_name,
        "failed as payment_method_unavailable, their payers told",
    )
    due = found.ours + [i for ids in found.elsewhere.values() for i in ids]
    for payment_id in due:
        try:
            run_scheduled_payment(payment_id)
        except Exception:  # one payment's trouble must not hold up the others
            log.exception("scheduled payment %s failed to run", payment_id)
    return len(due)


def reconcile_payments() -> int:
    """Ask the gateway about payments stuck in processing (a lost webhook or a dropped call).
    Only the configured gateway's: another gateway's are left alone, counted in the log."""
    with _session() as (runtime, session), tenancy.system(session):
        gateway_name = runtime.gateway_name
        found = payments.stuck_processing(session, clock.now() - STUCK_AFTER, gateway_name)
    _report_elsewhere(found, "processing payments", gateway_name, "left alone")
    stuck = found.ours
    for payment_id in stuck:
        try:
            with _session() as (runtime, session):
                charging.reconcile(runtime, session, payment_id)
        except Exception:  # one payment's trouble must not hold up the others
            log.exception("reconciling payment %s failed", payment_id)
    return len(stuck)


def send_payment_result(payment_id: int) -> str:
    with _session(writes=False) as (runtime, session):
        return mail.mail_result(runtime, session, payment_id)


def send_mail(to: str, subject: str, text: str) -> str:
    with _context() as app:
        return _runtime(app).mailer.send(to, subject, text)


def send_password_reset(email: str, locale: str, request: dict[str, str]) -> str:
    """Mail a reset link to the account behind `email`, if it has an active one.

    `/password/forgot` hands this job over for every address, known or not, so the request
    does the same work either way; only here is the address looked up. The link comes from
    PUBLIC_URL (never from a request's Host header), the mail is in the user's language (else
    the language the request was read in), and the request is audited for the account."""
    # A short writing unit: look up, record the request, commit. The mail goes out after it,
    # holding no write lock (on SQLite a slow mail server would otherwise stall every writer,
    # and only for addresses that exist).
    with _session() as (runtime, session):
        user = auth.find_user_by_email(session, email)
        if user is None or not user.is_active:
            return "no account"
        token = credentials.reset_token(user, keys=runtime.settings.keyring, now=clock.now())
        link = runtime.links.public_for("auth.reset_password", token=token)
        with force_locale(language_of(user.locale or locale or user.company.locale)):
            subject = _("Reset your Billing Portal password")
            text = render_template("mail/password_reset.txt", user=user, link=link)
        address = user.email
        credentials.note_reset_requested(session, user, audit.RequestInfo(**request))
    with _context() as app:
        _runtime(app).mailer.send(address, subject, text)
    return "sent"


def send_invitation(user_id: int, locale: str) -> str:
    """Mail an invited user their link (signed with the invitation's current nonce), in the
    inviter's language (else the company's). Nothing for a user no longer invited. The link
    lives 72 hours from the invitation (`invitation_sent_at`), however late this job runs."""
    with _session(writes=False) as (runtime, session), tenancy.system(session):
        user = session.get(PortalUser, user_id)
        if user is None or user.status is not UserStatus.INVITED:
            return "not invited"
        now = clock.now()
        token = users.invitation_token(user, keys=runtime.settings.keyring, now=now)
        language = language_of(locale or user.company.locale)
        inviter = user.invited_by
        with force_locale(language):
            context = {
                "company": user.company,
                "inviter": (inviter.name or inviter.email) if inviter else user.company.name,
                "link": runtime.links.public_for("invitations.accept", token=token),
                "expires": format_datetime(
                    (user.invitation_sent_at or now) + users.INVITATION_LIFETIME, "medium", language
                ),
                "language": language,
            }
            subject = _(
                "You're invited to the Billing Portal of %(company)s", company=user.company.name
            )
            text = render_template("mail/invitation.txt", **context)
            html = render_template("mail/invitation.html", **context)
        address = user.email
    runtime.mailer.send(address, subject, text, html=html)
    return "sent"


_EMAIL_CHANGE_SUBJECTS = {
    "email_change_confirm": _l("Confirm your new email address"),
    "email_change_notice": _l("Your email address is about to change"),
    "email_changed": _l("Your email address was changed"),
}


def _email_change_mail(
    user_id: int, to: str, template: str, *, while_email: str | None = None, **extra: str
) -> tuple[str, str, str, str] | None:
    """Render one of the e-mail change mails for `to` in the user's language: (to, subject,
    text, html), or None when the user is gone, or (`while_email`) their address is no longer
    that one."""
    with _session(writes=False) as (runtime, session), tenancy.system(session):
        user = session.get(PortalUser, user_id)
        if user is None or not user.is_active:
            return None
        if while_email is not None and user.email != while_email:
            return None
        if template == "email_change_confirm" and user.pending_email != extra["new_email"]:
            return None  # another change was asked for since: this one's link would be void
        locale = language_of(user.locale or user.company.locale)
        link = (
            runtime.links.public_for(
                "profile.confirm_email",
                token=profile.email_change_token(
                    user, keys=runtime.settings.keyring, now=clock.now()
                ),
            )
            if template == "email_change_confirm"
            else runtime.links.public_for("security.show")
        )
        context = {"user": user, "link": link, "locale": locale, **extra}
        with force_locale(locale):
            title = str(_EMAIL_CHANGE_SUBJECTS[template])
            text = render_template(f"mail/{template}.txt", **context)
            html = render_template(f"mail/{template}.html", **context)
        return to, title, text, html


def _send_email_change_mail(mail: tuple[str, str, str, str] | None) -> str:
    if mail is None:
        return "no recipient"
    to, subject, text, html = mail
    with _context() as app:
        _runtime(app).mailer.send(to, subject, text, html=html)
    return "sent"


def send_email_change_link(user_id: int, old_email: str, new_email: str) -> str:
    """Mail the confirmation link (signed, 24 hours) to the address the user asked to move to,
    unless their address changed, or another change was asked for, meanwhile (the link would be
    spent already)."""
    return _send_email_change_mail(
        _email_change_mail(
            user_id,
            new_email,
            "email_change_confirm",
            while_email=old_email,
            old_email=old_email,
            new_email=new_email,
        )
    )


def send_email_change_notice(user_id: int, old_email: str) -> str:
    """Tell the address the change was asked from (if it wasn't them: what to do). Sent to that
    address even when the change was confirmed before this job ran: its owner must hear of it."""
    return _send_email_change_mail(
        _email_change_mail(user_id, old_email, "email_change_notice", old_email=old_email)
    )


def send_email_changed_notice(user_id: int, old_email: str, new_email: str) -> str:
    """Tell the address a confirmed change moved away from that it is no longer the user's."""
    return _send_email_change_mail(
        _email_change_mail(
            user_id, old_email, "email_changed", old_email=old_email, new_email=new_email
        )
    )


def generate_statement(statement_id: int) -> str:
    """Build a statement's file (portal/statements/generate.py: safe to run again)."""
    with _context() as app:
        database = app.extensions["portal.db"]
        return generate.run(_runtime(app), database.sessionmaker, statement_id, clock.now)


def send_statement_ready(statement_id: int) -> str:
    """Mail the requester that their statement is ready, with a signed link (24 hours)."""
    with _session(writes=False) as (runtime, session):
        return delivery.mail_ready(runtime, session, statement_id, clock.now())


def send_dispute_mail(dispute_id: int, event: str, message_id: int | None) -> str:
    """Mail the receivables team (DISPUTES_EMAIL) a customer's dispute message or withdrawal."""
    with _session(writes=False) as (runtime, session):
        return dispute_mail.mail_receivables(runtime, session, dispute_id, event, message_id)


def deliver_ar_event(event_id: int) -> str:
    """POST one receivables event to AR_WEBHOOK_URL, signed (portal/services/ar_events.py).

    At least once, never twice for a job run twice: the attempt is counted under the event's
    row lock and committed, the POST goes out holding no lock, and a 2xx marks it delivered
    (a conditional UPDATE). An error raises, so the outbox runs it again later (RETRY_DELAYS);
    a process that dies after the POST and before the mark sends again: receivers dedupe on
    Portal-Event-Id."""
    with _session() as (runtime, session), tenancy.system(session):
        settings = runtime.settings
        if not settings.ar_webhook_url:
            return "no webhook configured"
        event = ar_events.begin_attempt(session, event_id)
        if event is None:
            return "already delivered"
        company = session.get(Company, event.company_id)
        body = ar_events.body_of(event, company.public_id if company else None)
    try:
        ar_events.send(
            settings.ar_webhook_url, settings.ar_webhook_secret, event_id, body, now=clock.now()
        )
    except ar_events.WebhookFailed as error:
        with _session() as (_runtime, session), tenancy.system(session):
            ar_events.mark_failed(session, event_id, str(error))
        raise
    with _session() as (_runtime, session), tenancy.system(session):
        ar_events.mark_delivered(session, event_id, clock.now())
    return "delivered"


def send_notification(notification_id: int) -> str:
    """Mail one notification, if its user still wants it by e-mail (portal/notifications/)."""
    with _session(writes=False) as (runtime, session):
        return notification_mail.send(runtime, session, notification_id, clock.now())


def send_security_alert(alert_id: int, to: str | None = None) -> str:
    """Mail one security alert (portal/security_alerts/): no preference stops it. `to`: an
    e-mail change's alert goes to the address the account moved away from."""
    with _session(writes=False) as (runtime, session):
        return security_alerts.send_alert(runtime, session, alert_id, clock.now(), to)


def security_burst_alert(
    email: str, key: str, request: dict[str, str], at: str | None = None
) -> str:
    """A burst of failed attempts on `email`: alerted if it has an account (handed off for every
    address that reaches the threshold, so the sign-in's answer tells nothing), told at `at`,
    the failure's time."""
    with _session() as (runtime, session):
        return security_alerts.burst(runtime, session, email, key, request, at)


def send_security_digests() -> dict[str, int]:
    """Ask for yesterday's security digest of every company admin whose users had alerts."""
    with _session() as (runtime, session):
        return security_alerts.send_digests(runtime, session, clock.now())


def send_security_digest(notification_id: int) -> str:
    """Mail one admin their company's digest."""
    with _session(writes=False) as (runtime, session):
        return security_alerts.send_digest(runtime, session, notification_id)


def send_reminders() -> dict[str, int]:
    """Remind every active user of their invoices due in N days, just overdue, or new
    (portal/notifications/reminders.py), each user in a transaction of their own, in their own
    scope: once per user and invoice however often this runs. The "new invoices" mark moves on
    only when every user was handled. While the portal is off (`m25_portal`) nobody is
    reminded of a portal they cannot open: the next run after it is back does it."""
    with _context():
        if not flags.enabled(flags.MASTER):
            log.info("reminders wait: the portal is switched off")
            return {"users": 0, "notified": 0, "failed": 0}
    with _session(writes=False) as (_rt, session):
        now = clock.now()
        people = reminders.recipients(session)
        since = reminders.issued_since(session, now)
    told = failed = 0
    for person in people:
        try:
            with _session() as (runtime, session):
                tenancy.bind(session, person.scope)
                told += reminders.remind(runtime, session, person.user_id, now=now, since=since)
        except Exception:  # one user's trouble must not hold up the others
            failed += 1
            log.exception("reminding user %s failed", person.user_id)
    if not failed:
        with _session() as (_rt, session):
            reminders.issued_done(session, now)
    return {"users": len(people), "notified": told, "failed": failed}


def send_card_expiry_notices() -> dict[str, int]:
    """Tell every active user of the cards they may manage that are about to expire
    (portal/notifications/cards.py), each in their own scope and transaction: once per card
    and expiry (and once more in its last week) however often this runs. Not while the portal
    is off: the next run after it is back does it."""
    with _context():
        if not flags.enabled(flags.MASTER):
            log.info("card expiry notices wait: the portal is switched off")
            return {"users": 0, "notified": 0, "failed": 0}
    with _session(writes=False) as (_rt, session):
        now = clock.now()
        people = reminders.recipients(session)
    told = failed = 0
    for person in people:
        try:
            with _session() as (runtime, session):
                tenancy.bind(session, person.scope)
                told += cards.tell(runtime, session, person.user_id, now=now)
        except Exception:  # one user's trouble must not hold up the others
            failed += 1
            log.exception("telling user %s of expiring cards failed", person.user_id)
    return {"users": len(people), "notified": told, "failed": failed}


def run_autopay() -> dict[str, int]:
    """Autopay's hourly run (portal/autopay/): each setting in a session of its own, each step
    once however often or concurrently this runs. While online payment (or the whole portal)
    is off it waits: the first run after it is back does the day's steps."""
    with _context():
        if autopay_job.paused():
            log.info("autopay waits: online payment is switched off")
            return {"settings": 0, "steps": 0, "failed": 0}
    with _session(writes=False) as (_rt, session):
        settings = autopay.active_settings(session)
    steps = failed = 0
    for setting_id, _company_id in settings:
        try:
            with _session() as (runtime, session):
                done = autopay_job.run_setting(runtime, session, setting_id)
                steps += len(done)
                failed += done.count("error")
        except Exception:  # one account's trouble must not hold up the others
            failed += 1
            log.exception("autopay of setting %s failed", setting_id)
    return {"settings": len(settings), "steps": steps, "failed": failed}


def send_monthly_statements() -> dict[str, int]:
    """On the first days of a month, ask for last month's statement of every user who wants
    it (portal/statements/monthly.py), each in their own scope and transaction; the
    notification follows when it is ready. Once per user and month however often this runs.
    Not while statements (or the whole portal) are switched off: the runs of the month's first
    days after they are back on ask for them."""
    with _context():
        if not flags.enabled(flags.STATEMENTS):
            log.info("monthly statements wait: statements are switched off")
            return {}
    with _session(writes=False) as (_rt, session):
        now = clock.now()
        people = reminders.recipients(session) if monthly.maybe_due(now) else []
    outcomes: dict[str, int] = {}
    for person in people:
        try:
            with _session() as (runtime, session):
                tenancy.bind(session, person.scope)
                outcome = monthly.ask(runtime, session, person.user_id, now)
        except IntegrityError:  # a concurrent run asked for it first
            outcome = "asked before"
        except Exception:  # one user's trouble must not hold up the others
            outcome = "failed"
            log.exception("the monthly statement of user %s failed", person.user_id)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def settle_statements() -> dict[str, int]:
    """Fail statements whose work gave up or ran past its time; remove files past retention.
    Each part commits on its own, so a file that cannot be removed fails nothing else."""
    with _session() as (_rt, session), tenancy.system(session):
        failed = generate.settle(session, clock.now())
    with _session() as (runtime, session), tenancy.system(session):
        keys = generate.expire(session, clock.now())
    return {"failed": failed, "expired": len(keys), "removed": generate.remove_files(runtime, keys)}


def forget_run_out_lockouts() -> int:
    """Drop sign-in failure counts whose window or lock is over (they would start afresh)."""
    with _session() as (_rt, session):
        rule = session_policy().lockout_rule
        return lockout.forget_run_out(session, rule=rule, now=clock.now())


def prune_finished_work() -> int:
    """Forget outbox rows finished more than `outbox.KEEP` ago."""
    with _session() as (_rt, session):
        return outbox.prune(session, clock.now())


def sweep() -> dict[str, object]:
    """The recurring safety nets (the worker's dispatcher runs it every SWEEP_EVERY)."""
    return {
        "scheduled": run_due_payments(),
        "reconciled": reconcile_payments(),
        "lockouts_forgotten": forget_run_out_lockouts(),
        "work_pruned": prune_finished_work(),
        "statements": settle_statements(),
    }


# running a row of the outbox ---------------------------------------------------------------

NOT_RUN = "not run"  # what run_work answers for work it did not take


def _record(app: Flask, change: Callable[[Session], object]) -> None:
    with unit_of_work(writes=True), app.extensions["portal.db"].sessionmaker() as session:
        change(session)
        session.commit()


def _refused_for_good(error: Exception) -> bool:
    """A mail server's permanent "no" (5xx, to the sender, the recipient or the message): it
    would answer the same again, so the work is not retried."""
    if isinstance(error, smtplib.SMTPResponseException):
        return error.smtp_code >= 500
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _answer in error.recipients.values())
    return False


def run_work(work_id: int) -> str:
    """Run one row of the outbox, once: claim it, run the job it names, record the end. A row
    that is done, failed, held by another process or not yet due is left alone (a second
    delivery of the same work). An error puts it back for later (outbox.RETRY_DELAYS); a mail
    server that took the message and never answered ends it as "unconfirmed" (never resent)."""
    with _context() as app:
        held: outbox.Claim | None = None

        def take(session: Session) -> None:
            nonlocal held
            held = outbox.claim(session, work_id, worker_identity(), clock.now())

        _record(app, take)
        if held is None:
            return f"{NOT_RUN}: finished, held elsewhere, or not due"
        claim: outbox.Claim = held
        # Its log lines name the job, the row and the request that asked for it.
        with logs.context(request_id=claim.request_id, job=job_name(claim.job), work_id=work_id):
            return _run_claimed(app, claim)


def _run_claimed(app: Flask, claim: outbox.Claim) -> str:
    """Run claimed work and record how it ended (run_work's second half)."""
    work_id = claim.work_id
    token = outbox.current.set(claim)
    started = time.perf_counter()

    def took(outcome: str) -> None:
        elapsed = time.perf_counter() - started
        metrics.jobs.labels(job_name(claim.job), outcome).observe(elapsed)

    try:
        outcome = str(resolve(claim.job)(*claim.args))
    except DeliveryUnknown as error:
        took("unconfirmed")
        log.warning("work %s (%s): %s", work_id, claim.job, error)
        unconfirmed = f"unconfirmed: {error}"
        _record(app, lambda s: outbox.finish(s, claim, unconfirmed, clock.now()))
        return "unconfirmed"
    except Exception as error:
        took("failed")
        again = not _refused_for_good(error)
        refused = isinstance(error, (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused))
        failure = f"{type(error).__name__}: {error}"
        ended: list[object] = []

        def back(session: Session) -> None:
            ended.append(
                outbox.give_up_or_retry(
                    session, claim, failure, clock.now(), retry=again, refused=refused
                )
            )

        _record(app, back)
        log.exception(
            "work %s (%s) failed on attempt %d; now %s",
            work_id,
            claim.job,
            claim.attempt,
            ended[0],
        )
        return f"failed: {failure}"
    finally:
        outbox.current.reset(token)
    took("done")
    _record(app, lambda s: outbox.finish(s, claim, outcome, clock.now()))
    log.info("work %s (%s) done on attempt %d: %s", work_id, claim.job, claim.attempt, outcome)
    return outcome
