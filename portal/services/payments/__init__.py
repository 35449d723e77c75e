"""The payment domain: choosing what to pay, reserving it, recording it, moving its status.

A payment covers the invoices of one billing account. Invoices of several accounts are paid in
one go as a PaymentGroup: one form, one key, and one payment per account underneath.

Money moves exactly once because
- the idempotency key comes from the rendered form, so a double submit finds its own payment
  (or group: each of its payments carries a key derived from the group's);
- creating a payment locks the invoices (FOR UPDATE on PostgreSQL, the write lock on SQLite)
  and refuses more than each balance minus what other unfinished payments already hold;
- every status change is a conditional UPDATE from a non-final status, so a replayed or late
  webhook finds nothing to change; an invoice's paid amount only grows while it stays <= total.

The modules: `rules` (limits, problems), `selection` (what is chosen, amounts), `creation`
(recording payments), `transitions` (status moves), `queries` (reading them), `events` (webhook
records). No Flask and no gateway calls here: charging is the application layer's
(`portal.payments`), which hands a gateway's answer to `transitions.apply_result`. This package
re-exports its modules' names, so a caller writes `payments.select_invoices(...)`.
"""

from __future__ import annotations

from portal.services.payments.creation import (
    Submission as Submission,
)
from portal.services.payments.creation import (
    find_by_key as find_by_key,
)
from portal.services.payments.creation import (
    lock_selection as lock_selection,
)
from portal.services.payments.creation import (
    new_idempotency_key as new_idempotency_key,
)
from portal.services.payments.creation import (
    record_payments as record_payments,
)
from portal.services.payments.creation import (
    valid_key as valid_key,
)
from portal.services.payments.events import (
    WebhookOutcome as WebhookOutcome,
)
from portal.services.payments.events import (
    record_event as record_event,
)
from portal.services.payments.queries import (
    Found as Found,
)
from portal.services.payments.queries import (
    charging_since as charging_since,
)
from portal.services.payments.queries import (
    due_scheduled as due_scheduled,
)
from portal.services.payments.queries import (
    get_group as get_group,
)
from portal.services.payments.queries import (
    get_payment as get_payment,
)
from portal.services.payments.queries import (
    get_payment_by_id as get_payment_by_id,
)
from portal.services.payments.queries import (
    group_payments as group_payments,
)
from portal.services.payments.queries import (
    other_gateway as other_gateway,
)
from portal.services.payments.queries import (
    payment_by_public_id as payment_by_public_id,
)
from portal.services.payments.queries import (
    payment_by_reference as payment_by_reference,
)
from portal.services.payments.queries import (
    stuck_processing as stuck_processing,
)
from portal.services.payments.rules import (
    ACTION_TIMEOUT as ACTION_TIMEOUT,
)
from portal.services.payments.rules import (
    FINAL as FINAL,
)
from portal.services.payments.rules import (
    IN_FLIGHT as IN_FLIGHT,
)
from portal.services.payments.rules import (
    KEY_LIFETIME as KEY_LIFETIME,
)
from portal.services.payments.rules import (
    MAX_INVOICES as MAX_INVOICES,
)
from portal.services.payments.rules import (
    MAX_SCHEDULE_DAYS as MAX_SCHEDULE_DAYS,
)
from portal.services.payments.rules import (
    REFERENCE_ATTEMPTS as REFERENCE_ATTEMPTS,
)
from portal.services.payments.rules import (
    REVIEW_WINDOW as REVIEW_WINDOW,
)
from portal.services.payments.rules import (
    FieldError as FieldError,
)
from portal.services.payments.rules import (
    Problem as Problem,
)
from portal.services.payments.selection import (
    Balance as Balance,
)
from portal.services.payments.selection import (
    Item as Item,
)
from portal.services.payments.selection import (
    Selection as Selection,
)
from portal.services.payments.selection import (
    Share as Share,
)
from portal.services.payments.selection import (
    allocate_oldest_first as allocate_oldest_first,
)
from portal.services.payments.selection import (
    balance_ids as balance_ids,
)
from portal.services.payments.selection import (
    check_amounts as check_amounts,
)
from portal.services.payments.selection import (
    check_method as check_method,
)
from portal.services.payments.selection import (
    check_schedule as check_schedule,
)
from portal.services.payments.selection import (
    parse_amount as parse_amount,
)
from portal.services.payments.selection import (
    reserved_amounts as reserved_amounts,
)
from portal.services.payments.selection import (
    select_invoices as select_invoices,
)
from portal.services.payments.transitions import (
    apply_result as apply_result,
)
from portal.services.payments.transitions import (
    cancel_scheduled as cancel_scheduled,
)
from portal.services.payments.transitions import (
    start_scheduled as start_scheduled,
)
