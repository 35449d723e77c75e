"""The benchmark's data: the demo data plus one customer's long history among other companies'.

The customer is the demo company Acme (its users sign in as in bench/load.py); its extra invoices
go to its account "Acme West". The other companies each get one billing account. Every invoice
has one line (the list's search looks in line descriptions). Rows go in with SQLAlchemy Core
executemany on SQLite and COPY on PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.orm import Session

from portal import migrate, tenancy
from portal.db import make_engine
from portal.models import BillingAccount, Company, Invoice
from portal.services import seed
from portal.services.passwords import hasher

CHUNK = 20_000


@dataclass(frozen=True)
class Size:
    name: str
    customer: int  # the customer's extra invoices
    others: int  # invoices of the other companies
    companies: int  # how many other companies


SIZES = {
    "tiny": Size("tiny", 300, 600, 6),
    "small": Size("small", 3_000, 6_000, 60),
    "a": Size("a", 20_000, 200_000, 2_000),
    "b": Size("b", 200_000, 200_000, 2_000),
}


@dataclass(frozen=True)
class Facts:
    """What the benchmark needs to know about what was built."""

    company_id: int  # the customer's (Acme)
    invoices: list[str]  # the customer's extra invoices' public ids, newest first
    payable: list[tuple[str, int]]  # open ones (public id, balance in cents), oldest first
    customer_total: int  # every invoice the customer's admin sees
    seconds: float  # how long the build took


def _total(n: int) -> int:
    return 10_000 + (n * 7919) % 900_000


def _invoice(n: int, prefix: str, company: int, account: int, today: date) -> dict[str, Any]:
    issued = today - timedelta(days=n % 1_400)
    total = _total(n)
    paid = n % 3 == 0
    now = datetime.now(UTC)
    return {
        "public_id": f"inv_{prefix}{n:07d}",
        "company_id": company,
        "billing_account_id": account,
        "number": f"{prefix.upper()}-{n:07d}",
        "reference": f"PO-{n % 5000}",
        "issue_date": issued,
        "due_date": issued + timedelta(days=30),
        "currency": "USD",
        "subtotal": total,
        "tax_total": 0,
        "total": total,
        "amount_paid": total if paid else 0,
        "status": "paid" if paid else "open",
        "notes": "",
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }


def _copy(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """COPY on PostgreSQL (psycopg), executemany elsewhere."""
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(table.insert(), rows)
        return
    columns = list(rows[0])
    raw = connection.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        names = ", ".join(f'"{c}"' for c in columns)
        with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])


def _chunks(items: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _lines(connection: Connection, prefix: str) -> None:
    """One line per invoice whose public id starts with inv_<prefix>, written by the database."""
    connection.execute(
        text(
            "INSERT INTO invoice_lines (company_id, billing_account_id, invoice_id, position,"
            " description, quantity, unit_price, tax_rate_bp, amount)"
            " SELECT company_id, billing_account_id, id, 1, CASE id % 5"
            " WHEN 0 THEN 'Managed hosting' WHEN 1 THEN 'Support hours'"
            " WHEN 2 THEN 'Licence seats' WHEN 3 THEN 'Backup add-on' ELSE 'Installation' END,"
            " 1, total, 0, total FROM invoices WHERE public_id LIKE :pattern"
        ),
        {"pattern": f"inv_{prefix}%"},
    )


def build(url: str, folder: Path, size: Size, secret_key: str) -> Facts:
    started = time.perf_counter()
    engine = make_engine(url)
    with engine.begin() as connection:
        migrate.upgrade(connection=connection)
    today = date.today()
    with Session(engine) as session, tenancy.system(session):
        seed.DemoSeeder(
            session,
            today=today,
            ph=hasher(1, 64),
            secret_key=secret_key,
            storage_dir=folder / "files",
        ).run()
        session.commit()
        west = session.scalars(
            select(BillingAccount).where(BillingAccount.name == "Acme West")
        ).one()
        company_id, account_id = west.company_id, west.id
    now = datetime.now(UTC)
    companies, accounts = Company.__table__, BillingAccount.__table__
    invoices = Invoice.__table__
    with engine.begin() as connection:
        connection.execute(
            companies.insert(),
            [
                {
                    "public_id": f"co_bench{c:05d}",
                    "name": f"Bench Company {c}",
                    "currency": "USD",
                    "locale": "en_US",
                    "credit_limit": 0,
                    "allow_partial_payments": True,
                    "created_at": now,
                }
                for c in range(size.companies)
            ],
        )
        other_companies = dict(
            connection.execute(
                select(companies.c.public_id, companies.c.id).where(
                    companies.c.public_id.like("co_bench%")
                )
            ).all()
        )
        connection.execute(
            accounts.insert(),
            [
                {
                    "public_id": f"ba_bench{c:05d}",
                    "company_id": other_companies[f"co_bench{c:05d}"],
                    "name": f"Bench Account {c}",
                    "number": f"BA-{c:05d}",
                    "bill_to": "",
                    "created_at": now,
                }
                for c in range(size.companies)
            ],
        )
        other_accounts = [
            (company, account)
            for company, account in connection.execute(
                select(accounts.c.company_id, accounts.c.id)
                .where(accounts.c.public_id.like("ba_bench%"))
                .order_by(accounts.c.id)
            ).all()
        ]
        mine = (_invoice(n, "bench", company_id, account_id, today) for n in range(size.customer))
        for chunk in _chunks(mine):
            _copy(connection, invoices, chunk)
        theirs = (
            _invoice(n, "other", *other_accounts[n % len(other_accounts)], today)
            for n in range(size.others)
        )
        for chunk in _chunks(theirs):
            _copy(connection, invoices, chunk)
        _lines(connection, "bench")
        _lines(connection, "other")
        customer_total = connection.execute(
            select(func.count()).select_from(invoices).where(invoices.c.company_id == company_id)
        ).scalar_one()
    # A clean, analysed heap before measuring: the lines' triggers rewrote every invoice once
    # (search_text), and autovacuum would otherwise run during the measurements.
    if engine.dialect.name == "postgresql":  # VACUUM runs outside a transaction
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    engine.dispose()
    # Newest first (issue dates step back a day per n, repeating every 1,400 invoices)
    ids = [f"inv_bench{n:07d}" for n in range(size.customer)]
    payable = [(f"inv_bench{n:07d}", _total(n)) for n in range(size.customer) if n % 3]
    return Facts(
        company_id=company_id,
        invoices=ids,
        payable=payable,
        customer_total=customer_total,
        seconds=time.perf_counter() - started,
    )


def describe(size: Size) -> str:
    return (
        f"the customer has {size.customer:,} invoices among {size.others:,} of "
        f"{size.companies:,} other companies"
    )
