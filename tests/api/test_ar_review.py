"""What a review of the JSON API found by trying to break it: each a case that answered a 500
(or let a wrong change through) before its fix."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import api, clock, tenancy
from portal.models import Company, Document, Invoice, InvoiceStatus, PaymentStatus
from portal.services import api_tokens
from tests.api.conftest import PROBLEM, SpecCheck
from tests.factories import make_payment

TODAY = clock.today().isoformat()


@pytest.fixture
def operator(app: Flask, db: Session) -> dict[str, str]:
    _key, raw = api_tokens.create_key(db, name="receivables", now=clock.now())
    db.flush()
    return {"Authorization": f"Bearer {raw}"}


def invoice(number: str, **extra: Any) -> dict[str, Any]:
    return {
        "company": "ACME",
        "billing_account": "AW-1001",
        "number": number,
        "issue_date": TODAY,
        "due_date": TODAY,
        "lines": [{"description": "Service", "quantity": 1, "unit_price": 100}],
        **extra,
    }


# A NUL in a JSON body: PostgreSQL refuses it in any text column (it answered a 500 there).
NUL_BODIES = [
    ("companies", {"items": [{"code": "N\x00", "name": "x", "currency": "EUR"}]}),
    ("companies", {"items": [{"code": "NN", "name": "a\x00b", "currency": "EUR"}]}),
    ("invoices", {"items": [invoice("X\x00")]}),
    ("invoices", {"items": [invoice("X1", notes="a\x00b")]}),
    ("users", {"items": [{"company": "ACME", "email": "a\x00@b.test", "role": "customer.admin"}]}),
    (
        "credit-notes",
        {
            "items": [
                {
                    "company": "ACME",
                    "number": "C\x00",
                    "invoice": "INV-1001",
                    "amount": 1,
                    "issue_date": TODAY,
                }
            ]
        },
    ),
]


@pytest.mark.parametrize(("path", "body"), NUL_BODIES)
def test_a_nul_in_an_upserts_body_is_a_400(
    client: FlaskClient, operator: dict[str, str], spec_check: SpecCheck, path: str, body: Any
) -> None:
    response = client.put(f"/api/ar/{path}", json=body, headers=operator)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    spec_check(response, f"/api/ar/{path}", "put")


@pytest.mark.parametrize(
    "body",
    [
        {"company_id": "a\x00"},
        {"company_id": "x", "reason": "a\x00"},
        {"company_id\x00": "x"},
    ],
)
def test_a_nul_in_an_actions_body_is_a_400(
    client: FlaskClient, operator: dict[str, str], spec_check: SpecCheck, body: Any
) -> None:
    for path, template, extra in (
        ("/api/ar/invoices/INV-1001/void", "/api/ar/invoices/{reference}/void", {}),
        (
            "/api/ar/invoices/INV-1001/credit",
            "/api/ar/invoices/{reference}/credit",
            {"amount_minor": 1},
        ),
        (
            "/api/ar/disputes/dsp_x/answer",
            "/api/ar/disputes/{public_id}/answer",
            {"outcome": "rejected"},
        ),
    ):
        response = client.post(path, json={**extra, **body}, headers=operator)
        assert response.status_code == 400, (path, response.get_data(as_text=True))
        spec_check(response, template, "post")


def test_an_escaped_backslash_before_u0000_is_no_nul(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    """`"\\\\u0000"` is the text backslash-u0000, not a NUL: kept as written."""
    raw = b'{"items":[{"code":"BS","name":"a\\\\u0000b","currency":"EUR"}]}'
    response = client.put(
        "/api/ar/companies",
        data=raw,
        headers={**operator, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("cursor", [[2**70, 1], [1, 2**70], [2**63, 0], [0, -(2**63) - 1]])
def test_a_feed_cursor_beyond_bigint_is_a_400(
    client: FlaskClient, operator: dict[str, str], spec_check: SpecCheck, cursor: list[int]
) -> None:
    response = client.get(f"/api/ar/events?after={api.encode_cursor(cursor)}", headers=operator)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = spec_check(response, "/api/ar/events")
    assert body["errors"] == [{"field": "after", "message": "invalid"}]


def _stored_files(app: Flask) -> set[Path]:
    root: Path = app.extensions["portal.runtime"].store.root
    return {p for p in root.rglob("*") if p.is_file()}


def test_a_dry_run_import_leaves_no_file_in_the_store(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    """A dry run applies the batch and rolls it back: the documents it stored go too (they were
    files no row pointed at, for good)."""
    (tmp_path / "contract.pdf").write_bytes(b"%PDF-1.4 dry run")
    batch = {
        "documents": [
            {"company": "ACME", "title": "Dry contract", "kind": "contract", "file": "contract.pdf"}
        ]
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(batch))
    before = _stored_files(app)
    result = app.test_cli_runner().invoke(args=["import", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "documents: 1 created" in result.output
    assert _stored_files(app) == before
    with tenancy.system(db):
        assert db.scalars(select(Document).where(Document.title == "Dry contract")).all() == []


def test_an_invoice_a_scheduled_payment_holds_keeps_its_lines(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    """A scheduled payment leaves its invoice open but holds part of it: lowering the lines
    under what it holds let it run later against an invoice it overpays (it was canceled as
    "already paid"). Changed lines are refused as for one with payments; dates may change."""
    created = client.put("/api/ar/invoices", json={"items": [invoice("SCH-1")]}, headers=operator)
    assert created.status_code == 200, created.get_data(as_text=True)
    with tenancy.system(db):
        stored = db.scalars(select(Invoice).where(Invoice.number == "SCH-1")).one()
        make_payment(
            db,
            stored,
            status=PaymentStatus.SCHEDULED,
            scheduled_for=clock.today() + timedelta(days=3),
        )
        stored.status = InvoiceStatus.OPEN  # as the portal leaves it (the factory says processing)
        db.flush()
    lowered = invoice("SCH-1")
    lowered["lines"][0]["unit_price"] = 1
    response = client.put("/api/ar/invoices", json={"items": [lowered]}, headers=operator)
    assert response.status_code == 422, response.get_data(as_text=True)
    body = spec_check(response, "/api/ar/invoices", "put")
    assert [e["field"] for e in body["errors"]] == ["items.0.lines"]
    later = invoice("SCH-1", notes="moved")
    assert (
        client.put("/api/ar/invoices", json={"items": [later]}, headers=operator).status_code == 200
    )


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/api/ar/invoices/INV-1001/void", "/api/ar/invoices/{reference}/void"),
        ("/api/ar/invoices/INV-1001/credit", "/api/ar/invoices/{reference}/credit"),
        ("/api/ar/disputes/dsp_x/answer", "/api/ar/disputes/{public_id}/answer"),
    ],
)
def test_an_actions_body_over_the_limit_is_a_documented_413(
    client: FlaskClient, operator: dict[str, str], spec_check: SpecCheck, path: str, template: str
) -> None:
    big = b'{"company_id":"' + b"a" * (11 * 1024 * 1024) + b'"}'
    response = client.post(path, data=big, headers={**operator, "Content-Type": "application/json"})
    assert response.status_code == 413
    spec_check(response, template, "post")


def test_a_get_with_a_large_json_body_reads_no_body(
    client: FlaskClient, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    """Nothing reads a GET's body: the NUL check does not either (it answered a 413)."""
    big = b'"' + b"a" * (11 * 1024 * 1024) + b'"'
    response = client.get(
        "/api/ar/events", data=big, headers={**operator, "Content-Type": "application/json"}
    )
    assert response.status_code == 200
    spec_check(response, "/api/ar/events")


