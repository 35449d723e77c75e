"""Markers that tell portal.tenancy how a table is owned.

A model that subclasses HasCompany has a `company_id`; one that subclasses HasAccount also has a
`billing_account_id`, copied from its parent at creation. portal.tenancy filters on exactly these
two columns (plus Company.id and BillingAccount.id) and on nothing else.
"""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, declared_attr, mapped_column


class HasCompany:
    """Rows belong to one company: only its users (and jobs bound to it) see them."""

    __company_nullable__: ClassVar[bool] = False

    @declared_attr
    def company_id(cls) -> Mapped[int]:
        nullable = cls.__company_nullable__
        return mapped_column(
            ForeignKey("companies.id", ondelete="RESTRICT" if nullable else "CASCADE"),
            index=True,
            nullable=nullable,
        )


class HasAccount(HasCompany):
    """Rows belong to one billing account: role `customer` sees only its granted accounts.

    Where the account may be NULL the row belongs to the whole company, and only company-wide
    users see it.
    """

    __account_nullable__: ClassVar[bool] = False

    @declared_attr
    def billing_account_id(cls) -> Mapped[int]:
        return mapped_column(
            ForeignKey("billing_accounts.id", ondelete="CASCADE"),
            index=True,
            nullable=cls.__account_nullable__,
        )


CompanyOwned = HasCompany
AccountOwned = HasAccount


class OptionalAccountOwned(HasAccount):
    __account_nullable__: ClassVar[bool] = True
