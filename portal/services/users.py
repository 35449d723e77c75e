"""Company user administration: a customer.admin invites, changes and deactivates the users of
their own company (`/portal/users`).

Every function takes the request's session, already bound to the administrator's company scope
(portal/tenancy.py), so another company's users are simply not there. Nothing here commits.

- Invitations: an invited user has no password and status `invited`; the link mailed to them is
  signed (SECRET_KEY, fallbacks accepted) with the user and the invitation's nonce, valid
  `INVITATION_LIFETIME` by the portal's clock. Resending draws a new nonce, so the old link
  opens nothing; accepting clears it, so a link works once.
- The last active administrator of a company can neither be demoted nor deactivated: the
  company's active administrator rows are locked (SELECT … FOR UPDATE on PostgreSQL; SQLite
  serializes writers already) before the count, so two administrators demoting each other at
  once leave one.
- Every change is audited with `target_user`, names only; it takes effect at the user's next
  request, which binds its scope afresh from the user's role and grants (and refuses a user
  who is no longer active).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select, true
from sqlalchemy.orm import Session, joinedload, selectinload

from portal import tenancy
from portal.models import BillingAccount, PortalUser, Role, UserAccountGrant, UserStatus
from portal.services import audit, auth, credentials, mfa
from portal.services.crypto import Keyring

INVITATION_LIFETIME = timedelta(hours=72)
_SALT = "portal.invitation.v1"


class Refusal(StrEnum):
    LAST_ADMIN = "last_admin"
    ADDRESS_IN_COMPANY = "address_in_company"  # a user of this very company has it
    ADDRESS_UNAVAILABLE = "address_unavailable"  # said the same whoever else has it
    NOT_INVITED = "not_invited"


class InvitationState(StrEnum):
    OK = "ok"
    EXPIRED = "expired"
    INVALID = "invalid"  # altered, or not a link of ours
    USED = "used"  # accepted already
    REVOKED = "revoked"  # a newer link replaced it, or the user was deactivated


@dataclass(frozen=True)
class InvitationCheck:
    state: InvitationState
    user: PortalUser | None = None


@dataclass(frozen=True)
class UserRow:
    user: PortalUser
    accounts: list[BillingAccount]  # empty for an administrator: all of them


def accounts(session: Session) -> list[BillingAccount]:
    """The company's billing accounts (the scope is the administrator's: all of them)."""
    return list(session.scalars(select(BillingAccount).order_by(BillingAccount.name)))


def company_users(session: Session) -> list[UserRow]:
    """Every user of the company with the accounts granted to them: three queries whatever
    the number of users (users, their grants in one go, the accounts)."""
    users = session.scalars(
        select(PortalUser).options(selectinload(PortalUser.grants)).order_by(PortalUser.email)
    ).all()
    by_id = {account.id: account for account in accounts(session)}
    rows = []
    for user in users:
        granted = [] if user.is_admin else [by_id[g.billing_account_id] for g in user.grants]
        rows.append(UserRow(user, sorted(granted, key=lambda a: a.name)))
    return rows


def find(session: Session, public_id: str) -> PortalUser | None:
    """A user of the bound company, by public id (another company's answers None)."""
    return session.scalars(
        select(PortalUser)
        .where(PortalUser.public_id == public_id)
        .options(selectinload(PortalUser.grants))
    ).one_or_none()


def _audit(
    session: Session,
    actor: PortalUser,
    name: str,
    target: PortalUser,
    request: audit.RequestInfo,
    **properties: object,
) -> None:
    audit.record_for(
        session, actor, name, request=request, target_user=target.public_id, **properties
    )


# invitations -----------------------------------------------------------------------------------


def _serializer(keys: Keyring, now: datetime) -> URLSafeTimedSerializer:
    class _Signer(TimestampSigner):
        def get_timestamp(self) -> int:  # the portal's clock, so expiry can be tested
            return int(now.timestamp())

    return URLSafeTimedSerializer(keys.oldest_first, salt=_SALT, signer=_Signer)


def invitation_token(user: PortalUser, *, keys: Keyring, now: datetime) -> str:
    return str(_serializer(keys, now).dumps([user.public_id, user.invitation_nonce or ""]))


def invite(
    session: Session,
    actor: PortalUser,
    email: str,
    role: Role,
    account_ids: Collection[int],
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> tuple[PortalUser | None, Refusal | None]:
    """Create an invited user (no password yet) in the administrator's company. An address that
    has an account already is refused: in words naming it for this company's own users (the
    administrator sees them in the list anyway), in one generic sentence for any other."""
    address = auth.normalize_email(email)
    existing = auth.find_user_by_email(session, address)  # across companies, by necessity
    if existing is not None:
        if existing.company_id == actor.company_id:
            return None, Refusal.ADDRESS_IN_COMPANY
        return None, Refusal.ADDRESS_UNAVAILABLE
    user = PortalUser(
        company_id=actor.company_id,
        email=address,
        name="",
        role=role,
        status=UserStatus.INVITED,
        locale=None,
        invited_by_user_id=actor.id,
        invitation_nonce=secrets.token_urlsafe(16),
        invitation_sent_at=now,
        created_at=now,
    )
    if role is Role.CUSTOMER:
        user.grants = [
            UserAccountGrant(company_id=actor.company_id, billing_account_id=account_id)
            for account_id in sorted(set(account_ids))
        ]
    session.add(user)
    session.flush()
    _audit(session, actor, "Portal.UserInvited", user, request, email=address, role=role.value)
    return user, None


def resend_invitation(
    session: Session,
    actor: PortalUser,
    target: PortalUser,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> Refusal | None:
    """A new link (valid from now): the old one dies with its nonce."""
    if target.status is not UserStatus.INVITED:
        return Refusal.NOT_INVITED
    target.invitation_nonce = secrets.token_urlsafe(16)
    target.invitation_sent_at = now
    session.flush()
    _audit(session, actor, "Portal.InvitationResent", target, request)
    return None


def check_invitation(
    session: Session, token: str, *, keys: Keyring, now: datetime
) -> InvitationCheck:
    """What an invitation link opens. Nobody is signed in yet: the lookup crosses companies."""
    try:
        data = _serializer(keys, now).loads(token, max_age=int(INVITATION_LIFETIME.total_seconds()))
    except SignatureExpired:
        return InvitationCheck(InvitationState.EXPIRED)
    except BadSignature:
        return InvitationCheck(InvitationState.INVALID)
    if not isinstance(data, list) or len(data) != 2 or not all(isinstance(p, str) for p in data):
        return InvitationCheck(InvitationState.INVALID)
    public_id, nonce = data
    with tenancy.system(session):
        user = session.scalars(
            select(PortalUser)
            .where(PortalUser.public_id == public_id)
            .options(joinedload(PortalUser.company))
        ).one_or_none()
    if user is None:
        return InvitationCheck(InvitationState.REVOKED)
    if user.status is UserStatus.ACTIVE and user.invitation_nonce is None:
        return InvitationCheck(InvitationState.USED)
    if (
        user.status is not UserStatus.INVITED
        or not nonce
        or not secrets.compare_digest(nonce, user.invitation_nonce or "")
    ):
        return InvitationCheck(InvitationState.REVOKED)
    return InvitationCheck(InvitationState.OK, user)


def accept_invitation(
    session: Session,
    user: PortalUser,
    name: str,
    password: str,
    *,
    ph: PasswordHasher,
    keys: Keyring,
    now: datetime,
    request: audit.RequestInfo,
) -> None:
    """The invitee chose a password: the account is active (the link is spent). They sign in
    half-way and enrol their second factor next (the caller starts that session)."""
    with tenancy.system(session):
        credentials.set_password(
            session,
            user,
            password,
            ph=ph,
            keys=keys,
            now=now,
            keep_session_id=None,
            request=request,
        )
        user.name = name.strip()
        user.status = UserStatus.ACTIVE
        user.invitation_nonce = None
        audit.record_for(
            session, user, "Portal.InvitationAccepted", request=request, target_user=user.public_id
        )


# changes ---------------------------------------------------------------------------------------


def _is_last_active_admin(session: Session, target: PortalUser) -> bool:
    """Whether `target` is the company's only active administrator, with every active
    administrator row locked until the transaction ends (PostgreSQL: a concurrent demotion
    waits here, then sees the other's outcome, since FOR UPDATE re-reads changed rows)."""
    admins = session.scalars(
        select(PortalUser.id)
        .where(
            PortalUser.company_id == target.company_id,
            PortalUser.role == Role.ADMIN,
            PortalUser.status == UserStatus.ACTIVE,
        )
        .order_by(PortalUser.id)
        .with_for_update()
    ).all()
    return target.id in admins and len(admins) <= 1


def change_access(
    session: Session,
    actor: PortalUser,
    target: PortalUser,
    role: Role,
    account_ids: Collection[int],
    *,
    request: audit.RequestInfo,
) -> Refusal | None:
    """Set the user's role and (for role customer) granted billing accounts; each part that
    changed is audited. Demoting the last active administrator is refused."""
    demoting = target.role is Role.ADMIN and role is not Role.ADMIN
    if demoting and _is_last_active_admin(session, target):
        return Refusal.LAST_ADMIN
    if role is not target.role:
        target.role = role
        _audit(session, actor, "Portal.UserRoleChanged", target, request, role=role.value)
    if role is Role.CUSTOMER:
        wanted = set(account_ids)
        held = {grant.billing_account_id: grant for grant in target.grants}
        if wanted != set(held):
            target.grants = [grant for key, grant in held.items() if key in wanted] + [
                UserAccountGrant(company_id=target.company_id, billing_account_id=key)
                for key in sorted(wanted - set(held))
            ]
            session.flush()
            granted = session.scalars(
                select(BillingAccount.public_id)
                .where(BillingAccount.id.in_(wanted))
                .order_by(BillingAccount.public_id)
            ).all()
            _audit(
                session,
                actor,
                "Portal.UserAccessChanged",
                target,
                request,
                billing_accounts=list(granted),
            )
    session.flush()
    return None


def deactivate(
    session: Session,
    actor: PortalUser,
    target: PortalUser,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> Refusal | None:
    """Disable the user and end all their sessions at once (an invitation dies with it)."""
    if target.status is UserStatus.DISABLED:
        return None
    if target.role is Role.ADMIN and _is_last_active_admin(session, target):
        return Refusal.LAST_ADMIN
    target.status = UserStatus.DISABLED
    target.deactivated_at = now
    target.invitation_nonce = None
    auth.revoke_sessions(session, target, true(), now=now, request=request, reason="deactivated")
    session.flush()
    _audit(session, actor, "Portal.UserDeactivated", target, request)
    return None


def reactivate(
    session: Session,
    actor: PortalUser,
    target: PortalUser,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> None:
    """Active again; one who never accepted their invitation is invited again (a new link)."""
    if target.status is not UserStatus.DISABLED:
        return
    target.deactivated_at = None
    if target.password_hash is None:
        target.status = UserStatus.INVITED
        target.invitation_nonce = secrets.token_urlsafe(16)
        target.invitation_sent_at = now
    else:
        target.status = UserStatus.ACTIVE
    session.flush()
    _audit(session, actor, "Portal.UserReactivated", target, request)


def reset_mfa(
    session: Session, user: PortalUser, *, now: datetime, request: audit.RequestInfo, by: str
) -> None:
    """Forget the user's second factor and recovery codes and end their sessions: they enrol
    again at their next sign-in (after their password). The operator's `flask users reset-mfa`
    and an administrator's reset both come here."""
    mfa.reset_enrolment(session, user)
    with tenancy.system(session):
        auth.revoke_sessions(session, user, true(), now=now, request=request, reason="mfa_reset")
        audit.record_for(session, user, "Portal.MfaReset", request=request, by=by)


def reset_user_mfa(
    session: Session,
    actor: PortalUser,
    target: PortalUser,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> None:
    reset_mfa(session, target, now=now, request=request, by="administrator")
    _audit(session, actor, "Portal.UserMfaReset", target, request)


def end_sessions(
    session: Session,
    actor: PortalUser,
    target: PortalUser,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> int:
    """Sign the user out everywhere; how many sessions ended."""
    ended = auth.revoke_sessions(
        session, target, true(), now=now, request=request, reason="ended_by_administrator"
    )
    _audit(session, actor, "Portal.UserSessionsEnded", target, request, ended=ended)
    return ended
