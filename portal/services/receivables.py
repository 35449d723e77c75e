"""Receivables import: companies, billing accounts, users, invoices with lines, credit notes and
documents from the receivables system, as a file (`flask --app wsgi import`) or a batch of the
operator API (`/api/ar/…`). One service for both.

Every record is keyed by the receivables system's natural key, never by a portal id:

- company: its `code` (migration 0022); billing account: company + account `number`;
- user: e-mail (one address, one user, across companies); invoice: company + invoice `number`;
- credit note: company + credit note `number`; document: company + invoice (or none) + `filename`.

`upsert` creates what is missing and changes what differs; a record equal to what is stored
writes nothing (so the same file imported twice changes nothing the second time, not even an
invoice's version). All or nothing: records are checked first (`parse_*`, pydantic), then
applied inside a savepoint; any bad record, whether its shape is wrong or it contradicts what is
stored (an unknown company, an address of another company, a credit beyond what the invoice
owes), rolls the savepoint back and the report lists every one of them. Nothing here commits.

What the portal's own rules keep stays kept: totals are computed from the lines (quantity x unit
price rounded half up, tax per line in basis points); an invoice that has payments or credits
keeps its amounts (only its dates, reference and notes may change); credit notes go through
`services.credit_notes.apply` (one guarded UPDATE of what the invoice has settled); tallies follow
by the database's triggers; public ids are drawn as everywhere else. New users are created the way
`services.users.invite` creates them: status `invited`, no password, a fresh invitation nonce; the
caller mails the invitation through the outbox (`ImportReport.invited`), or not (`--no-invite`).
Amounts are integer minor units of the currency (cents), as the database keeps them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import mimetypes
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from portal import tenancy
from portal.models import (
    BillingAccount,
    Company,
    CreditNote,
    Document,
    DocumentKind,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    PortalUser,
    Role,
    UserAccountGrant,
    UserStatus,
)
from portal.services import audit, autopay, credit_notes
from portal.services.lockout import normalize_email
from portal.services.payments.selection import reserved_amounts
from portal.services.profile import parse_phone, region_of
from portal.services.storage import FileStore, StorageError

# The kinds of record, in the order a batch applies them (each may name the ones before it).
KINDS = ("companies", "billing_accounts", "users", "invoices", "credit_notes", "documents")
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Key = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Currency = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{3}$")
]
Minor = Annotated[int, Field(ge=0, le=10**13)]


def _email_address(value: str) -> str:
    address = normalize_email(value)
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain or any(c.isspace() for c in address):
        raise ValueError("not an e-mail address")
    return address


# Characters a mailto: link would read as more than an address (headers, a second recipient).
MAILTO_UNSAFE = frozenset('?&"<>,;\\ %')


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """No text the portal keeps may hold a NUL (PostgreSQL refuses it: a crash, not a row
        named); SQLite would keep it."""
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("contains a NUL character")
        return value


class CompanyRecord(Record):
    code: Key
    name: Name
    currency: Currency
    locale: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")] = "en_US"
    credit_limit: Minor = 0
    allow_partial_payments: bool = True
    # Who the company contacts about its bills (the footer of every signed-in page names them).
    # Each may be left out or null (no manager: the footer says "your account manager").
    account_manager_name: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        None, description="The company's account manager, as the portal's footer names them."
    )
    account_manager_email: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=254)] | None
    ) = Field(None, description="The account manager's e-mail address.")
    account_manager_phone: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None,
        description="The account manager's phone number, international (`+14155550123`) or "
        "national to the company's locale's country; kept in E.164.",
    )

    @field_validator("account_manager_name", "account_manager_email", "account_manager_phone")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("account_manager_email")
    @classmethod
    def _manager_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        address = _email_address(value)
        if any(c in MAILTO_UNSAFE for c in address):  # it becomes a mailto: link in every footer
            raise ValueError("not an e-mail address")
        return address

    @field_validator("account_manager_phone")
    @classmethod
    def _manager_phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        e164 = parse_phone(value, region_of(info.data.get("locale")))
        if e164 is None:
            raise ValueError("not a valid phone number")
        return e164


class BillingAccountRecord(Record):
    company: Key
    number: Key
    name: Name
    bill_to: Annotated[str, StringConstraints(max_length=500)] = ""


class UserRecord(Record):
    company: Key
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254)]
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    role: Role = Role.CUSTOMER
    accounts: list[Key] = Field(default_factory=list, max_length=500)

    @field_validator("email")
    @classmethod
    def _address(cls, value: str) -> str:
        return _email_address(value)

    @model_validator(mode="after")
    def _grants(self) -> UserRecord:
        if self.role is Role.CUSTOMER and not self.accounts:
            raise ValueError("a user with role customer needs at least one billing account")
        return self


class LineRecord(Record):
    description: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)
    ]
    quantity: Annotated[Decimal, Field(gt=0, lt=10**9, decimal_places=3, allow_inf_nan=False)]
    unit_price: Minor
    tax_rate_bp: Annotated[int, Field(ge=0, le=10_000)] = 0


class InvoiceRecord(Record):
    company: Key
    billing_account: Key
    number: Key
    reference: Annotated[str, StringConstraints(max_length=100)] = ""
    issue_date: date
    due_date: date
    currency: Currency | None = None  # None: the company's
    notes: Annotated[str, StringConstraints(max_length=5000)] = ""
    lines: list[LineRecord] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _dates(self) -> InvoiceRecord:
        if self.due_date < self.issue_date:
            raise ValueError("due_date is before issue_date")
        return self


class CreditNoteRecord(Record):
    company: Key
    number: Key
    invoice: Key  # the invoice's number
    amount: Annotated[int, Field(gt=0, le=10**13)]
    currency: Currency | None = None  # None: the invoice's
    issue_date: date
    reason: Annotated[str, StringConstraints(max_length=300)] = ""


class DocumentRecord(Record):
    company: Key
    billing_account: Key | None = None  # None: the invoice's account, else the whole company's
    invoice: Key | None = None
    title: Name
    kind: DocumentKind = DocumentKind.OTHER
    file: Annotated[str, StringConstraints(min_length=1, max_length=500)]  # relative to the file
    filename: Annotated[str, StringConstraints(max_length=200)] | None = None
    content_type: Annotated[str, StringConstraints(max_length=100)] | None = None


MODELS: dict[str, type[Record]] = {
    "companies": CompanyRecord,
    "billing_accounts": BillingAccountRecord,
    "users": UserRecord,
    "invoices": InvoiceRecord,
    "credit_notes": CreditNoteRecord,
    "documents": DocumentRecord,
}


@dataclass(frozen=True)
class RowError:
    """One bad record: where it is (a JSON pointer, "row 7" of a CSV file, or an API path),
    which field (empty: the record as a whole) and what is wrong, in a sentence."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}{' ' + self.field if self.field else ''}: {self.message}"


