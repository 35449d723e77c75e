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
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from portal import tenancy
from portal.db import utcnow
from portal.models import BillingAccount, PortalUser, Role, UserAccountGrant, UserStatus
from portal.services import api_tokens, audit, auth, autopay, credentials, mfa
from portal.services.crypto import Keyring

INVITATION_LIFETIME = timedelta(hours=72)
_SALT = "portal.invitation.v1"


class Refusal(StrEnum):
    LAST_ADMIN = "last_admin"
    ADDRESS_IN_COMPANY = "address_in_company"  # a user of this very company has it
    ADDRESS_UNAVAILABLE = "address_unavailable"  # said the same whoever else has it
    NOT_INVITED = "not_invited"  # accepted already
    DEACTIVATED = "deactivated"  # no invitation to resend: reactivate them instead
    NOT_DEACTIVATED = "not_deactivated"  # nothing to reactivate


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
    return keys.links(_SALT, now)


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
    refusal = _address_taken(session, actor, address)
    if refusal is not None:
        return None, refusal
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
    session.flush()
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError:
        # The same address was invited (or signed up) at the same moment, committed after our
        # look-up: the unique index refused ours; say what the look-up would say now.
        refusal = _address_taken(session, actor, address)
        if refusal is None:
            raise
        return None, refusal
    granted = _public_ids(session, {grant.billing_account_id for grant in user.grants})
    _audit(
        session,
        actor,
        "Portal.UserInvited",
        user,
        request,
        email=address,
        role=role.value,
        billing_accounts=granted,
    )
    return user, None


def _public_ids(session: Session, account_ids: Collection[int]) -> list[str]:
    """The billing accounts' public ids, sorted, for the audit (no query for none)."""
    if not account_ids:
        return []
    return list(
        session.scalars(
            select(BillingAccount.public_id)
            .where(BillingAccount.id.in_(account_ids))
            .order_by(BillingAccount.public_id)
        )
    )


def _address_taken(session: Session, actor: PortalUser, address: str) -> Refusal | None:
    existing = auth.find_user_by_email(session, address)  # across companies, by necessity
    if existing is None:
        return None
    if existing.company_id == actor.company_id:
        return Refusal.ADDRESS_IN_COMPANY
    return Refusal.ADDRESS_UNAVAILABLE


