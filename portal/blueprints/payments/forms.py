"""The payment form: what the customer chose to pay, how much of each invoice, how and when.

Its field names are the page's (`idempotency_key`, `invoice` once per invoice, `amount-<invoice
id>` per invoice, `total`, `method`, `scheduled_for`, and the button's `action`). Reading it
needs the selection (the invoices and what is still available on each), so after `invoice` is
read the route selects them and `read` checks the rest; `problems` holds what is wrong, keyed by
invoice public id or field name, in the words of portal/payments/copy.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from flask_wtf import FlaskForm
from wtforms import Field, HiddenField, StringField

from portal.models import Company, PaymentMethod
from portal.payments import copy
from portal.services import payments
from portal.services.payments import FieldError, Selection
from portal.templating import isolated_money, plain_amount

AMOUNT_PREFIX = "amount-"
CONFIRM = "confirm"


class ValuesField(Field):
    """Every value sent under the field's name (`invoice`, once per invoice)."""

    data: list[str]

    def process_formdata(self, valuelist: list[Any]) -> None:
        self.data = [str(value) for value in valuelist]

    def _value(self) -> str:
        return ""


class AmountsField(Field):
    """The `amount-<invoice id>` fields of the invoices the form lists: `typed(id)` is the text
    sent for one (the form is asked only about the invoices it lists, never walked whole)."""

    def process(self, formdata: Any, data: Any = None, extra_filters: Any = None) -> None:
        self.process_errors: list[Any] = []
        self.data = formdata

    def typed(self, public_id: str) -> str:
        return "" if self.data is None else str(self.data.get(AMOUNT_PREFIX + public_id, ""))


class PaymentForm(FlaskForm):
    idempotency_key = HiddenField()
    invoice = ValuesField()
    amounts = AmountsField()
    total = StringField()
    method = StringField()
    scheduled_for = StringField()
    action = StringField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.selection: Selection | None = None
        self.company: Company | None = None
        self.chosen_method: PaymentMethod | None = None
        self.when: date | None = None
        self.raw_amounts: dict[str, str] = {}
        self.problems: dict[str, str] = {}

    @property
    def key(self) -> str:
        return str(self.idempotency_key.data or "")

    @property
    def total_raw(self) -> str:
        return str(self.total.data or "").strip()

    @property
    def verb(self) -> str:
        """The button pressed; none at all reads as review (an unknown one confirms)."""
        return str(self.action.data or "") if self.action.raw_data else "review"

    def well_formed(self) -> bool:
        """A key this portal made and at least one invoice: else the form was not ours."""
        return payments.valid_key(self.key) and bool(self.invoice.data)

    def start(
        self, selection: Selection, company: Company, key: str, method: PaymentMethod | None
    ) -> PaymentForm:
        """A fresh form for these invoices (GET): everything available, the preferred method."""
        self.selection, self.company, self.chosen_method = selection, company, method
        self.idempotency_key.data = key
        return self

    def read(
        self,
        selection: Selection,
        company: Company,
        methods: list[PaymentMethod],
        *,
        today: date,
        locale: str,
    ) -> None:
        """Check what was sent against the selection; the amounts go onto its items."""
        self.selection, self.company = selection, company
        allocate = self.verb == "allocate"
        if allocate:
            self._allocate(selection, locale)
        else:
            self._read_amounts(selection, company, locale)
        chosen = str(self.method.data or "")
        self.chosen_method = next((m for m in methods if m.public_id == chosen), None)
        method_error = payments.check_method(self.chosen_method, today)
        if method_error is not None and not allocate:
            self.problems["method"] = copy.field_error(method_error)
        when = payments.check_schedule(str(self.scheduled_for.data or ""), today)
        if isinstance(when, FieldError):
            self.problems["scheduled_for"] = copy.field_error(when)
            return
        self.when = when
        method = self.chosen_method
        if when is not None and method is not None and method.is_expired(when):
            self.problems["method"] = copy.field_error(FieldError.METHOD_EXPIRED)

    def _allocate(self, selection: Selection, locale: str) -> None:
        """Spread the typed total over the invoices, oldest due first."""
        currency = selection.currency
        total = payments.parse_amount(self.total_raw, currency, locale)
        if total == 0:
            total = FieldError.AMOUNT_NOT_POSITIVE
        if isinstance(total, FieldError):
            self.problems["total"] = copy.amount_error(total, currency)
        else:
            problem = payments.allocate_oldest_first(selection.items, total)
            if problem is not None:
                available = isolated_money(selection.available, currency)
                self.problems["total"] = copy.field_error(problem, available=available)
        for item in selection.items:
            shown = plain_amount(item.amount, currency) if item.amount else ""
            self.raw_amounts[item.invoice.public_id] = shown

    def _read_amounts(self, selection: Selection, company: Company, locale: str) -> None:
        currency = selection.currency
        for item in selection.items:
            pid = item.invoice.public_id
            if not company.allow_partial_payments:
                item.amount = item.available
                continue
            raw = self.amounts.typed(pid)
            self.raw_amounts[pid] = raw
            parsed = payments.parse_amount(raw, currency, locale) if raw.strip() else 0
            if isinstance(parsed, FieldError):
                self.problems[pid] = copy.amount_error(parsed, currency)
                parsed = 0
            item.amount = parsed  # left empty: this invoice is not paid now
        self.refuse(payments.check_amounts(selection, company), keep_typed=True)

    def refuse(self, refusals: Mapping[str, FieldError], *, keep_typed: bool = False) -> None:
        """Say which amounts do not fit, by invoice ("" is the payment as a whole: its first
        invoice). A typed amount that could not be read keeps its own message; after a confirm
        that was refused, the field shows what is still available on that invoice."""
        assert self.selection is not None and self.company is not None
        items = self.selection.items
        for pid, refusal in refusals.items():
            item = next((i for i in items if i.invoice.public_id == pid), items[0])
            field = item.invoice.public_id
            currency = item.invoice.currency
            if keep_typed and field in self.problems:
                continue
            if not keep_typed:
                self.raw_amounts[field] = plain_amount(item.amount, currency)
            self.problems[field] = copy.field_error(
                refusal,
                available=isolated_money(item.available, currency),
                company=self.company.name,
            )
