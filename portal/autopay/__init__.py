"""Autopay's job: the notices, the charges and their retries (the plan is
portal/services/autopay.py's; this layer talks to the gateway, the outbox and the centre).

The hourly `workers.jobs.run_autopay` lists the settings that are on (or off with their notice
untold) across companies, then handles each in a session of its own (`run_setting`):

- a NOTICE is claimed (its UNIQUE step) and told to the consenting user and the company's
  admins (AUTOPAY, `notice:<invoice>:<day>`), its link the signed skip link (valid until the
  charge day);
- a CHARGE goes through the payment form's own path: the attempt's step claimed, the invoice
  locked and judged (`payments.lock_selection`), the payment recorded for today with the key
  `autopay:<invoice>:<attempt>` (`payments.record_payments`), all committed before the gateway
  is asked; then it runs as a scheduled payment does on its day (`scheduling.run_scheduled`:
  off-session, a dispute that came in between cancels it, the payer gets the receipt or the
  failure mail). Twice at once, the second run waits on the first's step and finds it taken;
- a failure is told with the next try's day, the end of the retries once, a disputed invoice
  passed over once, and a setting turned off by a removed method or a lost consent once.
"""

from __future__ import annotations

import logging
from datetime import date

from sqlalchemy.orm import Session

from portal import clock, flags, tenancy
from portal.db import commit_now
from portal.models import (
    AutopayOff,
    AutopaySetting,
    AutopayStepKind,
    BillingAccount,
    Company,
    Invoice,
    NotificationTopic,
    Payment,
    PaymentMethod,
    PaymentStatus,
    PortalUser,
)
from portal.notifications import notify
from portal.payments import scheduling
from portal.runtime import Runtime
from portal.services import audit, autopay, payments
from portal.services.autopay import Act, Action

log = logging.getLogger(__name__)

AUTOPAY = NotificationTopic.AUTOPAY
WAITING = "waiting: online payment is switched off"
PAGE = "/portal/autopay"


def _method_label(method: PaymentMethod | None) -> str:
    if method is None:
        return ""
    return f"{method.brand.title()} •••• {method.last4}"


def _tell(
    runtime: Runtime,
    session: Session,
    setting: AutopaySetting,
    event: str,
    key: str,
    *,
    invoice: Invoice | None = None,
    day: date | None = None,
    link: str = PAGE,
    extra: dict[str, str | int] | None = None,
) -> int:
    """An AUTOPAY notification to everyone who hears of this setting, once per key."""
    method = autopay.method_of(session, setting)
    with tenancy.system(session):
        account = session.get(BillingAccount, setting.billing_account_id)
    params: dict[str, str | int] = {
        "event": event,
        "method": _method_label(method),
        "account": account.name if account else "",
        **(extra or {}),
    }
    if invoice is not None:
        params |= {
            "invoice": invoice.number,
            "amount": invoice.balance_due,
            "currency": invoice.currency,
        }
    if day is not None:
        params["day"] = day.isoformat()
    told = 0
    for user in autopay.recipients(session, setting):
        with tenancy.system(session):
            told += (
                notify(runtime, session, user, AUTOPAY, key=key, params=params, link=link)
                is not None
            )
    return told


def _notice(runtime: Runtime, session: Session, setting: AutopaySetting, action: Action) -> str:
    invoice, now = action.invoice, clock.now()
    if autopay.claim(session, invoice, AutopayStepKind.NOTICE, 0, action.day, None) is None:
        return "told before"
    token = autopay.skip_token(invoice, action.day, keys=runtime.settings.keyring, now=now)
    _tell(
        runtime,
        session,
        setting,
        "notice",
        f"notice:{invoice.public_id}:{action.day.isoformat()}",
        invoice=invoice,
        day=action.day,
        link=f"/autopay/skip/{token}",
    )
    commit_now(session, "the notice is told once, before the next invoice's step")
    return "notice"


def _disputed(runtime: Runtime, session: Session, setting: AutopaySetting, action: Action) -> str:
    invoice = action.invoice
    if autopay.claim(session, invoice, AutopayStepKind.DISPUTED, action.attempt, action.day, None):
        _tell(
            runtime, session, setting, "disputed", f"disputed:{invoice.public_id}", invoice=invoice
        )
    commit_now(session, "a disputed invoice is passed over once")
    return "disputed"


def _failed(runtime: Runtime, session: Session, setting: AutopaySetting, action: Action) -> str:
    invoice = action.invoice
    _tell(
        runtime,
        session,
        setting,
        "failed",
        f"failed:{invoice.public_id}:{action.attempt}",
        invoice=invoice,
        day=action.day,
        link=f"/portal/invoices/{invoice.public_id}",
    )
    commit_now(session, "a failure is told once")
    return "failed"


