"""A company's account manager from the receivables system (migration 0027): the operator API's
company upsert and the import take a name, an e-mail address and a phone number (kept in E.164,
read as the profile's phone is); a bad address or number is refused with its record named, and
nothing is saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.models import Company
from portal.services import api_tokens, receivables
from tests.api.conftest import SpecCheck

MANAGER = {
    "account_manager_name": "Rosa Díaz",
    "account_manager_email": " Rosa.Diaz@Supplier.TEST ",
    "account_manager_phone": "(415) 555-0199",  # national: the company's locale says US
}


@pytest.fixture
def operator(app: Flask, db: Session) -> dict[str, str]:
    _key, raw = api_tokens.create_key(db, name="receivables", now=clock.now())
    db.flush()
    return {"Authorization": f"Bearer {raw}"}


def _company(db: Session, code: str) -> Company | None:
    with tenancy.system(db):
        return db.scalars(
            select(Company).where(Company.code == code).execution_options(populate_existing=True)
        ).one_or_none()


def test_the_upsert_keeps_the_manager_and_clears_it(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    record = {"code": "MGR", "name": "Managed Co", "currency": "USD", **MANAGER}
    response = client.put("/api/ar/companies", json={"items": [record]}, headers=operator)
    assert response.status_code == 200, response.get_data(as_text=True)
    spec_check(response, "/api/ar/companies", "put")
    company = _company(db, "MGR")
    assert company is not None
    assert (
        company.account_manager_name,
        company.account_manager_email,
        company.account_manager_phone,
    ) == ("Rosa Díaz", "rosa.diaz@supplier.test", "+14155550199")
    again = client.put("/api/ar/companies", json={"items": [record]}, headers=operator)
    assert again.get_json()["unchanged"] == 1
    # Left out (or empty): no manager any more, the footer's plain sentence.
    bare = {"code": "MGR", "name": "Managed Co", "currency": "USD", "account_manager_phone": ""}
    cleared = client.put("/api/ar/companies", json={"items": [bare]}, headers=operator)
    assert cleared.get_json()["updated"] == 1
    company = _company(db, "MGR")
    assert company is not None and company.account_manager_name is None
    assert company.account_manager_phone is None


def test_a_german_company_reads_a_national_number_as_german(
    client: FlaskClient, db: Session, operator: dict[str, str]
) -> None:
    record = {
        "code": "MGR-DE",
        "name": "Betreut GmbH",
        "currency": "EUR",
        "locale": "de_DE",
        "account_manager_phone": "030 1234567",
    }
    response = client.put("/api/ar/companies", json={"items": [record]}, headers=operator)
    assert response.status_code == 200, response.get_data(as_text=True)
    company = _company(db, "MGR-DE")
    assert company is not None and company.account_manager_phone == "+49301234567"


def test_a_bad_address_or_number_is_refused_naming_the_record(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    items = [
        {"code": "MGR-1", "name": "One", "currency": "USD", **MANAGER},
        {"code": "MGR-2", "name": "Two", "currency": "USD", "account_manager_email": "nobody"},
        {"code": "MGR-3", "name": "Three", "currency": "USD", "account_manager_phone": "12"},
        {"code": "MGR-4", "name": "Four", "currency": "USD", "account_manager_name": "x" * 201},
        {  # a mailto: link would read it as an address plus a header
            "code": "MGR-5",
            "name": "Five",
            "currency": "USD",
            "account_manager_email": "m@supplier.test?cc=all@victim.test",
        },
    ]
    response = client.put("/api/ar/companies", json={"items": items}, headers=operator)
    assert response.status_code == 400
    errors = spec_check(response, "/api/ar/companies", "put")["errors"]
    assert [e["field"] for e in errors] == [
        "items.1.account_manager_email",
        "items.2.account_manager_phone",
        "items.3.account_manager_name",
        "items.4.account_manager_email",
    ]
    assert "not an e-mail address" in errors[0]["message"]
    assert "not an e-mail address" in errors[3]["message"]
    assert "not a valid phone number" in errors[1]["message"]
    assert _company(db, "MGR-1") is None  # all or nothing


def test_the_import_takes_the_manager_and_names_a_bad_row(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    good = tmp_path / "companies.csv"
    good.write_text(
        "code,name,currency,account_manager_name,account_manager_email,account_manager_phone\n"
        "IMP-M,Imported,USD,Sam Lee,sam@supplier.test,+1 415 555 0142\n",
        encoding="utf-8",
    )
    result = app.test_cli_runner().invoke(args=["import", str(good), "--kind", "companies"])
    assert result.exit_code == 0, result.output
    company = _company(db, "IMP-M")
    assert company is not None
    assert (company.account_manager_name, company.account_manager_phone) == (
        "Sam Lee",
        "+14155550142",
    )
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "companies": [
                    {"code": "IMP-N", "name": "N", "currency": "USD"},
                    {
                        "code": "IMP-O",
                        "name": "O",
                        "currency": "USD",
                        "account_manager_phone": "call me",
                    },
                ]
            }
        ),
        encoding="utf-8",
    )
    result = app.test_cli_runner().invoke(args=["import", str(bad)])
    assert result.exit_code == 1
    assert "/companies/1 account_manager_phone: not a valid phone number" in result.stderr
    assert _company(db, "IMP-N") is None


def test_the_openapi_document_names_the_fields(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    text = json.dumps(document)
    for name in ("account_manager_name", "account_manager_email", "account_manager_phone"):
        assert name in text


_TEXT = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"\+?[0-9 ()\-.]{0,40}", fullmatch=True),
    st.from_regex(r"[a-z.+\-]{0,20}@[a-z.\-]{0,20}", fullmatch=True),
    st.none(),
    st.integers(),
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    email=_TEXT,
    phone=_TEXT,
    locale=st.sampled_from(["en_US", "de_DE", "ar", "xx_YY", 7]),
)
def test_any_address_or_number_is_kept_or_refused_never_a_traceback(
    db: Session, email: Any, phone: Any, locale: Any
) -> None:
    record = {
        "code": "HYP",
        "name": "Hypothesis Co",
        "currency": "USD",
        "locale": locale,
        "account_manager_name": "Manager",
        "account_manager_email": email,
        "account_manager_phone": phone,
    }
    batch = receivables.parse_json(json.dumps({"companies": [record]}))
    with db.begin_nested() as savepoint:
        report = receivables.upsert(db, batch, now=clock.now())
        savepoint.rollback()
    assert all(isinstance(e, receivables.RowError) for e in report.errors)
    assert all(e.where == "/companies/0" for e in report.errors)
    if report.ok:
        (_where, kept), *_ = batch.records["companies"]
        assert isinstance(kept, receivables.CompanyRecord)
        stored = kept.account_manager_phone
        assert stored is None or (stored.startswith("+") and len(stored) <= 16)
