"""Demo data exactly as the contract lists it, and its removal.

Dates are relative to `today`, so an overdue invoice stays overdue whenever the seed runs.
Longer than the portal's ~400-line norm on purpose: most of it is the contract's demo data
written out as data (companies, users, invoices, payments), which reads best in one place.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from argon2 import PasswordHasher
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import utcnow
from portal.gateways.sandbox import SandboxGateway
from portal.models import (
    DEFAULT_REMIND_DAYS,
    AuditEvent,
    BillingAccount,
    Company,
    CreditNote,
    Dispute,
    DisputeAttachment,
    DisputeMessage,
    DisputeReason,
    DisputeStatus,
    Document,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Notification,
    NotificationChannel,
    NotificationPreference,
    NotificationSettings,
    NotificationTopic,
    Payment,
    PaymentAllocation,
    PaymentGroup,
    PaymentMethod,
    PaymentMethodKind,
    PaymentStatus,
    PortalUser,
    RecoveryCode,
    Role,
    Statement,
    UserAccountGrant,
    UserSession,
)
from portal.models.audit import append_only_overrides
from portal.services import credit_notes, crypto, notifications

DEMO_PASSWORD = "portal-demo-2026"  # noqa: S105 - published in the contract
DEMO_TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # noqa: S105 - published in the contract
DEMO_COMPANIES = ("Acme Corp", "Globex GmbH", "Initech")

CATALOG = [
    ("Managed hosting, monthly", Decimal("1"), 125000),
    ("Support hours", Decimal("12.5"), 9500),
    ("Hardware maintenance", Decimal("1"), 48000),
    ("Licence seats", Decimal("25"), 3900),
    ("On-site installation", Decimal("2"), 65000),
    ("Data backup add-on", Decimal("1"), 15999),
]
CATALOG_DE = [
    ("Wartungsvertrag für Anlagen", Decimal("1"), 98000),
    ("Schulung vor Ort (Tagessatz)", Decimal("2"), 120000),
    ("Ersatzteile Größe M", Decimal("14"), 2350),
]


@dataclass(frozen=True)
class PlannedInvoice:
    account: str
    number: str
    issued: int  # days relative to today
    due: int
    status: InvoiceStatus
    lines: tuple[int, ...]  # catalog positions
    paid_share: Decimal = Decimal("0")  # of the total, for partially paid


ACME_INVOICES = [
    PlannedInvoice("Acme West", "INV-1001", -75, -45, InvoiceStatus.OPEN, (0, 1)),
    PlannedInvoice("Acme West", "INV-1002", -40, -10, InvoiceStatus.OPEN, (2,)),
    PlannedInvoice("Acme West", "INV-1003", -20, 10, InvoiceStatus.OPEN, (3, 5)),
    PlannedInvoice("Acme West", "INV-1004", -10, 20, InvoiceStatus.OPEN, (0,)),
    PlannedInvoice(
        "Acme West", "INV-1005", -50, -20, InvoiceStatus.PARTIALLY_PAID, (4, 1), Decimal("0.4")
    ),
    PlannedInvoice(
        "Acme West", "INV-1006", -15, 15, InvoiceStatus.PARTIALLY_PAID, (0, 3), Decimal("0.5")
    ),
    PlannedInvoice("Acme West", "INV-1007", -90, -60, InvoiceStatus.PAID, (0,)),
    PlannedInvoice("Acme West", "INV-1008", -60, -30, InvoiceStatus.PAID, (1, 5)),
    PlannedInvoice("Acme West", "INV-1009", -5, 25, InvoiceStatus.PROCESSING, (2,)),
    PlannedInvoice("Acme West", "INV-1010", -25, 5, InvoiceStatus.PAYMENT_FAILED, (3,)),
    PlannedInvoice("Acme West", "INV-1011", -35, -5, InvoiceStatus.DISPUTED, (4,)),
    PlannedInvoice("Acme West", "INV-1012", -125, -95, InvoiceStatus.OPEN, (5,)),
    PlannedInvoice("Acme West", "INV-1013", -2, 28, InvoiceStatus.OPEN, (1, 2, 3)),
    PlannedInvoice("Acme East", "INV-2001", -70, -40, InvoiceStatus.PAID, (0, 2)),
    PlannedInvoice("Acme East", "INV-2002", -45, -15, InvoiceStatus.OPEN, (1,)),
    PlannedInvoice("Acme East", "INV-2003", -12, 18, InvoiceStatus.OPEN, (3,)),
    PlannedInvoice("Acme East", "INV-2004", -30, 0, InvoiceStatus.OPEN, (5, 0)),
    PlannedInvoice(
        "Acme East", "INV-2005", -65, -35, InvoiceStatus.PARTIALLY_PAID, (4,), Decimal("0.25")
    ),
    PlannedInvoice("Acme East", "INV-2006", -8, 22, InvoiceStatus.PROCESSING, (2, 5)),
    PlannedInvoice("Acme East", "INV-2007", -28, 2, InvoiceStatus.PAYMENT_FAILED, (1,)),
    PlannedInvoice("Acme East", "INV-2008", -100, -70, InvoiceStatus.PAID, (3,)),
    PlannedInvoice("Acme East", "INV-2009", -55, -25, InvoiceStatus.DISPUTED, (0, 4)),
    PlannedInvoice("Acme East", "INV-2010", -3, 27, InvoiceStatus.OPEN, (2,)),
]
# The Globex invoice its demo credit note (GS-501) is given against.
GLOBEX_CREDITED = "RE-2026-003"
GLOBEX_INVOICES = [
    PlannedInvoice("Globex Berlin", "RE-2026-001", -80, -50, InvoiceStatus.PAID, (0,)),
    PlannedInvoice("Globex Berlin", "RE-2026-002", -40, -10, InvoiceStatus.OPEN, (1,)),
    PlannedInvoice("Globex Berlin", "RE-2026-003", -20, 10, InvoiceStatus.OPEN, (2, 0)),
    PlannedInvoice(
        "Globex Berlin", "RE-2026-004", -30, 0, InvoiceStatus.PARTIALLY_PAID, (1,), Decimal("0.3")
    ),
    PlannedInvoice("Globex Berlin", "RE-2026-005", -6, 24, InvoiceStatus.OPEN, (2,)),
    PlannedInvoice("Globex Berlin", "RE-2026-006", -33, -3, InvoiceStatus.DISPUTED, (0, 2)),
]


def _at(day: date, hour: int = 10) -> datetime:
    return datetime.combine(day, time(hour, 0), tzinfo=UTC)


def _round_half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def _pdf_bytes(title: str, body: str) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=True)
    pdf.setTitle(title)
    pdf.setFont("Helvetica-Bold", 16)
    pdf.drawString(72, 770, title)
    pdf.setFont("Helvetica", 11)
    pdf.drawString(72, 740, body)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def register_on_sandbox(
    sandbox: SandboxGateway, company: Company, method: PaymentMethod, *, declines: bool
) -> None:
    """The sandbox gateway's side of a saved card, as if it had come through its page: the
    company's customer there, and the card, which declines every charge when asked to."""
    company.gateway_customer_id = sandbox.ensure_customer(
        existing=company.gateway_customer_id,
        company_ref=company.public_id,
        company_name=company.name,
    )
    assert method.exp_month is not None and method.exp_year is not None  # a card
    sandbox.register_test_method(
        method.gateway_token,
        company.gateway_customer_id,
        brand=method.brand,
        last4=method.last4,
        behaviour="charge_fails" if declines else "succeeds",
        exp_month=method.exp_month,
        exp_year=method.exp_year,
    )