def _stopped(runtime: Runtime, session: Session, setting: AutopaySetting, action: Action) -> str:
    invoice = action.invoice
    if autopay.claim(session, invoice, AutopayStepKind.STOPPED, action.attempt, action.day, None):
        _tell(
            runtime,
            session,
            setting,
            "stopped",
            f"stopped:{invoice.public_id}",
            invoice=invoice,
            link=f"/portal/invoices/{invoice.public_id}",
        )
    commit_now(session, "the end of the retries is told once")
    return "stopped"


def _charge(runtime: Runtime, session: Session, setting: AutopaySetting, action: Action) -> str:
    """One attempt through the payment path: recorded and committed, then charged."""
    invoice, today, now = action.invoice, clock.today(), clock.now()
    user = session.get(PortalUser, setting.consented_by_user_id or 0)
    method = autopay.method_of(session, setting)
    if user is None or method is None or not user.is_active:
        return "no consent"
    step = autopay.claim(
        session, invoice, AutopayStepKind.CHARGE, action.attempt, today, user.id, now=now
    )
    if step is None:
        session.rollback()
        return "taken"  # another run made this attempt
    key = f"autopay:{invoice.public_id}:{action.attempt}"
    selection = payments.lock_selection(session, user, key, [invoice.public_id])
    if isinstance(selection, Payment):
        made = selection  # this very key made it already
    elif autopay.skipped(session, invoice):  # skipped while this run waited for the lock
        session.rollback()
        return "skipped"
    elif not isinstance(selection, payments.Selection) or selection.problem is not None:
        session.rollback()  # paid, held or no longer payable since the plan: nothing recorded
        return "not payable"
    else:
        company = session.get(Company, invoice.company_id)
        assert company is not None
        submission = payments.record_payments(
            session,
            selection,
            user=user,
            company=company,
            key=key,
            method=method,
            scheduled_for=today,
            gateway_name=runtime.gateway_name,
            now=now,
            request=audit.RequestInfo(user_agent="autopay"),
        )
        if not submission.payments:
            session.rollback()
            return "not payable"
        made = submission.payments[0]
    step.payment_id = made.id
    commit_now(session, "the attempt and its payment stand before the gateway is asked")
    outcome = scheduling.run_scheduled(runtime, session, made.id)
    if made.status is PaymentStatus.FAILED and action.attempt < autopay.ATTEMPTS:
        retry = _retry_day(session, invoice, action.attempt)
        _failed(runtime, session, setting, Action(Act.FAILED, invoice, retry, action.attempt))
    elif made.status is PaymentStatus.FAILED:
        _stopped(runtime, session, setting, Action(Act.STOPPED, invoice, today, action.attempt))
    return outcome


def _retry_day(session: Session, invoice: Invoice, attempt: int) -> date:
    first = autopay.step(session, invoice, AutopayStepKind.CHARGE, 1)
    return first.day + autopay.RETRY_AFTER[attempt - 1]


def _turned_off(runtime: Runtime, session: Session, setting: AutopaySetting) -> str:
    reason = setting.off_reason or AutopayOff.USER
    off_at = (setting.off_at or clock.now()).isoformat()
    _tell(runtime, session, setting, f"off_{reason.value}", f"off:{setting.public_id}:{off_at}")
    setting.off_told = True
    commit_now(session, "the turned-off notice is told once")
    return "off told"


RUNS = {
    Act.NOTICE: _notice,
    Act.CHARGE: _charge,
    Act.DISPUTED: _disputed,
    Act.FAILED: _failed,
    Act.STOPPED: _stopped,
}


def run_setting(runtime: Runtime, session: Session, setting_id: int) -> list[str]:
    """Do today's steps of one setting (its own session; commits each step)."""
    with tenancy.system(session):
        setting = session.get(AutopaySetting, setting_id)
        if setting is None:
            return []
        if setting.enabled and not autopay.consent_holds(session, setting, now=clock.now()):
            commit_now(session, "a consent gone turns autopay off before anything is told")
        if not setting.enabled:
            return [_turned_off(runtime, session, setting)] if not setting.off_told else []
        done = []
        for action in autopay.plan(session, setting, clock.today()):
            try:
                done.append(RUNS[action.act](runtime, session, setting, action))
            except Exception:
                session.rollback()
                log.exception("autopay %s for invoice %s failed", action.act, action.invoice.id)
                done.append("error")
        return done


def paused() -> bool:
    """While online payment (or the whole portal) is off, autopay waits, changing nothing."""
    return not flags.enabled(flags.PAYMENT)
