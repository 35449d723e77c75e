"""The Stripe gateway: Checkout (setup mode) saves a method, PaymentIntents charge it.

Card and bank details only ever go to Stripe's hosted page; the portal keeps the PaymentMethod
id with brand, last four digits and expiry. Every charge carries the payment's idempotency key,
so a retry (the SDK's own, or a reconciliation) finds the same PaymentIntent. The SDK adds an
idempotency key of its own to every other POST, which makes its network retries safe too.

The SDK pins API version 2026-10-28.endive, where `payment_method_types` is no longer accepted
on Checkout Sessions and PaymentIntents; `allowed_payment_method_types` filters instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import stripe

from portal.gateways import (
    FAILURE_CODES,
    ChargeEvent,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    GatewayConflict,
    GatewayError,
    InvalidSignature,
    SavedMethod,
)
from portal.models import PaymentMethodKind

if TYPE_CHECKING:
    from stripe.params import PaymentIntentCreateParams
    from stripe.params.checkout import SessionCreateParams

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Stripe-Signature"
CHARGE_EVENTS = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.processing",
        "payment_intent.payment_failed",
        "payment_intent.requires_action",
        "payment_intent.canceled",
    }
)
# Stripe's codes that mean one of the portal's FAILURE_CODES.
FAILURE_ALIASES = {
    "generic_decline": "card_declined",
    "do_not_honor": "card_declined",
    "payment_intent_authentication_failure": "authentication_required",
}
_SESSION_ID = re.compile(r"cs_[A-Za-z0-9_]{1,250}")


class StripeGateway:
    name = "stripe"

    def __init__(
        self,
        secret_key: str,
        webhook_secret: str,
        api_base: str = "",
        *,
        max_network_retries: int = 2,
        timeout: float = 30.0,
    ) -> None:
        self._webhook_secret = webhook_secret
        # The SDK's default client, with a timeout shorter than its 80 seconds.
        self._http = stripe.RequestsClient(timeout=timeout)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else {},
            max_network_retries=max_network_retries,
            http_client=self._http,
        )

    def close(self) -> None:
        """Close the pooled connections now (garbage collection closes them otherwise)."""
        self._http.close()  # type: ignore[no-untyped-call]  # untyped in the SDK

    def __enter__(self) -> StripeGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # customers and methods ---------------------------------------------------------------

    def ensure_customer(self, *, existing: str | None, company_ref: str, company_name: str) -> str:
        if existing and existing.startswith("cus_"):  # not one of another gateway's
            return existing
        try:
            customer = self._client.v1.customers.create(
                {"name": company_name, "metadata": {"company": company_ref}},
                {"idempotency_key": f"customer-{company_ref}"},
            )
        except stripe.StripeError as error:
            raise _unusable("creating a customer", error) from error
        return customer.id

    def start_setup(
        self, *, customer: str, kind: PaymentMethodKind, return_url: str, cancel_url: str
    ) -> str:
        separator = "&" if "?" in return_url else "?"
        params: SessionCreateParams = {
            "mode": "setup",
            "customer": customer,
            "success_url": f"{return_url}{separator}session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": cancel_url,
        }
        if kind is PaymentMethodKind.BANK_ACCOUNT:
            params["allowed_payment_method_types"] = ["us_bank_account"]
            params["currency"] = "usd"  # US bank accounts are debited in dollars only
        else:
            params["allowed_payment_method_types"] = ["card"]
        try:
            session = self._client.v1.checkout.sessions.create(params)
        except stripe.StripeError as error:
            raise _unusable("starting a checkout session", error) from error
        if not session.url:
            raise GatewayError("Stripe returned a checkout session without a URL")
        return session.url

    def finish_setup(self, *, customer: str, session_id: str) -> SavedMethod | None:
        if not _SESSION_ID.fullmatch(session_id):
            return None
        try:
            session = self._client.v1.checkout.sessions.retrieve(
                session_id, {"expand": ["setup_intent.payment_method"]}
            )
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return None
            raise _unusable("reading a checkout session", error) from error
        except stripe.StripeError as error:
            raise _unusable("reading a checkout session", error) from error
        if _id(session.customer) != customer or session.status != "complete":
            return None
        intent = session.setup_intent
        if not isinstance(intent, stripe.SetupIntent) or intent.status != "succeeded":
            return None
        method = intent.payment_method
        if not isinstance(method, stripe.PaymentMethod) or _id(method.customer) != customer:
            return None
        return _saved(method)

    def detach(self, token: str) -> None:
        try:
            self._client.v1.payment_methods.detach(token)
        except stripe.InvalidRequestError as error:
            gone = error.code == "resource_missing"
            if gone or "not attached" in (error.user_message or ""):
                return
            raise _unusable("detaching a payment method", error) from error
        except stripe.StripeError as error:
            raise _unusable("detaching a payment method", error) from error

    # charges -----------------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> ChargeResult:
        params: PaymentIntentCreateParams = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "customer": request.customer,
            "payment_method": request.token,
            "confirm": True,
            # Stripe drops the types that cannot take this currency (bank debits are USD only).
            "allowed_payment_method_types": ["card", "us_bank_account"],
        }
        if request.off_session:
            params["off_session"] = True
        elif request.return_url:
            params["return_url"] = request.return_url
        if request.description:
            params["description"] = request.description
        if request.metadata:
            params["metadata"] = dict(request.metadata)
        try:
            intent = self._client.v1.payment_intents.create(
                params, {"idempotency_key": request.idempotency_key}
            )
        except stripe.CardError as error:
            return _declined(error)
        except stripe.InvalidRequestError as error:
            if error.param == "payment_method":  # detached, someone else's, or not allowed
                return ChargeResult(
                    status=ChargeStatus.FAILED,
                    reference=None,
                    failure_code="payment_method_unavailable",
                )
            raise _unusable("creating a payment", error) from error
        except stripe.StripeError as error:
            raise _unusable("creating a payment", error) from error
        return _result(intent)

    def cancel(self, reference: str) -> ChargeResult:
        try:
            intent = self._client.v1.payment_intents.cancel(reference)
        except stripe.StripeError as error:
            raise _unusable("cancelling a payment", error) from error
        return _result(intent)

    def retrieve(self, reference: str) -> ChargeResult:
        try:
            intent = self._client.v1.payment_intents.retrieve(reference)
        except stripe.StripeError as error:
            raise _unusable("reading a payment", error) from error
        return _result(intent)

    # webhooks ----------------------------------------------------------------------------

    def parse_event(self, payload: bytes, headers: Mapping[str, str]) -> ChargeEvent | None:
        try:
            event = self._client.construct_event(
                payload, _header(headers, SIGNATURE_HEADER), self._webhook_secret
            )
        except stripe.SignatureVerificationError as error:
            raise InvalidSignature("Stripe signature does not verify") from error
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
            raise InvalidSignature("unreadable event") from error
        try:
            if event.type not in CHARGE_EVENTS:
                return None
            intent = event.data.object
            if not isinstance(intent, stripe.PaymentIntent):
                raise InvalidSignature(f"{event.type} without a PaymentIntent")
            return ChargeEvent(
                event_id=event.id,
                kind=event.type,
                reference=intent.id,
                result=_result(intent),
                payment_ref=_text(_field(intent, "metadata"), "payment"),
                amount=_field(intent, "amount"),
                currency=(_text(intent, "currency") or "").upper() or None,
            )
        except (AttributeError, TypeError, ValueError) as error:  # a field missing or mistyped
            raise InvalidSignature("unreadable event") from error


# mapping -----------------------------------------------------------------------------------


# Every PaymentIntent status Stripe documents, and what it means for the portal's payment. The
# webhook, the reconciliation's retrieve and the return from 3-D Secure all read it here, so no
# status (nor one added after this SDK) is ever an error:
#   succeeded                          succeeded
#   processing                         processing (a bank debit clearing; its webhook follows)
#   requires_action                    waiting for the customer to authenticate (a redirect)
#   requires_payment_method, canceled  failed (the last payment error says why)
#   requires_confirmation, requires_capture
#                                      nothing collected, and only the portal could move it on.
#                                      The portal confirms when it creates and captures
#                                      automatically, so this is unexpected: logged, and kept
#                                      waiting like an authentication, which the reconciliation
#                                      gives up after ACTION_TIMEOUT (the intent is cancelled,
#                                      the payment fails and its invoices are free again).
WAITING_ON_THE_PORTAL = frozenset({"requires_confirmation", "requires_capture"})


def _result(intent: stripe.PaymentIntent) -> ChargeResult:
    status = _text(intent, "status")
    if status == "succeeded":
        return ChargeResult(status=ChargeStatus.SUCCEEDED, reference=intent.id)
    if status == "processing":
        return ChargeResult(status=ChargeStatus.PROCESSING, reference=intent.id)
    if status == "requires_action":
        # Only a redirect can be followed from the portal (not e.g. `use_stripe_sdk`).
        redirect = _field(_field(intent, "next_action"), "redirect_to_url")
        return ChargeResult(
            status=ChargeStatus.REQUIRES_ACTION,
            reference=intent.id,
            action_url=_text(redirect, "url"),
        )
    if status in ("requires_payment_method", "canceled"):
        error = _field(intent, "last_payment_error")
        return ChargeResult(
            status=ChargeStatus.FAILED,
            reference=intent.id,
            failure_code=_failure_code(_text(error, "code"), _text(error, "decline_code")),
        )
    if status in WAITING_ON_THE_PORTAL:
        log.warning("PaymentIntent %s is %s: left for the reconciliation", intent.id, status)
    else:
        log.error("PaymentIntent %s has a status the portal does not know: %s", intent.id, status)
    return ChargeResult(status=ChargeStatus.REQUIRES_ACTION, reference=intent.id)


def _declined(error: stripe.CardError) -> ChargeResult:
    intent = _field(error.error, "payment_intent")
    return ChargeResult(
        status=ChargeStatus.FAILED,
        reference=_id(intent),
        failure_code=_failure_code(error.code, _text(error.error, "decline_code"))
        or "card_declined",
    )


def _failure_code(code: str | None, decline_code: str | None) -> str | None:
    """The most specific of Stripe's codes that the portal knows, else Stripe's code as is."""
    for candidate in (decline_code, code):
        if candidate:
            known = FAILURE_ALIASES.get(candidate, candidate)
            if known in FAILURE_CODES:
                return known
    return code or decline_code


def _saved(method: stripe.PaymentMethod) -> SavedMethod | None:
    # Stripe sends only the hash of the method's own type (`card` or `us_bank_account`).
    card = _field(method, "card") if method.type == "card" else None
    if isinstance(card, stripe.StripeObject):
        brand, last4 = _text(card, "brand"), _text(card, "last4")
        exp_month, exp_year = _field(card, "exp_month"), _field(card, "exp_year")
        if brand and last4 and isinstance(exp_month, int) and isinstance(exp_year, int):
            return SavedMethod(
                token=method.id,
                kind=PaymentMethodKind.CARD,
                brand=brand,
                last4=last4,
                exp_month=exp_month,
                exp_year=exp_year,
            )
    bank = _field(method, "us_bank_account") if method.type == "us_bank_account" else None
    last4 = _text(bank, "last4")
    if last4:
        return SavedMethod(
            token=method.id, kind=PaymentMethodKind.BANK_ACCOUNT, brand="bank", last4=last4
        )
    return None


def _field(obj: object, name: str) -> Any:
    """A field that may be null or left out: the SDK raises AttributeError for a field the
    JSON did not carry, and Stripe leaves out e.g. `decline_code` when it does not apply."""
    return None if obj is None else getattr(obj, name, None)


def _text(obj: object, name: str) -> str | None:
    value = _field(obj, name)
    return value if isinstance(value, str) and value else None


def _id(value: object) -> str | None:
    """An expandable field's id, whether it came expanded or not."""
    if value is None or isinstance(value, str):
        return value
    return _text(value, "id")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name.lower():
            return item
    return None


def _unusable(doing: str, error: stripe.StripeError) -> GatewayError:
    """A GatewayError that says what Stripe answered (codes and ids only, never card data)."""
    kind = GatewayConflict if isinstance(error, stripe.IdempotencyError) else GatewayError
    return kind(
        f"Stripe failed {doing}: {type(error).__name__} (HTTP {error.http_status}, "
        f"code {error.code}, request {error.request_id})"
    )
