"""Saved payment methods at the gateway: added through its hosted page, detached on removal."""

from __future__ import annotations

from sqlalchemy.orm import Session

from portal.db import commit_now
from portal.gateways import GatewayError, SavedMethod
from portal.models import Company, PaymentMethod, PaymentMethodKind
from portal.runtime import Runtime


def start_setup(
    runtime: Runtime,
    session: Session,
    company: Company,
    kind: PaymentMethodKind,
    *,
    return_path: str,
    cancel_path: str,
) -> str:
    """The gateway's hosted page where the customer adds a method (the company's gateway
    customer is created the first time). Raises GatewayError. Caller commits."""
    gw = runtime.gateway(session)
    company.gateway_customer_id = gw.ensure_customer(
        existing=company.gateway_customer_id,
        company_ref=company.public_id,
        company_name=company.name,
    )
    links = runtime.links
    return gw.start_setup(
        customer=company.gateway_customer_id,
        kind=kind,
        return_url=links.gateway_return(return_path),
        cancel_url=links.gateway_return(cancel_path),
    )


def finish_setup(
    runtime: Runtime, session: Session, company: Company, session_id: str
) -> SavedMethod | None:
    """The method a completed hosted page produced; None when it was not (or cannot be told)."""
    if not company.gateway_customer_id or not session_id:
        return None
    try:
        return runtime.gateway(session).finish_setup(
            customer=company.gateway_customer_id, session_id=session_id
        )
    except GatewayError:
        return None


def detach(runtime: Runtime, session: Session, method: PaymentMethod) -> None:
    """Forget a removed method at the gateway too (commits). Should the gateway be unreachable,
    the token is harmless: the portal no longer offers it."""
    try:
        runtime.gateway(session).detach(method.gateway_token)
        commit_now(session, "what the gateway said about the method stands")
    except GatewayError:
        pass
