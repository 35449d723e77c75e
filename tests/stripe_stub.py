"""A local stand-in for the Stripe API, good enough for the real `stripe` SDK to talk to.

It speaks Stripe's wire format (form-encoded requests with bracket notation, JSON objects with
`"object"` fields, `{"error": {...}}` bodies, the `Idempotency-Key` header), keeps everything in
memory, and plays Stripe's hosted pages itself: `/checkout/{id}` collects a test card or bank
account and `/3ds/{pi}` plays the issuer's authentication page. Behaviour follows Stripe's test
numbers (see CARDS). It models the API version the installed SDK pins (2026-10-28.endive), where
`payment_method_types` is no longer accepted on Checkout Sessions and PaymentIntents
(`allowed_payment_method_types` filters instead).

    with StripeStub() as stub:
        gateway = StripeGateway("sk_test_x", stub.webhook_secret, api_base=stub.url)
        ...
        stub.complete_checkout(session_id)          # what the customer does on the hosted page
        payload, signature = stub.event("payment_intent.succeeded", stub.payment_intents[pi])
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import html
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

API_VERSION = "2026-10-28.endive"
TEST_BANK_ROUTING = "110000000"
TEST_BANK_ACCOUNT = "000123456789"
DEFAULT_WEBHOOK_SECRET = "whsec_test_stub_secret"
ALLOWED = "allowed_payment_method_types"
MINIMUM_AMOUNT = 50  # minor units; Stripe's minimum is about $0.50 in every currency


@dataclass(frozen=True)
class TestCard:
    brand: str
    behaviour: str  # succeeds | charge_fails | requires_action | refused
    code: str | None = None
    decline_code: str | None = None


CARDS: dict[str, TestCard] = {
    "4242424242424242": TestCard("visa", "succeeds"),
    "5555555555554444": TestCard("mastercard", "succeeds"),
    "378282246310005": TestCard("amex", "succeeds"),
    "4000000000000002": TestCard("visa", "refused", "card_declined", "generic_decline"),
    "4000000000009995": TestCard("visa", "refused", "card_declined", "insufficient_funds"),
    "4000000000000341": TestCard("visa", "charge_fails", "card_declined", "generic_decline"),
    "4000002500003155": TestCard("visa", "requires_action"),
    "4000000000003220": TestCard("visa", "requires_action"),
}

DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "incorrect_number": "Your card number is incorrect.",
    "invalid_expiry_year": "Your card's expiration year is invalid.",
    "invalid_bank_account": "The bank account details are invalid.",
}

# Which fields `expand` may replace with the object, and where those objects live.
EXPANDABLE = {
    "customer": "customers",
    "setup_intent": "setup_intents",
    "payment_method": "payment_methods",
    "payment_intent": "payment_intents",
}

CUSTOMER_PARAMS = {"name", "email", "description", "metadata", "phone", "preferred_locales"}
SESSION_PARAMS = {
    "mode", "customer", "success_url", "cancel_url", "allowed_payment_method_types",
    "excluded_payment_method_types", "currency", "metadata", "client_reference_id", "locale",
    "setup_intent_data", "payment_method_options", "customer_email",
}  # fmt: skip
INTENT_PARAMS = {
    "amount", "currency", "customer", "payment_method", "confirm",
    "allowed_payment_method_types", "automatic_payment_methods",
    "excluded_payment_method_types", "return_url", "description", "metadata", "off_session",
    "statement_descriptor", "statement_descriptor_suffix", "receipt_email",
    "setup_future_usage", "mandate", "mandate_data", "capture_method",
    "error_on_requires_action", "payment_method_options", "confirmation_method",
}  # fmt: skip


class StubError(Exception):
    """An API error answer. `stored` says whether the idempotency layer keeps it: Stripe keeps
    the result of a request that began executing (a decline) but not a validation failure."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        stored: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.stored = stored
        self.body: dict[str, Any] = {"type": type, "message": message}
        if code is not None:
            self.body["code"] = code
            self.body["doc_url"] = f"https://stripe.com/docs/error-codes/{code}"
        if param is not None:
            self.body["param"] = param
        self.body.update(extra)


class CheckoutRefused(Exception):
    """What the hosted page says instead of saving a card or bank account."""

    def __init__(self, code: str, decline_code: str | None = None) -> None:
        self.code = code
        self.decline_code = decline_code
        self.message = DECLINE_MESSAGES.get(decline_code or code, "Your card was declined.")
        super().__init__(f"{code} ({decline_code})" if decline_code else code)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, Any]
    form: dict[str, Any]
    body: str
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    @property
    def idempotency_key(self) -> str | None:
        return self.header("Idempotency-Key")

    @property
    def is_api(self) -> bool:
        return self.path.startswith("/v1/")


