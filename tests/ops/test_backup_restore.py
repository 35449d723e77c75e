"""Backups restore (PostgreSQL): the commands of docs/operations.md "Backups and restore", read
from its code blocks and run as they are written, back up a database holding the demo data and a
payment with its files; restored into a new database, migrated (nothing to apply) and served, it
shows a demo user, signed in with both factors, the same balance, invoices, payments and
documents as the original. It runs on PostgreSQL databases of its own, whatever
PORTAL_TEST_BACKENDS says; SQLite's backup (`sqlite3 .backup`) is checked to copy every row."""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL, make_url

from portal import tenancy
from portal.models import Document, Invoice, InvoiceStatus
from tests import factories
from tests.conftest import (
    TEST_SECRET,
    Auth,
    Backend,
    _postgres_database,
    make_app,
    migrate_and_seed,
)

ROOT = Path(__file__).resolve().parent.parent.parent
DOC = ROOT / "docs" / "operations.md"
BLOCK = re.compile(r"```sh\n(# (back up|restore|back up \(SQLite\))\n.*?)```", re.DOTALL)
REFERENCE = re.compile(r"PMT-[0-9A-Z]{4}-[0-9A-Z]{4}")
INVOICE_ID = re.compile(r"/portal/invoices/(inv_[A-Za-z0-9_-]+)")
DOWNLOAD = re.compile(r'href="(/portal/download/[^"]+)"')
BALANCE = re.compile(r'<section aria-labelledby="balance-title".*?</section>', re.DOTALL)


def doc_commands() -> dict[str, str]:
    """The documented shell blocks: {"back up": …, "restore": …, "back up (SQLite)": …}."""
    found = {kind: block for block, kind in BLOCK.findall(DOC.read_text(encoding="utf-8"))}
    wanted = {"back up", "restore", "back up (SQLite)"}
    assert set(found) == wanted, "docs/operations.md lost a backup block"
    return found


def libpq_env(url: URL) -> dict[str, str]:
    return {
        "PGHOST": url.host or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "postgres",
        **({"PGPASSWORD": url.password} if url.password else {}),
    }


