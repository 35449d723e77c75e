"""StripeGateway against the local Stripe stub, through the real stripe SDK."""

from __future__ import annotations

import http.client
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import stripe

from portal.gateways import (
    ChargeEvent,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    GatewayError,
    InvalidSignature,
    SavedMethod,
)
from portal.gateways.stripe import CHARGE_EVENTS, StripeGateway
from portal.models import PaymentMethodKind
from tests.stripe_stub import CheckoutRefused, StripeStub, card_numbers_in

SECRET_KEY = "sk_test_portal_" + "k" * 24
RETURN_URL = "https://portal.example/payments/pay_1/return"


@pytest.fixture(scope="module")
def stub() -> Iterator[StripeStub]:
    with StripeStub(secret_key=SECRET_KEY) as running:
        yield running


@pytest.fixture
def gateway(stub: StripeStub) -> Iterator[StripeGateway]:
    with StripeGateway(
        SECRET_KEY, stub.webhook_secret, api_base=stub.url, max_network_retries=0
    ) as gw:
        yield gw


@pytest.fixture
def customer(gateway: StripeGateway) -> str:
    ref = f"co_{uuid.uuid4().hex[:12]}"
    return gateway.ensure_customer(existing=None, company_ref=ref, company_name="Acme Ltd")


def http_call(
    method: str, url: str, form: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """One request to the stub's hosted pages, as a browser would make it."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=urlencode(form) if form else None, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def session_id_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def save_method(
    gateway: StripeGateway,
    stub: StripeStub,
    customer: str,
    card: str = "4242424242424242",
    kind: PaymentMethodKind = PaymentMethodKind.CARD,
) -> SavedMethod:
    url = gateway.start_setup(
        customer=customer,
        kind=kind,
        return_url="https://portal.example/methods/return",
        cancel_url="https://portal.example/methods",
    )
    back = stub.complete_checkout(session_id_of(url), card)
    session_id = parse_qs(urlsplit(back).query)["session_id"][0]
    method = gateway.finish_setup(customer=customer, session_id=session_id)
    assert method is not None
    return method


def charge(
    gateway: StripeGateway,
    customer: str,
    token: str,
    *,
    amount: int = 12_500,
    currency: str = "USD",
    key: str | None = None,
) -> ChargeResult:
    return gateway.charge(
        ChargeRequest(
            customer=customer,
            token=token,
            amount=amount,
            currency=currency,
            idempotency_key=key or f"payment-{uuid.uuid4()}",
            description="Invoice INV-1001",
            return_url=RETURN_URL,
            metadata={"payment": "pay_1"},
        )
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# customers ---------------------------------------------------------------------------------


def test_a_company_gets_one_customer_however_often_it_is_asked(
    gateway: StripeGateway, stub: StripeStub
) -> None:
    ref = f"co_{uuid.uuid4().hex[:12]}"
    before = len(stub.customers)
    first = gateway.ensure_customer(existing=None, company_ref=ref, company_name="Acme Ltd")
    again = gateway.ensure_customer(existing=None, company_ref=ref, company_name="Acme Ltd")
    other = gateway.ensure_customer(existing=None, company_ref=ref + "x", company_name="Other")

    assert first == again != other
    assert len(stub.customers) == before + 2
    assert stub.customers[first]["name"] == "Acme Ltd"
    assert stub.customers[first]["metadata"] == {"company": ref}
    creates = [r for r in stub.api_requests if r.path == "/v1/customers"][-3:]
    assert [r.idempotency_key for r in creates] == [f"customer-{ref}"] * 2 + [f"customer-{ref}x"]
    assert all(r.header("Authorization") == f"Bearer {SECRET_KEY}" for r in creates)
    assert stripe.api_key is None  # the gateway never touches the SDK's global key

    calls = len(stub.requests)
    assert gateway.ensure_customer(existing=first, company_ref=ref, company_name="x") == first
    assert len(stub.requests) == calls


# setting up methods ------------------------------------------------------------------------


def test_checkout_saves_a_card_and_hands_back_what_may_be_shown(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    url = gateway.start_setup(
        customer=customer,
        kind=PaymentMethodKind.CARD,
        return_url="https://portal.example/methods/return?next=%2Fbilling",
        cancel_url="https://portal.example/methods",
    )
    assert url.startswith(f"{stub.url}/checkout/cs_test_")
    created = stub.api_requests[-1]
    assert created.path == "/v1/checkout/sessions"
    assert created.form["mode"] == "setup"
    assert created.form["customer"] == customer
    assert created.form["allowed_payment_method_types"] == ["card"]
    assert "currency" not in created.form
    assert created.form["success_url"] == (
        "https://portal.example/methods/return?next=%2Fbilling&session_id={CHECKOUT_SESSION_ID}"
    )
    session_id = session_id_of(url)
    assert gateway.finish_setup(customer=customer, session_id=session_id) is None  # still open

    back = stub.complete_checkout(session_id, "4242 4242 4242 4242", exp_month=7, exp_year=2031)
    query = parse_qs(urlsplit(back).query)
    assert back.startswith("https://portal.example/methods/return?")
    assert query == {"next": ["/billing"], "session_id": [session_id]}

    method = gateway.finish_setup(customer=customer, session_id=session_id)
    assert method == SavedMethod(
        token=method.token if method else "",
        kind=PaymentMethodKind.CARD,
        brand="visa",
        last4="4242",
        exp_month=7,
        exp_year=2031,
    )
    assert method is not None and method.token.startswith("pm_")
    assert stub.payment_methods[method.token]["customer"] == customer
    assert list(card_numbers_in(stub.api_requests)) == []


def test_the_hosted_page_refuses_a_declined_card_then_redirects_with_the_session(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    url = gateway.start_setup(
        customer=customer,
        kind=PaymentMethodKind.CARD,
        return_url="https://portal.example/methods/return",
        cancel_url="https://portal.example/methods",
    )
    status, _, page = http_call("GET", url)
    assert status == 200 and 'name="card_number"' in page
    assert 'href="https://portal.example/methods"' in page

    status, headers, page = http_call("POST", url, {"card_number": "4000000000000002"})
    assert status == 402 and "declined" in page
    assert gateway.finish_setup(customer=customer, session_id=session_id_of(url)) is None

    form = {"card_number": "4242424242424242", "exp_month": "3", "exp_year": "2030", "cvc": "1"}
    status, headers, _ = http_call("POST", url, form)
    assert status == 303
    assert headers["Location"] == (
        f"https://portal.example/methods/return?session_id={session_id_of(url)}"
    )
    method = gateway.finish_setup(customer=customer, session_id=session_id_of(url))
    assert method is not None and (method.last4, method.exp_month, method.exp_year) == (
        "4242",
        3,
        2030,
    )
    # The number went to the hosted page only, never through the API.
    assert list(card_numbers_in(stub.api_requests)) == []
    assert list(card_numbers_in(stub.requests)) != []


@pytest.mark.parametrize(
    ("card", "decline_code"),
    [("4000000000000002", "generic_decline"), ("4000000000009995", "insufficient_funds")],
)
def test_cards_refused_at_checkout_are_not_saved(
    gateway: StripeGateway, stub: StripeStub, customer: str, card: str, decline_code: str
) -> None:
    url = gateway.start_setup(
        customer=customer,
        kind=PaymentMethodKind.CARD,
        return_url="https://portal.example/r",
        cancel_url="https://portal.example/c",
    )
    methods = len(stub.payment_methods)
    with pytest.raises(CheckoutRefused) as refused:
        stub.complete_checkout(session_id_of(url), card)
    assert (refused.value.code, refused.value.decline_code) == ("card_declined", decline_code)
    assert len(stub.payment_methods) == methods
    assert gateway.finish_setup(customer=customer, session_id=session_id_of(url)) is None


def test_checkout_saves_a_bank_account(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    method = save_method(gateway, stub, customer, kind=PaymentMethodKind.BANK_ACCOUNT)
    created = next(r for r in reversed(stub.api_requests) if r.path == "/v1/checkout/sessions")
    assert created.form["allowed_payment_method_types"] == ["us_bank_account"]
    assert created.form["currency"] == "usd"
    assert method.kind is PaymentMethodKind.BANK_ACCOUNT
    assert (method.brand, method.last4, method.exp_month, method.exp_year) == (
        "bank",
        "6789",
        None,
        None,
    )


def test_a_session_of_another_customer_or_an_unknown_one_gives_nothing(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    mine = save_method(gateway, stub, customer)
    assert mine.token in stub.payment_methods
    url = gateway.start_setup(
        customer=customer,
        kind=PaymentMethodKind.CARD,
        return_url="https://portal.example/r",
        cancel_url="https://portal.example/c",
    )
    stub.complete_checkout(session_id_of(url))
    intruder = gateway.ensure_customer(
        existing=None, company_ref=f"co_{uuid.uuid4().hex[:12]}", company_name="Intruder"
    )
    assert gateway.finish_setup(customer=intruder, session_id=session_id_of(url)) is None
    assert gateway.finish_setup(customer=customer, session_id=session_id_of(url)) is not None
    assert gateway.finish_setup(customer=customer, session_id="cs_test_doesnotexist") is None

    calls = len(stub.requests)
    assert gateway.finish_setup(customer=customer, session_id="../customers/" + intruder) is None
    assert len(stub.requests) == calls  # refused without asking Stripe


# charges -----------------------------------------------------------------------------------


def test_a_charge_succeeds_with_its_idempotency_key(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    method = save_method(gateway, stub, customer)
    result = charge(gateway, customer, method.token, key="payment-pay_1-attempt-1")

    assert result.status is ChargeStatus.SUCCEEDED
    assert result.reference is not None and result.failure_code is None
    intent = stub.payment_intents[result.reference]
    assert (intent["amount"], intent["currency"], intent["customer"]) == (12_500, "usd", customer)
    assert intent["payment_method"] == method.token
    assert intent["metadata"] == {"payment": "pay_1"}
    assert intent["description"] == "Invoice INV-1001"
    request = stub.api_requests[-1]
    assert request.path == "/v1/payment_intents"
    assert request.idempotency_key == "payment-pay_1-attempt-1"
    assert request.form["confirm"] == "true"
    assert request.form["return_url"] == RETURN_URL
    assert "payment_method_types" not in request.form  # refused by the pinned API version
    assert gateway.retrieve(result.reference) == result


def test_a_card_declined_on_charge_fails_with_a_reference(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    method = save_method(gateway, stub, customer, "4000000000000341")
    result = charge(gateway, customer, method.token)

    assert result.status is ChargeStatus.FAILED
    assert result.failure_code == "card_declined"
    assert result.reference is not None
    assert stub.payment_intents[result.reference]["status"] == "requires_payment_method"
    assert gateway.retrieve(result.reference) == result


def test_authentication_sends_the_customer_to_the_issuer_and_back(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    method = save_method(gateway, stub, customer, "4000002500003155")
    result = charge(gateway, customer, method.token, key="payment-pay_3ds")

    assert result.status is ChargeStatus.REQUIRES_ACTION
    assert result.reference is not None
    assert result.action_url == f"{stub.url}/3ds/{result.reference}"
    assert gateway.retrieve(result.reference) == result

    status, _, page = http_call("GET", result.action_url)
    assert status == 200 and 'value="approve"' in page
    status, headers, _ = http_call("POST", result.action_url, {"outcome": "approve"})
    assert status == 303
    back = urlsplit(headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == RETURN_URL
    assert parse_qs(back.query)["payment_intent"] == [result.reference]

    settled = gateway.retrieve(result.reference)
    assert settled == ChargeResult(status=ChargeStatus.SUCCEEDED, reference=result.reference)
    # As on Stripe, the same key replays the first answer: only retrieve() tells what happened.
    assert charge(gateway, customer, method.token, key="payment-pay_3ds") == result


def test_failed_authentication_fails_the_charge(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    method = save_method(gateway, stub, customer, "4000000000003220")
    result = charge(gateway, customer, method.token)
    assert result.status is ChargeStatus.REQUIRES_ACTION and result.reference is not None

    back = stub.complete_3ds(result.reference, approve=False)
    assert back.startswith(RETURN_URL + "?payment_intent=" + result.reference)
    failed = gateway.retrieve(result.reference)
    assert failed.status is ChargeStatus.FAILED
    assert failed.failure_code == "authentication_required"


def test_a_bank_debit_processes_then_settles_or_bounces(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    method = save_method(gateway, stub, customer, kind=PaymentMethodKind.BANK_ACCOUNT)
    cleared = charge(gateway, customer, method.token)
    bounced = charge(gateway, customer, method.token)
    assert cleared.status is bounced.status is ChargeStatus.PROCESSING
    assert cleared.reference and bounced.reference and cleared.reference != bounced.reference
    assert gateway.retrieve(cleared.reference).status is ChargeStatus.PROCESSING

    stub.settle(cleared.reference)
    stub.settle(bounced.reference, succeed=False)
    assert gateway.retrieve(cleared.reference).status is ChargeStatus.SUCCEEDED
    assert gateway.retrieve(bounced.reference) == ChargeResult(
        status=ChargeStatus.FAILED,
        reference=bounced.reference,
        failure_code="bank_account_declined",
    )


def test_a_bank_account_cannot_pay_in_another_currency_but_a_card_can(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    bank = save_method(gateway, stub, customer, kind=PaymentMethodKind.BANK_ACCOUNT)
    card = save_method(gateway, stub, customer)
    intents = len(stub.payment_intents)

    refused = charge(gateway, customer, bank.token, currency="EUR")
    assert refused == ChargeResult(
        status=ChargeStatus.FAILED, reference=None, failure_code="payment_method_unavailable"
    )
    assert len(stub.payment_intents) == intents
    assert charge(gateway, customer, card.token, currency="EUR").status is ChargeStatus.SUCCEEDED


def test_the_same_idempotency_key_gives_the_same_charge(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    card = save_method(gateway, stub, customer)
    declining = save_method(gateway, stub, customer, "4000000000000341")
    intents = len(stub.payment_intents)

    first = charge(gateway, customer, card.token, key="payment-pay_7")
    again = charge(gateway, customer, card.token, key="payment-pay_7")
    declined = charge(gateway, customer, declining.token, key="payment-pay_8")
    declined_again = charge(gateway, customer, declining.token, key="payment-pay_8")

    assert first == again and first.status is ChargeStatus.SUCCEEDED
    assert declined == declined_again and declined.status is ChargeStatus.FAILED
    assert len(stub.payment_intents) == intents + 2
    other = charge(gateway, customer, card.token, key="payment-pay_9")
    assert other.reference != first.reference

    with pytest.raises(GatewayError, match="IdempotencyError"):  # same key, different payment
        charge(gateway, customer, card.token, key="payment-pay_7", amount=999)


def test_the_sdk_retries_an_overloaded_stripe_with_the_same_key(
    stub: StripeStub, customer: str, gateway: StripeGateway
) -> None:
    method = save_method(gateway, stub, customer)
    intents = len(stub.payment_intents)
    with StripeGateway(
        SECRET_KEY, stub.webhook_secret, api_base=stub.url, max_network_retries=1
    ) as retrying:
        stub.fail_next(1)
        result = charge(retrying, customer, method.token, key="payment-pay_retry")
    assert result.status is ChargeStatus.SUCCEEDED
    assert len(stub.payment_intents) == intents + 1
    attempts = [r for r in stub.api_requests if r.idempotency_key == "payment-pay_retry"]
    assert len(attempts) == 2

    stub.fail_next(1)
    with pytest.raises(GatewayError, match="APIError"):  # no retries left
        charge(gateway, customer, method.token)


def test_detaching_is_final_and_harmless_to_repeat(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    method = save_method(gateway, stub, customer)
    gateway.detach(method.token)
    assert stub.payment_methods[method.token]["customer"] is None
    assert stub.api_requests[-1].path == f"/v1/payment_methods/{method.token}/detach"

    gateway.detach(method.token)  # already detached
    gateway.detach("pm_doesnotexist")  # never existed
    assert charge(gateway, customer, method.token) == ChargeResult(
        status=ChargeStatus.FAILED, reference=None, failure_code="payment_method_unavailable"
    )


# webhooks ----------------------------------------------------------------------------------


def test_a_signed_event_about_a_charge_is_read(
    gateway: StripeGateway, stub: StripeStub, customer: str
) -> None:
    method = save_method(gateway, stub, customer, "4000000000000341")
    declined = charge(gateway, customer, method.token)
    assert declined.reference is not None
    payload, signature = stub.event(
        "payment_intent.payment_failed", stub.payment_intents[declined.reference]
    )
    event = gateway.parse_event(payload, {"Stripe-Signature": signature})
    assert isinstance(event, ChargeEvent)
    assert event.event_id.startswith("evt_")
    assert (event.kind, event.reference) == ("payment_intent.payment_failed", declined.reference)
    assert event.result == declined

    action = save_method(gateway, stub, customer, "4000002500003155")
    waiting = charge(gateway, customer, action.token)
    assert waiting.reference is not None
    payload, signature = stub.event(
        "payment_intent.requires_action", stub.payment_intents[waiting.reference]
    )
    event = gateway.parse_event(payload, {"Stripe-Signature": signature})
    assert event is not None and event.result == waiting
    assert waiting.action_url == f"{stub.url}/3ds/{waiting.reference}"

    # The events the stub recorded are what Stripe would send, and read the same way.
    bank = save_method(gateway, stub, customer, kind=PaymentMethodKind.BANK_ACCOUNT)
    debit = charge(gateway, customer, bank.token)
    assert debit.reference is not None
    stub.settle(debit.reference)
    sent = stub.events[-1]
    assert sent["type"] == "payment_intent.succeeded"
    payload, signature = stub.signed(sent)
    event = gateway.parse_event(payload, {"stripe-signature": signature})  # any header case
    assert event is not None and event.event_id == sent["id"]
    assert event.result == ChargeResult(status=ChargeStatus.SUCCEEDED, reference=debit.reference)


def test_an_event_that_does_not_verify_is_refused(gateway: StripeGateway, stub: StripeStub) -> None:
    intent = {"id": "pi_123", "object": "payment_intent", "status": "succeeded"}
    payload, signature = stub.event("payment_intent.succeeded", intent)
    assert gateway.parse_event(payload, {"Stripe-Signature": signature}) is not None

    foreign = stub.sign(payload, secret="whsec_someone_else")
    forged = payload.replace(b'"pi_123"', b'"pi_999"')
    assert forged != payload
    for body, headers in [
        (payload, {"Stripe-Signature": foreign}),
        (forged, {"Stripe-Signature": signature}),
        (payload, {}),
        (payload, {"Stripe-Signature": "garbage"}),
    ]:
        with pytest.raises(InvalidSignature):
            gateway.parse_event(body, headers)

    old_body, old_signature = stub.signed(
        {"id": "evt_old", "object": "event", "type": "payment_intent.succeeded",
         "data": {"object": intent}},
        timestamp=int(time.time()) - 3600,
    )  # fmt: skip
    with pytest.raises(InvalidSignature):  # correctly signed, but too long ago to be trusted
        gateway.parse_event(old_body, {"Stripe-Signature": old_signature})

    # Correctly signed, but not about a PaymentIntent as its type says.
    odd_body, odd_signature = stub.event(
        "payment_intent.succeeded", {"id": "ch_1", "object": "charge", "status": "succeeded"}
    )
    with pytest.raises(InvalidSignature):
        gateway.parse_event(odd_body, {"Stripe-Signature": odd_signature})


def test_events_the_portal_does_not_act_on_are_ignored(
    gateway: StripeGateway, stub: StripeStub
) -> None:
    payload, signature = stub.event(
        "customer.created", {"id": "cus_123", "object": "customer", "metadata": {}}
    )
    assert gateway.parse_event(payload, {"Stripe-Signature": signature}) is None


# Stripe unreachable ------------------------------------------------------------------------


def test_an_unreachable_stripe_is_a_gateway_error(stub: StripeStub) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with StripeGateway(SECRET_KEY, stub.webhook_secret, api_base=down, max_network_retries=0) as gw:
        with pytest.raises(GatewayError, match="APIConnectionError"):
            gw.ensure_customer(existing=None, company_ref="co_down", company_name="Down")
        with pytest.raises(GatewayError):
            gw.charge(
                ChargeRequest(
                    customer="cus_1",
                    token="pm_1",
                    amount=1000,
                    currency="usd",
                    idempotency_key="payment-down",
                    description="x",
                    return_url=RETURN_URL,
                )
            )
        with pytest.raises(GatewayError):
            gw.retrieve("pi_1")
        with pytest.raises(GatewayError):
            gw.finish_setup(customer="cus_1", session_id="cs_test_1")


def test_a_wrong_secret_key_is_a_gateway_error(stub: StripeStub) -> None:
    wrong = StripeGateway(
        "sk_test_wrong", stub.webhook_secret, api_base=stub.url, max_network_retries=0
    )
    with wrong, pytest.raises(GatewayError, match="AuthenticationError"):
        wrong.retrieve("pi_1")


# every PaymentIntent status ----------------------------------------------------------------

# Stripe's documented statuses, and what each means for the portal's payment.
STATUSES = {
    "requires_payment_method": ChargeStatus.FAILED,
    "requires_confirmation": ChargeStatus.REQUIRES_ACTION,  # nothing collected; times out
    "requires_action": ChargeStatus.REQUIRES_ACTION,
    "processing": ChargeStatus.PROCESSING,
    "requires_capture": ChargeStatus.REQUIRES_ACTION,  # nothing collected; times out
    "canceled": ChargeStatus.FAILED,
    "succeeded": ChargeStatus.SUCCEEDED,
    "some_status_from_the_future": ChargeStatus.REQUIRES_ACTION,
}


def _intent_in(stub: StripeStub, gateway: StripeGateway, customer: str, status: str) -> str:
    method = save_method(gateway, stub, customer, "4000002500003155")
    waiting = charge(gateway, customer, method.token)
    assert waiting.reference is not None
    stub.payment_intents[waiting.reference]["status"] = status
    return waiting.reference


@pytest.mark.parametrize(("status", "expected"), STATUSES.items())
def test_every_payment_intent_status_is_read_from_a_signed_event(
    gateway: StripeGateway, stub: StripeStub, customer: str, status: str, expected: ChargeStatus
) -> None:
    reference = _intent_in(stub, gateway, customer, status)
    for kind in sorted(CHARGE_EVENTS):  # whatever the event's type says
        payload, signature = stub.event(kind, stub.payment_intents[reference])
        event = gateway.parse_event(payload, {"Stripe-Signature": signature})
        assert event is not None and event.result.status is expected, kind
        assert event.result.reference == reference


@pytest.mark.parametrize(("status", "expected"), STATUSES.items())
def test_every_payment_intent_status_is_read_when_retrieved(
    gateway: StripeGateway, stub: StripeStub, customer: str, status: str, expected: ChargeStatus
) -> None:
    reference = _intent_in(stub, gateway, customer, status)
    result = gateway.retrieve(reference)
    assert result.status is expected and result.reference == reference
    if status != "requires_action":
        assert result.action_url is None  # nothing for the customer to follow
