"""What the Stripe tests share besides fixtures."""

from __future__ import annotations

from flask.testing import FlaskClient

SECRET_KEY = "sk_test_portal"
WEBHOOK_SECRET = "whsec_portal_tests"


def deliver(client: FlaskClient, body: bytes, signature: str) -> tuple[int, str]:
    """POST a webhook as Stripe does; returns (status, the portal's outcome)."""
    answer = client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )
    return answer.status_code, (answer.get_json() or {}).get("outcome", "")
