"""The portal's JSON API (`/api/portal/…`): the pages' services, scoping and copy, as JSON.

Every route is described by `@spec.validate` (portal/api), which validates what comes in and
what goes out and writes `/api/openapi.json`. Who is asking is settled before any route runs
(`api.authenticate_portal`): a bearer token or the signed-in session (with the CSRF header for
unsafe methods). The browser forms' CSRF check does not apply here; the API's own does.
"""

from __future__ import annotations

from flask import Blueprint, Response
from flask_babel import get_locale
from pydantic import BaseModel, Field

from portal import api, clock
from portal.api import PORTAL_SECURITY, spec
from portal.api.schemas import Money
from portal.extensions import csrf, db_session
from portal.services.dashboard import account_summary, aging, viewing
from portal.services.money import format_money

bp = Blueprint("api_portal", __name__, url_prefix="/api/portal")
csrf.exempt(bp)
bp.before_request(api.authenticate_portal)


@bp.after_request
def _never_cached(response: Response) -> Response:
    """The user's data, a token (`login`, RFC 6749 §5.1), a problem: no cache keeps any."""
    response.headers.setdefault("Cache-Control", "no-store")
    return response


TAGS = ["portal"]


def money(minor: int, currency: str) -> Money:
    return Money(
        amount_minor=minor,
        currency=currency,
        formatted=format_money(minor, currency, str(get_locale() or "en")),
    )


class AgingBucketOut(BaseModel):
    key: str = Field(description='"current", "1-30", "31-60", "61-90" or "90+" days past due.')
    amount: Money
    count: int


class DashboardOut(BaseModel):
    company_wide: bool = Field(description="True when the figures cover every billing account.")
    accounts: list[str] = Field(description="Names of the billing accounts the figures cover.")
    customer_name: str
    balance: Money
    other_currencies: list[Money]
    credit_limit: Money
    available_credit: Money
    open_count: int
    overdue_count: int
    next_due: str | None = Field(description="ISO date of the next due date, if any.")
    aging: list[AgingBucketOut]


@bp.get("/dashboard")
@spec.validate(
    resp=api.answers(HTTP_200=DashboardOut),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def dashboard() -> DashboardOut:
    """What the user's scope owes, the company's credit, and aging by days past due."""
    db = db_session()
    today = clock.today()
    summary = account_summary(db, today)
    scope = viewing(db)
    return DashboardOut(
        company_wide=scope.company_wide,
        accounts=scope.accounts,
        customer_name=summary.customer_name,
        balance=money(summary.balance, summary.currency),
        other_currencies=[money(v, c) for c, v in sorted(summary.other_currencies.items())],
        credit_limit=money(summary.credit_limit, summary.currency),
        available_credit=money(summary.available_credit, summary.currency),
        open_count=summary.open_count,
        overdue_count=summary.overdue_count,
        next_due=summary.next_due.isoformat() if summary.next_due else None,
        aging=[
            AgingBucketOut(key=b.key, amount=money(b.amount, summary.currency), count=b.count)
            for b in aging(db, today)
        ],
    )
