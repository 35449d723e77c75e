"""Autopay: a billing account's consent to charge a saved method for its invoices, and the plan
of what the hourly job does about each invoice (portal/autopay/ runs it).

A setting (one per billing account) is turned on by a customer.admin, or by a member for one
of their granted accounts with a method they saved (`may_manage`). For each invoice of the
account that still owes something, the *charge day* is its due date, or its issue date plus N
days. `plan` says what is due today, read from the invoice's steps (`AutopayStep`, UNIQUE per
invoice, kind and attempt, so `claim` lets each happen once however the job is run):

- NOTICE, once, from `notice_days` before the charge day: the day it names is the charge day,
  or `notice_days` after today when that is later (turning autopay on never charges an invoice
  nobody was told of);
- CHARGE attempt 1 on or after that day; after a failed attempt, attempt 2 three days and
  attempt 3 seven days after the first (`RETRY_AFTER`); after the last, STOPPED, once;
- DISPUTED instead of a charge when the invoice is disputed on its day: passed over for good
  (one disputed before its notice gets none while the dispute lasts: no promise of a charge);
- nothing for an invoice skipped (SKIPPED), paid, void, or held by a payment on its way (a
  manual payment in flight; a manual payment that succeeded just leaves less to charge).

No Flask here; flush, never commit.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import new_public_id
from portal.models import (
    AutopayOff,
    AutopaySetting,
    AutopayStep,
    AutopayStepKind,
    AutopayTiming,
    BillingAccount,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentMethod,
    PaymentStatus,
    PortalUser,
    Role,
    UserStatus,
)
from portal.models.autopay import MAX_DAYS_AFTER_ISSUE, MAX_NOTICE_DAYS
from portal.services import audit
from portal.services.crypto import Keyring
from portal.services.payments.rules import FINAL
from portal.services.payments.selection import reserved_amounts
from portal.services.payments.transitions import lock_invoices

# A charge with a payment in one of these states cannot be skipped any more.
CHARGING = (PaymentStatus.SCHEDULED, PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED)

RETRY_AFTER = (timedelta(days=3), timedelta(days=7))  # after the first failure: attempts 2, 3
ATTEMPTS = 1 + len(RETRY_AFTER)
NOTICE_CHOICES = (0, 1, 3, 7, 14)
DEFAULT_NOTICE_DAYS = 3
# The statuses of an invoice autopay looks at (PROCESSING: a payment is on its way, wait).
CONSIDERED = (
    InvoiceStatus.OPEN,
    InvoiceStatus.PARTIALLY_PAID,
    InvoiceStatus.PAYMENT_FAILED,
    InvoiceStatus.DISPUTED,
)
_SKIP_SALT = "portal.autopay.skip"
SKIP_LINK_LIFETIME = timedelta(days=120)  # and never past the day it names


class Refusal(enum.StrEnum):
    NOT_ALLOWED = "not_allowed"  # neither an admin nor a member with their own method
    METHOD_UNUSABLE = "method_unusable"  # removed, expired or another gateway's
    TIMING_INVALID = "timing_invalid"
    DAYS_INVALID = "days_invalid"
    NOTICE_INVALID = "notice_invalid"
    ALREADY_OFF = "already_off"
    NOTHING_TO_SKIP = "nothing_to_skip"
    ALREADY_SKIPPED = "already_skipped"
    ALREADY_CHARGING = "already_charging"  # today's charge started before the skip


# who may ---------------------------------------------------------------------------------


def may_manage(user: PortalUser, account: BillingAccount, method: PaymentMethod | None) -> bool:
    """A customer.admin for any account and method of the company; a member for an account
    granted to them, with a method they saved themselves (and only such a setting)."""
    if not user.is_active or account.company_id != user.company_id:
        return False
    if user.role is Role.ADMIN:
        return True
    granted = any(g.billing_account_id == account.id for g in user.grants)
    return granted and method is not None and method.created_by_user_id == user.id


def may_see(user: PortalUser, account: BillingAccount) -> bool:
    if user.role is Role.ADMIN:
        return account.company_id == user.company_id
    return any(g.billing_account_id == account.id for g in user.grants)


# reading ----------------------------------------------------------------------------------


def settings_by_account(session: Session) -> dict[int, AutopaySetting]:
    """The settings of the accounts in the session's scope (one query)."""
    return {s.billing_account_id: s for s in session.scalars(select(AutopaySetting))}


def get(session: Session, public_id: str) -> AutopaySetting | None:
    return session.scalar(select(AutopaySetting).where(AutopaySetting.public_id == public_id))