def resend_invitation(
    session: Session,
    actor: PortalUser,
    target: PortalUser,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> Refusal | None:
    """A new link (valid from now): the old one dies with its nonce."""
    if target.status is UserStatus.DISABLED:
        return Refusal.DEACTIVATED
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
    if user.invitation_sent_at is not None and now - user.invitation_sent_at > INVITATION_LIFETIME:
        # the lifetime runs from the invitation, not from the mail (which may go out late)
        return InvitationCheck(InvitationState.EXPIRED)
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
) -> InvitationState:
    """The invitee chose a password: the account is active (the link is spent). They sign in
    half-way and enrol their second factor next (the caller starts that session).

    `user` was checked by `check_invitation` without a lock: it is read again, locked, and
    must still be invited with the same nonce. Otherwise nothing changes and the answer is
    USED (accepted meanwhile, e.g. a second tab) or REVOKED (deactivated or re-sent meanwhile).
    """
    nonce = user.invitation_nonce
    with tenancy.system(session):
        current = session.scalars(
            select(PortalUser)
            .where(PortalUser.id == user.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()
        if current is None:
            return InvitationState.REVOKED
        if current.status is UserStatus.ACTIVE and current.invitation_nonce is None:
            return InvitationState.USED
        if (
            current.status is not UserStatus.INVITED
            or not nonce
            or not secrets.compare_digest(nonce, current.invitation_nonce or "")
        ):
            return InvitationState.REVOKED
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
    return InvitationState.OK


# changes ---------------------------------------------------------------------------------------


def _is_last_active_admin(session: Session, target: PortalUser) -> bool:
    """Whether `target` is the company's only active administrator, with every active
    administrator row locked until the transaction ends (PostgreSQL: a concurrent demotion
    waits here, then sees the other's outcome, since FOR UPDATE re-reads changed rows).

    Always called before a role or status change: `target` is then read again under a lock
    (it was loaded at the start of the request, and may have been promoted, demoted or
    deactivated since), so the caller decides on its current role and status."""
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
    session.scalars(
        select(PortalUser)
        .where(PortalUser.id == target.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if target.role is not Role.ADMIN or target.status is not UserStatus.ACTIVE:
        return False
    return not [admin for admin in admins if admin != target.id]


def change_access(
    session: Session,
    actor: PortalUser,
    target: PortalUser,
    role: Role,
    account_ids: Collection[int],
    *,
    request: audit.RequestInfo,
    now: datetime | None = None,
) -> Refusal | None:
    """Set the user's role and (for role customer) granted billing accounts; each part that
    changed is audited. Demoting the last active administrator is refused. Autopay settings
    the user consented to and may no longer manage turn off (`autopay.consent_changed`)."""
    last_admin = _is_last_active_admin(session, target)
    if last_admin and role is not Role.ADMIN:
        return Refusal.LAST_ADMIN
    became_member = role is Role.CUSTOMER and target.role is not Role.CUSTOMER
    if role is not target.role:
        target.role = role
        _audit(session, actor, "Portal.UserRoleChanged", target, request, role=role.value)
    if role is Role.CUSTOMER:
        wanted = set(account_ids)
        held = {grant.billing_account_id: grant for grant in target.grants}
        if wanted != set(held) or became_member:
            # a new member's accounts are recorded even when the grants kept from before
            # they were an administrator happen to be the ones asked for
            target.grants = [grant for key, grant in held.items() if key in wanted] + [
                UserAccountGrant(company_id=target.company_id, billing_account_id=key)
                for key in sorted(wanted - set(held))
            ]
            session.flush()
            _audit(
                session,
                actor,
                "Portal.UserAccessChanged",
                target,
                request,
                billing_accounts=_public_ids(session, wanted),
            )
    session.flush()
    autopay.consent_changed(session, target, now=now or utcnow())
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
    if _is_last_active_admin(session, target):
        return Refusal.LAST_ADMIN
    if target.status is UserStatus.DISABLED:
        return None
    target.status = UserStatus.DISABLED
    target.deactivated_at = now
    target.invitation_nonce = None
    auth.revoke_sessions(session, target, true(), now=now, request=request, reason="deactivated")
    api_tokens.revoke_all(session, target, now=now)
    session.flush()
    autopay.consent_changed(session, target, now=now)
    _audit(session, actor, "Portal.UserDeactivated", target, request)
    return None


def reactivate(
    session: Session,
    actor: PortalUser,
    target: PortalUser,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> Refusal | None:
    """Active again; one who never accepted their invitation is invited again (a new link:
    the caller mails it when `target` is then `invited`). Only a deactivated user can be
    reactivated: anyone else is refused, and nothing changes."""
    if target.status is not UserStatus.DISABLED:
        return Refusal.NOT_DEACTIVATED
    target.deactivated_at = None
    if target.password_hash is None:
        target.status = UserStatus.INVITED
        target.invitation_nonce = secrets.token_urlsafe(16)
        target.invitation_sent_at = now
    else:
        target.status = UserStatus.ACTIVE
    session.flush()
    _audit(session, actor, "Portal.UserReactivated", target, request)
    return None


def reset_mfa(
    session: Session, user: PortalUser, *, now: datetime, request: audit.RequestInfo, by: str
) -> None:
    """Forget the user's second factor and recovery codes and end their sessions: they enrol
    again at their next sign-in (after their password). The operator's `flask users reset-mfa`
    and an administrator's reset both come here."""
    mfa.reset_enrolment(session, user)
    with tenancy.system(session):
        auth.revoke_sessions(session, user, true(), now=now, request=request, reason="mfa_reset")
        api_tokens.revoke_login_tokens(session, user, now=now)  # sign-ins, as sessions are
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
    api_tokens.revoke_login_tokens(session, target, now=now)  # sign-ins, as sessions are
    _audit(session, actor, "Portal.UserSessionsEnded", target, request, ended=ended)
    return ended
