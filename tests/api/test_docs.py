"""GET /api/docs: the published spec as a page in the portal's layout."""

from __future__ import annotations

from flask.testing import FlaskClient
from markupsafe import escape

from tests.conftest import Auth


def test_the_docs_page_lists_every_operation_of_the_spec(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'href="/api/openapi.json"' in page
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert f"{method.upper()} {path}" in page, (method, path)
            assert str(escape(operation.get("summary", ""))) in page
    assert "Idempotency-Key" in page  # the payment's header parameter
    assert "PaymentIn" in page and "amount_minor" in page  # the request body's fields
    assert "ProblemDetail" in page and "bearer" in page  # error answers, security
    assert "<script>" not in page and "cdn" not in page.lower()


def test_the_docs_page_speaks_the_signed_in_users_layout(
    client: FlaskClient, signed_in: Auth
) -> None:
    page = client.get("/api/docs").get_data(as_text=True)
    assert 'class="site-nav"' in page and "<h1>API reference</h1>" in page
