"""Every model, importable from one place (Alembic and the tenancy test walk this list)."""

from portal.models.api import ApiToken, ArEvent, ArKey, TokenKind, TokenScope
from portal.models.audit import AuditEvent
from portal.models.autopay import (
    AutopayOff,
    AutopaySetting,
    AutopayStep,
    AutopayStepKind,
    AutopayTiming,
)
from portal.models.company import BillingAccount, Company
from portal.models.dispute import (
    ACTIVE_DISPUTE,
    Dispute,
    DisputeAttachment,
    DisputeMessage,
    DisputeReason,
    DisputeStatus,
)
from portal.models.document import CreditNote, Document, DocumentKind
from portal.models.flag import DEFAULT_FLAGS, FeatureFlag
from portal.models.gateway import GatewayEvent, SandboxCharge, SandboxMethod, SandboxSetup
from portal.models.invoice import (
    OUTSTANDING,
    SETTLED_DUE,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    InvoiceTally,
)
from portal.models.mixins import HasAccount, HasCompany
from portal.models.notification import (
    DEFAULT_REMIND_DAYS,
    REMIND_DAYS,
    Notification,
    NotificationRun,
    NotificationSettings,
)
from portal.models.outbox import UNFINISHED, Schedule, Work, WorkState
from portal.models.payment import (
    Payment,
    PaymentAllocation,
    PaymentGroup,
    PaymentMethod,
    PaymentMethodKind,
    PaymentStatus,
)
from portal.models.security import SecurityAlert, SignInOrigin
from portal.models.statement import IN_PROGRESS, Statement, StatementFormat, StatementState
from portal.models.user import (
    LoginThrottle,
    NotificationChannel,
    NotificationPreference,
    NotificationTopic,
    PortalUser,
    RecoveryCode,
    Role,
    UserAccountGrant,
    UserSession,
    UserStatus,
)

__all__ = [
    "ACTIVE_DISPUTE",
    "DEFAULT_FLAGS",
    "DEFAULT_REMIND_DAYS",
    "IN_PROGRESS",
    "OUTSTANDING",
    "REMIND_DAYS",
    "SETTLED_DUE",
    "UNFINISHED",
    "ApiToken",
    "ArEvent",
    "ArKey",
    "AuditEvent",
    "AutopayOff",
    "AutopaySetting",
    "AutopayStep",
    "AutopayStepKind",
    "AutopayTiming",
    "BillingAccount",
    "Company",
    "CreditNote",
    "Dispute",
    "DisputeAttachment",
    "DisputeMessage",
    "DisputeReason",
    "DisputeStatus",
    "Document",
    "DocumentKind",
    "FeatureFlag",
    "GatewayEvent",
    "HasAccount",
    "HasCompany",
    "Invoice",
    "InvoiceLine",
    "InvoiceStatus",
    "InvoiceTally",
    "LoginThrottle",
    "Notification",
    "NotificationChannel",
    "NotificationPreference",
    "NotificationRun",
    "NotificationSettings",
    "NotificationTopic",
    "Payment",
    "PaymentAllocation",
    "PaymentGroup",
    "PaymentMethod",
    "PaymentMethodKind",
    "PaymentStatus",
    "PortalUser",
    "RecoveryCode",
    "Role",
    "SandboxCharge",
    "SandboxMethod",
    "SandboxSetup",
    "Schedule",
    "SecurityAlert",
    "SignInOrigin",
    "Statement",
    "StatementFormat",
    "StatementState",
    "TokenKind",
    "TokenScope",
    "UserAccountGrant",
    "UserSession",
    "UserStatus",
    "Work",
    "WorkState",
]
