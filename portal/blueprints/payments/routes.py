"""Make Payment, one payment's page (status, then receipt), cancel, and the 3-D Secure return.

Several billing accounts' invoices are paid in one go: the confirm step shows the payment each
account gets, and the group's page (groups.py) lists them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock, flags, i18n
from portal.db import retry_on_sqlite_conflict
from portal.extensions import db_session, settings
from portal.models import Company, Payment, PaymentGroup, PaymentMethod, PaymentStatus
from portal.payments import charging, copy, scheduling
from portal.runtime import current_runtime
from portal.services import payment_methods, payments, receipts
from portal.services.payments import FieldError, Problem, Selection
from portal.templating import isolated_date, isolated_money, plain_amount
from portal.web import is_htmx, request_info, wants_fragment

bp = Blueprint("payments", __name__, url_prefix="/portal")

STATUS_FOR_PROBLEM = {
    Problem.NOTHING_SELECTED: 400,
    Problem.TOO_MANY: 400,
    Problem.NOT_FOUND: 404,
    Problem.ALREADY_PAID: 409,
    Problem.IN_FLIGHT: 409,
    Problem.NOT_PAYABLE: 422,
    Problem.MIXED_CURRENCIES: 422,
}


@bp.before_request
def _payments_enabled() -> None:
    """With the flag off nothing new is paid; history, receipts and cancelling stay."""
    if request.endpoint in ("payments.new", "payments.create") and not flags.enabled(
        "m25_portal_payment"
    ):
        abort(404, description=_("Online payment isn't available right now."))


@dataclass
class Draft:
    """What the form says, parsed; errors keyed by invoice public id or field name."""

    selection: Selection
    company: Company
    key: str
    method: PaymentMethod | None = None
    scheduled_for: date | None = None
    total_raw: str = ""
    raw_amounts: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _company() -> Company:
    company = db_session().get(Company, current_user.company_id)
    assert company is not None
    return company


def _render_form(draft: Draft, methods: list[PaymentMethod], status: int = 200) -> Response:
    # htmx requests get the whole page too and pick #payment-panel out of it (hx-select).
    body = render_template(
        "payments/new.html",
        draft=draft,
        methods=methods,
        today=clock.today(),
        min_date=(clock.today() + timedelta(days=1)).isoformat(),
        max_date=(clock.today() + timedelta(days=payments.MAX_SCHEDULE_DAYS)).isoformat(),
    )
    return make_response(body, status)


def _render_problem(selection: Selection) -> Response:
    assert selection.problem is not None
    number = selection.invoice.number if selection.invoice else ""
    body = render_template(
        "payments/problem.html",
        selection=selection,
        message=copy.problem(selection.problem, number),
        detail=copy.problem_detail(selection.problem, number),
    )
    return make_response(body, STATUS_FOR_PROBLEM[selection.problem])


@bp.get("/payment")
@login_required
def new() -> Response:
    session = db_session()
    selection = payments.select_invoices(session, request.args.getlist("invoice"))
    if selection.problem is not None:
        return _render_problem(selection)
    methods = payment_methods.usable(session)
    draft = Draft(
        selection=selection,
        company=_company(),
        key=payments.new_idempotency_key(),
        method=payment_methods.preferred(methods, request.args.get("method"), clock.today()),
    )
    return _render_form(draft, methods)


@bp.post("/payment")
@login_required
def create() -> Response:
    session = db_session()
    key = request.form.get("idempotency_key", "")
    ids = request.form.getlist("invoice")
    if not payments.valid_key(key) or not ids:
        return make_response(
            render_template(
                "payments/problem.html",
                message=_("Invalid payment data. Check your input."),
                detail=None,
                selection=None,
            ),
            400,
        )
    action = request.form.get("action", "review")
    if action == "confirm":
        existing = payments.find_by_key(session, current_user, key)
        if existing is not None:  # a double submit: the same payments, wherever they stand
            return _to_result(existing)
    selection = payments.select_invoices(session, ids)
    if selection.problem is not None:
        if action == "confirm":
            # A twin of this submit may have made the payments since the check above.
            existing = payments.find_by_key(session, current_user, key)
            if existing is not None:
                return _to_result(existing)
        return _render_problem(selection)
    methods = payment_methods.usable(session)
    draft = _parse(selection, key, methods, allocate=action == "allocate")
    if action in ("edit", "allocate") or draft.errors:
        status = 422 if draft.errors else 200
        return _render_form(draft, methods, status)
    if action == "review":
        return make_response(render_template("payments/confirm.html", draft=draft))
    return _confirm(draft)


def _parse(
    selection: Selection, key: str, methods: list[PaymentMethod], *, allocate: bool
) -> Draft:
    company = _company()
    form = request.form
    draft = Draft(selection=selection, company=company, key=key)
    currency = selection.currency
    today = clock.today()
    draft.total_raw = form.get("total", "").strip()
    if allocate:
        total = payments.parse_amount(draft.total_raw, currency, i18n.format_locale())
        if total == 0:
            total = FieldError.AMOUNT_NOT_POSITIVE
        if isinstance(total, FieldError):
            draft.errors["total"] = copy.amount_error(total, currency)
        else:
            problem = payments.allocate_oldest_first(selection.items, total)
            if problem is not None:
                draft.errors["total"] = copy.field_error(
                    problem, available=isolated_money(selection.available, currency)
                )
        for item in selection.items:
            draft.raw_amounts[item.invoice.public_id] = (
                plain_amount(item.amount, currency) if item.amount else ""
            )
    else:
        for item in selection.items:
            pid = item.invoice.public_id
            if not company.allow_partial_payments:
                item.amount = item.available
                continue
            raw = form.get(f"amount-{pid}", "")
            draft.raw_amounts[pid] = raw
            if not raw.strip():  # left empty: this invoice is not paid now
                item.amount = 0
                continue
            parsed = payments.parse_amount(raw, currency, i18n.format_locale())
            if isinstance(parsed, FieldError):
                draft.errors[pid] = copy.amount_error(parsed, currency)
                item.amount = 0
            else:
                item.amount = parsed
        for pid, error in payments.check_amounts(selection, company).items():
            pid = pid or selection.items[0].invoice.public_id  # "": the payment as a whole
            if pid in draft.errors:
                continue
            item_available = next(
                (i.available for i in selection.items if i.invoice.public_id == pid), 0
            )
            draft.errors[pid] = copy.field_error(
                error,
                available=isolated_money(item_available, currency),
                company=company.name,
            )
    chosen = form.get("method", "")
    draft.method = next((m for m in methods if m.public_id == chosen), None)
    method_error = payments.check_method(draft.method, today)
    if method_error is not None and not allocate:
        draft.errors["method"] = copy.field_error(method_error)
    when = payments.check_schedule(form.get("scheduled_for", ""), today)
    if isinstance(when, FieldError):
        draft.errors["scheduled_for"] = copy.field_error(when)
    else:
        draft.scheduled_for = when
        if when is not None and draft.method is not None and draft.method.is_expired(when):
            draft.errors["method"] = copy.field_error(FieldError.METHOD_EXPIRED)
    return draft


def _confirm(draft: Draft) -> Response:
    session = db_session()
    assert draft.method is not None
    amounts = {item.invoice.public_id: item.amount for item in draft.selection.items}
    method = draft.method
    # On SQLite (make run) another submit may write first: start over on a fresh snapshot;
    # the key then finds those payments if they were this one's twin's.
    submission = retry_on_sqlite_conflict(
        session,
        lambda: payments.create_payments(
            session,
            user=current_user,
            company=draft.company,
            key=draft.key,
            amounts=amounts,
            method=method,
            scheduled_for=draft.scheduled_for,
            gateway_name=settings().payment_gateway,
            now=clock.now(),
            request=request_info(),
        ),
    )
    made = submission.made
    if made is None:
        session.rollback()
        assert submission.selection is not None
        if submission.selection.problem is not None:
            return _render_problem(submission.selection)
        # Someone else's payment took part of a balance between review and confirm: show the
        # form again with what is still available and say which amount no longer fits.
        draft.selection = submission.selection
        for pid, refusal in submission.errors.items():
            item = next(
                (i for i in draft.selection.items if i.invoice.public_id == pid),
                draft.selection.items[0],
            )
            draft.raw_amounts[item.invoice.public_id] = plain_amount(
                item.amount, item.invoice.currency
            )
            draft.errors[item.invoice.public_id] = copy.field_error(
                refusal,
                available=isolated_money(item.available, item.invoice.currency),
                company=draft.company.name,
            )
        return _render_form(draft, payment_methods.usable(session), 422)
    if submission.replayed:
        session.rollback()
        return _to_result(made)
    if draft.scheduled_for is not None:
        for payment in submission.payments:
            scheduling.schedule(current_runtime(), session, payment)
        session.commit()
        flash(_("Payment scheduled for %(date)s.", date=isolated_date(draft.scheduled_for)), "info")
        return _to_result(made)
    session.commit()  # the rows exist before the gateway hears of them
    action_url = charging.charge_each(current_runtime(), session, submission.payments)
    if action_url:  # 3-D Secure: the bank's page, then back to this payment (or its group)
        return _go(action_url)
    return _to_result(made)


def _go(location: str) -> Response:
    if is_htmx():
        response = make_response("", 204)
        response.headers["HX-Redirect"] = location
        return response
    return redirect(location, code=303)


def _to_payment(payment: Payment) -> Response:
    return _go(url_for("payments.show", public_id=payment.public_id))


def _to_result(made: Payment | PaymentGroup) -> Response:
    if isinstance(made, PaymentGroup):
        return _go(url_for("payments.group", public_id=made.public_id))
    return _to_payment(made)


def _payment(public_id: str) -> Payment:
    payment = payments.get_payment(db_session(), public_id)
    if payment is None:
        abort(404, description=_("Payment not found."))
    return payment


@bp.get("/payments/<public_id>")
@login_required
def show(public_id: str) -> Response:
    payment = _payment(public_id)
    context = {
        "payment": payment,
        "reason": copy.failure_reason(payment.failure_code),
        "retry_url": retry_url(payment),
        "polling": polling(payment),
    }
    if wants_fragment() and request.args.get("fragment") == "status":
        return make_response(render_template("payments/_status.html", **context))
    return make_response(render_template("payments/show.html", **context))


def polling(payment: Payment) -> bool:
    """Is the outcome still to come? Nothing to wait for while the bank waits for the customer."""
    return (
        payment.status in (PaymentStatus.PROCESSING, PaymentStatus.PENDING)
        and not payment.action_url
    )


def retry_url(payment: Payment) -> str:
    invoices = [a.invoice for a in payment.allocations if a.invoice.balance_due > 0]
    return url_for("payments.new", invoice=[i.public_id for i in invoices])


@bp.post("/payments/<public_id>/cancel")
@login_required
def cancel(public_id: str) -> Response:
    session = db_session()
    payment = _payment(public_id)
    if payments.cancel_scheduled(
        session, payment, current_user, now=clock.now(), request=request_info()
    ):
        session.commit()
        flash(_("Scheduled payment canceled."), "info")
    else:
        flash(_("This payment can no longer be canceled."), "warning")
    if request.form.get("back") == "group" and payment.group is not None:
        return _to_result(payment.group)
    return _to_payment(payment)


@bp.get("/payments/<public_id>/return")
@login_required
def returned(public_id: str) -> Response:
    """Back from the gateway's authentication step: ask the gateway where the charge stands."""
    session = db_session()
    payment = _payment(public_id)
    charging.refresh(current_runtime(), session, payment)  # commits what the gateway says
    if payment.group is not None:  # the customer goes back to the list of the group's payments
        return redirect(url_for("payments.group", public_id=payment.group.public_id), code=303)
    return redirect(url_for("payments.show", public_id=public_id), code=303)


@bp.get("/payments/<public_id>/receipt.pdf")
@login_required
def receipt_pdf(public_id: str) -> Response:
    payment = _payment(public_id)
    if payment.status is not PaymentStatus.SUCCEEDED:
        abort(404, description=_("Payment not found."))
    company = db_session().get(Company, payment.company_id)
    assert company is not None
    pdf = receipts.render_pdf(
        payment, company, locale=i18n.format_locale(), template_env=current_app.jinja_env
    )
    response = make_response(pdf)
    response.headers["Content-Type"] = "application/pdf"
    response.headers["Content-Disposition"] = f'attachment; filename="{receipts.filename(payment)}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response
