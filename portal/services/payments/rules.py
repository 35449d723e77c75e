"""The payment domain's limits and the names of what can be wrong with a payment."""

from __future__ import annotations

import enum
import re
from datetime import timedelta

from portal.models import (
    PaymentStatus,
)

# Payments that still hold part of an invoice's balance.
IN_FLIGHT = (PaymentStatus.PENDING, PaymentStatus.SCHEDULED, PaymentStatus.PROCESSING)
FINAL = (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELED)
MAX_INVOICES = 50
# How long a payment may wait for the customer's 3-D Secure before it is given up.
ACTION_TIMEOUT = timedelta(minutes=30)
# Gateways remember an idempotency key for 24 hours; asking again later could charge twice.
KEY_LIFETIME = timedelta(hours=23)
# For this long after KEY_LIFETIME a payment without a reference is reported, then left alone.
REVIEW_WINDOW = timedelta(minutes=10)
MAX_SCHEDULE_DAYS = 365
# Draws of fresh references before giving up (a clash is a one in billions event).
REFERENCE_ATTEMPTS = 3
KEY_FORMAT = re.compile(r"^[A-Za-z0-9_-]{22,40}$")  # new_idempotency_key() makes 32


class Problem(enum.StrEnum):
    NOTHING_SELECTED = "nothing_selected"
    TOO_MANY = "too_many"
    NOT_FOUND = "not_found"
    ALREADY_PAID = "already_paid"  # 409
    IN_FLIGHT = "in_flight"  # 409
    NOT_PAYABLE = "not_payable"
    MIXED_CURRENCIES = "mixed_currencies"


class FieldError(enum.StrEnum):
    AMOUNT_INVALID = "amount_invalid"
    AMOUNT_DECIMALS = "amount_decimals"
    AMOUNT_NOT_POSITIVE = "amount_not_positive"
    AMOUNT_TOO_LARGE = "amount_too_large"  # above money.MAX_MINOR
    AMOUNT_ABOVE_BALANCE = "amount_above_balance"
    PARTIAL_NOT_ALLOWED = "partial_not_allowed"
    TOTAL_ABOVE_BALANCE = "total_above_balance"
    NOTHING_TO_PAY = "nothing_to_pay"
    METHOD_REQUIRED = "method_required"
    METHOD_EXPIRED = "method_expired"
    DATE_INVALID = "date_invalid"
    DATE_IN_PAST = "date_in_past"
    DATE_TOO_FAR = "date_too_far"
    METHOD_CANNOT_SCHEDULE = "method_cannot_schedule"
