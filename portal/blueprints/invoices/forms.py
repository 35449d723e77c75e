from __future__ import annotations

from datetime import date
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, Field, IntegerField, SearchField, SelectField
from wtforms.validators import Optional, ValidationError

from portal.services.dates import EARLIEST, LATEST
from portal.services.invoices import DEFAULT_SORT, SORT_KEYS, InvoiceQuery


def status_choices() -> list[tuple[str, Any]]:
    return [
        ("all", _l("All")),
        ("open", _l("Open")),
        ("overdue", _l("Overdue")),
        ("partially_paid", _l("Partially paid")),
        ("processing", _l("Processing")),
        ("failed", _l("Failed")),
        ("disputed", _l("Disputed")),
        ("paid", _l("Paid")),
    ]


def within_bounds(_form: object, field: Field) -> None:
    """The same bounds as every date filter (`portal.services.dates`)."""
    if field.data is not None and not EARLIEST <= field.data <= LATEST:
        raise ValidationError(
            _l(
                "Enter a date between %(earliest)s and %(latest)s.",
                earliest=EARLIEST.isoformat(),
                latest=LATEST.isoformat(),
            )
        )


MAX_PAGE = 1_000_000  # pages of 25: far beyond any company's invoices
DATE_BOUNDS = {"min": EARLIEST.isoformat(), "max": LATEST.isoformat()}


def sort_choices() -> list[tuple[str, Any]]:
    labels = {
        "date": (_l("Newest first"), _l("Oldest first")),
        "due": (_l("Due date, latest first"), _l("Due date, soonest first")),
        "amount": (_l("Amount, highest first"), _l("Amount, lowest first")),
        "status": (_l("Status, Z to A"), _l("Status, A to Z")),
        "number": (_l("Number, Z to A"), _l("Number, A to Z")),
    }
    return [c for key in SORT_KEYS for c in ((f"-{key}", labels[key][0]), (key, labels[key][1]))]


class ListFilterForm(FlaskForm):
    """What a filtered list's form shares (invoices, documents): a page number and a date range
    whose end is not before its start, and the filters echoed back as query parameters. A
    subclass declares `date_from`, `date_to` and `page`, and `ARGS`: (parameter, field name)."""

    ARGS: tuple[tuple[str, str], ...] = ()
    date_from: DateField
    date_to: DateField
    page: IntegerField

    def validate_page(self, field: IntegerField) -> None:
        if field.data is not None and not 1 <= field.data <= MAX_PAGE:
            raise ValidationError(_l("Not a valid page."))

    def validate_date_to(self, field: DateField) -> None:
        start, end = self.date_from.data, field.data
        if start and end and end < start:
            raise ValidationError(_l("The end date must be on or after the start date."))

    def list_args(self) -> dict[str, str]:
        """The filters as query parameters (only ours: links never echo anything else)."""
        raw = {param: getattr(self, name).raw_data for param, name in self.ARGS}
        return {key: value[0] for key, value in raw.items() if value and value[0]}


class InvoiceFilterForm(ListFilterForm):
    """The list's GET form: every control is a query parameter, so URLs can be shared."""

    class Meta:
        csrf = False

    status = SelectField(_l("Status"), choices=status_choices, default="all")
    q = SearchField(
        _l("Search"),
        filters=[lambda v: v.strip()[:100] if isinstance(v, str) else v],
        render_kw={
            "placeholder": _l("Number, PO or description"),
            "autocomplete": "off",
            "spellcheck": "false",
        },
    )
    date_from = DateField(
        _l("Issued from"),
        validators=[Optional(), within_bounds],
        name="from",
        render_kw=DATE_BOUNDS,
    )
    date_to = DateField(
        _l("Issued to"), validators=[Optional(), within_bounds], name="to", render_kw=DATE_BOUNDS
    )
    sort = SelectField(_l("Sort by"), choices=sort_choices, default=DEFAULT_SORT)
    # Not NumberRange: it asks math.isnan() first, which cannot take a 400-digit integer.
    page = IntegerField(validators=[Optional()], default=1)

    ARGS = (
        ("status", "status"),
        ("q", "q"),
        ("from", "date_from"),
        ("to", "date_to"),
        ("sort", "sort"),
    )

    def to_query(self) -> InvoiceQuery:
        """What the list shows; a field that failed validation is left out, the rest applies."""

        def ok(field: Any) -> bool:
            return not field.errors

        status = self.status.data if ok(self.status) else "all"
        sort = self.sort.data if ok(self.sort) else DEFAULT_SORT
        start: date | None = self.date_from.data if ok(self.date_from) else None
        end: date | None = self.date_to.data if ok(self.date_to) else None
        page = self.page.data if ok(self.page) and self.page.data else 1
        return InvoiceQuery(
            status=status or "all",
            q=self.q.data or "",
            date_from=start,
            date_to=end,
            sort=sort or DEFAULT_SORT,
            page=page,
        )