def charge_day(setting: AutopaySetting, invoice: Invoice) -> date:
    if setting.timing is AutopayTiming.AFTER_ISSUE:
        return max(
            invoice.issue_date + timedelta(days=setting.days_after_issue), invoice.issue_date
        )
    return invoice.due_date


def first_day(setting: AutopaySetting, invoice: Invoice, today: date) -> date:
    """The day an invoice not yet told of would be charged: its charge day, or `notice_days`
    from today when that is later (the notice goes out first). The job's notice names it; the
    page and the invoice page promise it."""
    return max(charge_day(setting, invoice), today + timedelta(days=setting.notice_days))


def method_of(session: Session, setting: AutopaySetting) -> PaymentMethod | None:
    with tenancy.widened(session):  # a method and its settings are the company's
        return session.get(PaymentMethod, setting.payment_method_id)


# changing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """What the form asks for, read but not yet checked."""

    method: PaymentMethod | None
    timing: str
    days_after_issue: str
    notice_days: str


def _check(choice: Choice, today: date, gateway_name: str) -> Refusal | tuple[Any, ...]:
    method = choice.method
    if (
        method is None
        or method.removed_at is not None
        or method.gateway != gateway_name
        or method.is_expired(today)
    ):
        return Refusal.METHOD_UNUSABLE
    if choice.timing not in AutopayTiming._value2member_map_:
        return Refusal.TIMING_INVALID
    timing = AutopayTiming(choice.timing)
    days = 0
    if timing is AutopayTiming.AFTER_ISSUE:
        found = _small_number(choice.days_after_issue, MAX_DAYS_AFTER_ISSUE)
        if found is None:
            return Refusal.DAYS_INVALID
        days = found
    notice = _small_number(choice.notice_days.strip() or str(DEFAULT_NOTICE_DAYS), MAX_NOTICE_DAYS)
    if notice is None or notice not in NOTICE_CHOICES:
        return Refusal.NOTICE_INVALID
    return method, timing, days, notice


def _small_number(raw: str, maximum: int) -> int | None:
    """ASCII digits from 0 to `maximum`, else None (read only when short enough to be one:
    thousands of digits are no number of days, and Python refuses to read them)."""
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > len(str(maximum)) + 2:
        return None
    value = int(raw)
    return value if 0 <= value <= maximum else None


def turn_on(
    session: Session,
    user: PortalUser,
    account: BillingAccount,
    choice: Choice,
    *,
    today: date,
    now: datetime,
    gateway_name: str,
    request: audit.RequestInfo,
) -> AutopaySetting | Refusal:
    """Turn autopay on for `account`, or change it (the consent is this user's, now)."""
    checked = _check(choice, today, gateway_name)
    if isinstance(checked, Refusal):
        return checked
    method, timing, days, notice = checked
    if not may_manage(user, account, method):
        return Refusal.NOT_ALLOWED
    setting, existed = _setting_locked(session, account, method, timing, now)
    was_on = existed and setting.enabled
    if existed and not was_on:
        _forget_notices(session, account)
    before = (setting.payment_method_id, setting.timing, setting.days_after_issue)
    before_notice = setting.notice_days
    setting.payment_method_id = method.id
    setting.timing = timing
    setting.days_after_issue = days
    setting.notice_days = notice
    setting.enabled, setting.off_reason, setting.off_at, setting.off_told = True, None, None, True
    setting.consented_by_user_id = user.id
    setting.consented_at = now
    setting.updated_at = now
    session.flush()
    if was_on and before == (method.id, timing, days) and before_notice == notice:
        return setting  # nothing changed: nothing to record
    audit.record_for(
        session,
        user,
        "Portal.AutopayChanged" if was_on else "Portal.AutopayEnabled",
        request=request,
        billing_account=account.public_id,
        method_id=method.public_id,
        timing=timing.value,
        days_after_issue=days,
        notice_days=notice,
    )
    return setting


