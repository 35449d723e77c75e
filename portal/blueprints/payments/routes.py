"""Make Payment, one payment's page (status, then receipt), cancel, and the 3-D Secure return.

Several billing accounts' invoices are paid in one go: the confirm step shows the payment each
account gets, and the group's page (groups.py) lists them."""

from __future__ import annotations

from datetime import timedelta

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock, flags, i18n
from portal.blueprints.payments.forms import CONFIRM, PaymentForm
from portal.db import commit_now, retry_on_conflict
from portal.extensions import db_session
from portal.models import Company, Payment, PaymentGroup, PaymentMethod, PaymentStatus
from portal.payments import charging, copy, scheduling
from portal.runtime import current_runtime
from portal.services import outbox, payment_methods, payments, receipts
from portal.services.payments import Problem, Selection
from portal.templating import isolated_date
from portal.web import go, or_404, render, request_info

bp = Blueprint("payments", __name__, url_prefix="/portal")

# The panel a targeted htmx request swaps (its HX-Target), and the partial that renders it.
FORM_PANEL = {"payment-panel": "payments/_form.html"}
CONFIRM_PANEL = {"payment-panel": "payments/_confirm.html"}
PROBLEM_PANEL = {"payment-panel": "payments/_problem.html"}
STATUS_PANEL = {"payment-panel": "payments/_status.html"}
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
    if request.endpoint in ("payments.new", "payments.create") and not flags.enabled(flags.PAYMENT):
        flags.note_refusal()
        abort(503, description=_("Online payment isn't available right now."))


def _company() -> Company:
    company = db_session().get(Company, current_user.company_id)
    assert company is not None
    return company


def _render_form(
    form: PaymentForm,
    methods: list[PaymentMethod],
    status: int = 200,
    balance: payments.Balance | None = None,
) -> Response:
    today = clock.today()
    context = {
        "balance": balance,
        "form": form,
        "methods": methods,
        "today": today,
        "min_date": (today + timedelta(days=1)).isoformat(),
        "max_date": (today + timedelta(days=payments.MAX_SCHEDULE_DAYS)).isoformat(),
    }
    return render("payments/new.html", context, fragments=FORM_PANEL, status=status)


def _render_problem(
    selection: Selection | None, balance: payments.Balance | None = None
) -> Response:
    if selection is None:  # the form was not one of ours
        message, detail, status = _("Invalid payment data. Check your input."), None, 400
    elif balance is not None and selection.problem is Problem.NOTHING_SELECTED:
        message = _(
            "Nothing in %(currency)s is open to pay now: disputed invoices and invoices already "
            "being paid are left out.",
            currency=balance.currency,
        )
        detail, status = None, 409
    else:
        assert selection.problem is not None
        number = selection.invoice.number if selection.invoice else ""
        message = copy.problem(selection.problem, number)
        detail = copy.problem_detail(selection.problem, number)
        status = STATUS_FOR_PROBLEM[selection.problem]
    context = {"selection": selection, "message": message, "detail": detail}
    return render("payments/problem.html", context, fragments=PROBLEM_PANEL, status=status)


@bp.get("/payment")
@login_required
def new() -> Response:
    """The form for the invoices named (`invoice=…`, once each), or for the whole balance in one
    currency (`balance=USD`, the dashboard's "Pay balance": the service picks the invoices,
    oldest due first, at most the form's maximum)."""
    session = db_session()
    balance = None
    chosen = request.args.getlist("invoice")
    if "balance" in request.args:
        balance = payments.balance_ids(session, request.args.get("balance", "")[:3])
        chosen = balance.public_ids
    selection = payments.select_invoices(session, chosen)
    if selection.problem is not None:
        return _render_problem(selection, balance)
    methods = payment_methods.usable(session, current_runtime().gateway_name)
    preferred = payment_methods.preferred(methods, request.args.get("method"), clock.today())
    key = payments.new_idempotency_key()
    form = PaymentForm(formdata=None).start(selection, _company(), key, preferred)
    return _render_form(form, methods, balance=balance)


@bp.post("/payment")
@login_required
def create() -> Response:
    """One form, four buttons (`action`): edit, allocate (spread a total), review, confirm."""
    session = db_session()
    form = PaymentForm()
    if not form.well_formed():
        return _render_problem(None)
    if form.verb == CONFIRM:
        return _confirm(form)
    selection = payments.select_invoices(session, form.invoice.data)
    if selection.problem is not None:
        return _render_problem(selection)
    methods = payment_methods.usable(session, current_runtime().gateway_name)
    form.read(selection, _company(), methods, today=clock.today(), locale=i18n.format_locale())
    if form.verb in ("edit", "allocate") or form.problems:
        return _render_form(form, methods, 422 if form.problems else 200)
    return render("payments/confirm.html", {"form": form}, fragments=CONFIRM_PANEL)