@dataclass
class Batch:
    """Records checked for shape, by kind, each with where it came from."""

    records: dict[str, list[tuple[str, Record]]] = field(
        default_factory=lambda: {kind: [] for kind in KINDS}
    )
    errors: list[RowError] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.records.values())


@dataclass
class ImportReport:
    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    unchanged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    errors: list[RowError] = field(default_factory=list)
    invited: list[int] = field(default_factory=list)  # new users' ids: mail their invitations
    # Each record applied, in order: (kind, where, outcome, public id).
    results: list[tuple[str, str, str, str]] = field(default_factory=list)
    # Files the batch stored: a caller that rolls the batch back after all (a dry run, a
    # commit that fails) removes them (`discard_files`).
    stored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        parts = [
            f"{kind}: {self.created[kind]} created, {self.updated[kind]} updated, "
            f"{self.unchanged[kind]} unchanged"
            for kind in KINDS
            if self.created[kind] or self.updated[kind] or self.unchanged[kind]
        ]
        return "; ".join(parts) or "nothing to import"


# Parsing -------------------------------------------------------------------------------------


def _pydantic_errors(where: str, error: ValidationError, prefix: str = "") -> list[RowError]:
    found = []
    for item in error.errors():
        path = "/".join(str(part) for part in item.get("loc", ()))
        message = str(item.get("msg", "invalid value"))
        message = message.removeprefix("Value error, ")
        found.append(RowError(where, f"{prefix}{path}", message))
    return found


def check(batch: Batch, kind: str, where: str, raw: Any, prefix: str = "") -> None:
    """Validate one raw record of `kind` into `batch` (its record, or its errors)."""
    if not isinstance(raw, Mapping):
        batch.errors.append(RowError(where, "", "expected an object"))
        return
    try:
        record = MODELS[kind].model_validate(dict(raw))
    except ValidationError as error:
        batch.errors.extend(_pydantic_errors(where, error, prefix))
        return
    batch.records[kind].append((where, record))