@dataclass
class _Stored:
    method: str
    path: str
    form: dict[str, Any]
    status: int
    body: dict[str, Any]


@dataclass
class _Hidden:
    """What the stub knows about a payment method that the API never shows."""

    behaviour: str
    card: TestCard | None = None


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


# form encoding ---------------------------------------------------------------------------------

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket notation: `a[b]=1`, `l[]=x`, `l[0]=x`, `l[0][k]=v` into nested values."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            raise StubError(400, f"Invalid parameter name: {key}", code="parameter_invalid")
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for depth, part in enumerate(parts):
            name = str(len(node)) if part == "" else part
            if depth == len(parts) - 1:
                node[name] = value
            else:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    raise StubError(400, f"Invalid parameter: {key}", code="parameter_invalid")
                node = child
    return {key: _listify(value) for key, value in root.items()}


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {key: _listify(item) for key, item in value.items()}
    indices = [str(i) for i in range(len(items))]
    if items and set(items) == set(indices):
        return [items[i] for i in indices]
    return items


def _new_id(prefix: str, length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return f"{prefix}_" + "".join(secrets.choice(alphabet) for _ in range(length))


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _boolean(value: Any, param: str) -> bool:
    if value in (None, "false"):
        return False
    if value == "true":
        return True
    raise StubError(400, f"Invalid boolean: {value}", code="parameter_invalid", param=param)


def _string_map(value: Any, param: str) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise StubError(400, f"Invalid object for {param}", code="parameter_invalid", param=param)
    return {key: item for key, item in value.items() if item != ""}


def _string_list(value: Any, param: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StubError(400, f"Invalid array for {param}", code="parameter_invalid", param=param)
    return list(value)


def _require(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str) or value == "":
        raise StubError(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    return value


def _refuse_unknown(form: Mapping[str, Any], allowed: set[str]) -> None:
    for name in form:
        if name != "expand" and name not in allowed:
            raise StubError(
                400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )


# the stub --------------------------------------------------------------------------------------


class StripeStub:
    """Stripe in a thread on 127.0.0.1. Use as a context manager or call `stop()`.

    `secret_key`: when given, the only key accepted; otherwise any `sk_test_…`/`rk_test_…`.
    """

    def __init__(
        self,
        *,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
        secret_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.webhook_secret = webhook_secret
        self.secret_key = secret_key
        self.customers: dict[str, dict[str, Any]] = {}
        self.checkout_sessions: dict[str, dict[str, Any]] = {}
        self.setup_intents: dict[str, dict[str, Any]] = {}
        self.payment_methods: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # what Stripe would have sent to webhooks
        self.requests: list[RecordedRequest] = []
        self._hidden: dict[str, _Hidden] = {}
        self._return_urls: dict[str, str | None] = {}  # PaymentIntent id -> its return_url
        self._off_session: set[str] = set()  # PaymentIntents confirmed with nobody present
        self._idempotent: dict[tuple[str, str], _Stored] = {}
        self._failures: list[int] = []
        self._lock = threading.RLock()
        self._server: BaseWSGIServer = make_server(
            host, port, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stripe-stub", daemon=True
        )
        self._thread.start()
        self._stopped = False

    # lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> StripeStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # what tests look at -------------------------------------------------------------------

    @property
    def api_requests(self) -> list[RecordedRequest]:
        """Requests to the API (`/v1/…`), i.e. the ones a server-side integration makes."""
        with self._lock:
            return [r for r in self.requests if r.is_api]

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """The next `count` API requests answer `status` without doing anything (nor being
        remembered for their idempotency key), as an overloaded Stripe would."""
        with self._lock:
            self._failures.extend([status] * count)

    # what the customer does on Stripe's pages ---------------------------------------------

    def complete_checkout(
        self,
        session_id: str,
        card_number: str = "4242424242424242",
        *,
        exp_month: int = 12,
        exp_year: int | None = None,
        routing: str = TEST_BANK_ROUTING,
        account: str = TEST_BANK_ACCOUNT,
    ) -> str:
        """Fill in the hosted setup page; returns the success URL the customer is sent to.
        Raises CheckoutRefused for a refused card (the session stays open)."""
        with self._lock:
            session = self._open_session(session_id)
            if "card" in session["payment_method_types"]:
                digits = "".join(ch for ch in card_number if ch.isdigit())
                year = exp_year if exp_year is not None else time.gmtime().tm_year + 3
                method = self._card_method(session["customer"], digits, exp_month, year)
            else:
                method = self._bank_method(session["customer"], routing, account)
            intent = {
                "id": _new_id("seti"),
                "object": "setup_intent",
                "customer": session["customer"],
                "payment_method": method["id"],
                "payment_method_types": [method["type"]],
                "status": "succeeded",
                "usage": "off_session",
                "last_setup_error": None,
                "next_action": None,
                "created": int(time.time()),
                "livemode": False,
                "metadata": {},
            }
            self.setup_intents[intent["id"]] = intent
            session.update(status="complete", setup_intent=intent["id"], url=None)
            self._emit("setup_intent.succeeded", intent)
            self._emit("checkout.session.completed", session)
            url: str = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
            return url

    def complete_3ds(self, payment_intent_id: str, approve: bool = True) -> str:
        """Answer the issuer's authentication page; returns where the customer is sent back
        (the PaymentIntent's return_url with payment_intent=… appended, as Stripe does)."""
        with self._lock:
            intent = self.payment_intents.get(payment_intent_id)
            if intent is None or intent["status"] != "requires_action":
                raise ValueError(f"{payment_intent_id} is not waiting for authentication")
            intent["next_action"] = None
            if approve:
                self._succeed(intent)
            else:
                self._fail(
                    intent,
                    type="invalid_request_error",
                    code="payment_intent_authentication_failure",
                    message="We are unable to authenticate your payment method. Please choose "
                    "a different payment method and try again.",
                )
            return_url = self._return_urls.get(payment_intent_id) or ""
            return _with_query(
                return_url,
                payment_intent=intent["id"],
                payment_intent_client_secret=intent["client_secret"],
                redirect_status="succeeded" if approve else "failed",
            )

    def settle(
        self, payment_intent_id: str, succeed: bool = True, *, code: str = "bank_account_declined"
    ) -> dict[str, Any]:
        """Let a processing bank debit clear (or bounce); returns the PaymentIntent."""
        with self._lock:
            intent = self.payment_intents.get(payment_intent_id)
            if intent is None or intent["status"] != "processing":
                raise ValueError(f"{payment_intent_id} is not processing")
            if succeed:
                self._succeed(intent)
            else:
                self._fail(
                    intent, type="card_error", code=code,
                    message="The bank account could not be debited.",
                )  # fmt: skip
            return copy.deepcopy(intent)

    # webhooks -----------------------------------------------------------------------------

    def event(
        self,
        type: str,
        obj: Mapping[str, Any],
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        event_id: str | None = None,
    ) -> tuple[bytes, str]:
        """A webhook body about `obj` and its Stripe-Signature header value."""
        return self.signed(self._build_event(type, obj, event_id), secret, timestamp)

    def signed(
        self, event: Mapping[str, Any], secret: str | None = None, timestamp: int | None = None
    ) -> tuple[bytes, str]:
        """One of `events` (or any event dict) as (payload, Stripe-Signature)."""
        payload = json.dumps(event, separators=(",", ":")).encode()
        return payload, self.sign(payload, secret, timestamp)

    def sign(self, payload: bytes, secret: str | None = None, timestamp: int | None = None) -> str:
        when = int(time.time()) if timestamp is None else timestamp
        key = (secret if secret is not None else self.webhook_secret).encode()
        mac = hmac.new(key, f"{when}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={when},v1={mac}"

    def _build_event(
        self, type: str, obj: Mapping[str, Any], event_id: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": event_id or _new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type,
            "data": {"object": copy.deepcopy(dict(obj))},
        }

    def _emit(self, type: str, obj: Mapping[str, Any]) -> None:
        self.events.append(self._build_event(type, obj))

    # WSGI ---------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        body = request.get_data(as_text=True)
        try:
            form = parse_form(parse_qsl(body, keep_blank_values=True))
            query = parse_form(parse_qsl(request.query_string.decode(), keep_blank_values=True))
        except StubError as error:
            form, query = {}, {}
            response = self._error_response(error)
        else:
            response = None
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query=query,
                    form=form,
                    body=body,
                    headers=dict(request.headers.items()),
                )
            )
            if response is None:
                if request.path.startswith("/v1/"):
                    response = self._api(request, query, form)
                else:
                    response = self._page(request, form)
        result: Iterable[bytes] = response(environ, start_response)
        return result

    def _api(self, request: Request, query: dict[str, Any], form: dict[str, Any]) -> Response:
        try:
            api_key = self._authorize(request)
        except StubError as error:
            return self._error_response(error)
        if self._failures:
            status = self._failures.pop(0)
            return self._error_response(
                StubError(status, "An unexpected error occurred (injected).", type="api_error")
            )
        params = form if request.method == "POST" else query
        key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        if key:
            stored = self._idempotent.get((api_key, key))
            if stored is not None:
                if (stored.method, stored.path, stored.form) != (
                    request.method,
                    request.path,
                    params,
                ):
                    return self._error_response(
                        StubError(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{key}' if you meant to execute a different request.",
                            type="idempotency_error",
                        )
                    )
                response = self._json(stored.status, stored.body)
                response.headers["Idempotent-Replayed"] = "true"
                return response
        try:
            status, body = 200, self._route(request.method, request.path, params)
            keep = True
        except StubError as error:
            status, body, keep = error.status, {"error": error.body}, error.stored
        if key and keep:
            self._idempotent[(api_key, key)] = _Stored(
                request.method, request.path, params, status, body
            )
        return self._json(status, body)

    def _authorize(self, request: Request) -> str:
        header = request.headers.get("Authorization", "")
        api_key = header.removeprefix("Bearer ").strip()
        valid = (
            api_key == self.secret_key
            if self.secret_key is not None
            else api_key.startswith(("sk_test_", "rk_test_"))
        )
        if not header.startswith("Bearer ") or not valid:
            raise StubError(401, f"Invalid API Key provided: {api_key[:8]}***")
        return api_key

    def _route(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        parts = path.strip("/").split("/")[1:]  # without "v1"
        expand = _string_list(params.get("expand"), "expand") or []
        match method, parts:
            case "POST", ["customers"]:
                obj = self._create_customer(params)
            case "GET", ["customers", ident]:
                obj = self._get(self.customers, ident, "customer")
            case "POST", ["checkout", "sessions"]:
                obj = self._create_session(params)
            case "GET", ["checkout", "sessions", ident]:
                obj = self._get(self.checkout_sessions, ident, "checkout.session")
            case "GET", ["setup_intents", ident]:
                obj = self._get(self.setup_intents, ident, "setup_intent")
            case "GET", ["payment_methods", ident]:
                obj = self._get(self.payment_methods, ident, "payment_method")
            case "POST", ["payment_methods", ident, "detach"]:
                _refuse_unknown(params, set())
                obj = self._detach(ident)
            case "POST", ["payment_intents"]:
                obj = self._create_intent(params)
            case "GET", ["payment_intents", ident]:
                obj = self._get(self.payment_intents, ident, "payment_intent")
            case "POST", ["payment_intents", ident, "cancel"]:
                _refuse_unknown(params, {"cancellation_reason"})
                obj = self._cancel(ident, params.get("cancellation_reason"))
            case _:
                raise StubError(404, f"Unrecognized request URL ({method}: {path}).")
        return self._expand(obj, expand)

    # API objects --------------------------------------------------------------------------

    @staticmethod
    def _get(store: dict[str, dict[str, Any]], ident: str, kind: str) -> dict[str, Any]:
        obj = store.get(ident)
        if obj is None:
            raise StubError(404, f"No such {kind}: '{ident}'", code="resource_missing", param="id")
        return obj

    def _create_customer(self, form: dict[str, Any]) -> dict[str, Any]:
        _refuse_unknown(form, CUSTOMER_PARAMS)
        customer = {
            "id": _new_id("cus", 14),
            "object": "customer",
            "name": form.get("name"),
            "email": form.get("email"),
            "description": form.get("description"),
            "phone": form.get("phone"),
            "metadata": _string_map(form.get("metadata"), "metadata"),
            "created": int(time.time()),
            "livemode": False,
            "invoice_settings": {"default_payment_method": None},
        }
        self.customers[customer["id"]] = customer
        self._emit("customer.created", customer)
        return customer

    def _create_session(self, form: dict[str, Any]) -> dict[str, Any]:
        if "payment_method_types" in form:
            raise StubError(
                400,
                "Received unknown parameter: payment_method_types. Use "
                "allowed_payment_method_types instead.",
                code="parameter_unknown",
                param="payment_method_types",
            )
        _refuse_unknown(form, SESSION_PARAMS)
        mode = _require(form, "mode")
        if mode != "setup":
            raise StubError(400, f"The stub only supports mode=setup, not {mode}.", param="mode")
        customer = _require(form, "customer")
        self._get(self.customers, customer, "customer")
        success_url = _require(form, "success_url")
        currency = form.get("currency")
        allowed = _string_list(form.get(ALLOWED), ALLOWED)
        if allowed is None and currency is None:
            raise StubError(
                400,
                "Missing required param: currency. It is required in setup mode when "
                "allowed_payment_method_types is not set.",
                code="parameter_missing",
                param="currency",
            )
        eligible = [
            kind
            for kind in (allowed or ["card", "us_bank_account"])
            if kind == "card" or (kind == "us_bank_account" and currency == "usd")
        ]
        if not eligible:
            raise StubError(
                400,
                "None of the payment method types in allowed_payment_method_types can be used "
                "with this Checkout Session (us_bank_account needs currency=usd).",
                param="allowed_payment_method_types",
            )
        ident = _new_id("cs_test", 58)
        session = {
            "id": ident,
            "object": "checkout.session",
            "mode": "setup",
            "customer": customer,
            "status": "open",
            "url": f"{self.url}/checkout/{ident}",
            "success_url": success_url,
            "cancel_url": form.get("cancel_url"),
            "setup_intent": None,
            "payment_intent": None,
            "payment_status": "no_payment_required",
            "allowed_payment_method_types": allowed,
            "payment_method_types": eligible,
            "currency": currency,
            "client_reference_id": form.get("client_reference_id"),
            "metadata": _string_map(form.get("metadata"), "metadata"),
            "created": int(time.time()),
            "expires_at": int(time.time()) + 24 * 3600,
            "livemode": False,
        }
        self.checkout_sessions[ident] = session
        return session

    def _detach(self, ident: str) -> dict[str, Any]:
        method = self._get(self.payment_methods, ident, "payment_method")
        if method["customer"] is None:
            raise StubError(
                400,
                "The payment method you provided is not attached to a customer so detachment "
                "is impossible.",
            )
        method["customer"] = None
        self._emit("payment_method.detached", method)
        return method

    def _create_intent(self, form: dict[str, Any]) -> dict[str, Any]:
        # Validation: nothing happens and nothing is remembered for the idempotency key.
        if "payment_method_types" in form:
            raise StubError(
                400,
                "payment_method_types is no longer supported on this API version; use "
                "allowed_payment_method_types, excluded_payment_method_types or dynamic "
                "payment methods.",
                code="payment_method_types_no_longer_supported",
                param="payment_method_types",
            )
        _refuse_unknown(form, INTENT_PARAMS)
        allowed = _string_list(form.get(ALLOWED), ALLOWED)
        if allowed is not None and (
            "automatic_payment_methods" in form or "excluded_payment_method_types" in form
        ):
            raise StubError(
                400,
                "allowed_payment_method_types cannot be combined with automatic_payment_methods "
                "or excluded_payment_method_types.",
                param="allowed_payment_method_types",
            )
        raw_amount = _require(form, "amount")
        if not raw_amount.isdigit():
            raise StubError(400, "Invalid integer: amount", code="parameter_invalid_integer",
                            param="amount")  # fmt: skip
        amount = int(raw_amount)
        if amount < MINIMUM_AMOUNT:
            raise StubError(
                400, "Amount must be at least 50 cents.", code="amount_too_small", param="amount"
            )
        currency = _require(form, "currency")
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise StubError(400, f"Invalid currency: {currency}.", param="currency")
        customer = form.get("customer")
        if customer is not None:
            self._get(self.customers, customer, "customer")
        method_id = form.get("payment_method")
        method = self.payment_methods.get(method_id) if isinstance(method_id, str) else None
        if method_id is not None and method is None:
            raise StubError(
                400, f"No such PaymentMethod: '{method_id}'", code="resource_missing",
                param="payment_method",
            )  # fmt: skip
        confirm = _boolean(form.get("confirm"), "confirm")
        if confirm and method is None:
            raise StubError(
                400, "You cannot confirm this PaymentIntent because it's missing a payment "
                "method.", code="payment_intent_unexpected_state", param="payment_method",
            )  # fmt: skip
        eligible = [
            kind
            for kind in (allowed or ["card", "us_bank_account"])
            if kind == "card" or (kind == "us_bank_account" and currency == "usd")
        ]
        if method is not None:
            if method["customer"] is None:
                raise StubError(
                    400,
                    "The provided PaymentMethod was previously used with a PaymentIntent without "
                    "Customer attachment, shared with a connected account without Customer "
                    "attachment, or was detached from a Customer. It may not be used again.",
                    param="payment_method",
                )
            if method["customer"] != customer:
                raise StubError(
                    400,
                    f"The customer does not have a payment method with the ID {method['id']}. "
                    "The payment method must be attached to the customer.",
                    param="payment_method",
                )
            if method["type"] not in eligible:
                raise StubError(
                    400,
                    f"The PaymentMethod provided ({method['type']}) is not allowed for this "
                    f"PaymentIntent (allowed here: {', '.join(eligible) or 'none'}).",
                    code="payment_intent_incompatible_payment_method",
                    param="payment_method",
                )
        # Execution: from here on the answer is remembered for the idempotency key.
        ident = _new_id("pi")
        intent: dict[str, Any] = {
            "id": ident,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "currency": currency,
            "customer": customer,
            "payment_method": method_id,
            "description": form.get("description"),
            "metadata": _string_map(form.get("metadata"), "metadata"),
            "status": "requires_confirmation" if method else "requires_payment_method",
            "next_action": None,
            "last_payment_error": None,
            "latest_charge": None,
            "client_secret": f"{ident}_secret_{_new_id('s')[2:]}",
            "confirmation_method": "automatic",
            "capture_method": "automatic",
            "allowed_payment_method_types": allowed,
            "payment_method_types": eligible,
            "cancellation_reason": None,
            "canceled_at": None,
            "created": int(time.time()),
            "livemode": False,
        }
        self.payment_intents[ident] = intent
        self._return_urls[ident] = form.get("return_url")
        if "off_session" in form and _boolean(form.get("off_session"), "off_session"):
            self._off_session.add(ident)
        self._emit("payment_intent.created", intent)
        if confirm and method is not None:
            self._confirm(intent, method)
        return intent

    def _confirm(self, intent: dict[str, Any], method: dict[str, Any]) -> None:
        hidden = self._hidden[method["id"]]
        if hidden.behaviour == "succeeds":
            self._succeed(intent)
        elif hidden.behaviour == "settles_later":
            intent["status"] = "processing"
            intent["latest_charge"] = _new_id("py")
            self._emit("payment_intent.processing", intent)
        elif hidden.behaviour == "requires_action" and intent["id"] in self._off_session:
            # Nobody can authenticate: Stripe declines instead of asking.
            self._fail(
                intent, type="card_error", code="authentication_required",
                decline_code="authentication_required",
                message="Your card was declined. This transaction requires authentication.",
            )  # fmt: skip
            error = dict(intent["last_payment_error"])
            error.pop("type")
            message = error.pop("message")
            raise StubError(
                402, message, type="card_error", stored=True,
                payment_intent=copy.deepcopy(intent), **error,
            )  # fmt: skip
        elif hidden.behaviour == "requires_action":
            intent["status"] = "requires_action"
            return_url = self._return_urls.get(intent["id"])
            intent["next_action"] = (
                {
                    "type": "redirect_to_url",
                    "redirect_to_url": {
                        "url": f"{self.url}/3ds/{intent['id']}",
                        "return_url": return_url,
                    },
                }
                if return_url
                else {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure"}}
            )
            self._emit("payment_intent.requires_action", intent)
        else:  # charge_fails
            card = hidden.card
            assert card is not None
            charge = _new_id("ch")
            self._fail(
                intent, type="card_error", code=card.code or "card_declined",
                decline_code=card.decline_code, message="Your card was declined.", charge=charge,
            )  # fmt: skip
            error = dict(intent["last_payment_error"])
            error.pop("type")
            message = error.pop("message")
            raise StubError(
                402,
                message,
                type="card_error",
                stored=True,
                payment_intent=copy.deepcopy(intent),
                **error,
            )

    def _cancel(self, ident: str, reason: Any) -> dict[str, Any]:
        intent = self._get(self.payment_intents, ident, "payment_intent")
        cancellable = (
            "requires_payment_method",
            "requires_capture",
            "requires_confirmation",
            "requires_action",
        )
        if intent["status"] not in cancellable:
            raise StubError(
                400,
                "You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}.",
                code="payment_intent_unexpected_state",
            )
        intent.update(
            status="canceled",
            next_action=None,
            canceled_at=int(time.time()),
            cancellation_reason=reason if isinstance(reason, str) else "abandoned",
        )
        self._emit("payment_intent.canceled", intent)
        return intent

    def _succeed(self, intent: dict[str, Any]) -> None:
        intent.update(
            status="succeeded",
            amount_received=intent["amount"],
            latest_charge=intent["latest_charge"] or _new_id("ch"),
            last_payment_error=None,
        )
        self._emit("payment_intent.succeeded", intent)

    def _fail(
        self,
        intent: dict[str, Any],
        *,
        type: str,
        code: str,
        message: str,
        decline_code: str | None = None,
        charge: str | None = None,
    ) -> None:
        error: dict[str, Any] = {"type": type, "code": code, "message": message}
        if decline_code:
            error["decline_code"] = decline_code
        if charge:
            error["charge"] = charge
            intent["latest_charge"] = charge
        if intent["payment_method"]:
            error["payment_method"] = copy.deepcopy(self.payment_methods[intent["payment_method"]])
        intent.update(status="requires_payment_method", last_payment_error=error)
        self._emit("payment_intent.payment_failed", intent)

    def _expand(self, obj: dict[str, Any], paths: list[str]) -> dict[str, Any]:
        result = copy.deepcopy(obj)
        for path in paths:
            self._expand_path(result, path.split("."), path)
        return result

    def _expand_path(self, obj: dict[str, Any], parts: list[str], path: str) -> None:
        name, rest = parts[0], parts[1:]
        if name not in EXPANDABLE or name not in obj:
            raise StubError(400, f"This property cannot be expanded ({path}).", param="expand")
        value = obj[name]
        if isinstance(value, str):
            store: dict[str, dict[str, Any]] = getattr(self, EXPANDABLE[name])
            if value in store:
                value = obj[name] = copy.deepcopy(store[value])
        if rest and isinstance(value, dict):
            self._expand_path(value, rest, path)

    # payment methods made by the hosted page ----------------------------------------------

    def _card_method(
        self, customer: str, digits: str, exp_month: int, exp_year: int
    ) -> dict[str, Any]:
        card = CARDS.get(digits)
        if card is None:
            raise CheckoutRefused("incorrect_number")
        now = time.gmtime()
        if not 1 <= exp_month <= 12 or (exp_year, exp_month) < (now.tm_year, now.tm_mon):
            raise CheckoutRefused("invalid_expiry_year")
        if card.behaviour == "refused":
            raise CheckoutRefused(card.code or "card_declined", card.decline_code)
        method = self._method(customer, "card")
        method["card"] = {
            "brand": card.brand,
            "last4": digits[-4:],
            "exp_month": exp_month,
            "exp_year": exp_year,
            "funding": "credit",
            "country": "US",
            "fingerprint": hashlib.sha256(digits.encode()).hexdigest()[:16],
            "checks": {"cvc_check": "pass"},
        }
        self._hidden[method["id"]] = _Hidden(card.behaviour, card)
        return method

    def _bank_method(self, customer: str, routing: str, account: str) -> dict[str, Any]:
        if (routing.strip(), account.strip()) != (TEST_BANK_ROUTING, TEST_BANK_ACCOUNT):
            raise CheckoutRefused("invalid_bank_account")
        method = self._method(customer, "us_bank_account")
        method["us_bank_account"] = {
            "account_holder_type": "individual",
            "account_type": "checking",
            "bank_name": "STRIPE TEST BANK",
            "last4": account.strip()[-4:],
            "routing_number": routing.strip(),
            "fingerprint": hashlib.sha256(account.encode()).hexdigest()[:16],
        }
        self._hidden[method["id"]] = _Hidden("settles_later")
        return method

    def _method(self, customer: str, kind: str) -> dict[str, Any]:
        method: dict[str, Any] = {
            "id": _new_id("pm"),
            "object": "payment_method",
            "type": kind,
            "customer": customer,
            "billing_details": {"address": None, "email": None, "name": None, "phone": None},
            "created": int(time.time()),
            "livemode": False,
            "metadata": {},
        }
        self.payment_methods[method["id"]] = method
        self._emit("payment_method.attached", method)
        return method

    def _open_session(self, session_id: str) -> dict[str, Any]:
        session = self.checkout_sessions.get(session_id)
        if session is None:
            raise KeyError(session_id)
        if session["status"] != "open":
            raise ValueError(f"checkout session {session_id} is {session['status']}")
        return session

    # hosted pages -------------------------------------------------------------------------

    def _page(self, request: Request, form: dict[str, Any]) -> Response:
        match request.method, request.path.strip("/").split("/"):
            case "GET", ["checkout", ident]:
                return self._checkout_page(ident)
            case "POST", ["checkout", ident]:
                return self._checkout_submit(ident, form)
            case "GET", ["3ds", ident]:
                return self._3ds_page(ident)
            case "POST", ["3ds", ident]:
                return self._3ds_submit(ident, form)
        return self._html(404, "<h1>Not found</h1>")

    def _checkout_page(self, ident: str, error: str | None = None, status: int = 200) -> Response:
        session = self.checkout_sessions.get(ident)
        if session is None:
            return self._html(404, "<h1>Not found</h1>")
        if session["status"] != "open":
            return self._html(410, "<h1>This page is no longer available</h1>")
        if "card" in session["payment_method_types"]:
            fields = (
                '<label>Card number <input name="card_number" autocomplete="cc-number"></label>'
                '<label>Expiry month <input name="exp_month" value="12"></label>'
                f'<label>Expiry year <input name="exp_year" value="{time.gmtime().tm_year + 3}">'
                "</label>"
                '<label>CVC <input name="cvc" autocomplete="cc-csc"></label>'
            )
        else:
            fields = (
                '<label>Routing number <input name="routing"></label>'
                '<label>Account number <input name="account"></label>'
            )
        alert = f'<p role="alert" class="error">{html.escape(error)}</p>' if error else ""
        cancel = (
            f'<a href="{html.escape(session["cancel_url"])}">Cancel</a>'
            if session["cancel_url"]
            else ""
        )
        return self._html(
            status,
            f"<h1>Stripe test checkout</h1>{alert}"
            f'<form method="post" action="/checkout/{html.escape(ident)}">{fields}'
            f'<button type="submit">Save</button></form>{cancel}',
        )

    def _checkout_submit(self, ident: str, form: dict[str, Any]) -> Response:
        if ident not in self.checkout_sessions:
            return self._html(404, "<h1>Not found</h1>")
        try:
            exp_month = int(form.get("exp_month") or 12)
            exp_year = int(form.get("exp_year") or time.gmtime().tm_year + 3)
        except ValueError:
            return self._checkout_page(ident, DECLINE_MESSAGES["invalid_expiry_year"], 402)
        try:
            target = self.complete_checkout(
                ident,
                str(form.get("card_number", "")),
                exp_month=exp_month,
                exp_year=exp_year,
                routing=str(form.get("routing", "")),
                account=str(form.get("account", "")),
            )
        except CheckoutRefused as refused:
            return self._checkout_page(ident, refused.message, 402)
        except ValueError:
            return self._html(410, "<h1>This page is no longer available</h1>")
        return self._redirect(target)

    def _3ds_page(self, ident: str) -> Response:
        intent = self.payment_intents.get(ident)
        if intent is None or intent["status"] != "requires_action":
            return self._html(404, "<h1>Nothing to authenticate</h1>")
        action = f"/3ds/{html.escape(ident)}"
        return self._html(
            200,
            "<h1>Stripe test authentication</h1>"
            f"<p>{intent['amount']} {html.escape(intent['currency'].upper())}</p>"
            f'<form method="post" action="{action}">'
            '<button name="outcome" value="approve">Complete authentication</button>'
            '<button name="outcome" value="fail">Fail authentication</button></form>',
        )

    def _3ds_submit(self, ident: str, form: dict[str, Any]) -> Response:
        outcome = form.get("outcome")
        if outcome not in ("approve", "fail"):
            return self._html(400, "<h1>Choose an outcome</h1>")
        try:
            target = self.complete_3ds(ident, approve=outcome == "approve")
        except ValueError:
            return self._html(404, "<h1>Nothing to authenticate</h1>")
        return self._redirect(target)

    # responses ----------------------------------------------------------------------------

    @staticmethod
    def _json(status: int, body: Mapping[str, Any]) -> Response:
        response = Response(json.dumps(body, indent=2), status=status, mimetype="application/json")
        response.headers["Request-Id"] = _new_id("req", 14)
        response.headers["Stripe-Version"] = API_VERSION
        return response

    def _error_response(self, error: StubError) -> Response:
        return self._json(error.status, {"error": error.body})

    @staticmethod
    def _html(status: int, content: str) -> Response:
        return Response(
            f"<!doctype html><html lang=en><title>Stripe stub</title><body>{content}</body></html>",
            status=status,
            mimetype="text/html",
        )

    @staticmethod
    def _redirect(location: str) -> Response:
        return Response("", status=303, headers={"Location": location})


def card_numbers_in(requests: Iterable[RecordedRequest]) -> Iterator[str]:
    """Test card numbers that appear anywhere in these requests (there should be none from the
    portal: card data only ever goes to Stripe's own pages)."""
    for request in requests:
        text = request.body + request.path + json.dumps(request.query)
        for number in CARDS:
            if number in text:
                yield number
