"""The one place that turns "who is asking" into a query scope.

A request or job binds a Scope to its SQLAlchemy session. From then on every ORM query on a
tenant-owned table (see portal.models.mixins) is filtered to the scope's company and, for role
`customer`, to its granted billing accounts. A query on such a table with nothing bound raises
TenancyError: forgetting the scope fails closed. Rows being written are checked the same way.

The few operations that must look across companies (finding the user behind an e-mail or a
session cookie, seeding, a job discovering its work) say so explicitly with `system(session)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, event, text
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from portal import logs
from portal.models import BillingAccount, Company, HasAccount, HasCompany, PortalUser, Role

_KEY: Final = "portal.scope"


class TenancyError(RuntimeError):
    """A tenant-owned table was touched with no scope bound, or outside the bound scope."""


@dataclass(frozen=True)
class Scope:
    company_id: int
    # None: every billing account of the company (customer.admin). Otherwise the granted ones.
    account_ids: frozenset[int] | None = None
    user_id: int | None = None

    @property
    def company_wide(self) -> bool:
        return self.account_ids is None

    def widened_to_company(self) -> Scope:
        """The same company, all accounts: for company-level facts such as credit exposure."""
        return Scope(self.company_id, None, self.user_id)


class _System:
    def __repr__(self) -> str:
        return "<system scope>"


SYSTEM: Final = _System()


def scope_for_user(user: PortalUser) -> Scope:
    if user.role is Role.ADMIN:
        return Scope(user.company_id, None, user.id)
    return Scope(user.company_id, frozenset(g.billing_account_id for g in user.grants), user.id)


def bind(session: Session, scope: Scope) -> None:
    """Bind the scope for the rest of this session's life. Rebinding to another is refused."""
    current = session.info.get(_KEY)
    if isinstance(current, Scope) and current != scope:
        raise TenancyError("this session is already bound to another scope")
    session.info[_KEY] = scope
    _sync_database(session)
    logs.bind(user_id=scope.user_id, company_id=scope.company_id)  # on every log line from here


def current_scope(session: Session) -> Scope:
    scope = session.info.get(_KEY)
    if not isinstance(scope, Scope):
        raise TenancyError("no tenant scope is bound to this session")
    return scope


@contextmanager
def system(session: Session) -> Iterator[Session]:
    """Look across companies for the duration of the block (say why at the call site)."""
    previous = session.info.get(_KEY)
    session.info[_KEY] = SYSTEM
    _sync_database(session)
    try:
        yield session
        session.flush()  # what was written across companies is flushed while that is allowed
    finally:
        if previous is None:
            session.info.pop(_KEY, None)
        else:
            session.info[_KEY] = previous
        _sync_database(session)


@contextmanager
def widened(session: Session) -> Iterator[None]:
    """Temporarily see every account of the bound company (never another company). A session
    already looking across companies (`system`: a job, the receivables import) stays so."""
    if session.info.get(_KEY) is SYSTEM:
        yield
        return
    scope = current_scope(session)
    wide = scope.widened_to_company()
    session.info[_KEY] = wide
    try:
        yield
    finally:
        session.info[_KEY] = scope


def is_tenant_owned(cls: type) -> bool:
    return issubclass(cls, HasCompany | Company)


@event.listens_for(Session, "do_orm_execute")
def _filter_to_scope(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    scope = state.session.info.get(_KEY)
    if scope is SYSTEM:
        return
    if not isinstance(scope, Scope):
        touched = [m.class_ for m in state.all_mappers if is_tenant_owned(m.class_)]
        if touched:
            names = ", ".join(sorted(c.__name__ for c in touched))
            raise TenancyError(f"query on {names} with no tenant scope bound")
        return
    if state.is_column_load or state.is_relationship_load:
        return  # the criteria below already propagate to these loads
    company_id = scope.company_id
    options: list[Any] = [
        with_loader_criteria(
            HasCompany, lambda cls: cls.company_id == company_id, include_aliases=True
        ),
        with_loader_criteria(Company, lambda cls: cls.id == company_id, include_aliases=True),
    ]
    if scope.account_ids is not None:
        account_ids = sorted(scope.account_ids)
        options += [
            with_loader_criteria(
                HasAccount,
                lambda cls: cls.billing_account_id.in_(account_ids),
                include_aliases=True,
            ),
            with_loader_criteria(
                BillingAccount, lambda cls: cls.id.in_(account_ids), include_aliases=True
            ),
        ]
    state.statement = state.statement.options(*options)


@event.listens_for(Session, "before_flush")
def _check_writes(session: Session, _context: Any, _instances: Any) -> None:
    scope = session.info.get(_KEY)
    if scope is SYSTEM:
        return
    for obj in (*session.new, *session.dirty):
        cls = type(obj)
        if not is_tenant_owned(cls):
            continue
        if not isinstance(scope, Scope):
            raise TenancyError(f"writing {cls.__name__} with no tenant scope bound")
        company_id = obj.id if isinstance(obj, Company) else obj.company_id
        if company_id != scope.company_id:
            raise TenancyError(f"writing {cls.__name__} outside the bound company")
        if scope.account_ids is not None and isinstance(obj, HasAccount | BillingAccount):
            account_id = obj.id if isinstance(obj, BillingAccount) else obj.billing_account_id
            if account_id not in scope.account_ids:
                raise TenancyError(f"writing {cls.__name__} outside the granted accounts")


# PostgreSQL row-level security repeats the company rule as a second wall (migration 0004):
# every transaction tells the database which company it acts for. Policies read
# NULLIF(current_setting('app.company_id', true), '') because a pooled connection reverts a
# transaction-local setting to '' rather than NULL. The ORM filter above remains the first wall
# (and the only one for billing accounts and on SQLite).
_SET_SCOPE = text(
    "SELECT set_config('app.company_id', :company, true), set_config('app.system', :system, true)"
)


def _database_values(scope: object) -> dict[str, str]:
    if scope is SYSTEM:
        return {"company": "", "system": "on"}
    if isinstance(scope, Scope):
        return {"company": str(scope.company_id), "system": ""}
    return {"company": "", "system": ""}


def _apply(connection: Connection, scope: object) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(_SET_SCOPE, _database_values(scope))


def _sync_database(session: Session) -> None:
    """A scope that changes inside an open transaction is passed on to the database at once.
    A transaction that a failed flush ended (a lost connection, a broken constraint) is left
    alone: asking it for its connection would raise PendingRollbackError over the failure
    itself; the next transaction gets the scope when it begins (`after_begin`)."""
    transaction = session.get_transaction()
    if transaction is not None and transaction.is_active:
        _apply(session.connection(), session.info.get(_KEY))


@event.listens_for(Session, "after_begin")
def _scope_new_transaction(session: Session, _transaction: Any, connection: Connection) -> None:
    _apply(connection, session.info.get(_KEY))