def parse_json(data: bytes | str) -> Batch:
    """A JSON file: {"companies": [...], "billing_accounts": [...], ...}; records at
    `/invoices/3` (JSON pointers) in the report."""
    batch = Batch()
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        batch.errors.append(RowError("/", "", f"not JSON: {error}"))
        return batch
    if not isinstance(document, dict):
        batch.errors.append(RowError("/", "", "expected an object of lists by kind"))
        return batch
    for key in document:
        if key not in KINDS:
            batch.errors.append(
                RowError(f"/{key}", "", f"unknown kind (expected one of: {', '.join(KINDS)})")
            )
    for kind in KINDS:
        rows = document.get(kind, [])
        if not isinstance(rows, list):
            batch.errors.append(RowError(f"/{kind}", "", "expected a list"))
            continue
        for index, raw in enumerate(rows):
            check(batch, kind, f"/{kind}/{index}", raw)
    return batch


# CSV columns that hold lists: a user's billing accounts, separated by ";".
_LIST_COLUMNS = {"users": {"accounts"}}
_LINE_COLUMNS = ("line_description", "line_quantity", "line_unit_price", "line_tax_rate_bp")


def _csv_rows(data: bytes | str) -> tuple[list[tuple[int, dict[str, str]]], list[RowError]]:
    """The file's rows by their line number (the header is line 1), blank rows skipped; a
    UTF-8 byte order mark dropped; quoted fields may hold commas and line breaks."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            return [], [RowError("row 1", "", f"not UTF-8 text: {error.reason}")]
    else:
        text = data.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        header: list[str] | None = None
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in cells]
                if len(set(header)) != len(header) or "" in header:
                    return [], [
                        RowError(f"row {line}", "", "the header repeats or omits a column name")
                    ]
                continue
            if len(cells) != len(header):
                return rows, [
                    RowError(
                        f"row {line}",
                        "",
                        f"{len(cells)} columns where the header has {len(header)}",
                    )
                ]
            rows.append((line, dict(zip(header, cells, strict=True))))
    except csv.Error as error:
        return rows, [RowError(f"row {reader.line_num}", "", f"not CSV: {error}")]
    return rows, []


def _cells(kind: str, cells: dict[str, str]) -> dict[str, Any]:
    """A CSV row as a record: empty cells are left out (the default applies)."""
    record: dict[str, Any] = {}
    for name, value in cells.items():
        if value.strip() == "":
            continue
        if name in _LIST_COLUMNS.get(kind, set()):
            record[name] = [part.strip() for part in value.split(";") if part.strip()]
        else:
            record[name] = value
    return record


def parse_csv(data: bytes | str, kind: str) -> Batch:
    """A CSV file of one kind, one record per row. Invoices: one row per line, the invoice's
    columns repeated on each, its line in `line_description`, `line_quantity`,
    `line_unit_price` (minor units) and `line_tax_rate_bp`; rows of one invoice (same company
    and number) need not be adjacent, and must agree on the invoice's columns."""
    batch = Batch()
    if kind not in KINDS:
        batch.errors.append(RowError("row 1", "", f"unknown kind {kind!r}"))
        return batch
    rows, errors = _csv_rows(data)
    batch.errors.extend(errors)
    if errors:
        return batch
    if kind != "invoices":
        for line, cells in rows:
            check(batch, kind, f"row {line}", _cells(kind, cells))
        return batch
    grouped: dict[tuple[str, str], tuple[int, dict[str, Any], list[dict[str, Any]], list[int]]] = {}
    for line, cells in rows:
        record = _cells(kind, cells)
        line_part = {
            name.removeprefix("line_"): record.pop(name) for name in _LINE_COLUMNS if name in record
        }
        key = (str(record.get("company", "")).strip(), str(record.get("number", "")).strip())
        if key not in grouped:
            grouped[key] = (line, record, [], [])
        first, head, lines, numbers = grouped[key]
        if record != head:
            differing = sorted(n for n in set(record) | set(head) if record.get(n) != head.get(n))
            batch.errors.append(
                RowError(
                    f"row {line}",
                    differing[0],
                    f"differs from row {first}, the invoice's first row",
                )
            )
            continue
        lines.append(line_part)
        numbers.append(line)
    for first, head, lines, numbers in grouped.values():
        before = len(batch.errors)
        check(batch, kind, f"row {first}", {**head, "lines": lines})
        # An error in a line names the row that line came from.
        for position in range(before, len(batch.errors)):
            error = batch.errors[position]
            if error.field.startswith("lines/"):
                parts = error.field.split("/", 2)
                index = int(parts[1]) if parts[1].isdigit() else 0
                rest = parts[2] if len(parts) > 2 else ""
                batch.errors[position] = RowError(
                    f"row {numbers[min(index, len(numbers) - 1)]}",
                    f"line_{rest}" if rest else "line",
                    error.message,
                )
    batch.errors.sort(key=_order)
    return batch


