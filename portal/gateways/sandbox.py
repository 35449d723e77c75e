"""The sandbox gateway: Stripe test mode's behaviour, kept in the portal's own database.

Its hosted page (blueprint `sandbox`) takes the test numbers from the contract and hands back a
token; only brand, last four digits and expiry are kept, never the number or the security code.
A bank debit answers `processing` and settles a few seconds later through a signed webhook,
delivered by a job (see `workers.jobs.deliver_sandbox_settlement`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.gateways import (
    ChargeEvent,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    GatewayError,
    InvalidSignature,
    SavedMethod,
)
from portal.models import (
    Payment,
    PaymentMethodKind,
    SandboxCharge,
    SandboxMethod,
    SandboxSetup,
)

SIGNATURE_HEADER = "Sandbox-Signature"
SIGNATURE_TOLERANCE = 300  # seconds, as Stripe's default
SETTLE_AFTER = timedelta(seconds=3)

TEST_BANK_ROUTING = "110000000"
TEST_BANK_ACCOUNT = "000123456789"


@dataclass(frozen=True)
class TestCard:
    brand: str
    behaviour: str  # "succeeds", "charge_fails", or the decline code given when attaching


TEST_CARDS: dict[str, TestCard] = {
    "4242424242424242": TestCard("visa", "succeeds"),
    "4000000000000002": TestCard("visa", "card_declined"),
    "4000000000009995": TestCard("visa", "insufficient_funds"),
    "4000000000000341": TestCard("visa", "charge_fails"),
}
ATTACHABLE = {"succeeds", "charge_fails"}


class CardRefused(ValueError):
    """The hosted page refuses what was entered; `code` says why."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def signing_secret(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), b"sandbox-webhook-signing", hashlib.sha256).digest()


def sign(payload: bytes, secret: bytes, timestamp: int) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(payload: bytes, header: str | None, secret: bytes | Sequence[bytes], now: float) -> None:
    """Raises InvalidSignature unless `header` signs `payload` under one of the secrets (the
    current key's, or an earlier key's while keys rotate), within the tolerance."""
    secrets_ = [secret] if isinstance(secret, bytes) else list(secret)
    if not header:
        raise InvalidSignature("no signature")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError) as error:
        raise InvalidSignature("malformed signature") from error
    if abs(int(now) - timestamp) > SIGNATURE_TOLERANCE:  # ints: any length compares
        raise InvalidSignature("signature timestamp outside the tolerance")
    if not given.isascii():  # compare_digest takes ASCII text only
        raise InvalidSignature("signature mismatch")
    matched = False
    for candidate in secrets_:
        expected = sign(payload, candidate, timestamp).split("v1=", 1)[1]
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise InvalidSignature("signature mismatch")


def settlement_event(charge: SandboxCharge) -> bytes:
    """The webhook body that tells the portal a bank debit settled."""
    return json.dumps(
        {
            "id": f"evt_{charge.reference}_{charge.status}",
            "type": f"charge.{charge.status}",
            "data": {
                "reference": charge.reference,
                "status": charge.status,
                "failure_code": charge.failure_code,
            },
        },
        separators=(",", ":"),
    ).encode()