def _setting_locked(
    session: Session,
    account: BillingAccount,
    method: PaymentMethod,
    timing: AutopayTiming,
    now: datetime,
) -> tuple[AutopaySetting, bool]:
    """The account's setting, locked until the transaction ends, and whether it was there
    before; a new one is inserted off (`ON CONFLICT DO NOTHING`: one turned on at the same
    moment by another request is waited for and found, then changed, never a 500)."""
    query = (
        select(AutopaySetting)
        .where(AutopaySetting.billing_account_id == account.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    found = session.scalar(query)
    if found is not None:
        return found, True
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    new_id = session.scalar(
        insert(AutopaySetting)
        .values(
            public_id=new_public_id(AutopaySetting.public_id_prefix),
            company_id=account.company_id,
            billing_account_id=account.id,
            payment_method_id=method.id,
            timing=timing,
            enabled=False,
            off_told=True,
            consented_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(AutopaySetting.id)
    )
    found = session.scalar(query)
    assert found is not None
    return found, new_id is None


def _forget_notices(session: Session, account: BillingAccount) -> None:
    """Turned on again: a notice told under the consent that was withdrawn (or about a method
    since removed) promises nothing now, so an invoice not yet charged is told again before its
    charge (never charged at once on an old notice). Invoices in their retries, skipped,
    disputed or given up keep their steps."""
    acted = select(AutopayStep.invoice_id).where(
        AutopayStep.billing_account_id == account.id,
        AutopayStep.kind != AutopayStepKind.NOTICE,
    )
    session.execute(
        delete(AutopayStep)
        .where(
            AutopayStep.billing_account_id == account.id,
            AutopayStep.kind == AutopayStepKind.NOTICE,
            AutopayStep.invoice_id.not_in(acted),
        )
        .execution_options(synchronize_session=False)
    )


def turn_off(
    session: Session,
    user: PortalUser,
    setting: AutopaySetting,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> Refusal | None:
    account = session.get(BillingAccount, setting.billing_account_id)
    assert account is not None
    if not may_manage(user, account, method_of(session, setting)):
        return Refusal.NOT_ALLOWED
    if not setting.enabled:
        return Refusal.ALREADY_OFF
    _off(setting, AutopayOff.USER, now, told=True)
    session.flush()
    audit.record_for(
        session, user, "Portal.AutopayDisabled", request=request, billing_account=account.public_id
    )
    return None


def _off(setting: AutopaySetting, reason: AutopayOff, now: datetime, *, told: bool) -> None:
    setting.enabled = False
    setting.off_reason = reason
    setting.off_at = now
    setting.off_told = told
    setting.updated_at = now


def method_removed(session: Session, method: PaymentMethod, *, now: datetime) -> int:
    """The method was removed: every setting on it turns off (its "turned off" notice goes out
    with the job's next run, to the company's admins and the consenting user). How many."""
    with tenancy.widened(session):  # a method and its settings are the company's
        settings = session.scalars(
            select(AutopaySetting).where(
                AutopaySetting.payment_method_id == method.id, AutopaySetting.enabled.is_(True)
            )
        ).all()
        for setting in settings:
            _off(setting, AutopayOff.METHOD_REMOVED, now, told=False)
        session.flush()
    return len(settings)


def consent_changed(session: Session, user: PortalUser, *, now: datetime) -> int:
    """After `user` was deactivated or their role or accounts changed: every setting they
    consented to that they may no longer manage turns off (told by the job). How many."""
    with tenancy.widened(session):  # a method and its settings are the company's
        settings = session.scalars(
            select(AutopaySetting).where(
                AutopaySetting.consented_by_user_id == user.id, AutopaySetting.enabled.is_(True)
            )
        ).all()
        lost = 0
        for setting in settings:
            account = session.get(BillingAccount, setting.billing_account_id)
            method = session.get(PaymentMethod, setting.payment_method_id)
            if account is None or not may_manage(user, account, method):
                _off(setting, AutopayOff.CONSENT_LOST, now, told=False)
                lost += 1
        session.flush()
    return lost


def consent_holds(session: Session, setting: AutopaySetting, *, now: datetime) -> bool:
    """Whether the user who consented to `setting` may still manage it (active, the account
    theirs, the method theirs for a member). If not, it turns off (CONSENT_LOST, told by the
    job): whatever path took the right away, nothing is noticed or charged on a consent gone."""
    with tenancy.widened(session):  # a method and its settings are the company's
        user = session.get(PortalUser, setting.consented_by_user_id or 0)
        account = session.get(BillingAccount, setting.billing_account_id)
        method = session.get(PaymentMethod, setting.payment_method_id)
        if user is not None and account is not None and may_manage(user, account, method):
            return True
        _off(setting, AutopayOff.CONSENT_LOST, now, told=False)
        session.flush()
    return False


def replace_method(
    session: Session, old: PaymentMethod, new: PaymentMethod, user: PortalUser, *, now: datetime
) -> int:
    """Move every setting on `old` to `new` (a card updated in place by `user`); how many
    moved. A setting whose consenting user may not manage `new` (a member's card an admin
    updated) is `user`'s consent from now on: theirs is the update that put the card there."""
    with tenancy.widened(session):  # a method and its settings are the company's
        settings = session.scalars(
            select(AutopaySetting).where(AutopaySetting.payment_method_id == old.id)
        ).all()
        for setting in settings:
            setting.payment_method_id = new.id
            setting.updated_at = now
            if not setting.enabled:
                continue
            consenting = session.get(PortalUser, setting.consented_by_user_id or 0)
            account = session.get(BillingAccount, setting.billing_account_id)
            assert account is not None
            if consenting is None or not may_manage(consenting, account, new):
                setting.consented_by_user_id = user.id
                setting.consented_at = now
        session.flush()
    return len(settings)


# the skip link ------------------------------------------------------------------------------


def _skip_serializer(keys: Keyring, now: datetime) -> URLSafeTimedSerializer:
    return keys.links(_SKIP_SALT, now)


def skip_token(invoice: Invoice, day: date, *, keys: Keyring, now: datetime) -> str:
    return str(_skip_serializer(keys, now).dumps([invoice.public_id, day.isoformat()]))


def read_skip_token(token: str, *, keys: Keyring, now: datetime) -> tuple[str, date] | None:
    """The invoice and charge day a link names; None when altered, expired or past its day."""
    try:
        data = _skip_serializer(keys, now).loads(
            token, max_age=int(SKIP_LINK_LIFETIME.total_seconds())
        )
        if not isinstance(data, list) or len(data) != 2:
            return None
        public_id, raw_day = data
        if not isinstance(public_id, str) or not isinstance(raw_day, str):
            return None
        day = date.fromisoformat(raw_day)
    except (BadSignature, ValueError):  # SignatureExpired is one
        return None
    if now.date() > day:
        return None
    return public_id, day


def invoice_for_skip(session: Session, public_id: str) -> Invoice | None:
    with tenancy.system(session):  # the signed link is the authority
        return session.scalar(select(Invoice).where(Invoice.public_id == public_id))


def skip(
    session: Session,
    invoice: Invoice,
    *,
    user: PortalUser | None,
    today: date,
    now: datetime,
    request: audit.RequestInfo,
) -> Refusal | None:
    """Autopay leaves this invoice alone from now on (once: a second skip is refused).

    The invoice is read again under its row lock, the lock the day's charge takes before it
    records its payment (and after which it looks for a skip, `skipped`): a skip and a charge
    at the same moment never both go ahead. A charge that already holds a payment is refused
    (ALREADY_CHARGING); after a failed attempt, the retries can still be skipped."""
    invoice = lock_invoices(session, [invoice.id]).get(invoice.id, invoice)
    with tenancy.system(session):
        charging = session.scalar(
            select(AutopayStep.id)
            .join(Payment, Payment.id == AutopayStep.payment_id)
            .where(
                AutopayStep.invoice_id == invoice.id,
                AutopayStep.kind == AutopayStepKind.CHARGE,
                Payment.status.in_(CHARGING),
            )
            .limit(1)
        )
    if charging is not None:
        return Refusal.ALREADY_CHARGING
    if invoice.balance_due <= 0 or invoice.status not in CONSIDERED:
        return Refusal.NOTHING_TO_SKIP
    step = claim(session, invoice, AutopayStepKind.SKIPPED, 0, today, user.id if user else None)
    if step is None:
        return Refusal.ALREADY_SKIPPED
    audit.record(
        session,
        "Portal.AutopaySkipped",
        company_id=invoice.company_id,
        user_id=user.id if user else None,
        request=request,
        invoice_ids=[invoice.public_id],
    )
    return None


def skipped(session: Session, invoice: Invoice) -> bool:
    """Whether the invoice was skipped (the charge asks again once it holds the invoice's lock)."""
    with tenancy.system(session):
        return (
            session.scalar(
                select(AutopayStep.id)
                .where(
                    AutopayStep.invoice_id == invoice.id,
                    AutopayStep.kind == AutopayStepKind.SKIPPED,
                )
                .limit(1)
            )
            is not None
        )


# the job's plan -------------------------------------------------------------------------------


class Act(enum.StrEnum):
    NOTICE = "notice"
    CHARGE = "charge"
    DISPUTED = "disputed"
    FAILED = "failed"  # the last attempt failed: tell (once per attempt) when the next is
    STOPPED = "stopped"


@dataclass(frozen=True)
class Action:
    act: Act
    invoice: Invoice
    day: date  # the charge day (NOTICE), today (CHARGE), the next try (FAILED)
    attempt: int = 0
    payment: Payment | None = None


def active_settings(session: Session) -> list[tuple[int, int]]:
    """(setting id, company id) of every setting that is on, or off with its notice untold
    (across companies: the job discovers its work)."""
    with tenancy.system(session):
        return [
            (row.id, row.company_id)
            for row in session.execute(
                select(AutopaySetting.id, AutopaySetting.company_id)
                .where(AutopaySetting.enabled.is_(True) | AutopaySetting.off_told.is_(False))
                .order_by(AutopaySetting.id)
            )
        ]


def plan(session: Session, setting: AutopaySetting, today: date) -> list[Action]:
    """What the job does today about the account's invoices (three queries however many)."""
    horizon = today + timedelta(days=setting.notice_days)
    query = select(Invoice).where(
        Invoice.billing_account_id == setting.billing_account_id,
        Invoice.status.in_(CONSIDERED),
        Invoice.balance_due > 0,
    )
    if setting.timing is AutopayTiming.AFTER_ISSUE:
        query = query.where(
            Invoice.issue_date <= horizon - timedelta(days=setting.days_after_issue)
        )
    else:
        query = query.where(Invoice.due_date <= horizon)
    invoices = session.scalars(query.order_by(Invoice.due_date, Invoice.id)).all()
    if not invoices:
        return []
    ids = [invoice.id for invoice in invoices]
    steps: dict[int, list[AutopayStep]] = {}
    for step in session.scalars(
        select(AutopayStep).where(AutopayStep.invoice_id.in_(ids)).order_by(AutopayStep.attempt)
    ):
        steps.setdefault(step.invoice_id, []).append(step)
    payment_ids = [s.payment_id for group in steps.values() for s in group if s.payment_id]
    made = (
        {p.id: p for p in session.scalars(select(Payment).where(Payment.id.in_(payment_ids)))}
        if payment_ids
        else {}
    )
    held = reserved_amounts(session, ids)
    actions = []
    for invoice in invoices:
        found = _next(setting, invoice, steps.get(invoice.id, []), made, held, today)
        if found is not None:
            actions.append(found)
    return actions


def _next(
    setting: AutopaySetting,
    invoice: Invoice,
    steps: Sequence[AutopayStep],
    made: dict[int, Payment],
    held: dict[int, int],
    today: date,
) -> Action | None:
    kinds = {step.kind for step in steps}
    if kinds & {AutopayStepKind.SKIPPED, AutopayStepKind.DISPUTED, AutopayStepKind.STOPPED}:
        return None
    notice = next((s for s in steps if s.kind is AutopayStepKind.NOTICE), None)
    if notice is None:
        if not setting.enabled or invoice.status is InvoiceStatus.DISPUTED:
            return None  # a disputed invoice is told of once its dispute is over, if ever
        return Action(Act.NOTICE, invoice, first_day(setting, invoice, today))
    charges = [s for s in steps if s.kind is AutopayStepKind.CHARGE]
    if not charges:
        attempt, due = 1, notice.day
    else:
        last = charges[-1]
        payment = made.get(last.payment_id) if last.payment_id else None
        if payment is None:
            return None  # never: an attempt's step and its payment commit together
        if payment.status not in FINAL or payment.status is PaymentStatus.SUCCEEDED:
            return None  # on its way, or paid (a balance left is someone else's part)
        if last.attempt >= ATTEMPTS:
            return Action(Act.STOPPED, invoice, today, last.attempt, payment)
        next_day = charges[0].day + RETRY_AFTER[last.attempt - 1]
        if today < next_day:
            return Action(Act.FAILED, invoice, next_day, last.attempt, payment)
        attempt, due = last.attempt + 1, next_day
    if not setting.enabled or today < due:
        return None
    if invoice.status is InvoiceStatus.DISPUTED:
        return Action(Act.DISPUTED, invoice, today, attempt)
    if held.get(invoice.id, 0) > 0:
        return None  # a payment on its way holds it: wait for its outcome
    return Action(Act.CHARGE, invoice, today, attempt)


def claim(
    session: Session,
    invoice: Invoice,
    kind: AutopayStepKind,
    attempt: int,
    day: date,
    user_id: int | None,
    *,
    now: datetime | None = None,
) -> AutopayStep | None:
    """Record a step once: the new row, or None when it was recorded before (or is being
    recorded by a concurrent run, which this waits for on PostgreSQL)."""
    values: dict[str, Any] = {
        "company_id": invoice.company_id,
        "billing_account_id": invoice.billing_account_id,
        "invoice_id": invoice.id,
        "kind": kind.value,
        "attempt": attempt,
        "day": day,
        "user_id": user_id,
    }
    if now is not None:
        values["created_at"] = now
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    new_id = session.scalar(
        insert(AutopayStep).values(values).on_conflict_do_nothing().returning(AutopayStep.id)
    )
    if new_id is None:
        return None
    return session.get(AutopayStep, new_id)


def step(session: Session, invoice: Invoice, kind: AutopayStepKind, attempt: int) -> AutopayStep:
    found = session.scalar(
        select(AutopayStep).where(
            AutopayStep.invoice_id == invoice.id,
            AutopayStep.kind == kind,
            AutopayStep.attempt == attempt,
        )
    )
    assert found is not None
    return found


def recipients(session: Session, setting: AutopaySetting) -> list[PortalUser]:
    """Who hears of a setting's notices: the consenting user (while active) and the company's
    active administrators."""
    with tenancy.system(session):
        users = session.scalars(
            select(PortalUser)
            .where(
                PortalUser.company_id == setting.company_id,
                PortalUser.status == UserStatus.ACTIVE,
                (PortalUser.role == Role.ADMIN) | (PortalUser.id == setting.consented_by_user_id),
            )
            .order_by(PortalUser.id)
        ).all()
    return list(users)


def upcoming(
    session: Session, settings: Collection[AutopaySetting], today: date
) -> dict[int, list[tuple[Invoice, date]]]:
    """Per account, the invoices autopay will charge and on which day (notice sent or not;
    skipped, disputed or given up left out): for the page and the invoice page."""
    result: dict[int, list[tuple[Invoice, date]]] = {}
    on = [s for s in settings if s.enabled]
    if not on:
        return result
    by_account = {s.billing_account_id: s for s in on}
    invoices = session.scalars(
        select(Invoice)
        .where(
            Invoice.billing_account_id.in_(by_account),
            Invoice.status.in_(CONSIDERED),
            Invoice.status != InvoiceStatus.DISPUTED,
            Invoice.balance_due > 0,
        )
        .order_by(Invoice.due_date, Invoice.id)
        .limit(200)
    ).all()
    if not invoices:
        return result
    steps: dict[int, list[AutopayStep]] = {}
    for row in session.scalars(
        select(AutopayStep).where(AutopayStep.invoice_id.in_([i.id for i in invoices]))
    ):
        steps.setdefault(row.invoice_id, []).append(row)
    for invoice in invoices:
        kinds = {s.kind: s for s in steps.get(invoice.id, [])}
        if {AutopayStepKind.SKIPPED, AutopayStepKind.DISPUTED, AutopayStepKind.STOPPED} & set(
            kinds
        ) or AutopayStepKind.CHARGE in kinds:
            continue
        setting = by_account[invoice.billing_account_id]
        notice = kinds.get(AutopayStepKind.NOTICE)
        day = notice.day if notice else first_day(setting, invoice, today)
        result.setdefault(invoice.billing_account_id, []).append((invoice, day))
    return result


def will_charge(session: Session, invoice: Invoice, today: date) -> date | None:
    """The day autopay will charge this invoice, if it will (one query when autopay is off for
    its account, two when on)."""
    if invoice.balance_due <= 0 or invoice.status not in CONSIDERED:
        return None
    if invoice.status is InvoiceStatus.DISPUTED:
        return None
    setting = session.scalar(
        select(AutopaySetting).where(
            AutopaySetting.billing_account_id == invoice.billing_account_id,
            AutopaySetting.enabled.is_(True),
        )
    )
    if setting is None:
        return None
    kinds = {
        row.kind: row
        for row in session.scalars(select(AutopayStep).where(AutopayStep.invoice_id == invoice.id))
    }
    if set(kinds) & {
        AutopayStepKind.SKIPPED,
        AutopayStepKind.DISPUTED,
        AutopayStepKind.STOPPED,
        AutopayStepKind.CHARGE,
    }:
        return None
    notice = kinds.get(AutopayStepKind.NOTICE)
    return notice.day if notice else first_day(setting, invoice, today)


def users_of(session: Session, ids: Collection[int]) -> dict[int, PortalUser]:
    if not ids:
        return {}
    return {u.id: u for u in session.scalars(select(PortalUser).where(PortalUser.id.in_(ids)))}
