"""`flask --app wsgi import FILE`: the receivables system's companies, accounts, users, invoices,
credit notes and documents, all or nothing, every bad row reported (portal/services/receivables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import Result
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.models import Company, CreditNote, Document, Invoice, PortalUser, UserStatus, Work
from portal.services import receivables
from tests.conftest import Auth, QueryCounter, user_by_email

TODAY = clock.today().isoformat()


def invoice_record(number: str, *lines: tuple[str, str, int], **extra: Any) -> dict[str, Any]:
    return {
        "company": "ACME",
        "billing_account": "AW-1001",
        "number": number,
        "reference": "PO-1, urgent",
        "issue_date": TODAY,
        "due_date": TODAY,
        "lines": [
            {"description": d, "quantity": q, "unit_price": p, "tax_rate_bp": 1000}
            for d, q, p in lines or (("Widgets", "2", 5000),)
        ],
        **extra,
    }


GOOD: dict[str, Any] = {
    "companies": [{"code": "NEWCO", "name": "Newco Ltd", "currency": "EUR", "locale": "de_DE"}],
    "billing_accounts": [
        {"company": "NEWCO", "number": "NC-1", "name": "Newco Main", "bill_to": "Newco, Berlin"}
    ],
    "users": [
        {"company": "NEWCO", "email": "Boss@Newco.test", "name": "Bo", "role": "customer.admin"},
        {"company": "NEWCO", "email": "ap@newco.test", "role": "customer", "accounts": ["NC-1"]},
    ],
    "invoices": [
        invoice_record("IMP-1", ("Widgets", "2", 5000), ("Setup, one-off", "1.5", 1999)),
        invoice_record("IMP-2"),
        {**invoice_record("NC-INV-1"), "company": "NEWCO", "billing_account": "NC-1"},
    ],
    "credit_notes": [
        {
            "company": "ACME",
            "number": "IMP-CN-1",
            "invoice": "IMP-2",
            "amount": 1000,
            "issue_date": TODAY,
            "reason": "goodwill",
        }
    ],
}


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["import", *args])


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def invoices_named(db: Session, *numbers: str) -> list[Invoice]:
    with tenancy.system(db):
        return list(db.scalars(select(Invoice).where(Invoice.number.in_(numbers))))


def test_three_bad_rows_among_good_ones_write_nothing_and_are_each_reported(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    bad = json.loads(json.dumps(GOOD))
    bad["invoices"].append(invoice_record("IMP-3", ("Widgets", "-1", 100)))  # shape
    bad["invoices"].append({**invoice_record("IMP-4"), "billing_account": "NOPE"})  # reference
    bad["credit_notes"].append(  # more than the invoice owes
        {
            "company": "ACME",
            "number": "IMP-CN-2",
            "invoice": "IMP-1",
            "amount": 10**9,
            "issue_date": TODAY,
        }
    )
    result = run(app, str(write(tmp_path, "batch.json", json.dumps(bad))))
    assert result.exit_code == 1, result.output
    report = result.stderr
    assert "/invoices/3 lines/0/quantity:" in report
    assert "/invoices/4 billing_account: no billing account 'NOPE'" in report
    assert "/credit_notes/1 amount: more than the invoice still owes" in report
    assert "3 bad row(s); nothing was imported" in report
    assert "Traceback" not in report
    assert invoices_named(db, "IMP-1", "IMP-2", "NC-INV-1") == []
    with tenancy.system(db):
        assert db.scalar(select(Company).where(Company.code == "NEWCO")) is None
        assert db.scalar(select(PortalUser).where(PortalUser.email == "boss@newco.test")) is None


def test_a_good_file_shows_in_the_portal_at_once_and_twice_changes_nothing(
    app: Flask, db: Session, auth: Auth, tmp_path: Path
) -> None:
    auth.sign_in("admin@acme.test")
    before = auth.client.get("/api/portal/dashboard").get_json()["balance"]["amount_minor"]
    path = write(tmp_path, "batch.json", json.dumps(GOOD))

    first = run(app, str(path))
    assert first.exit_code == 0, first.output + first.stderr
    assert "invoices: 3 created" in first.output
    assert "2 new user(s) invited, invitations mailed" in first.output

    page = auth.client.get("/portal/invoices?q=IMP-").get_data(as_text=True)
    assert "IMP-1" in page and "IMP-2" in page and "NC-INV-1" not in page
    imp1, imp2 = sorted(invoices_named(db, "IMP-1", "IMP-2"), key=lambda i: i.number)
    # 2 x 50.00 + 1.5 x 19.99 (29.985 -> 29.99), each with 10 % tax rounded half up per line
    assert (imp1.subtotal, imp1.tax_total, imp1.total) == (12999, 1300, 14299)
    assert (imp2.total, imp2.amount_paid, imp2.amount_credited) == (11000, 1000, 1000)
    after = auth.client.get("/api/portal/dashboard").get_json()["balance"]["amount_minor"]
    assert after - before == 14299 + 11000 - 1000
    versions = {i.number: i.version for i in invoices_named(db, "IMP-1", "IMP-2", "NC-INV-1")}

    second = run(app, str(path))
    assert second.exit_code == 0, second.output + second.stderr
    assert "invoices: 0 created, 0 updated, 3 unchanged" in second.output
    assert "credit_notes: 0 created, 0 updated, 1 unchanged" in second.output
    assert "invited" not in second.output
    db.expire_all()
    assert {i.number: i.version for i in invoices_named(db, *versions)} == versions
    with tenancy.system(db):
        assert (
            db.scalar(
                select(func.count()).select_from(CreditNote).where(CreditNote.number == "IMP-CN-1")
            )
            == 1
        )
        invited = user_by_email(db, "boss@newco.test")
        assert invited.status is UserStatus.INVITED and invited.password_hash is None
        assert invited.invitation_nonce
    assert [job for job, *_ in app.extensions["portal.jobs"].handed].count("run_work") == 2
    with tenancy.system(db):
        assert (
            db.scalar(
                select(func.count()).select_from(Work).where(Work.job.like("%send_invitation%"))
            )
            == 2
        )


def test_an_update_changes_what_differs_and_refuses_amounts_once_paid(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    assert run(app, str(write(tmp_path, "a.json", json.dumps(GOOD)))).exit_code == 0
    changed = json.loads(json.dumps(GOOD))
    changed["invoices"][0]["lines"] = [
        {"description": "Widgets", "quantity": 1, "unit_price": 7000}
    ]
    changed["invoices"][0]["notes"] = "re-issued"
    result = run(app, str(write(tmp_path, "b.json", json.dumps(changed))))
    assert result.exit_code == 0, result.stderr
    assert "invoices: 0 created, 1 updated, 2 unchanged" in result.output
    (imp1,) = invoices_named(db, "IMP-1")
    with tenancy.system(db):
        db.refresh(imp1)
        assert (imp1.total, len(imp1.lines), imp1.notes) == (7000, 1, "re-issued")
    # IMP-2 has a credit: its lines stay as they are
    changed["invoices"][1]["lines"][0]["unit_price"] = 1
    refused = run(app, str(write(tmp_path, "c.json", json.dumps(changed))))
    assert refused.exit_code == 1
    assert "/invoices/1 lines: the invoice is open or has payments or credits" in refused.stderr


def test_dry_run_writes_nothing(app: Flask, db: Session, tmp_path: Path) -> None:
    result = run(app, str(write(tmp_path, "a.json", json.dumps(GOOD))), "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "dry run, nothing written: companies: 1 created" in result.output
    assert invoices_named(db, "IMP-1") == []


def test_an_address_of_another_company_is_refused(app: Flask, tmp_path: Path) -> None:
    batch = {"users": [{"company": "GLOBEX", "email": "ADMIN@acme.test", "role": "customer.admin"}]}
    result = run(app, str(write(tmp_path, "u.json", json.dumps(batch))))
    assert result.exit_code == 1
    assert "/users/0 email: this address belongs to a user of another company" in result.stderr


def test_csv_with_a_bom_quoted_commas_crlf_and_blank_lines(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    content = (
        "\ufeffcompany,billing_account,number,reference,issue_date,due_date,"
        "line_description,line_quantity,line_unit_price,line_tax_rate_bp\r\n"
        f'ACME,AW-1001,CSV-1,"PO 7, rush",{TODAY},{TODAY},"Bolts, M8 ""zinc""",10,150,0\r\n'
        "\r\n"
        ",,,,,,,,,\r\n"
        f'ACME,AW-1001,CSV-2,,{TODAY},{TODAY},"Two\nlines",1,999,\r\n'
        f'ACME,AW-1001,CSV-1,"PO 7, rush",{TODAY},{TODAY},Nuts,3,25,0\r\n'
    )
    path = write(tmp_path, "invoices.csv", content.encode("utf-8"))
    result = run(app, str(path), "--kind", "invoices")
    assert result.exit_code == 0, result.stderr
    assert "invoices: 2 created" in result.output
    csv1, csv2 = sorted(invoices_named(db, "CSV-1", "CSV-2"), key=lambda i: i.number)
    assert csv1.reference == "PO 7, rush"
    with tenancy.system(db):
        assert [line.description for line in csv1.lines] == ['Bolts, M8 "zinc"', "Nuts"]
        assert csv2.lines[0].description == "Two\nlines"
    assert csv1.total == 10 * 150 + 3 * 25
    again = run(app, str(path), "--kind", "invoices")
    assert "invoices: 0 created, 0 updated, 2 unchanged" in again.output