def run_block(script: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@dataclass
class Original:
    url: str
    storage: Path
    today: date
    payment_id: str
    reference: str


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Original]:
    """A database of its own with the demo data and one more payment, committed."""
    urls = _postgres_database()
    url = next(urls)
    storage = tmp_path_factory.mktemp("original-files")
    today = date.today()
    migrate_and_seed(url, storage, today)
    app = make_app(Backend("postgresql", url, today, storage))
    session = app.extensions["portal.db"].sessionmaker()
    try:
        with tenancy.system(session):
            invoice = session.scalars(
                select(Invoice)
                .where(Invoice.status == InvoiceStatus.OPEN, Invoice.amount_paid == 0)
                .order_by(Invoice.id)
                .limit(1)
            ).one()
            payment = factories.make_payment(session, invoice, factories.minor(invoice.total) // 2)
            session.commit()
            paid = Original(url, storage, today, payment.public_id, payment.reference)
    finally:
        session.close()
        app.extensions["portal.db"].engine.dispose()
    yield paid
    for _ in urls:  # drops the database
        pass


@dataclass
class Restored:
    url: str
    storage: Path
    upgrade_output: str


@pytest.fixture(scope="module")
def restored(original: Original, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restored]:
    source = make_url(original.url)
    backup_dir = tmp_path_factory.mktemp("backup")
    storage = tmp_path_factory.mktemp("restored") / "files"  # new, not yet there
    name = f"portal_restored_{os.getpid()}_{secrets.token_hex(3)}"
    target = source.set(database=name).render_as_string(hide_password=False)
    venv_bin = str(Path(sys.executable).parent)
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
        **libpq_env(source),
        "PATH": f"{venv_bin}:{os.environ['PATH']}",
        "BACKUP_DIR": str(backup_dir / "portal-backup"),
    }
    commands = doc_commands()
    run_block(
        commands["back up"],
        {**base, "PGDATABASE": source.database or "", "PORTAL_STORAGE_DIR": str(original.storage)},
    )
    production = {
        "PORTAL_ENV": "production",
        "SECRET_KEY": TEST_SECRET,
        "PUBLIC_URL": "https://billing.example.com",
        "PAYMENT_GATEWAY": "sandbox",
        "REDIS_URL": os.environ.get("PORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
        "DATABASE_URL": target,
    }
    try:
        output = run_block(
            commands["restore"],
            {**base, **production, "RESTORE_DB": name, "PORTAL_STORAGE_DIR": str(storage)},
        )
        yield Restored(target, storage, output)
    finally:
        admin = create_engine(source.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


def signed_in(app: Flask) -> Auth:
    auth = Auth(app, app.test_client())
    auth.sign_in("admin@acme.test")  # password, then the authenticator's code
    return auth


def test_the_restored_database_is_the_same_and_needs_no_migration(
    original: Original, restored: Restored
) -> None:
    assert "database is at the latest schema" in restored.upgrade_output
    version = "SELECT version_num FROM alembic_version"
    assert rows(restored.url, version) == rows(original.url, version)
    for query in (
        "SELECT public_id, status, total, amount_paid FROM invoices ORDER BY id",
        "SELECT public_id, reference, status, amount FROM payments ORDER BY id",
        "SELECT public_id, storage_path FROM documents ORDER BY id",
        "SELECT email, mfa_secret_encrypted FROM portal_users ORDER BY id",
    ):
        before = rows(original.url, query)
        assert before and rows(restored.url, query) == before, query


def test_a_demo_user_signs_in_to_the_restored_portal_and_sees_the_same(
    original: Original, restored: Restored
) -> None:
    apps = [
        make_app(Backend("postgresql", original.url, original.today, original.storage)),
        make_app(Backend("postgresql", restored.url, original.today, restored.storage)),
    ]
    try:
        before, after = (signed_in(app).client for app in apps)

        def same(path: str, pattern: re.Pattern[str]) -> list[str]:
            seen = [pattern.findall(c.get(path).get_data(as_text=True)) for c in (before, after)]
            assert seen[0] and seen[0] == seen[1], path
            return seen[1]

        same("/portal/dashboard", BALANCE)  # balance, credit limit, available credit
        same("/portal/invoices", INVOICE_ID)
        assert original.reference in same("/portal/payment-history", REFERENCE)
        payment = after.get(f"/portal/payments/{original.payment_id}")
        assert payment.status_code == 200
        assert original.reference in payment.get_data(as_text=True)

        # The files came along: each document downloads with the original's bytes.
        with apps[1].app_context():
            session = apps[1].extensions["portal.db"].sessionmaker()
            with tenancy.system(session):
                documents = session.scalars(select(Document.storage_path)).all()
            session.close()
        assert documents
        for path in documents:
            assert (restored.storage / path).read_bytes() == (original.storage / path).read_bytes()
        links = DOWNLOAD.findall(after.get("/portal/documents").get_data(as_text=True))
        assert links
        download = after.get(links[0].replace("&amp;", "&"))
        try:
            assert download.status_code == 200 and download.data[:5] == b"%PDF-"
        finally:
            download.close()
    finally:
        for app in apps:
            app.extensions["portal.db"].engine.dispose()


def test_payments_count_is_the_demo_data_and_one_more(
    original: Original, restored: Restored
) -> None:
    count = "SELECT count(*) FROM payments"
    assert rows(restored.url, count) == rows(original.url, count)
    assert rows(restored.url, f"SELECT 1 FROM payments WHERE public_id = '{original.payment_id}'")


def test_the_sqlite_backup_copies_every_row_and_the_files(tmp_path: Path) -> None:
    database, storage = tmp_path / "portal.db", tmp_path / "files"
    migrate_and_seed(f"sqlite:///{database}", storage, date.today())
    backup_dir = tmp_path / "backup"
    run_block(
        doc_commands()["back up (SQLite)"],
        {
            **os.environ,
            "SQLITE_DB": str(database),
            "BACKUP_DIR": str(backup_dir),
            "PORTAL_STORAGE_DIR": str(storage),
        },
    )
    queries = (
        "SELECT public_id, status, total, amount_paid FROM invoices ORDER BY id",
        "SELECT public_id, reference, status, amount FROM payments ORDER BY id",
        "SELECT version_num FROM alembic_version",
    )
    copies = []
    for path in (database, backup_dir / "portal.db"):
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            copies.append([connection.execute(query).fetchall() for query in queries])
        connection.close()
    assert copies[0][0] and copies[0][1] and copies[1] == copies[0]
    listed = subprocess.run(
        ["tar", "--list", "--gzip", "--file", str(backup_dir / "files.tar.gz")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    originals = {f"./{p.relative_to(storage)}" for p in storage.rglob("*") if p.is_file()}
    assert originals and originals <= set(listed)
