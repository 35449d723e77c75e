"""Payment gateways behind one protocol. The portal only ever holds their tokens.

`sandbox` (the default) behaves like Stripe test mode with a hosted page of its own; `stripe`
talks to Stripe through its SDK. Both answer a repeated charge with the same idempotency key
with the same charge, which is what makes a retry or a reconciliation safe.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from portal.models import PaymentMethodKind


class ChargeStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"
    FAILED = "failed"


@dataclass(frozen=True)
class ChargeRequest:
    customer: str
    token: str
    amount: int  # minor units
    currency: str
    idempotency_key: str
    description: str
    return_url: str  # where the customer comes back after an authentication step
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Nobody is there to authenticate (a scheduled payment): the gateway must decline rather
    # than ask for 3-D Secure.
    off_session: bool = False


@dataclass(frozen=True)
class ChargeResult:
    status: ChargeStatus
    reference: str | None
    failure_code: str | None = None
    action_url: str | None = None


@dataclass(frozen=True)
class SavedMethod:
    token: str
    kind: PaymentMethodKind
    brand: str
    last4: str
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass(frozen=True)
class ChargeEvent:
    """A verified webhook event about one charge."""

    event_id: str
    kind: str
    reference: str
    result: ChargeResult
    # The portal's payment id, from the charge's metadata: finds the payment even when the
    # charge's answer (and so its reference) never reached the portal.
    payment_ref: str | None = None
    amount: int | None = None  # what the charge is for, to check against that payment
    currency: str | None = None

    def __post_init__(self) -> None:
        """What the portal keeps of an event must fit where it goes (gateway_events, payments):
        an event that does not is unreadable, as a forged one is, and answered 400."""
        result = self.result
        if not (
            _storable(self.event_id, 120)
            and _storable(self.kind, 1_000)  # kept to its first 60 characters
            and _storable(self.reference, 120)
            and (self.payment_ref is None or _storable(self.payment_ref, 120))
            and (result.failure_code is None or _storable(result.failure_code, 60))
            and (result.action_url is None or _storable(result.action_url, 500))
            and (self.amount is None or isinstance(self.amount, int))
            and (self.currency is None or _storable(self.currency, 3))
        ):
            raise UnreadableEvent("the event does not fit the portal's records")


def _storable(value: object, limit: int) -> bool:
    """Text a database column of `limit` characters takes (PostgreSQL refuses NUL in text)."""
    return isinstance(value, str) and 0 < len(value) <= limit and "\x00" not in value


class GatewayError(RuntimeError):
    """The gateway could not be reached or answered something unusable (try again later)."""


class GatewayConflict(GatewayError):
    """The gateway refuses a repeated idempotency key with other parameters: a person must
    look (asking again would not help)."""


class InvalidSignature(ValueError):
    """A webhook whose signature does not verify; nothing in it may be trusted."""


class UnreadableEvent(InvalidSignature):
    """A webhook, signed or not, that the portal cannot read or keep: refused the same way."""


class PaymentGateway(Protocol):
    name: str

    def ensure_customer(self, *, existing: str | None, company_ref: str, company_name: str) -> str:
        """The gateway's customer for a company, created the first time."""

    def start_setup(
        self, *, customer: str, kind: PaymentMethodKind, return_url: str, cancel_url: str
    ) -> str:
        """A hosted page where the customer adds a method; it comes back with ?session_id=."""

    def finish_setup(self, *, customer: str, session_id: str) -> SavedMethod | None:
        """The method a completed hosted page produced, or None when it was not completed."""

    def charge(self, request: ChargeRequest) -> ChargeResult: ...

    def retrieve(self, reference: str) -> ChargeResult: ...

    def cancel(self, reference: str) -> ChargeResult:
        """Give up on a charge still waiting for the customer (an abandoned 3-D Secure)."""

    def detach(self, token: str) -> None: ...

    def parse_event(self, payload: bytes, headers: Mapping[str, str]) -> ChargeEvent | None:
        """Verify and read a webhook; None for event types the portal does not act on."""


# What the customer reads for a gateway's failure code (the code itself goes to the audit log).
FAILURE_CODES = (
    "card_declined",
    "insufficient_funds",
    "expired_card",
    "incorrect_cvc",
    "processing_error",
    "authentication_required",
    "payment_method_unavailable",
    "bank_account_declined",
)