def _order(error: RowError) -> tuple[int, str]:
    number = error.where.removeprefix("row ")
    return (int(number) if number.isdigit() else 0, error.where)


def from_api(kind: str, items: Sequence[Mapping[str, Any]]) -> Batch:
    """A batch of the operator API: the body's `items`, at `items.3` in the report."""
    batch = Batch()
    for index, raw in enumerate(items):
        check(batch, kind, f"items.{index}", raw)
    return batch


# Applying ------------------------------------------------------------------------------------


def _round_half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def _set(target: Any, values: Mapping[str, Any]) -> bool:
    """Assign what differs; whether anything did (equal values write nothing)."""
    changed = False
    for name, value in values.items():
        if getattr(target, name) != value:
            setattr(target, name, value)
            changed = True
    return changed


class _Refused(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class _Upsert:
    def __init__(
        self,
        session: Session,
        report: ImportReport,
        *,
        now: datetime,
        store: FileStore | None,
        base_dir: Path | None,
    ) -> None:
        self.session = session
        self.report = report
        self.now = now
        self.store = store
        self.base_dir = base_dir
        self.companies: dict[str, Company | None] = {}
        self.accounts: dict[tuple[int, str], BillingAccount | None] = {}
        self.written: list[str] = []  # storage keys written, removed should the batch fail
        self.subject: str | None = None  # the public id of the record last applied
        # Invoices by (company id, number), read ahead for the batch (None: not stored).
        self.invoices: dict[tuple[int, str], Invoice | None] = {}

    def read_invoices_ahead(self, records: Sequence[tuple[str, Record]]) -> None:
        """The batch's stored invoices with their lines, a few queries for the lot (not
        two per record): by company, 500 numbers at a time."""
        wanted: dict[int, set[str]] = {}
        for _where, record in records:
            assert isinstance(record, InvoiceRecord)
            try:
                company = self.company(record.company)
            except _Refused:
                continue  # reported when the record is applied
            wanted.setdefault(company.id, set()).add(record.number)
        for company_id, numbers in wanted.items():
            ordered = sorted(numbers)
            for start in range(0, len(ordered), 500):
                chunk = ordered[start : start + 500]
                self.invoices.update(dict.fromkeys(((company_id, n) for n in chunk), None))
                for invoice in self.session.scalars(
                    select(Invoice)
                    .where(Invoice.company_id == company_id, Invoice.number.in_(chunk))
                    .options(selectinload(Invoice.lines))
                ):
                    self.invoices[(company_id, invoice.number)] = invoice

    def count(self, kind: str, outcome: str) -> None:
        getattr(self.report, outcome)[kind] += 1

    # look-ups, remembered for the batch --------------------------------------------------

    def company(self, code: str, name: str = "company") -> Company:
        if code not in self.companies:
            self.companies[code] = self.session.scalars(
                select(Company).where(Company.code == code)
            ).one_or_none()
        found = self.companies[code]
        if found is None:
            raise _Refused(name, f"no company with code {code!r}")
        return found

    def account(
        self, company: Company, number: str, name: str = "billing_account"
    ) -> BillingAccount:
        key = (company.id, number)
        if key not in self.accounts:
            self.accounts[key] = self.session.scalars(
                select(BillingAccount).where(
                    BillingAccount.company_id == company.id, BillingAccount.number == number
                )
            ).one_or_none()
        found = self.accounts[key]
        if found is None:
            raise _Refused(name, f"no billing account {number!r} in company {company.code!r}")
        return found

    def invoice(self, company: Company, number: str, name: str = "invoice") -> Invoice:
        found = self.session.scalars(
            select(Invoice)
            .where(Invoice.company_id == company.id, Invoice.number == number)
            .options(selectinload(Invoice.lines))
        ).one_or_none()
        if found is None:
            raise _Refused(name, f"no invoice {number!r} in company {company.code!r}")
        return found

    # each kind ---------------------------------------------------------------------------

    def companies_(self, record: CompanyRecord) -> str:
        company = (
            self.companies.get(record.code)
            or self.session.scalars(
                select(Company).where(Company.code == record.code)
            ).one_or_none()
        )
        values = {
            "name": record.name,
            "locale": record.locale,
            "credit_limit": record.credit_limit,
            "allow_partial_payments": record.allow_partial_payments,
            "account_manager_name": record.account_manager_name,
            "account_manager_email": record.account_manager_email,
            "account_manager_phone": record.account_manager_phone,
        }
        if company is None:
            company = Company(code=record.code, currency=record.currency, **values)
            self.session.add(company)
            self.session.flush()
            self.companies[record.code] = company
            self.subject = company.public_id
            return "created"
        self.companies[record.code] = company
        if company.currency != record.currency:
            raise _Refused(
                "currency", f"the company's currency is {company.currency}: it cannot change"
            )
        self.subject = company.public_id
        return "updated" if _set(company, values) else "unchanged"

    def billing_accounts_(self, record: BillingAccountRecord) -> str:
        company = self.company(record.company)
        key = (company.id, record.number)
        account = (
            self.accounts.get(key)
            or self.session.scalars(
                select(BillingAccount).where(
                    BillingAccount.company_id == company.id, BillingAccount.number == record.number
                )
            ).one_or_none()
        )
        values = {"name": record.name, "bill_to": record.bill_to}
        if account is None:
            account = BillingAccount(company_id=company.id, number=record.number, **values)
            self.session.add(account)
            self.session.flush()
            self.accounts[key] = account
            self.subject = account.public_id
            return "created"
        self.accounts[key] = account
        self.subject = account.public_id
        return "updated" if _set(account, values) else "unchanged"

    def users_(self, record: UserRecord) -> str:
        company = self.company(record.company)
        wanted: set[int] = set()
        if record.role is Role.CUSTOMER:
            for index, number in enumerate(record.accounts):
                wanted.add(self.account(company, number, f"accounts/{index}").id)
        user = self.session.scalars(
            select(PortalUser)
            .where(PortalUser.email == record.email)
            .options(selectinload(PortalUser.grants))
        ).one_or_none()
        if user is None:
            user = PortalUser(
                company_id=company.id,
                email=record.email,
                name=record.name,
                role=record.role,
                status=UserStatus.INVITED,
                locale=None,
                invitation_nonce=secrets.token_urlsafe(16),
                invitation_sent_at=self.now,
                created_at=self.now,
            )
            user.grants = [
                UserAccountGrant(company_id=company.id, billing_account_id=account_id)
                for account_id in sorted(wanted)
            ]
            self.session.add(user)
            self.session.flush()
            audit.record(
                self.session,
                "Portal.UserInvited",
                company_id=company.id,
                target_user=user.public_id,
                email=user.email,
                role=user.role.value,
                by="receivables import",
            )
            self.report.invited.append(user.id)
            self.subject = user.public_id
            return "created"
        if user.company_id != company.id:
            raise _Refused("email", "this address belongs to a user of another company")
        changed = False
        if record.role is not user.role:
            if (
                user.role is Role.ADMIN
                and user.status is UserStatus.ACTIVE
                and not self._other_admin(user)
            ):
                raise _Refused("role", "the company's last active administrator stays one")
            user.role = record.role
            changed = True
        if record.name and record.name != user.name:
            user.name = record.name
            changed = True
        held = {grant.billing_account_id: grant for grant in user.grants}
        if record.role is Role.CUSTOMER and wanted != set(held):
            user.grants = [grant for key, grant in held.items() if key in wanted] + [
                UserAccountGrant(company_id=company.id, billing_account_id=key)
                for key in sorted(wanted - set(held))
            ]
            changed = True
        if changed:
            self.session.flush()
            # As on the users page: autopay the user may no longer manage turns off.
            autopay.consent_changed(self.session, user, now=self.now)
            audit.record(
                self.session,
                "Portal.UserAccessChanged",
                company_id=company.id,
                target_user=user.public_id,
                role=user.role.value,
                by="receivables import",
            )
        self.subject = user.public_id
        return "updated" if changed else "unchanged"

    def _other_admin(self, user: PortalUser) -> bool:
        others = self.session.scalar(
            select(func.count(PortalUser.id)).where(
                PortalUser.company_id == user.company_id,
                PortalUser.role == Role.ADMIN,
                PortalUser.status == UserStatus.ACTIVE,
                PortalUser.id != user.id,
            )
        )
        return bool(others)

    def invoices_(self, record: InvoiceRecord) -> str:
        company = self.company(record.company)
        account = self.account(company, record.billing_account)
        currency = record.currency or company.currency
        lines = [
            (
                line.description,
                line.quantity,
                line.unit_price,
                line.tax_rate_bp,
                _round_half_up(line.quantity * line.unit_price),
            )
            for line in record.lines
        ]
        subtotal = sum(amount for *_, amount in lines)
        tax = sum(_round_half_up(Decimal(amount * bp) / 10000) for *_, bp, amount in lines)
        if subtotal + tax > 10**13:
            raise _Refused("lines", "the invoice's total is too large")
        key = (company.id, record.number)
        if key in self.invoices:
            invoice = self.invoices[key]
        else:
            invoice = self.session.scalars(
                select(Invoice)
                .where(Invoice.company_id == company.id, Invoice.number == record.number)
                .options(selectinload(Invoice.lines))
            ).one_or_none()
        if invoice is None:
            invoice = Invoice(
                company_id=company.id,
                billing_account_id=account.id,
                number=record.number,
                reference=record.reference,
                issue_date=record.issue_date,
                due_date=record.due_date,
                currency=currency,
                subtotal=subtotal,
                tax_total=tax,
                total=subtotal + tax,
                amount_paid=0,
                status=InvoiceStatus.OPEN,
                notes=record.notes,
                created_at=self.now,
                lines=[
                    InvoiceLine(
                        company_id=company.id,
                        billing_account_id=account.id,
                        position=position,
                        description=description,
                        quantity=quantity,
                        unit_price=unit,
                        tax_rate_bp=bp,
                        amount=amount,
                    )
                    for position, (description, quantity, unit, bp, amount) in enumerate(lines, 1)
                ],
            )
            self.session.add(invoice)  # flushed with the others of the batch (one INSERT each)
            self.invoices[key] = invoice
            self.subject = invoice.public_id
            return "created"
        if invoice.billing_account_id != account.id:
            raise _Refused("billing_account", "an invoice cannot move to another billing account")
        if invoice.currency != currency:
            raise _Refused(
                "currency", f"the invoice's currency is {invoice.currency}: it cannot change"
            )
        stored = [
            (
                line.description,
                Decimal(line.quantity),
                line.unit_price,
                line.tax_rate_bp,
                line.amount,
            )
            for line in invoice.lines
        ]
        amounts_change = stored != lines
        if amounts_change:
            # Read again under the row lock a payer takes before reserving its part.
            self.session.execute(
                select(Invoice.id).where(Invoice.id == invoice.id).with_for_update()
            )
            self.session.refresh(invoice, ["amount_paid", "status"])
        if amounts_change and (
            invoice.amount_paid != 0 or invoice.status is not InvoiceStatus.OPEN
        ):
            raise _Refused(
                "lines",
                f"the invoice is {invoice.status.value} or has payments or credits: "
                "its lines can no longer change",
            )
        if amounts_change and reserved_amounts(self.session, [invoice.id]):
            raise _Refused(
                "lines",
                "a payment of the invoice is on its way or scheduled: "
                "its lines can no longer change",
            )
        changed = _set(
            invoice,
            {
                "reference": record.reference,
                "issue_date": record.issue_date,
                "due_date": record.due_date,
                "notes": record.notes,
            },
        )
        if amounts_change:
            self._replace_lines(invoice, lines)
            invoice.subtotal, invoice.tax_total, invoice.total = subtotal, tax, subtotal + tax
            changed = True
        if changed:
            invoice.updated_at = self.now
            self.session.flush()
        self.subject = invoice.public_id
        return "updated" if changed else "unchanged"

    def _replace_lines(
        self, invoice: Invoice, lines: list[tuple[str, Decimal, int, int, int]]
    ) -> None:
        """Lines by position: rows kept and changed in place (the unique position never
        collides), extra ones added or removed."""
        existing = {line.position: line for line in invoice.lines}
        for position, (description, quantity, unit, bp, amount) in enumerate(lines, 1):
            values = {
                "description": description,
                "quantity": quantity,
                "unit_price": unit,
                "tax_rate_bp": bp,
                "amount": amount,
            }
            if position in existing:
                _set(existing[position], values)
            else:
                invoice.lines.append(
                    InvoiceLine(
                        company_id=invoice.company_id,
                        billing_account_id=invoice.billing_account_id,
                        position=position,
                        **values,
                    )
                )
        for position, line in existing.items():
            if position > len(lines):
                invoice.lines.remove(line)

    def credit_notes_(self, record: CreditNoteRecord) -> str:
        company = self.company(record.company)
        invoice = self.invoice(company, record.invoice)
        currency = record.currency or invoice.currency
        note = self.session.scalars(
            select(CreditNote).where(
                CreditNote.company_id == company.id, CreditNote.number == record.number
            )
        ).one_or_none()
        if note is not None:
            same = (note.invoice_id, note.amount, note.currency, note.issue_date) == (
                invoice.id,
                record.amount,
                currency,
                record.issue_date,
            )
            if not same:
                raise _Refused(
                    "number",
                    "a credit note with this number was issued with another invoice, amount, "
                    "currency or date: an issued credit note cannot change",
                )
            self.subject = note.public_id
            return "updated" if _set(note, {"reason": record.reason}) else "unchanged"
        result = credit_notes.apply(
            self.session,
            invoice,
            number=record.number,
            amount=record.amount,
            currency=currency,
            issue_date=record.issue_date,
            now=self.now,
            reason=record.reason,
        )
        if result.refusal is not None:
            field_, message = _CREDIT_REFUSALS.get(result.refusal, ("", result.refusal.value))
            raise _Refused(field_, message)
        assert result.credit_note is not None
        self.subject = result.credit_note.public_id
        return "created"

    def documents_(self, record: DocumentRecord) -> str:
        company = self.company(record.company)
        invoice = self.invoice(company, record.invoice) if record.invoice else None
        if record.billing_account:
            account_id: int | None = self.account(company, record.billing_account).id
        else:
            account_id = invoice.billing_account_id if invoice else None
        if invoice is not None and account_id != invoice.billing_account_id:
            raise _Refused("billing_account", "not the invoice's billing account")
        content = self._read(record.file)
        filename = (record.filename or Path(record.file).name)[:200]
        content_type = record.content_type or (
            mimetypes.guess_type(filename)[0] or "application/octet-stream"
        )
        digest = hashlib.sha256(content).hexdigest()
        document = self.session.scalars(
            select(Document).where(
                Document.company_id == company.id,
                Document.invoice_id == invoice.id if invoice else Document.invoice_id.is_(None),
                Document.filename == filename,
            )
        ).first()
        values = {
            "billing_account_id": account_id,
            "title": record.title,
            "kind": record.kind.value,
            "content_type": content_type,
            "size_bytes": len(content),
            "sha256": digest,
        }
        if document is not None and document.sha256 == digest:
            self.subject = document.public_id
            return "updated" if _set(document, values) else "unchanged"
        if document is None:
            document = Document(
                company_id=company.id,
                invoice_id=invoice.id if invoice else None,
                filename=filename,
                storage_path="",
                created_at=self.now,
                **values,
            )
            outcome = "created"
        else:
            _set(document, values)
            outcome = "updated"
        suffix = Path(filename).suffix.lower()
        suffix = suffix if suffix[1:].isalnum() else ""
        key = f"documents/{document.public_id}-{digest[:12]}{suffix}"
        self._store(key, content)
        document.storage_path = key
        self.session.add(document)
        self.session.flush()
        self.subject = document.public_id
        return outcome

    def _read(self, relative: str) -> bytes:
        if self.base_dir is None or self.store is None:
            raise _Refused("file", "documents come with an import file (their files beside it)")
        base = self.base_dir.resolve()
        path = (base / relative).resolve()
        if base not in path.parents:
            raise _Refused("file", "the file must be inside the import file's folder")
        try:
            if path.stat().st_size > MAX_DOCUMENT_BYTES:
                raise _Refused("file", "the file is larger than 20 MB")
            return path.read_bytes()
        except OSError as error:
            raise _Refused("file", f"cannot read {relative}: {error.strerror or error}") from error

    def _store(self, key: str, content: bytes) -> None:
        assert self.store is not None
        try:
            with self.store.writer(key) as out:
                out.write(content)
        except (OSError, StorageError) as error:
            raise _Refused("file", f"cannot store the file: {error}") from error
        self.written.append(key)


_CREDIT_REFUSALS = {
    credit_notes.CreditRefusal.NOT_POSITIVE: ("amount", "the amount must be positive"),
    credit_notes.CreditRefusal.CURRENCY: ("currency", "not the invoice's currency"),
    credit_notes.CreditRefusal.TOO_MUCH: (
        "amount",
        "more than the invoice still owes (less what payments on their way hold)",
    ),
    credit_notes.CreditRefusal.VOID: ("invoice", "the invoice is void"),
    credit_notes.CreditRefusal.DUPLICATE: ("number", "this credit note number is taken"),
    credit_notes.CreditRefusal.DATE: (
        "issue_date",
        "issued before the invoice, or after today",
    ),
}


def upsert(
    session: Session,
    batch: Batch,
    *,
    now: datetime,
    store: FileStore | None = None,
    base_dir: Path | None = None,
) -> ImportReport:
    """Apply a checked batch, all or nothing: every record is tried (so the report lists every
    bad one); if any is bad nothing stays written (the savepoint is rolled back, files stored
    for it removed). Runs across companies (`tenancy.system`); the caller commits."""
    report = ImportReport()
    work = _Upsert(session, report, now=now, store=store, base_dir=base_dir)
    handlers: dict[str, Callable[[Any], str]] = {kind: getattr(work, f"{kind}_") for kind in KINDS}
    with tenancy.system(session):
        savepoint = session.begin_nested()
        try:
            _apply(work, batch, handlers)
        except IntegrityError:
            # Another writer stored the same key at the same moment (the look-up said it was
            # not there): nothing of this batch stays; running it again updates that record.
            report.errors.append(
                RowError(
                    "/",
                    "",
                    "another change to the same records was saved at the same moment: "
                    "nothing was imported; run the import again",
                )
            )
        if batch.errors or report.errors:
            report.errors = sorted([*batch.errors, *report.errors], key=_position)
            savepoint.rollback()
            _forget(work)
            report.invited.clear()
            report.results.clear()
        else:
            savepoint.commit()
            report.stored = list(work.written)
    return report


def discard_files(store: FileStore | None, report: ImportReport) -> None:
    """Remove the files a batch stored, once its transaction is rolled back after all."""
    for key in report.stored:
        if store is not None:
            with contextlib.suppress(OSError, StorageError):  # an orphan file is harmless
                store.delete(key)
    report.stored.clear()


def _apply(work: _Upsert, batch: Batch, handlers: Mapping[str, Callable[[Any], str]]) -> None:
    """Each record in turn. A refusal is raised before its record writes anything, so the
    others go on (and are checked too) without a savepoint each."""
    for kind in KINDS:
        if kind == "invoices":
            work.read_invoices_ahead(batch.records[kind])
        for where, record in batch.records[kind]:
            try:
                outcome = handlers[kind](record)
            except _Refused as refused:
                work.report.errors.append(RowError(where, refused.field, refused.message))
                continue
            work.count(kind, outcome)
            work.report.results.append((kind, where, outcome, work.subject or ""))
        work.session.flush()


def _position(error: RowError) -> tuple[int, int, str]:
    """Where an error sits in its file: by kind (JSON), then by row or index."""
    parts = error.where.replace("row ", "/").replace("items.", "/").strip("/").split("/")
    kind = KINDS.index(parts[0]) if parts[0] in KINDS else -1
    index = next((int(part) for part in parts if part.isdigit()), -1)
    return (kind, index, error.field)


def _forget(work: _Upsert) -> None:
    for key in work.written:
        if work.store is not None:
            with contextlib.suppress(OSError, StorageError):  # an orphan file is harmless
                work.store.delete(key)
    work.companies.clear()
    work.accounts.clear()


def errors_as_fields(errors: Iterable[RowError]) -> list[tuple[str, str]]:
    """The report as the API's problem `errors`: ("items.3.number", message)."""
    found = []
    for error in errors:
        path = ".".join(part for part in (error.where, error.field.replace("/", ".")) if part)
        found.append((path, error.message))
    return found


Format = Literal["csv", "json"]


def read_file(path: Path, *, kind: str | None, fmt: Format | None) -> Batch:
    """An import file: JSON (all kinds) or CSV (one `kind`), by `fmt` or the file's suffix."""
    chosen = fmt or ("csv" if path.suffix.lower() == ".csv" else "json")
    try:
        data = path.read_bytes()
    except OSError as error:
        batch = Batch()
        batch.errors.append(RowError(str(path), "", f"cannot read: {error.strerror or error}"))
        return batch
    if chosen == "json":
        return parse_json(data)
    if kind is None:
        batch = Batch()
        batch.errors.append(RowError(str(path), "", "a CSV file needs --kind"))
        return batch
    return parse_csv(data, kind)