class SandboxGateway:
    name = "sandbox"

    def __init__(
        self,
        session: Session,
        *,
        secret_key: str,
        fallback_keys: Sequence[str] = (),
        now: Callable[[], datetime],
        on_processing: Callable[[str, datetime], None] | None = None,
    ) -> None:
        self.session = session
        self.secret = signing_secret(secret_key)  # signs
        # Accepted too: webhooks signed under SECRET_KEY_FALLBACKS while keys rotate.
        self.accepted = [self.secret, *(signing_secret(key) for key in fallback_keys)]
        self.now = now
        # Called with (reference, when) for a charge that settles later: enqueues the webhook.
        self.on_processing = on_processing

    # customers and methods ---------------------------------------------------------------

    def ensure_customer(self, *, existing: str | None, company_ref: str, company_name: str) -> str:
        if existing and existing.startswith("sandbox_cus_"):  # not one of another gateway's
            return existing
        return f"sandbox_cus_{company_ref}"

    def start_setup(
        self, *, customer: str, kind: PaymentMethodKind, return_url: str, cancel_url: str
    ) -> str:
        setup = SandboxSetup(
            id=f"sbs_{secrets.token_urlsafe(18)}",
            customer=customer,
            kind=kind.value,
            return_url=return_url,
            cancel_url=cancel_url,
            created_at=self.now(),
        )
        self.session.add(setup)
        self.session.flush()
        return f"/sandbox/setup/{setup.id}"

    def setup(self, setup_id: str) -> SandboxSetup | None:
        return self.session.get(SandboxSetup, setup_id)

    def attach_card(
        self, setup: SandboxSetup, number: str, exp_month: int, exp_year: int
    ) -> SandboxMethod:
        """What the hosted page does with a card. Raises CardRefused for anything else."""
        digits = "".join(ch for ch in number if ch.isdigit())
        card = TEST_CARDS.get(digits)
        if card is None:
            raise CardRefused("invalid_number")
        if card.behaviour not in ATTACHABLE:
            raise CardRefused(card.behaviour)
        return self._attach(
            setup,
            PaymentMethodKind.CARD,
            card.brand,
            digits[-4:],
            card.behaviour,
            exp_month,
            exp_year,
        )

    def attach_bank_account(self, setup: SandboxSetup, routing: str, account: str) -> SandboxMethod:
        if (routing.strip(), account.strip()) != (TEST_BANK_ROUTING, TEST_BANK_ACCOUNT):
            raise CardRefused("invalid_bank_account")
        return self._attach(
            setup, PaymentMethodKind.BANK_ACCOUNT, "bank", account.strip()[-4:], "settles_later"
        )

    def register_test_method(
        self,
        token: str,
        customer: str,
        *,
        brand: str,
        last4: str,
        behaviour: str,
        exp_month: int,
        exp_year: int,
    ) -> None:
        """The demo seed's saved cards, as if they had come through the hosted page."""
        if self.session.get(SandboxMethod, token) is None:
            self.session.add(
                self._method(
                    token,
                    customer,
                    PaymentMethodKind.CARD,
                    brand,
                    last4,
                    behaviour,
                    exp_month,
                    exp_year,
                )
            )

    def register_test_charge(self, payment: Payment, token: str) -> None:
        """The demo seed's past payments, as if they had been charged here: the sandbox answers
        for every reference the demo shows (a processing one stays processing until settled
        by hand, as a bank payment waits for its bank)."""
        reference = payment.gateway_reference
        if reference is None or self.session.get(SandboxCharge, reference) is not None:
            return
        self.session.add(
            SandboxCharge(
                reference=reference,
                idempotency_key=payment.idempotency_key,
                token=token,
                amount=payment.amount,
                currency=payment.currency,
                status=payment.status.value,
                failure_code=payment.failure_code,
                created_at=payment.created_at,
            )
        )

    def _attach(
        self,
        setup: SandboxSetup,
        kind: PaymentMethodKind,
        brand: str,
        last4: str,
        behaviour: str,
        exp_month: int | None = None,
        exp_year: int | None = None,
    ) -> SandboxMethod:
        token = f"sandbox_pm_{secrets.token_urlsafe(18)}"
        method = self._method(
            token, setup.customer, kind, brand, last4, behaviour, exp_month, exp_year
        )
        self.session.add(method)
        setup.token = method.token
        self.session.flush()
        return method

    def _method(
        self,
        token: str,
        customer: str,
        kind: PaymentMethodKind,
        brand: str,
        last4: str,
        behaviour: str,
        exp_month: int | None,
        exp_year: int | None,
    ) -> SandboxMethod:
        return SandboxMethod(
            token=token,
            customer=customer,
            kind=kind.value,
            brand=brand,
            last4=last4,
            exp_month=exp_month,
            exp_year=exp_year,
            behaviour=behaviour,
            created_at=self.now(),
        )

    def finish_setup(self, *, customer: str, session_id: str) -> SavedMethod | None:
        setup = self.session.get(SandboxSetup, session_id)
        if setup is None or setup.customer != customer or setup.token is None:
            return None
        method = self.session.get(SandboxMethod, setup.token)
        if method is None:
            return None
        return SavedMethod(
            token=method.token,
            kind=PaymentMethodKind(method.kind),
            brand=method.brand,
            last4=method.last4,
            exp_month=method.exp_month,
            exp_year=method.exp_year,
        )

    def detach(self, token: str) -> None:
        method = self.session.get(SandboxMethod, token)
        if method is not None and method.detached_at is None:
            method.detached_at = self.now()

    # charges -----------------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> ChargeResult:
        existing = self.session.scalar(
            select(SandboxCharge).where(SandboxCharge.idempotency_key == request.idempotency_key)
        )
        if existing is not None:  # the same key answers with the same charge, as Stripe does
            return self._result(existing)
        method = self.session.get(SandboxMethod, request.token)
        if method is None or method.customer != request.customer:
            raise GatewayError("no such payment method for this customer")
        now = self.now()
        charge = SandboxCharge(
            reference=f"sandbox_ch_{secrets.token_urlsafe(18)}",
            idempotency_key=request.idempotency_key,
            token=method.token,
            amount=request.amount,
            currency=request.currency,
            status=ChargeStatus.SUCCEEDED.value,
            created_at=now,
        )
        if method.detached_at is not None:
            charge.status, charge.failure_code = "failed", "payment_method_unavailable"
        elif method.behaviour == "charge_fails":
            charge.status, charge.failure_code = "failed", "card_declined"
        elif method.behaviour == "settles_later":
            charge.status = ChargeStatus.PROCESSING.value
            charge.settles_at = now + SETTLE_AFTER
        self.session.add(charge)
        self.session.flush()
        if charge.settles_at is not None and self.on_processing is not None:
            self.on_processing(charge.reference, charge.settles_at)
        return self._result(charge)

    def retrieve(self, reference: str) -> ChargeResult:
        charge = self.session.get(SandboxCharge, reference)
        if charge is None:
            raise GatewayError("no such charge")
        self._settle_if_due(charge)
        return self._result(charge)

    def cancel(self, reference: str) -> ChargeResult:
        charge = self.session.get(SandboxCharge, reference)
        if charge is None:
            raise GatewayError("no such charge")
        if charge.status == ChargeStatus.PROCESSING.value:
            charge.status, charge.failure_code = "failed", "canceled"
            self.session.flush()
        return self._result(charge)

    def settle(self, reference: str) -> tuple[bytes, str] | None:
        """Settle a due bank debit; returns the signed webhook (body, signature) to deliver."""
        charge = self.session.get(SandboxCharge, reference)
        if charge is None:
            return None
        self._settle_if_due(charge, force=True)
        body = settlement_event(charge)
        return body, sign(body, self.secret, int(time.time()))

    def _settle_if_due(self, charge: SandboxCharge, *, force: bool = False) -> None:
        due = charge.settles_at is not None and (force or self.now() >= charge.settles_at)
        if charge.status == ChargeStatus.PROCESSING.value and due:
            charge.status = ChargeStatus.SUCCEEDED.value
            self.session.flush()

    @staticmethod
    def _result(charge: SandboxCharge) -> ChargeResult:
        return ChargeResult(
            status=ChargeStatus(charge.status),
            reference=charge.reference,
            failure_code=charge.failure_code,
        )

    # webhooks ----------------------------------------------------------------------------

    def parse_event(self, payload: bytes, headers: Mapping[str, str]) -> ChargeEvent | None:
        verify(payload, headers.get(SIGNATURE_HEADER), self.accepted, time.time())
        try:
            event = json.loads(payload)
            data = event["data"]
            status = ChargeStatus(data["status"])
            return ChargeEvent(
                event_id=str(event["id"]),
                kind=str(event["type"]),
                reference=str(data["reference"]),
                result=ChargeResult(
                    status=status,
                    reference=str(data["reference"]),
                    failure_code=data.get("failure_code"),
                ),
            )
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise InvalidSignature("unreadable event") from error