def _confirm(form: PaymentForm) -> Response:
    """Read the invoices under their lock (a double submit finds the same payments, wherever
    they stand, as does a twin of this submit that made them while this one waited), check
    the form against what is available now, record the payments and charge them."""
    session = db_session()
    runtime = current_runtime()
    methods: list[PaymentMethod] = []

    def record() -> Selection | Payment | PaymentGroup | payments.Submission:
        locked = payments.lock_selection(session, current_user, form.key, form.invoice.data)
        if not isinstance(locked, Selection) or locked.problem is not None:
            return locked
        methods[:] = payment_methods.usable(session, current_runtime().gateway_name)
        form.problems.clear()
        form.read(locked, _company(), methods, today=clock.today(), locale=i18n.format_locale())
        if form.problems:
            return locked
        company, method = form.company, form.chosen_method
        assert company is not None and method is not None
        return payments.record_payments(
            session,
            locked,
            user=current_user,
            company=company,
            key=form.key,
            method=method,
            scheduled_for=form.when,
            gateway_name=runtime.gateway_name,
            now=clock.now(),
            request=request_info(),
        )

    # On SQLite (make run) another submit may write first: start over on a fresh snapshot;
    # the key then finds those payments if they were this one's twin's.
    outcome = retry_on_conflict(session, record)
    if isinstance(outcome, Payment | PaymentGroup):
        return _to_result(outcome)
    if isinstance(outcome, Selection):
        if outcome.problem is not None:
            return _render_problem(outcome)
        return _render_form(form, methods, 422)  # what was sent does not fit: nothing is made
    submission = outcome
    made = submission.made
    if made is None or submission.replayed:
        session.rollback()
        return _to_result(made) if made is not None else _refused(form, submission)
    if form.when is not None:
        for payment in submission.payments:
            scheduling.schedule(runtime, session, payment)
        flash(_("Payment scheduled for %(date)s.", date=isolated_date(form.when)), "info")
        return _to_result(made)
    # The deliberate commit before the gateway call: the payment rows exist before the gateway
    # hears of them, so a crash in between leaves a processing payment that reconciliation
    # asks about (with the same idempotency key), never a charge the portal does not know.
    commit_now(session, "the payment rows exist before the gateway hears of them")
    action_url = charging.charge_each(runtime, session, submission.payments)
    if action_url:  # 3-D Secure: the bank's page, then back to this payment (or its group)
        return go(action_url)
    return _to_result(made)


def _refused(form: PaymentForm, submission: payments.Submission) -> Response:
    """Nothing was made: the selection itself was refused, or someone else's payment took part
    of a balance between review and confirm (the form again, with what is still available)."""
    assert submission.selection is not None
    if submission.selection.problem is not None:
        return _render_problem(submission.selection)
    form.selection = submission.selection
    form.refuse(submission.errors)
    return _render_form(
        form, payment_methods.usable(db_session(), current_runtime().gateway_name), 422
    )


def _to_payment(payment: Payment) -> Response:
    return go(url_for("payments.show", public_id=payment.public_id))


def _to_result(made: Payment | PaymentGroup) -> Response:
    if isinstance(made, PaymentGroup):
        return go(url_for("payments.group", public_id=made.public_id))
    return _to_payment(made)


def _payment(public_id: str) -> Payment:
    return or_404(payments.get_payment(db_session(), public_id), _("Payment not found."))


@bp.get("/payments/<public_id>")
@login_required
def show(public_id: str) -> Response:
    payment = _payment(public_id)
    context = {
        "payment": payment,
        "reason": copy.failure_reason(payment.failure_code),
        "retry_url": retry_url(payment),
        "polling": polling(payment),
        "late": outbox.is_late(db_session(), work_about(payment), clock.now()),
    }
    return render("payments/show.html", context, fragments=STATUS_PANEL)


def work_about(payment: Payment) -> list[str]:
    """The outbox subjects of the work a payment waits on: its charge's settlement (the
    sandbox's), its scheduled run, the mail of its outcome."""
    subjects = [outbox.about_payment(payment.id)]
    if payment.gateway_reference:
        subjects.append(outbox.about_charge(payment.gateway_reference))
    return subjects


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
        return _to_result(payment.group)
    return _to_payment(payment)


@bp.get("/payments/<public_id>/receipt.pdf")
@login_required
def receipt_pdf(public_id: str) -> Response:
    payment = _payment(public_id)
    if payment.status is not PaymentStatus.SUCCEEDED:
        abort(404, description=_("Payment not found."))
    company = db_session().get(Company, payment.company_id)
    assert company is not None
    pdf = receipts.render_pdf(
        payment,
        company,
        locale=i18n.format_locale(),
        date_locale=i18n.text_locale(),
        template_env=current_app.jinja_env,
    )
    response = make_response(pdf)
    response.headers["Content-Type"] = "application/pdf"
    response.headers["Content-Disposition"] = f'attachment; filename="{receipts.filename(payment)}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response