def test_a_reference_that_is_one_invoices_id_and_anothers_number_means_the_id(
    client: FlaskClient, db: Session, operator: dict[str, str]
) -> None:
    """`/invoices/<reference>/void` takes an id or a number: when one invoice's public id is
    another's number, the id is meant, never whichever row the database returned first."""
    with tenancy.system(db):
        older = db.scalars(select(Invoice).where(Invoice.number == "INV-1001")).one()
        company_id = db.get(Company, older.company_id).public_id  # type: ignore[union-attr]
    created = client.put("/api/ar/invoices", json={"items": [invoice("TWIN-1")]}, headers=operator)
    assert created.status_code == 200, created.get_data(as_text=True)
    with tenancy.system(db):
        twin = db.scalars(select(Invoice).where(Invoice.number == "TWIN-1")).one()
        twin.public_id = "INV-1001"  # the older invoice's number
        db.flush()
    response = client.post(
        "/api/ar/invoices/INV-1001/void", json={"company_id": company_id}, headers=operator
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["number"] == "TWIN-1"
    with tenancy.system(db):
        db.refresh(older)
        assert older.status is not InvoiceStatus.VOID


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_nul_in_an_import_file_is_a_bad_row_never_a_traceback(
    app: Flask, db: Session, tmp_path: Path, fmt: str
) -> None:
    if fmt == "json":
        path = tmp_path / "n.json"
        record = {"code": "NULCO", "name": "Nul\x00Co", "currency": "EUR"}
        path.write_text(json.dumps({"companies": [record]}))
        args = ["import", str(path)]
    else:
        path = tmp_path / "n.csv"
        path.write_bytes(b"code,name,currency\nNULCO,Nul\x00Co,EUR\n")
        args = ["import", str(path), "--kind", "companies"]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 1, (result.output, result.exception)
    assert "nothing was imported" in result.stderr
    assert "NUL" in result.stderr
    with tenancy.system(db):
        assert db.scalars(select(Company).where(Company.code == "NULCO")).all() == []