def test_csv_bad_rows_are_named_by_their_line(app: Flask, tmp_path: Path) -> None:
    content = (
        "company,billing_account,number,issue_date,due_date,line_description,line_quantity,"
        "line_unit_price\n"
        f"ACME,AW-1001,CSV-1,{TODAY},{TODAY},Bolts,10,150\n"
        f"ACME,AW-1001,CSV-1,{TODAY},{TODAY},Nuts,zero,25\n"  # row 3: a line's quantity
        f"ACME,AW-1001,CSV-2,{TODAY},2000-01-01,Nuts,1,25\n"  # row 4: due before issue
        f"ACME,AW-1001,CSV-1,2001-01-01,{TODAY},Nuts,1,25\n"  # row 5: disagrees with row 2
    )
    result = run(app, str(write(tmp_path, "i.csv", content)), "--kind", "invoices")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("row 3 line_quantity:")
    assert lines[1] == "row 4: due_date is before issue_date"
    assert lines[2] == "row 5 issue_date: differs from row 2, the invoice's first row"


def test_a_csv_needs_its_kind(app: Flask, tmp_path: Path) -> None:
    result = run(app, str(write(tmp_path, "i.csv", "code,name\n")))
    assert result.exit_code == 2
    assert "--kind" in result.stderr


def test_users_csv_grants_accounts_separated_by_semicolons(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    content = "company,email,name,role,accounts\nACME,both@acme.test,Bo,customer,AW-1001; AE-2001\n"
    result = run(app, str(write(tmp_path, "u.csv", content)), "--kind", "users", "--no-invite")
    assert result.exit_code == 0, result.stderr
    assert "not mailed (--no-invite)" in result.output
    user = user_by_email(db, "both@acme.test")
    assert len(user.grants) == 2
    assert app.extensions["portal.jobs"].handed == []


def test_documents_come_from_beside_the_file_and_stay_inside_it(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "contract.pdf").write_bytes(b"%PDF-1.4 imported")
    (tmp_path.parent / "secret.txt").write_text("no")
    batch = {
        "documents": [
            {
                "company": "ACME",
                "title": "Master contract",
                "kind": "contract",
                "file": "files/contract.pdf",
            }
        ]
    }
    path = write(tmp_path, "d.json", json.dumps(batch))
    result = run(app, str(path))
    assert result.exit_code == 0, result.stderr
    with tenancy.system(db):
        document = db.scalars(select(Document).where(Document.title == "Master contract")).one()
    assert (document.filename, document.content_type, document.size_bytes) == (
        "contract.pdf",
        "application/pdf",
        17,
    )
    with app.extensions["portal.runtime"].store.open(document.storage_path) as stored:
        assert stored.read() == b"%PDF-1.4 imported"
    assert "documents: 0 created, 0 updated, 1 unchanged" in run(app, str(path)).output
    batch["documents"][0]["file"] = "../secret.txt"
    escaped = run(app, str(write(tmp_path, "e.json", json.dumps(batch))))
    assert escaped.exit_code == 1
    assert "/documents/0 file: the file must be inside the import file's folder" in escaped.stderr


def test_not_json_and_unknown_kinds_are_reported(app: Flask, tmp_path: Path) -> None:
    result = run(app, str(write(tmp_path, "x.json", "{nope")))
    assert result.exit_code == 1 and "not JSON" in result.stderr
    result = run(app, str(write(tmp_path, "y.json", '{"payments": [], "users": {}}')))
    assert "/payments: unknown kind" in result.stderr
    assert "/users: expected a list" in result.stderr


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["ACME", "AW-1001", "INV-1001", TODAY, "customer", "1e999", "NaN", "-1"]),
    st.lists(st.text(max_size=5), max_size=3),
)
_FIELDS = st.sampled_from(
    [
        "code",
        "name",
        "currency",
        "company",
        "billing_account",
        "number",
        "email",
        "role",
        "accounts",
        "issue_date",
        "due_date",
        "lines",
        "invoice",
        "amount",
        "file",
        "title",
        "x",
    ]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(receivables.KINDS),
    rows=st.lists(st.dictionaries(_FIELDS, _VALUES, max_size=8), max_size=4),
)
def test_arbitrary_rows_are_reported_never_a_traceback(
    db: Session, kind: str, rows: list[dict[str, Any]]
) -> None:
    batch = receivables.parse_json(json.dumps({kind: rows}, default=str))
    with db.begin_nested() as savepoint:
        report = receivables.upsert(db, batch, now=clock.now())
        savepoint.rollback()
    assert all(isinstance(e, receivables.RowError) for e in report.errors)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(receivables.KINDS), text=st.text(max_size=300))
def test_arbitrary_csv_text_is_reported_never_a_traceback(kind: str, text: str) -> None:
    batch = receivables.parse_csv(text, kind)
    assert all(e.where.startswith("row ") for e in batch.errors)


def test_a_repeat_reads_stored_invoices_in_a_few_queries_whatever_their_number(
    db: Session, count_queries: QueryCounter
) -> None:
    def statements(count: int) -> int:
        batch = receivables.parse_json(
            json.dumps({"invoices": [invoice_record(f"Q-{i}") for i in range(count)]})
        )
        assert receivables.upsert(db, batch, now=clock.now()).ok
        db.flush()
        before = count_queries.count
        report = receivables.upsert(db, batch, now=clock.now())
        assert report.unchanged["invoices"] == count
        return count_queries.count - before

    assert statements(5) == statements(40) <= 4  # company, account, invoices, their lines