class DemoSeeder:
    def __init__(
        self,
        session: Session,
        *,
        today: date,
        ph: PasswordHasher,
        secret_key: str,
        storage_dir: Path,
    ) -> None:
        self.session = session
        self.today = today
        self.ph = ph
        self.secret_key = secret_key
        self.storage_dir = storage_dir
        self._password_hash = ph.hash(DEMO_PASSWORD)
        self.sandbox = SandboxGateway(session, secret_key=secret_key, now=utcnow)

    def run(self) -> list[str]:
        """Create whichever demo companies are missing; returns the names created."""
        created: list[str] = []
        with tenancy.system(self.session):
            existing = set(
                self.session.scalars(select(Company.name).where(Company.name.in_(DEMO_COMPANIES)))
            )
            if "Acme Corp" not in existing:
                self._acme()
                created.append("Acme Corp")
            if "Globex GmbH" not in existing:
                self._globex()
                created.append("Globex GmbH")
            if "Initech" not in existing:
                self._initech()
                created.append("Initech")
            self.session.flush()
        return created

    # companies ---------------------------------------------------------------------------

    def _acme(self) -> None:
        acme = self._company("Acme Corp", "USD", "en_US", 10_000_000, partial=True)
        self._manager(acme, "Morgan Reyes", "morgan.reyes@supplier.test", "+14155550123")
        west = self._account(
            acme, "Acme West", "AW-1001", "Acme Corp — West\n100 Market St\nSan Francisco, CA 94105"
        )
        east = self._account(
            acme, "Acme East", "AE-2001", "Acme Corp — East\n20 Hudson Yards\nNew York, NY 10001"
        )
        admin = self._user(acme, "admin@acme.test", "Alex Admin", Role.ADMIN, enrolled=True)
        self._user(
            acme, "ap@acme.test", "Pat Payables", Role.CUSTOMER, enrolled=True, grants=[west]
        )
        self._user(
            acme, "new@acme.test", "Nico Newcomer", Role.CUSTOMER, enrolled=False, grants=[west]
        )
        visa = self._method(
            acme, admin, "visa", "4242", default=True, exp=(12, self.today.year + 3)
        )
        failing = self._method(
            acme, admin, "visa", "0341", default=False, exp=(11, self.today.year + 2)
        )
        accounts = {"Acme West": west, "Acme East": east}
        for plan in ACME_INVOICES:
            invoice = self._invoice(acme, accounts[plan.account], plan, CATALOG, tax_bp=825)
            self._history(acme, admin, invoice, plan, visa, failing)
        self._document(
            acme,
            None,
            None,
            "Master services agreement",
            "contract",
            "Terms between Acme Corp and the supplier, signed 2026.",
        )
        west_invoice = self._invoice_by_number(acme, "INV-1003")
        paper = self._document(
            acme,
            west,
            west_invoice,
            "Credit note CN-301",
            "credit_note",
            "Credit of 120.00 USD against INV-1003.",
        )
        self._credit(west_invoice, "CN-301", 12_000, -5, paper, "Two licence seats returned.")
        self._notices(acme, admin)
        east_invoice = self._invoice_by_number(acme, "INV-2003")
        self._document(
            acme,
            east,
            east_invoice,
            "Delivery note DN-2003",
            "delivery_note",
            "Delivered: licence seats, 25.",
        )

    def _globex(self) -> None:
        globex = self._company("Globex GmbH", "EUR", "de_DE", 5_000_000, partial=False)
        self._manager(globex, "Jana Weber", "jana.weber@supplier.test", "+493012345678")
        berlin = self._account(
            globex, "Globex Berlin", "GB-3001", "Globex GmbH\nFriedrichstraße 100\n10117 Berlin"
        )
        admin = self._user(
            globex, "admin@globex.test", "Greta Großmann", Role.ADMIN, enrolled=True, locale=None
        )
        card = self._method(
            globex, admin, "mastercard", "4444", default=True, exp=(8, self.today.year + 2)
        )
        for plan in GLOBEX_INVOICES:
            invoice = self._invoice(globex, berlin, plan, CATALOG_DE, tax_bp=1900)
            self._history(globex, admin, invoice, plan, card, card)
        credited = self._invoice_by_number(globex, GLOBEX_CREDITED)
        paper = self._document(
            globex,
            berlin,
            credited,
            "Gutschrift GS-501",
            "credit_note",
            f"Gutschrift über 50,00 EUR zu {GLOBEX_CREDITED}.",
        )
        self._credit(credited, "GS-501", 5_000, -3, paper, "Rabatt für verspätete Lieferung.")
        self._notices(globex, admin)
        self._document(
            globex,
            None,
            None,
            "Rahmenvertrag 2026",
            "contract",
            "Rahmenvertrag zwischen Globex GmbH und dem Lieferanten.",
        )

    def _initech(self) -> None:
        initech = self._company("Initech", "USD", "en_US", 2_500_000, partial=True)
        self._account(
            initech, "Initech HQ", "IN-4001", "Initech\n4120 Freidrich Ln\nAustin, TX 78744"
        )
        self._user(initech, "admin@initech.test", "Peter Gibbons", Role.ADMIN, enrolled=True)

    # building blocks ----------------------------------------------------------------------

    def _company(
        self, name: str, currency: str, locale: str, limit: int, *, partial: bool
    ) -> Company:
        company = Company(
            name=name,
            code=name.split()[0].upper(),  # ACME, GLOBEX, INITECH: the receivables system's key
            currency=currency,
            locale=locale,
            credit_limit=limit,
            allow_partial_payments=partial,
        )
        self.session.add(company)
        self.session.flush()
        return company

    @staticmethod
    def _manager(company: Company, name: str, email: str, phone: str) -> None:
        """The account manager the footer names (Initech has none: the footer's plain
        sentence)."""
        company.account_manager_name = name
        company.account_manager_email = email
        company.account_manager_phone = phone

    def _account(self, company: Company, name: str, number: str, bill_to: str) -> BillingAccount:
        account = BillingAccount(company_id=company.id, name=name, number=number, bill_to=bill_to)
        self.session.add(account)
        self.session.flush()
        return account

    def _user(
        self,
        company: Company,
        email: str,
        name: str,
        role: Role,
        *,
        enrolled: bool,
        grants: list[BillingAccount] | None = None,
        locale: str | None = None,
    ) -> PortalUser:
        user = PortalUser(
            company_id=company.id,
            email=email,
            name=name,
            role=role,
            password_hash=self._password_hash,
            locale=locale,
            mfa_secret_encrypted=crypto.encrypt(self.secret_key, DEMO_TOTP_SECRET)
            if enrolled
            else None,
            mfa_enrolled_at=_at(self.today - timedelta(days=30)) if enrolled else None,
        )
        self.session.add(user)
        self.session.flush()
        for account in grants or []:
            self.session.add(
                UserAccountGrant(
                    company_id=company.id, user_id=user.id, billing_account_id=account.id
                )
            )
        for topic in NotificationTopic:
            self.session.add(
                NotificationPreference(
                    company_id=company.id,
                    user_id=user.id,
                    topic=topic,
                    channel="email",
                    enabled=notifications.default(topic, NotificationChannel.EMAIL)
                    and (topic is not NotificationTopic.DISPUTE_UPDATED or role is Role.ADMIN),
                )
            )
        self.session.add(
            NotificationSettings(
                company_id=company.id, user_id=user.id, remind_days_before=DEFAULT_REMIND_DAYS
            )
        )
        return user

    def _method(
        self,
        company: Company,
        user: PortalUser,
        brand: str,
        last4: str,
        *,
        default: bool,
        exp: tuple[int, int],
    ) -> PaymentMethod:
        method = PaymentMethod(
            company_id=company.id,
            created_by_user_id=user.id,
            gateway="sandbox",
            gateway_token=f"sandbox_pm_{company.public_id}_{last4}",
            kind=PaymentMethodKind.CARD,
            brand=brand,
            last4=last4,
            exp_month=exp[0],
            exp_year=exp[1],
            is_default=default,
        )
        self.session.add(method)
        register_on_sandbox(self.sandbox, company, method, declines=last4 == "0341")
        self.session.flush()
        return method

    def _invoice(
        self,
        company: Company,
        account: BillingAccount,
        plan: PlannedInvoice,
        catalog: list[tuple[str, Decimal, int]],
        *,
        tax_bp: int,
    ) -> Invoice:
        issue = self.today + timedelta(days=plan.issued)
        lines = []
        for position, index in enumerate(plan.lines, start=1):
            description, quantity, unit = catalog[index % len(catalog)]
            amount = _round_half_up(quantity * unit)
            lines.append(
                InvoiceLine(
                    company_id=company.id,
                    billing_account_id=account.id,
                    position=position,
                    description=description,
                    quantity=quantity,
                    unit_price=unit,
                    tax_rate_bp=tax_bp,
                    amount=amount,
                )
            )
        subtotal = sum(line.amount for line in lines)
        tax = sum(_round_half_up(Decimal(line.amount * tax_bp) / 10000) for line in lines)
        invoice = Invoice(
            company_id=company.id,
            billing_account_id=account.id,
            number=plan.number,
            reference=f"PO-{7000 + int(plan.number[-3:])}",
            issue_date=issue,
            due_date=self.today + timedelta(days=plan.due),
            currency=company.currency,
            subtotal=subtotal,
            tax_total=tax,
            total=subtotal + tax,
            status=InvoiceStatus.OPEN,
            created_at=_at(issue, 8),
            lines=lines,
        )
        self.session.add(invoice)
        self.session.flush()
        return invoice

    def _notices(self, company: Company, user: PortalUser) -> None:
        """The notification centre's demo rows: the two newest invoices, announced (unread)."""
        newest = self.session.scalars(
            select(Invoice)
            .where(Invoice.company_id == company.id)
            .order_by(Invoice.created_at.desc(), Invoice.id.desc())
            .limit(2)
        )
        for invoice in newest:
            self.session.add(
                Notification(
                    company_id=company.id,
                    user_id=user.id,
                    topic=NotificationTopic.INVOICE_ISSUED,
                    key=f"issued:{invoice.public_id}",  # as the reminders job keys it
                    params={
                        "invoice": invoice.number,
                        "amount": invoice.total,
                        "currency": invoice.currency,
                        "due_date": invoice.due_date.isoformat(),
                    },
                    link=f"/portal/invoices/{invoice.public_id}",
                    in_portal=True,
                    by_email=False,
                    created_at=invoice.created_at,
                )
            )
        self.session.flush()

    def _invoice_by_number(self, company: Company, number: str) -> Invoice:
        return self.session.scalars(
            select(Invoice).where(Invoice.company_id == company.id, Invoice.number == number)
        ).one()

    def _payment(
        self,
        company: Company,
        user: PortalUser,
        invoice: Invoice,
        method: PaymentMethod,
        amount: int,
        status: PaymentStatus,
        when: datetime,
    ) -> Payment:
        payment = Payment(
            company_id=company.id,
            billing_account_id=invoice.billing_account_id,
            idempotency_key=f"seed-{invoice.public_id}-{status.value}",
            user_id=user.id,
            payment_method_id=method.id,
            currency=invoice.currency,
            amount=amount,
            status=status,
            gateway="sandbox",
            gateway_reference=f"sandbox_ch_{invoice.public_id}_{status.value}",
            created_at=when,
        )
        # Its reference comes from the model, as at run time (Payment.reference).
        if status is PaymentStatus.SUCCEEDED:
            payment.processed_at = when + timedelta(seconds=2)
        elif status is PaymentStatus.FAILED:
            payment.failure_code = "card_declined"
            payment.failure_message = "Your card was declined."
            payment.processed_at = when + timedelta(seconds=2)
        payment.allocations = [
            PaymentAllocation(
                company_id=company.id,
                billing_account_id=invoice.billing_account_id,
                invoice_id=invoice.id,
                amount=amount,
            )
        ]
        self.session.add(payment)
        # The sandbox answers for the charge: reconciliation asks about a processing one.
        self.sandbox.register_test_charge(payment, method.gateway_token)
        return payment

    def _history(
        self,
        company: Company,
        user: PortalUser,
        invoice: Invoice,
        plan: PlannedInvoice,
        good: PaymentMethod,
        failing: PaymentMethod,
    ) -> None:
        """Payments and disputes that explain the planned status."""
        when = _at(
            invoice.issue_date
            + timedelta(days=max(1, (invoice.due_date - invoice.issue_date).days // 2))
        )
        when = min(when, _at(self.today, 6))
        if plan.status is InvoiceStatus.PAID:
            self._payment(
                company, user, invoice, good, invoice.total, PaymentStatus.SUCCEEDED, when
            )
            invoice.amount_paid = invoice.total
            invoice.paid_at = when + timedelta(seconds=2)
        elif plan.status is InvoiceStatus.PARTIALLY_PAID:
            part = _round_half_up(invoice.total * plan.paid_share)
            self._payment(company, user, invoice, good, part, PaymentStatus.SUCCEEDED, when)
            invoice.amount_paid = part
        elif plan.status is InvoiceStatus.PROCESSING:
            self._payment(
                company,
                user,
                invoice,
                good,
                invoice.total,
                PaymentStatus.PROCESSING,
                _at(self.today, 6),
            )
        elif plan.status is InvoiceStatus.PAYMENT_FAILED:
            self._payment(
                company, user, invoice, failing, invoice.total, PaymentStatus.FAILED, when
            )
        elif plan.status is InvoiceStatus.DISPUTED:
            dispute = Dispute(
                company_id=company.id,
                billing_account_id=invoice.billing_account_id,
                invoice_id=invoice.id,
                opened_by_user_id=user.id,
                reason=DisputeReason.INCORRECT_AMOUNT,
                amount_disputed=invoice.total // 4,
                created_at=when,
            )
            dispute.messages = [
                DisputeMessage(
                    company_id=company.id,
                    billing_account_id=invoice.billing_account_id,
                    author_user_id=user.id,
                    body="The installation was billed for two days; it took one.",
                    created_at=when,
                ),
                DisputeMessage(
                    company_id=company.id,
                    billing_account_id=invoice.billing_account_id,
                    author_kind="staff",
                    body="Thank you: we are checking the engineer's timesheet for those days.",
                    created_at=min(when + timedelta(days=1), _at(self.today, 7)),
                ),
            ]
            dispute.status = DisputeStatus.UNDER_REVIEW
            self.session.add(dispute)
        invoice.status = plan.status
        self.session.flush()

    def _credit(
        self,
        invoice: Invoice,
        number: str,
        amount: int,
        days: int,
        paper: Document,
        reason: str,
    ) -> None:
        result = credit_notes.apply(
            self.session,
            invoice,
            number=number,
            amount=amount,
            currency=invoice.currency,
            issue_date=self.today + timedelta(days=days),
            now=utcnow(),
            reason=reason,
            document=paper,
        )
        if result.credit_note is None:
            raise RuntimeError(f"demo credit {number} refused: {result.refusal}")

    def _document(
        self,
        company: Company,
        account: BillingAccount | None,
        invoice: Invoice | None,
        title: str,
        kind: str,
        body: str,
    ) -> Document:
        content = _pdf_bytes(title, body)
        document = Document(
            company_id=company.id,
            billing_account_id=account.id if account else None,
            invoice_id=invoice.id if invoice else None,
            title=title,
            kind=kind,
            filename=title.lower().replace(" ", "-") + ".pdf",
            content_type="application/pdf",
            size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            storage_path="",
        )
        document.storage_path = f"documents/{document.public_id}.pdf"
        target = self.storage_dir / document.storage_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        self.session.add(document)
        self.session.flush()
        return document


# Dependency order for removal: children first.
_PURGE_ORDER = (
    PaymentAllocation,
    Payment,
    PaymentGroup,
    DisputeAttachment,
    DisputeMessage,
    Dispute,
    CreditNote,
    Document,
    Statement,
    InvoiceLine,
    Invoice,
    PaymentMethod,
    UserSession,
    RecoveryCode,
    Notification,
    NotificationSettings,
    NotificationPreference,
    UserAccountGrant,
    AuditEvent,
    PortalUser,
    BillingAccount,
)


def purge_companies(session: Session, names: tuple[str, ...] = DEMO_COMPANIES) -> int:
    """Remove companies and everything they own, append-only history included.

    The append-only triggers let a delete through only while a row in append_only_overrides
    exists in the same transaction: this is the one place that inserts one.
    """
    with tenancy.system(session):
        ids = list(session.scalars(select(Company.id).where(Company.name.in_(names))))
        if not ids:
            return 0
        session.execute(insert(append_only_overrides).values(reason="purge"))
        for model in _PURGE_ORDER:
            session.execute(delete(model).where(model.company_id.in_(ids)))
        session.execute(delete(Company).where(Company.id.in_(ids)))
        session.execute(delete(append_only_overrides))
    return len(ids)
